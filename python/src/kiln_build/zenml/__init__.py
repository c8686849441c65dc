"""The ZenML image-builder flavor ``kiln``.

Register it with ``zenml image-builder flavor register
kiln_build.zenml.KilnImageBuilderFlavor``, then ``zenml image-builder
register kiln --flavor=kiln [--builder_flavor=oci]``.

As ZenML requires, this module imports without the implementation
(:mod:`kiln_build.zenml.image_builder`), which is loaded only when a build
runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Type

from pydantic import Field, model_validator

from zenml.image_builders import BaseImageBuilderConfig, BaseImageBuilderFlavor

if TYPE_CHECKING:
    from kiln_build.zenml.image_builder import KilnImageBuilder

KILN_IMAGE_BUILDER_FLAVOR = "kiln"


class KilnImageBuilderConfig(BaseImageBuilderConfig):
    """Which kiln builder flavor builds the images, and its config.

    The config is validated by kiln itself (``kiln flavor validate``) against
    the flavor's JSON schema when the component is registered or loaded.
    """

    builder_flavor: str = Field(
        default="oci",
        description="The kiln image-builder flavor: `oci` (daemonless, the default) "
        "or `local` (a Docker Engine), or one a kiln plugin adds.",
    )
    builder_config: Dict[str, Any] = Field(
        default_factory=dict,
        description="The kiln builder flavor's config, a JSON object its schema accepts "
        "(`kiln flavor show FLAVOR`).",
    )
    plugins_dir: Optional[str] = Field(
        default=None,
        description="A folder kiln searches for plugins before its own.",
    )
    extra_args: List[str] = Field(
        default_factory=list,
        description="More `kiln build` flags, passed as given (e.g. `--secret`).",
    )

    @model_validator(mode="after")
    def _kiln_validates(self) -> "KilnImageBuilderConfig":
        from kiln_build._cli import validate_builder_config

        validate_builder_config(self.builder_flavor, self.builder_config, self.plugins_dir)
        return self


class KilnImageBuilderFlavor(BaseImageBuilderFlavor):
    """kiln's image builder, in a ZenML stack."""

    @property
    def name(self) -> str:
        return KILN_IMAGE_BUILDER_FLAVOR

    @property
    def docs_url(self) -> Optional[str]:
        return None

    @property
    def sdk_docs_url(self) -> Optional[str]:
        return None

    @property
    def logo_url(self) -> str:
        return "https://public-flavor-logos.s3.eu-central-1.amazonaws.com/image_builder/local.svg"

    @property
    def config_class(self) -> Type[KilnImageBuilderConfig]:
        return KilnImageBuilderConfig

    @property
    def implementation_class(self) -> Type["KilnImageBuilder"]:
        from kiln_build.zenml.image_builder import KilnImageBuilder

        return KilnImageBuilder
