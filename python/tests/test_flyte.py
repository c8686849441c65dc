"""The Flyte 2 image builder `kiln`, end to end against the real flyte
package with no endpoint: `flyte build` of an environment whose Image is
based on an image in a real local registry and adds pip packages, built by
kiln from the Dockerfile Flyte's own layer handlers write (uv from Astral's
image, `RUN --mount=type=cache`), pushed, pulled and run by Docker; the
second `flyte build` is skipped because kiln's checker finds the image."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

from conftest import docker, kiln

flyte = pytest.importorskip("flyte", reason="flyte is not installed (pip install flyte)")


def uv_image_flyte_uses() -> str:
    from flyte._internal.imagebuild.docker_builder import DOCKER_FILE_UV_BASE_TEMPLATE

    found = re.search(r"^FROM (\S+) AS uv$", DOCKER_FILE_UV_BASE_TEMPLATE.template, re.M)
    assert found, "Flyte's Dockerfile template no longer copies uv from an image"
    return found.group(1)


def test_registered_under_flytes_entry_point_group():
    eps = [ep for ep in entry_points(group="flyte.plugins.image_builders") if ep.name == "kiln"]
    assert eps, "no `kiln` in flyte.plugins.image_builders"
    from flyte._internal.imagebuild.image_builder import ImageBuildEngine

    builder = ImageBuildEngine._get_builder("kiln")
    assert type(builder).__name__ == "KilnImageBuilder"
    assert [c.__name__ for c in builder.get_checkers()] == ["KilnImageChecker"]


def test_the_checker_answers_none_when_absent_and_raises_when_unknown(registry):
    import asyncio

    from kiln_build.flyte import KilnImageChecker

    absent = asyncio.run(KilnImageChecker.image_exists(f"{registry}/nothing-here", "1"))
    assert absent is None
    # Nothing listens on port 9 of loopback: the registry cannot tell.
    with pytest.raises(Exception, match="exited with 7"):
        asyncio.run(KilnImageChecker.image_exists("127.0.0.1:9/nothing", "1"))


def test_flyte_build_builds_with_kiln_then_skips(tmp_path, registry, python_base, uv_image):
    app = tmp_path / "app"
    app.mkdir()
    (app / "envs.py").write_text(
        textwrap.dedent(
            f"""
            import flyte

            image = (
                flyte.Image.from_base({python_base!r})
                .clone(registry={registry!r}, name="kiln-flyte", extendable=True)
                .with_pip_packages("six==1.17.0")
            )
            kiln_env = flyte.TaskEnvironment(name="kiln_env", image=image)

            @kiln_env.task
            def hello() -> str:
                import six
                return six.__version__
            """
        )
    )
    # Selected by config.yaml's `image.builder` (Flyte reads FLYTE_IMAGE_BUILDER
    # only beside a config file).
    (app / "config.yaml").write_text("image:\n  builder: kiln\n")
    env = dict(os.environ)
    env.update(
        KILN_FLYTE_BUILD_ARGS=f"--build-context {uv_image_flyte_uses()}=docker-image://{uv_image}",
    )
    flyte_cli = os.path.join(os.path.dirname(sys.executable), "flyte")

    def flyte_build():
        done = subprocess.run(
            [flyte_cli, "--config", "config.yaml", "build", "envs.py", "kiln_env"],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        return output

    first = flyte_build()
    assert "with flavor oci" in first, first  # kiln's own report
    uri = re.search(rf"({re.escape(registry)}/kiln-flyte:[A-Za-z0-9_.-]+)", first)
    assert uri, first
    image = uri.group(1)
    found = json.loads(kiln("image", "exists", image, "--json").stdout)
    assert found["state"] == "exists"

    docker("pull", image)
    try:
        out = docker("run", "--rm", image, "python", "-c", "import six, sys; print(six.__version__, sys.prefix)")
        assert out == "1.17.0 /opt/venv\n", out
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)

    second = flyte_build()
    assert "already exists" in second, second
    assert "with flavor oci" not in second, second
