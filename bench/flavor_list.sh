#!/usr/bin/env bash
# Benchmark: `kiln flavor list` over a folder of N (default 100) plugin
# files, cold (an empty cache: every file opened with dlopen and checked,
# its descriptors then cached) and warm (the descriptor cache: no library
# opened), with peak memory. Every copy of the example plugin is a distinct
# file, so 99 of them report a duplicate flavor. Uses hyperfine when
# installed, else a plain loop. Targets: warm under 10 ms and 20 MiB; cold
# under 82 ms (the figure before the cache).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
RUNS=${RUNS:-20}
cargo build --release --quiet -p kiln -p kiln-echo
ext=so; [ "$(uname)" = Darwin ] && ext=dylib
dir=$(mktemp -d)
cache=$(mktemp -d)
trap 'rm -rf "$dir" "$cache"' EXIT
for i in $(seq -w 1 "$N"); do cp "target/release/libkiln_echo.$ext" "$dir/libplugin_$i.$ext"; done
kiln=target/release/kiln
export KILN_CACHE_DIR=$cache
# Files changed within 2 s are not cached (racily clean): let the copies age.
sleep 2.1
count=$("$kiln" flavor list --json --plugins-dir "$dir" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(len(v["flavors"]), len(v["problems"]))')
echo "plugins: $N files -> flavors, problems: $count"
cold() { rm -rf "$cache"/plugins; "$kiln" flavor list --plugins-dir "$dir" >/dev/null 2>&1 || true; }
warm() { "$kiln" flavor list --plugins-dir "$dir" >/dev/null 2>&1 || true; }
ms() { # ms CMD...: mean milliseconds over RUNS
  local t0 t1
  t0=$(date +%s%N)
  for _ in $(seq "$RUNS"); do "$@"; done
  t1=$(date +%s%N)
  echo "$(( (t1 - t0) / RUNS / 1000 )) us"
}
echo "cold (no descriptor cache): mean $(ms cold)"
"$kiln" flavor list --plugins-dir "$dir" >/dev/null 2>&1 || true
if command -v hyperfine >/dev/null; then
  hyperfine --warmup 3 --runs "$RUNS" -N "$kiln flavor list --plugins-dir $dir"
else
  echo "warm: mean $(ms warm)"
fi
/usr/bin/time -f 'warm peak RSS: %M KiB' "$kiln" flavor list --plugins-dir "$dir" >/dev/null 2>"$cache/time" || true
tail -1 "$cache/time"
rm -rf "$cache"/plugins
/usr/bin/time -f 'cold peak RSS: %M KiB' "$kiln" flavor list --plugins-dir "$dir" >/dev/null 2>"$cache/time" || true
tail -1 "$cache/time"
