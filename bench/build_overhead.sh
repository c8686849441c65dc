#!/usr/bin/env bash
# `kiln build` overhead (issue 4): a cached, trivial Dockerfile over the
# generated medium tree, side by side with `DOCKER_BUILDKIT=0 docker build`
# of the same, and `kiln build --dry-run`. Needs a running Docker Engine
# (scripts/docker-env.sh), hyperfine, and ../shared/bench/gen_tree.py
# (override with KILN_GEN_TREE). Trees are cached in target/bench-trees.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-medium}
gen=${KILN_GEN_TREE:-../shared/bench/gen_tree.py}
scripts/docker-env.sh
cargo build --release --locked -p kiln -p kiln-docker >/dev/null
kiln="$PWD/target/release/kiln --plugins-dir $PWD/target/release"
tree=$PWD/target/bench-trees/$size
[ -d "$tree" ] || python3 "$gen" --size "$size" --out "$tree" >/dev/null
# Warm the daemon's cache for both.
$kiln build "$tree" -t kiln-bench:kiln >/dev/null 2>&1
DOCKER_BUILDKIT=0 docker build -q -t kiln-bench:docker "$tree" >/dev/null 2>&1
hyperfine --warmup 1 --runs "${RUNS:-5}" \
  -n "kiln build (cached)" "$kiln build $tree -t kiln-bench:kiln" \
  -n "DOCKER_BUILDKIT=0 docker build (cached)" "DOCKER_BUILDKIT=0 docker build -q -t kiln-bench:docker $tree" \
  -n "kiln build --dry-run" "$kiln build $tree -t kiln-bench:kiln --dry-run"
