#!/usr/bin/env bash
# Skipped-build benchmark (issue 5): unchanged context, image present in the
# registry. `kiln build --registry` (hashing the context, then one manifest
# HEAD) against a fully cached `DOCKER_BUILDKIT=0 docker build` of the same
# tree. Starts its own docker-registry on 127.0.0.1; needs a Docker Engine
# (scripts/docker-env.sh), hyperfine and ../shared/bench/gen_tree.py.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-medium}
gen=${KILN_GEN_TREE:-../shared/bench/gen_tree.py}
scripts/docker-env.sh
cargo build --release --locked -p kiln -p kiln-docker -p kiln-registry >/dev/null
tree=$PWD/target/bench-trees/$size
[ -d "$tree" ] || python3 "$gen" --size "$size" --out "$tree" >/dev/null
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/data}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
trap 'kill $registry_pid; rm -rf "$work"' EXIT
sleep 1
kiln="$PWD/target/release/kiln --plugins-dir $PWD/target/release --project $work"
$kiln init >/dev/null
$kiln component register reg --type container-registry --flavor default --set uri=127.0.0.1:$port/bench >/dev/null
image=127.0.0.1:$port/bench/$size:v1
$kiln build "$tree" -t "$image" --registry reg >/dev/null 2>&1
DOCKER_BUILDKIT=0 docker build -q -t kiln-bench:docker "$tree" >/dev/null 2>&1
hyperfine --warmup 1 --runs "${RUNS:-5}" \
  -n "kiln build --registry (skipped)" "$kiln build $tree -t $image --registry reg" \
  -n "DOCKER_BUILDKIT=0 docker build (cached)" "DOCKER_BUILDKIT=0 docker build -q -t kiln-bench:docker $tree"
