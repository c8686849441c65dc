"""The implementation behind the ZenML flavor ``kiln``: ZenML's build context
goes to ``kiln build -`` as a tar.gz on standard input (ZenML's own
subprocess path for ``docker build``), pushed to the stack's container
registry with its credentials, or loaded into the local Docker Engine when
the stack has none."""

from __future__ import annotations

import json
import tempfile
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, cast

from zenml.image_builders import BaseImageBuilder
from zenml.logger import get_logger

from kiln_build._cli import plugins_dir_args, run_json
from kiln_build.zenml import KilnImageBuilderConfig

if TYPE_CHECKING:
    from zenml.config.docker_settings import DockerBuildOptions
    from zenml.container_registries import BaseContainerRegistry
    from zenml.image_builders import BuildContext

logger = get_logger(__name__)

#: The variable the registry password travels in (never the command line).
PASSWORD_ENV = "KILN_ZENML_REGISTRY_PASSWORD"

#: ZenML build options kiln has no flag for, and why.
UNSUPPORTED = {
    "shm_size": "kiln's RUN has no --shm-size",
}


def build_option_flags(options: Optional["DockerBuildOptions"]) -> Tuple[List[str], List[str]]:
    """kiln flags for ZenML's ``DockerBuildOptions``, and the options that
    have none (each with the reason)."""
    if options is None:
        return [], []
    data: Dict[str, Any] = options.model_dump(exclude_none=True)
    flags: List[str] = []
    ignored: List[str] = []
    for key, value in data.items():
        if key == "pull":
            if value:
                flags.append("--pull")
        elif key == "no_cache":
            if value:
                flags.append("--no-cache")
        elif key == "rm":
            pass  # kiln never leaves intermediate containers
        elif key == "labels":
            for k, v in value.items():
                flags += ["--label", f"{k}={v}"]
        elif key in ("build_args", "buildargs"):
            for k, v in value.items():
                flags += ["--build-arg", f"{k}={v}"]
        elif key == "platform":
            flags += ["--platform", str(value)]
        elif key == "target":
            flags += ["--target", str(value)]
        elif key == "cache_from":
            # buildx's meaning: caches (kiln's, in a registry) to look in; a
            # reference that is not one is a warning from kiln.
            for ref in [value] if isinstance(value, str) else value:
                flags += ["--cache-from", str(ref)]
        elif key in UNSUPPORTED:
            ignored.append(f"{key} ({UNSUPPORTED[key]})")
        else:
            ignored.append(f"{key} (no kiln flag)")
    return flags, ignored


def _write_archive(build_context: "BuildContext", f: Any) -> None:
    try:
        from zenml.utils.archivable import ArchiveType

        build_context.write_archive(f, archive_type=ArchiveType.TAR_GZ)
    except ImportError:  # ZenML before archive types
        build_context.write_archive(f, use_gzip=True)  # type: ignore[call-arg]


class KilnImageBuilder(BaseImageBuilder):
    """Builds ZenML's images with kiln."""

    @property
    def config(self) -> KilnImageBuilderConfig:
        return cast(KilnImageBuilderConfig, self._config)

    def _global_args(self) -> List[str]:
        return plugins_dir_args(self.config.plugins_dir)

    @property
    def is_building_locally(self) -> bool:
        """What the kiln builder flavor declares (capability ``builds-locally``)."""
        listing = run_json([*self._global_args(), "flavor", "list", "--type", "image-builder"])
        for flavor in listing.get("flavors", []):
            if flavor.get("name") == self.config.builder_flavor:
                return "builds-locally" in flavor.get("capabilities", [])
        return True

    def build(
        self,
        image_name: str,
        build_context: "BuildContext",
        docker_build_options: Optional["DockerBuildOptions"] = None,
        container_registry: Optional["BaseContainerRegistry"] = None,
    ) -> str:
        """Build ``image_name``; with a container registry, push it and
        return ``repo@sha256:...``, else load it into the local Docker
        Engine and return its name."""
        if container_registry and not container_registry.is_valid_image_name_for_registry(image_name):
            raise ValueError(
                f"Container image `{image_name}` does not belong to container "
                f"registry `{container_registry.config.uri}`."
            )
        args = [
            *self._global_args(),
            "build",
            "-",
            "--tag",
            image_name,
            "--builder-flavor",
            self.config.builder_flavor,
            "--builder-config",
            json.dumps(self.config.builder_config),
        ]
        flags, ignored = build_option_flags(docker_build_options)
        if ignored:
            logger.warning("kiln ignores these Docker build options: %s", ", ".join(ignored))
        args += flags
        env: Dict[str, str] = {}
        if container_registry:
            registry_config: Dict[str, Any] = {"uri": container_registry.config.uri}
            credentials = container_registry.credentials
            if credentials:
                registry_config["username"] = credentials[0]
                registry_config["password"] = "${env:%s}" % PASSWORD_ENV
                env[PASSWORD_ENV] = credentials[1]
            args += ["--push", "--registry-config", json.dumps(registry_config)]
        else:
            args.append("--load")
        args += self.config.extra_args
        with tempfile.NamedTemporaryFile(prefix="zenml-kiln-context-", suffix=".tar.gz") as f:
            _write_archive(build_context, f)
            f.flush()
            f.seek(0)
            logger.info("Building image `%s` with kiln (flavor %s).", image_name, self.config.builder_flavor)
            result = run_json(args, stdin=f, env=env, stream_stderr=True)
        if container_registry:
            pushed = result.get("pushed") or result.get("digest")
            if not pushed or "@sha256:" not in pushed:
                raise RuntimeError(f"kiln pushed {image_name} but reported no digest: {result}")
            return str(pushed)
        return image_name
