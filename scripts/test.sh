#!/usr/bin/env bash
# kiln's test command (the README names it; .ci/run calls it).
#
# Runs every test in the workspace: unit tests, the integration tests (which
# build the fixture plugins themselves) and the doc tests. Later parts of
# kiln that need a Docker Engine or a registry install and start them here.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
