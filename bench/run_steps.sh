#!/usr/bin/env bash
# RUN without a daemon (issue 13), side by side: kiln's oci builder (release
# build, runc), `buildah bud` (Debian's buildah, its default runtime and
# storage) and `DOCKER_BUILDKIT=0 docker build`, on the same busybox base
# (made without a daemon or pull) and Dockerfiles:
#   copy+run: COPY of the generated medium tree, then three RUN steps;
#   run-true: eight `RUN true` steps, against the same file without them,
#             for the cost of one RUN step;
#   debian:   three RUN steps (no network) on the Debian base the test
#             script makes with debootstrap (206 MB, 6.8k files), when it
#             is there (KILN_TEST_DEBIAN, default /var/cache/kiln-test/debian).
# Each cold (no cache) and unchanged (cached; buildah with --layers). Prints
# wall seconds (median of RUNS) and peak RSS (MiB) per tool and case.
# Needs runc, buildah, a Docker Engine (scripts/docker-env.sh) and the tree
# generator ../shared/bench/gen_tree.py (KILN_GEN_TREE overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-medium}
runs=${RUNS:-3}
gen=${KILN_GEN_TREE:-../shared/bench/gen_tree.py}
cargo build --release --locked -q -p kiln -p kiln-oci
work=$(mktemp -d /var/tmp/kiln-bench-run.XXXXXX)
trap 'rm -rf "$work"; buildah rmi -a -f >/dev/null 2>&1 || true' EXIT
export KILN_CACHE_DIR=$work/cache
kiln="$PWD/target/release/kiln --plugins-dir $PWD/target/release"
tree=$PWD/target/bench-trees/$size
[ -d "$tree" ] || python3 "$gen" --size "$size" --out "$tree" >/dev/null

# The base: busybox, made by kiln, as an OCI archive (kiln, buildah) and in
# the Docker Engine.
mkdir -p "$work/base"
cp /bin/busybox "$work/base/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' \
  >"$work/base/Dockerfile"
$kiln build "$work/base" -t bench-base:1 --output "type=docker,dest=$work/base.tar" >/dev/null 2>&1
docker load -i "$work/base.tar" >/dev/null

steps='RUN mkdir -p /out && find /app -type f | wc -l > /out/count
RUN sha256sum /app/* 2>/dev/null | head -c 0; du -s /app > /out/du
RUN rm -rf /app/$(ls /app | head -1) && echo done > /out/done'
printf 'FROM base\nCOPY . /app\n%s\n' "$steps" >"$tree/Dockerfile.run"
mkdir -p "$work/t"
printf 'FROM base\nRUN true\nRUN true\nRUN true\nRUN true\nRUN true\nRUN true\nRUN true\nRUN true\n' >"$work/t/Dockerfile.true"
printf 'FROM base\n' >"$work/t/Dockerfile.none"
cases="run true none"
debian=${KILN_TEST_DEBIAN:-/var/cache/kiln-test/debian}
if [ -f "$debian/Dockerfile" ]; then
  $kiln build "$debian" -t bench-debian:1 --output "type=docker,dest=$work/debian.tar" >/dev/null 2>&1
  docker load -i "$work/debian.tar" >/dev/null
  mkdir -p "$work/d"
  printf 'FROM base\nRUN true\nRUN echo made > /made && chmod 700 /made\nRUN rm -rf /usr/share/doc /usr/share/locale\n' >"$work/d/Dockerfile.debian"
  cases="$cases debian"
fi

. bench/lib.sh

# measure NAME CMD...: median wall seconds and the largest peak RSS over RUNS runs.
measure() {
  local name=$1; shift
  local walls=() rss=0
  for _ in $(seq "$runs"); do
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>&1 || { echo "$name: failed" >&2; return 1; }
    read -r wall kb <"$work/time"
    walls+=("$wall")
    [ "$kb" -gt "$rss" ] && rss=$kb
  done
  printf '%-48s %8.2f s %8d MiB\n' "$name" "$(printf '%s\n' "${walls[@]}" | median)" $((rss / 1024))
}

for case in $cases; do
  base=$work/base.tar docker_base=bench-base:1
  case $case in
    run) ctx=$tree; file=$tree/Dockerfile.run ;;
    true) ctx=$work/t; file=$work/t/Dockerfile.true ;;
    none) ctx=$work/t; file=$work/t/Dockerfile.none ;;
    debian) ctx=$work/d; file=$work/d/Dockerfile.debian base=$work/debian.tar docker_base=bench-debian:1 ;;
  esac
  sed "s#^FROM base#FROM $docker_base#" "$file" >"$file.docker"
  sed "s#^FROM base#FROM oci-archive:$base#" "$file" >"$file.buildah"
  k="$kiln build $ctx -f $file -t bench:$case --build-context base=oci-layout://$base --output type=oci,dest=$work/out.tar"
  echo "== $case ($(basename "$file"))"
  measure "kiln oci, cold (--no-cache)" $k --no-cache
  $k >/dev/null 2>&1
  measure "kiln oci, unchanged" $k
  measure "buildah bud, cold (--no-cache)" buildah bud -q --runtime "$(command -v runc)" --no-cache -f "$file.buildah" -t bench:$case "$ctx"
  buildah bud -q --runtime "$(command -v runc)" --layers -f "$file.buildah" -t bench:$case "$ctx" >/dev/null 2>&1
  measure "buildah bud --layers, unchanged" buildah bud -q --runtime "$(command -v runc)" --layers -f "$file.buildah" -t bench:$case "$ctx"
  measure "DOCKER_BUILDKIT=0 docker build, cold" env DOCKER_BUILDKIT=0 docker build -q --no-cache -f "$file.docker" -t bench:$case "$ctx"
  env DOCKER_BUILDKIT=0 docker build -q -f "$file.docker" -t bench:$case "$ctx" >/dev/null 2>&1
  measure "DOCKER_BUILDKIT=0 docker build, unchanged" env DOCKER_BUILDKIT=0 docker build -q -f "$file.docker" -t bench:$case "$ctx"
done
echo "(one RUN step costs (run-true cold - none cold) / 8)"
