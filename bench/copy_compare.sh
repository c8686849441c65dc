#!/usr/bin/env bash
# COPY-only builds side by side (issue 16): `FROM scratch` + `COPY . /app`
# over the generated trees, for each size (SIZES, default "small medium
# large"): cold (no cache), unchanged rebuild, and a rebuild after a
# one-file edit, with peak RSS, for
#   kiln's oci builder (release build, writing an OCI archive),
#   `buildah bud` (Debian's buildah; cold without --layers, rebuilds with),
#   DOCKER_BUILDKIT=1 with Debian's docker CLI (/usr/bin/docker: the
#     engine's built-in BuildKit, without buildx),
#   DOCKER_BUILDKIT=0 (the classic builder).
# Prints median wall seconds over RUNS (default 3) and each peer's time as
# a multiple of kiln's. Docker's peak RSS is the CLI's only (the daemon
# does the work); buildah's and kiln's are the whole build's.
# TREES="DIR..." compares on those folders instead (a tree of your own, one
# holding a 2 GB file, ...); the edit appends a line to README.md there, or
# to a kiln-bench-edit.txt it makes and removes.
# Needs root (buildah is installed with apt when missing), a Docker Engine
# (scripts/docker-env.sh) and the tree generator ../shared/bench/gen_tree.py
# (KILN_GEN_TREE overrides). The edited file is restored on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-small medium large}
runs=${RUNS:-3}
gen=${KILN_GEN_TREE:-../shared/bench/gen_tree.py}
scripts/docker-env.sh
command -v buildah >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah >/dev/null
docker_cli=${KILN_BENCH_DOCKER:-/usr/bin/docker}
cargo build --release --locked -q -p kiln -p kiln-oci
work=$(mktemp -d /var/tmp/kiln-bench-copy.XXXXXX)
edited=""
made=""
restore() {
  [ -n "$edited" ] && [ -f "$work/edited.orig" ] && cp -p "$work/edited.orig" "$edited"
  [ -n "$made" ] && rm -f "$made"
  rm -rf "$work"
  buildah rmi -a -f >/dev/null 2>&1 || true
}
trap restore EXIT
kiln="$PWD/target/release/kiln --plugins-dir $PWD/target/release"

. bench/lib.sh

# measure VAR CMD...: median wall seconds into $VAR, the largest peak RSS
# (MiB) into ${VAR}_rss, over RUNS runs; `prep` (a function name in
# $PREP) runs before each.
measure() {
  local var=$1; shift
  local walls=() rss=0
  for _ in $(seq "$runs"); do
    [ -n "${PREP:-}" ] && "$PREP"
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>&1 || { echo "$var: failed: $*" >&2; return 1; }
    read -r wall kb <"$work/time"
    walls+=("$wall")
    [ "$kb" -gt "$rss" ] && rss=$kb
  done
  printf -v "$var" '%s' "$(printf '%s\n' "${walls[@]}" | median)"
  printf -v "${var}_rss" '%s' $((rss / 1024))
}

row() { # row LABEL SECONDS RSS KILN_SECONDS
  printf '  %-44s %8.2f s %6d MiB %8sx\n' "$1" "$2" "$3" \
    "$(awk -v a="$2" -v b="$4" 'BEGIN { printf "%.1f", (b > 0) ? a / b : 0 }')"
}

for size in ${TREES:-$sizes}; do
  if [ -n "${TREES:-}" ]; then
    tree=$(cd "$size" && pwd)
    size=$(basename "$tree")
  else
    tree=$PWD/target/bench-trees/$size
    [ -d "$tree" ] || python3 "$gen" --size "$size" --out "$tree" >/dev/null
  fi
  printf 'FROM scratch\nCOPY . /app\n' >"$tree/Dockerfile.copy"
  edited=$tree/README.md
  if [ ! -f "$edited" ]; then
    edited=$tree/kiln-bench-edit.txt
    made=$edited
    : >"$edited"
  fi
  cp -p "$edited" "$work/edited.orig"
  n=0
  edit() { n=$((n + 1)); printf '\nedit %s %s\n' "$$" "$n" >>"$edited"; }
  export KILN_CACHE_DIR=$work/cache-$size
  k="$kiln build $tree -f $tree/Dockerfile.copy -t bench:copy --output type=oci,dest=$work/out.tar"
  # buildah takes its flags before the context.
  b="buildah bud -q -f $tree/Dockerfile.copy -t bench:copy"
  bk="env DOCKER_BUILDKIT=1 $docker_cli build -q -f $tree/Dockerfile.copy -t bench:copy-bk $tree"
  classic="env DOCKER_BUILDKIT=0 $docker_cli build -q -f $tree/Dockerfile.copy -t bench:copy-classic $tree"

  echo "== $size: $(du -sh "$tree" | cut -f1) tree; seconds (median of $runs), peak RSS, x kiln"
  PREP=""
  measure kc $k --no-cache
  $k >/dev/null 2>&1
  measure ku $k
  PREP=edit measure ke $k
  PREP=""
  measure bc $b --no-cache "$tree"
  $b --layers "$tree" >/dev/null 2>&1
  measure bu $b --layers "$tree"
  PREP=edit measure be $b --layers "$tree"
  PREP=""
  measure kbc $bk --no-cache
  $bk >/dev/null 2>&1
  measure kbu $bk
  PREP=edit measure kbe $bk
  PREP=""
  measure cc $classic --no-cache
  $classic >/dev/null 2>&1
  measure cu $classic
  PREP=edit measure ce $classic
  cp -p "$work/edited.orig" "$edited"
  if [ -n "$made" ]; then
    rm -f "$made"
    made=""
    edited=""
  fi
  [ -n "${TREES:-}" ] && rm -f "$tree/Dockerfile.copy"

  for what in cold unchanged edit; do
    case $what in
      cold) set -- "$kc" "$kc_rss" "$bc" "$bc_rss" "$kbc" "$kbc_rss" "$cc" "$cc_rss" ;;
      unchanged) set -- "$ku" "$ku_rss" "$bu" "$bu_rss" "$kbu" "$kbu_rss" "$cu" "$cu_rss" ;;
      edit) set -- "$ke" "$ke_rss" "$be" "$be_rss" "$kbe" "$kbe_rss" "$ce" "$ce_rss" ;;
    esac
    echo " $what:"
    row "kiln oci" "$1" "$2" "$1"
    row "buildah bud$([ $what = cold ] || echo ' --layers')" "$3" "$4" "$1"
    row "DOCKER_BUILDKIT=1 docker build" "$5" "$6" "$1"
    row "DOCKER_BUILDKIT=0 docker build" "$7" "$8" "$1"
  done
  rm -rf "$KILN_CACHE_DIR"
  buildah rmi -a -f >/dev/null 2>&1 || true
  docker rmi -f bench:copy-bk bench:copy-classic >/dev/null 2>&1 || true
done
