"""PEP 517 backend for the kiln-build wheel: maturin's, after the plugins.

maturin builds the `kiln` binary (`bindings = "bin"`). kiln finds plugins
installed beside its own binary, in `<prefix>/lib/kiln/plugins`, so the wheel
carries the shipped plugins as wheel data (`data/lib/kiln/plugins`), which
pip installs under the environment's prefix. This backend builds them with
cargo (release, locked), strips them and lays them out before handing over
to maturin; everything else is maturin's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import maturin
from maturin import (  # noqa: F401  (the rest of the PEP 517 interface)
    build_sdist,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
)

# The plugins a kiln installation ships (the `echo` plugin is a test fixture).
SHIPPED = ("kiln-oci", "kiln-registry", "kiln-docker")

HERE = Path(__file__).resolve().parent.parent  # python/
WORKSPACE = HERE.parent


def _target_dir() -> Path:
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"],
        cwd=WORKSPACE,
        check=True,
        stdout=subprocess.PIPE,
    )
    import json

    return Path(json.loads(meta.stdout)["target_directory"])


def _stage_plugins() -> None:
    args = ["cargo", "build", "--release", "--locked"]
    for package in SHIPPED:
        args += ["-p", package]
    print("kiln-build: building the shipped plugins:", " ".join(args), file=sys.stderr)
    subprocess.run(args, cwd=WORKSPACE, check=True)
    release = _target_dir() / "release"
    dest = _data_dir() / "data" / "lib" / "kiln" / "plugins"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    suffix = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
    prefix = "" if sys.platform == "win32" else "lib"
    strip = shutil.which("strip")
    for package in SHIPPED:
        name = f"{prefix}{package.replace('-', '_')}{suffix}"
        built = release / name
        if not built.is_file():
            raise RuntimeError(f"kiln-build: cargo did not produce {built}")
        shutil.copy2(built, dest / name)
        if strip and sys.platform.startswith("linux"):
            subprocess.run([strip, "--strip-unneeded", str(dest / name)], check=True)


def _data_dir() -> Path:
    return HERE / "build" / "wheel-data"


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    # maturin checks that the data folder exists even for the metadata.
    _data_dir().mkdir(parents=True, exist_ok=True)
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _stage_plugins()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _stage_plugins()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)

