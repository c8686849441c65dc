#!/usr/bin/env bash
# kiln's main job on a fresh machine: make sure a Docker Engine runs
# (scripts/docker-env.sh), build kiln and its plugins, build the example
# image in examples/hello through kiln, and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/docker-env.sh
cargo build --release --locked
./target/release/kiln --plugins-dir target/release build examples/hello -t kiln-example:latest
docker run --rm kiln-example:latest
