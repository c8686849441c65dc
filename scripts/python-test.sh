#!/usr/bin/env bash
# The Python package's tests (python/tests): a venv with zenml[local] and
# flyte from PyPI and kiln-build installed from this checkout with one pip
# command (its wheel holds the release kiln binary and the shipped plugins),
# then pytest against the real Docker Engine, runc and a registry on
# 127.0.0.1 that the tests start (scripts/docker-env.sh installs them all).
# The venv is kept in target/pyenv (KILN_PYENV) between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${KILN_PYENV:-$PWD/target/pyenv}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
echo "python-test: installing zenml[local], flyte, pytest and uv into $venv" >&2
"${pip[@]}" install "zenml[local]>=0.98,<0.99" "flyte>=2.12,<2.13" "pytest>=8" "uv>=0.5"
echo "python-test: pip install ./python (builds the kiln wheel)" >&2
start=$(date +%s)
# The venv's bin first, so the build backend finds maturin and kiln finds itself.
PATH="$venv/bin:$PATH" "${pip[@]}" install --force-reinstall --no-deps ./python
echo "python-test: the wheel took $(( $(date +%s) - start ))s" >&2
# The installed kiln must find its own plugins, with no variable set.
env -u KILN_PLUGINS_DIR "$venv/bin/kiln" plugin dirs
cd python
env -u KILN_PLUGINS_DIR PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
