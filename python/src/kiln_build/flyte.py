"""Flyte 2's image builder ``kiln`` and its image checker.

Selected with ``flyte.init(image_builder="kiln")``, ``image: builder: kiln``
in ``config.yaml`` or ``FLYTE_IMAGE_BUILDER=kiln`` (the entry point
``flyte.plugins.image_builders``, name ``kiln``).

A layered :class:`flyte.Image` is lowered to a Dockerfile and context by
Flyte's own layer handlers, the ones its ``local`` builder uses, so kiln
builds exactly what ``docker buildx`` would have been given: the
``# syntax=docker/dockerfile:1.10`` header, ``RUN --mount=type=cache`` for
uv and apt, bind mounts, and secrets as ``--secret`` (buildx's spelling,
which kiln takes). kiln builds it without a daemon and pushes it to the
image's registry (or, for an image with no registry, loads it into the local
Docker Engine).

Environment:

- ``KILN_FLYTE_BUILD_ARGS``: more ``kiln build`` flags, split as a shell would
  (for example ``--build-context ghcr.io/astral-sh/uv:0.13.4=docker-image://mirror/uv:0.13.4``
  where ghcr.io is out of reach).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple, Type

from kiln_build._cli import EXIT_FAILURE, EXIT_OK, KilnError, kiln_executable, run_kiln

if TYPE_CHECKING:
    from flyte import Image
    from flyte._build import ImageBuild

EXTRA_ARGS_ENV = "KILN_FLYTE_BUILD_ARGS"


class KilnImageChecker:
    """Flyte's ``ImageChecker`` through ``kiln image exists``: the URI when
    the registry has the image for every platform asked, ``None`` when it
    does not, an exception when it cannot tell (so Flyte's chain asks the
    next checker)."""

    @classmethod
    async def image_exists(
        cls, repository: str, tag: str, arch: Tuple[str, ...] = ("linux/amd64",)
    ) -> Optional[str]:
        reference = f"{repository}:{tag}"
        args = [kiln_executable(), "image", "exists", reference, "--json"]
        for platform in arch:
            args += ["--platform", platform]
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await proc.communicate()
        if proc.returncode == EXIT_OK:
            return reference
        if proc.returncode == EXIT_FAILURE:
            return None
        reason = stderr.decode(errors="replace")
        try:
            reason = json.loads(stdout).get("reason") or reason
        except ValueError:
            pass
        raise KilnError(args[1:], proc.returncode or -1, reason)


def _flyte_lowering():
    """Flyte's own Dockerfile lowering (what its `local` builder runs)."""
    try:
        from flyte._internal.imagebuild import docker_builder as db
    except ImportError as e:  # pragma: no cover - depends on the installed Flyte
        raise RuntimeError(f"kiln's Flyte builder needs the flyte package (2.x): {e}") from e
    for name in (
        "DOCKER_FILE_UV_BASE_TEMPLATE",
        "DOCKER_FILE_BASE_FOOTER",
        "DOCKER_FILE_FLYTE_USER_FOOTER",
        "_process_layer",
        "_image_creates_flyte_user",
        "_get_secret_commands",
    ):
        if not hasattr(db, name):
            import flyte

            raise RuntimeError(
                f"this Flyte ({getattr(flyte, '__version__', '?')}) has no {name}; "
                "kiln's Flyte builder knows Flyte 2.10 to 2.12"
            )
    return db


async def lower(image: "Image", context: Path) -> Tuple[Path, List[str]]:
    """Write ``image``'s Dockerfile and context into ``context``; return the
    Dockerfile and the ``--secret`` flags its layers need."""
    db = _flyte_lowering()
    if image.dockerfile is not None:
        raise NotImplementedError("use kiln_build.flyte.lower only for layered images")
    if not image.base_image:
        raise ValueError(f"image {image.uri} has no base image to build on")
    from flyte._internal.imagebuild.utils import get_and_list_dockerignore

    dockerfile = db.DOCKER_FILE_UV_BASE_TEMPLATE.substitute(
        BASE_IMAGE=image.base_image,
        PYTHON_VERSION=f"{image.python_version[0]}.{image.python_version[1]}",
    )
    ignore = get_and_list_dockerignore(image)
    for layer in image._layers:
        dockerfile = await db._process_layer(layer, context, dockerfile, ignore)
    if db._image_creates_flyte_user(image):
        dockerfile += db.DOCKER_FILE_FLYTE_USER_FOOTER
    dockerfile += db.DOCKER_FILE_BASE_FOOTER.substitute(F_IMG_ID=image.uri)
    path = context / "Dockerfile"
    path.write_text(dockerfile)
    return path, list(db._get_secret_commands(layers=image._layers))


class KilnImageBuilder:
    """Flyte's ``ImageBuilder`` that builds with kiln."""

    def __str__(self) -> str:
        return "kiln"

    def get_checkers(self) -> Optional[List[Type[KilnImageChecker]]]:
        return [KilnImageChecker]

    async def build_image(
        self, image: "Image", dry_run: bool, wait: bool = True, force: bool = False
    ) -> "ImageBuild":
        from flyte._build import ImageBuild

        uri = image.uri
        with tempfile.TemporaryDirectory(prefix="flyte-kiln-") as tmp:
            context = Path(tmp)
            if image.dockerfile is not None:
                dockerfile = Path(image.dockerfile).resolve()
                context = dockerfile.parent
                secrets: List[str] = []
            else:
                dockerfile, secrets = await lower(image, context)
            args = ["build", str(context), "-f", str(dockerfile), "--tag", uri, "--json"]
            platforms = ",".join(image.platform or ())
            if platforms:
                args += ["--platform", platforms]
            args += secrets
            args += ["--push"] if image.registry else ["--load"]
            if force:
                args.append("--force")
            args += shlex.split(os.environ.get(EXTRA_ARGS_ENV, ""))
            if dry_run:
                args.append("--dry-run")
            done = await asyncio.to_thread(run_kiln, args, stream_stderr=True)
            if dry_run:
                print(dockerfile.read_text())
                print(done.stdout)
                return ImageBuild(uri=uri, remote_run=None)
        result = json.loads(done.stdout)
        if result.get("status") not in ("built", "skipped"):
            raise RuntimeError(f"kiln did not build {uri}: {result}")
        return ImageBuild(uri=uri, remote_run=None)
