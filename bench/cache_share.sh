#!/usr/bin/env bash
# A cache machines share through a registry (issue 16, --cache-to /
# --cache-from type=registry): a Dockerfile with COPY of the generated tree
# (SIZE, default medium) and RUN steps that do real work (a gzip'd tar of
# the tree, a checksum of every file), on a busybox base made without a
# daemon or pull. Each machine is an empty cache folder; the registry is
# Debian's docker-registry on 127.0.0.1. Prints, median of RUNS (default 3):
#   machine one, cold, exporting (--cache-to ...,mode=max);
#   machine two, empty cache folder, --cache-from: no RUN executed;
#   machine two after a fresh checkout (every file's mtime changed):
#     COPY layers made again, RUN steps still from the cache;
#   machine two without --cache-from (cold, for the ratio);
# with peak RSS and each time as a fraction of cold.
# Needs runc and docker-registry (scripts/docker-env.sh) and the tree
# generator ../shared/bench/gen_tree.py (KILN_GEN_TREE overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-medium}
runs=${RUNS:-3}
gen=${KILN_GEN_TREE:-../shared/bench/gen_tree.py}
cargo build --release --locked -q -p kiln -p kiln-oci
work=$(mktemp -d /var/tmp/kiln-bench-share.XXXXXX)
registry_pid=""
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
kiln="$PWD/target/release/kiln --plugins-dir $PWD/target/release"
tree=$PWD/target/bench-trees/$size
[ -d "$tree" ] || python3 "$gen" --size "$size" --out "$tree" >/dev/null
ctx=$work/ctx
cp -a "$tree" "$ctx"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$work/registry" "$port" >"$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
cache=127.0.0.1:$port/bench/cache:main

mkdir -p "$work/base"
cp /bin/busybox "$work/base/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' \
  >"$work/base/Dockerfile"
KILN_CACHE_DIR=$work/base-cache $kiln build "$work/base" -t bench-base:1 \
  --output "type=oci,dest=$work/base.tar" >/dev/null 2>&1
cat >"$ctx/Dockerfile.share" <<'EOF'
FROM base
COPY . /app
RUN mkdir -p /out && tar -C /app -cf - . | gzip -6 > /out/app.tar.gz
RUN find /app -type f -exec md5sum {} + > /out/sums
EOF

. bench/lib.sh
build() { # build CACHE_DIR ARGS...
  local dir=$1; shift
  KILN_CACHE_DIR=$dir $kiln build "$ctx" -f "$ctx/Dockerfile.share" -t bench:share \
    --build-context "base=oci-layout://$work/base.tar" \
    --output "type=oci,dest=$work/out.tar" "$@"
}
export -f build
export kiln ctx work
# measure VAR PREP ARGS...: a fresh cache folder each run; PREP runs first.
measure() {
  local var=$1 prep=$2; shift 2
  local walls=() rss=0
  for _ in $(seq "$runs"); do
    rm -rf "$work/m"
    "$prep"
    /usr/bin/time -f '%e %M' -o "$work/time" bash -c 'build "$@"' _ "$work/m" "$@" \
      >"$work/log" 2>&1 || { cat "$work/log" >&2; echo "$var: failed" >&2; return 1; }
    read -r wall kb <"$work/time"
    walls+=("$wall")
    [ "$kb" -gt "$rss" ] && rss=$kb
  done
  printf -v "$var" '%s' "$(printf '%s\n' "${walls[@]}" | median)"
  printf -v "${var}_rss" '%s' $((rss / 1024))
}
nothing() { :; }
retouch() { find "$ctx" -type f -exec touch {} +; }

measure one nothing --cache-to "type=registry,ref=$cache,mode=max"
measure two nothing --cache-from "$cache"
grep -c '(cached)' "$work/log" | xargs -I{} echo "(machine two: {} RUN steps from the cache)"
measure fresh retouch --cache-from "$cache"
measure cold nothing
row() { printf '  %-58s %7.2f s %6d MiB %7s\n' "$1" "$2" "$3" \
  "$(awk -v a="$2" -v b="$cold" 'BEGIN { printf "%.1fx", (a > 0) ? b / a : 0 }')"; }
echo "== $size tree: COPY . /app + 2 RUN steps; speed-up against cold"
row "machine one: cold, --cache-to mode=max" "$one" "$one_rss"
row "machine two: empty cache folder, --cache-from" "$two" "$two_rss"
row "machine two: fresh checkout (new mtimes), --cache-from" "$fresh" "$fresh_rss"
row "machine two: empty cache folder, no --cache-from (cold)" "$cold" "$cold_rss"
