#!/usr/bin/env bash
# Run every test: unit, integration (real plugin libraries, the real Docker
# CLI as the build-context oracle) and end to end against a real Docker
# Engine, which this script installs and starts when needed
# (scripts/docker-env.sh). Under CI=true a daemon that cannot be started
# fails the run; elsewhere the daemon tests then say they did not run. Then
# the Python package's tests (scripts/python-test.sh: ZenML, Flyte, pip).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! scripts/docker-env.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: the Docker Engine the tests need is not available (CI=true)" >&2
    exit 1
  fi
  echo "test.sh: no Docker Engine: the daemon tests will not run" >&2
fi
cargo test --workspace --locked "$@"
# The Python package (pip, ZenML, Flyte): its own venv, wheel and pytest.
scripts/python-test.sh
