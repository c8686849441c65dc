#!/usr/bin/env bash
# The daemonless builder (issue 6): a COPY-only Dockerfile (`FROM scratch`,
# `COPY . /app`) over the generated medium tree, `kiln build` with flavor
# oci writing an archive, side by side with `DOCKER_BUILDKIT=0 docker
# build` of the same Dockerfile; each without its cache (every layer made
# and compressed again) and with it (kiln: an unchanged context reuses the
# layer blobs). Needs a running Docker Engine (scripts/docker-env.sh),
# hyperfine, and ../shared/bench/gen_tree.py (override with
# KILN_GEN_TREE). Trees are cached in target/bench-trees.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-medium}
gen=${KILN_GEN_TREE:-../shared/bench/gen_tree.py}
scripts/docker-env.sh
cargo build --release --locked -p kiln -p kiln-oci >/dev/null
tree=$PWD/target/bench-trees/$size
[ -d "$tree" ] || python3 "$gen" --size "$size" --out "$tree" >/dev/null
printf 'FROM scratch\nCOPY . /app\n' >"$tree/Dockerfile.copy"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export KILN_CACHE_DIR=$out/cache
kiln="$PWD/target/release/kiln --plugins-dir $PWD/target/release build $tree -f $tree/Dockerfile.copy -t kiln-bench:oci --output type=oci,dest=$out/image.tar"
docker_build="env DOCKER_BUILDKIT=0 docker build -q -f $tree/Dockerfile.copy -t kiln-bench:docker $tree"
# Warm both caches (and the page cache).
$kiln >/dev/null 2>&1
$docker_build >/dev/null 2>&1
hyperfine --warmup 1 --runs "${RUNS:-5}" \
  -n "kiln build, oci, --no-cache" "$kiln --no-cache" \
  -n "DOCKER_BUILDKIT=0 docker build --no-cache" "$docker_build --no-cache" \
  -n "kiln build, oci, unchanged context (rebuild)" "$kiln" \
  -n "DOCKER_BUILDKIT=0 docker build (cached)" "$docker_build"
ls -l "$out/image.tar"
/usr/bin/time -v $kiln 2>&1 | grep -E "Maximum resident|Elapsed" || true
/usr/bin/time -v $kiln --no-cache 2>&1 | grep -E "Maximum resident|Elapsed" || true
