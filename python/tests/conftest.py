"""Fixtures for the kiln-build tests: real parts only. A registry (Debian's
docker-registry on 127.0.0.1), the Docker Engine, runc, and a Debian +
Python base image built by kiln itself from the debootstrap rootfs that
scripts/docker-env.sh keeps in /var/cache/kiln-test/debian. Under CI=true a
missing part fails the run; elsewhere the tests that need it are skipped,
saying why."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln_build import kiln_executable

IN_CI = os.environ.get("CI") == "true"
DEBIAN = Path(os.environ.get("KILN_TEST_DEBIAN", "/var/cache/kiln-test/debian"))
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def need(condition: bool, what: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} (CI=true: scripts/test.sh installs it)")
    pytest.skip(what)


def docker_answers() -> bool:
    docker = shutil.which("docker")
    if not docker:
        return False
    return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0


def kiln(*args: str, stdin=None, env=None, check=True) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.update(env or {})
    done = subprocess.run(
        [kiln_executable(), *args], stdin=stdin, capture_output=True, text=True, env=full
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kiln {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """`127.0.0.1:PORT` of a fresh registry, for the whole session."""
    need(shutil.which("docker-registry") is not None, "no docker-registry (Debian package)")
    root = tmp_path_factory.mktemp("registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                pytest.fail("the registry did not start")
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def python_base(registry, tmp_path_factory):
    """A Debian + Python image in the registry, built by kiln from the
    debootstrap rootfs (no pull from anywhere): what a ZenML or Flyte user's
    `python:3.11` base would be. It trusts this machine's CA bundle, which
    HTTPS to PyPI from inside a container needs here."""
    need(DEBIAN.joinpath("Dockerfile").is_file(), f"no Debian base at {DEBIAN}")
    need(shutil.which("runc") is not None, "no runc")
    need(docker_answers(), "no Docker Engine answers")
    work = tmp_path_factory.mktemp("base")
    debian = work / "debian.tar"
    kiln("build", str(DEBIAN), "-t", "kiln-test-debian:bookworm", "-o", f"type=oci,dest={debian}")
    app = work / "python"
    app.mkdir()
    ca_step = ""
    if HOST_CA.is_file():
        shutil.copy(HOST_CA, app / "host-ca.crt")
        ca_step = "COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt\n"
    (app / "Dockerfile").write_text(
        "FROM debian\n"
        "ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip "
        "ca-certificates && rm -rf /var/lib/apt/lists/* && ln -s /usr/bin/python3 /usr/local/bin/python\n"
        f"{ca_step}"
        # A Python image's pip is its own, as in the official python images
        # (Debian marks its system Python as externally managed).
        "ENV PIP_BREAK_SYSTEM_PACKAGES=1 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "
        "UV_NATIVE_TLS=1\n"
        'CMD ["python3"]\n'
    )
    tag = f"{registry}/library/python:3.11-kiln"
    kiln(
        "build",
        str(app),
        "-t",
        tag,
        "--build-context",
        f"debian=oci-layout://{debian}",
        "--push",
    )
    return tag


@pytest.fixture(scope="session")
def uv_image(registry, tmp_path_factory):
    """Astral's uv image (`ghcr.io/astral-sh/uv`, which Flyte's Dockerfiles
    copy uv from), remade from the uv wheel on PyPI into the local registry:
    ghcr.io is out of reach here."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    need(uv is not None, "no uv (pip install uv)")
    app = tmp_path_factory.mktemp("uv")
    shutil.copy(uv, app / "uv")
    (app / "Dockerfile").write_text("FROM scratch\nCOPY uv /uv\n")
    tag = f"{registry}/astral-sh/uv:mirror"
    kiln("build", str(app), "-t", tag, "--push")
    return tag
