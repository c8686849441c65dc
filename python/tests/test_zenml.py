"""The ZenML flavor `kiln`, end to end against the real zenml package with
its local SQLite store: registered as a flavor and a stack component in a
stack with a real registry, it builds the image ZenML's own pipeline image
builder generates for a pipeline with a pip requirement (context as a tar.gz
on kiln's standard input), pushes it, and the image is pulled and run by
Docker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import docker, kiln

zenml = pytest.importorskip("zenml", reason="zenml is not installed (pip install 'zenml[local]')")


def run(args, cwd, env, **kw):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture()
def zenml_env(tmp_path):
    env = dict(os.environ)
    env.update(
        ZENML_CONFIG_PATH=str(tmp_path / "zenml-config"),
        ZENML_ANALYTICS_OPT_IN="false",
        ZENML_DEBUG="false",
        AUTO_OPEN_DASHBOARD="false",
    )
    return env


def zenml_cli(*args, cwd, env):
    return run([os.path.join(os.path.dirname(sys.executable), "zenml"), *args], cwd, env)


def test_the_flavor_module_imports_without_the_implementation():
    code = (
        "import sys, kiln_build.zenml as z\n"
        "assert 'kiln_build.zenml.image_builder' not in sys.modules, 'implementation imported'\n"
        "print(z.KilnImageBuilderFlavor().name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "kiln"


def test_config_is_validated_by_kiln():
    from kiln_build.zenml import KilnImageBuilderConfig

    assert KilnImageBuilderConfig(builder_flavor="oci", builder_config={"runtime": "runc"})
    with pytest.raises(ValueError, match="bogus"):
        KilnImageBuilderConfig(builder_flavor="oci", builder_config={"bogus": 1})
    with pytest.raises(ValueError, match="no-such-flavor"):
        KilnImageBuilderConfig(builder_flavor="no-such-flavor")


def test_build_options_map_to_kiln_flags():
    from zenml.config.docker_settings import DockerBuildOptions

    from kiln_build.zenml.image_builder import build_option_flags

    flags, ignored = build_option_flags(
        DockerBuildOptions(
            pull=True, no_cache=True, labels={"a": "b"}, build_args={"V": "1"}, shm_size=64, platform="linux/amd64"
        )
    )
    assert flags == [
        "--pull",
        "--no-cache",
        "--label",
        "a=b",
        "--build-arg",
        "V=1",
        "--platform",
        "linux/amd64",
    ] or sorted(flags) == sorted(
        ["--pull", "--no-cache", "--label", "a=b", "--build-arg", "V=1", "--platform", "linux/amd64"]
    )
    assert any(i.startswith("shm_size") for i in ignored), ignored
    flags, ignored = build_option_flags(DockerBuildOptions(cache_from=["reg.io/team/cache:main"]))
    assert flags == ["--cache-from", "reg.io/team/cache:main"], flags
    assert ignored == [], ignored


def test_a_pipeline_image_is_built_pushed_pulled_and_run(tmp_path, zenml_env, registry, python_base):
    project = tmp_path / "project"
    project.mkdir()
    (project / "steps.py").write_text("import six\nprint('zenml step with six', six.__version__)\n")
    zenml_cli("init", cwd=project, env=zenml_env)
    zenml_cli("image-builder", "flavor", "register", "kiln_build.zenml.KilnImageBuilderFlavor", cwd=project, env=zenml_env)
    zenml_cli("image-builder", "register", "kiln", "--flavor=kiln", "--builder_flavor=oci", cwd=project, env=zenml_env)
    zenml_cli("container-registry", "register", "reg", "--flavor=default", f"--uri={registry}", cwd=project, env=zenml_env)
    zenml_cli(
        "stack", "register", "kiln_stack", "-o", "default", "-a", "default", "-i", "kiln", "-c", "reg", "--set",
        cwd=project, env=zenml_env,
    )
    script = textwrap.dedent(
        f"""
        import json
        from zenml.client import Client
        from zenml.config import DockerSettings
        from zenml.utils.pipeline_docker_image_builder import PipelineDockerImageBuilder

        settings = DockerSettings(
            parent_image={python_base!r},
            requirements=["six==1.17.0"],
            install_stack_requirements=False,
            python_package_installer="pip",
        )
        image, dockerfile, requirements = PipelineDockerImageBuilder().build_docker_image(
            docker_settings=settings,
            tag="kiln-pipeline",
            stack=Client().active_stack,
            include_files=True,
            entrypoint=None,
        )
        print(json.dumps({{"image": image, "dockerfile": dockerfile}}))
        """
    )
    done = run([sys.executable, "-c", script], project, zenml_env, timeout=1800)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    image = result["image"]
    assert image.startswith(f"{registry}/zenml@sha256:"), result
    assert "RUN pip install" in (result["dockerfile"] or ""), result["dockerfile"]
    # kiln built it (its report went to the caller's standard error).
    assert "with flavor oci" in done.stderr, done.stderr
    # Pushed: the registry has it, and Docker pulls and runs it.
    exists = kiln("image", "exists", image.split("@")[0] + ":kiln-pipeline", "--json")
    assert json.loads(exists.stdout)["digest"].endswith(image.split("@")[1])
    docker("pull", image)
    try:
        out = docker("run", "--rm", image, "python3", "steps.py")
        assert out == "zenml step with six 1.17.0\n"
        mode = docker("run", "--rm", image, "stat", "-c", "%A", "steps.py").strip()
        assert mode == "-rw-rw-rw-"  # ZenML's `RUN chmod -R a+rw .`
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
