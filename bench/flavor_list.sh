#!/usr/bin/env bash
# Benchmark: `kiln flavor list` over a folder of 100 plugin files.
#
# Builds the release binary and the example plugin, copies the plugin 100
# times into a temp folder (every copy is a distinct file, so each is opened
# with dlopen and checked; 99 of them report a duplicate flavor), then times
# the listing. Uses hyperfine when installed (apt-get install hyperfine),
# else a plain loop. Target: under 100 ms wall.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
RUNS=${RUNS:-20}
cargo build --release --quiet -p kiln -p kiln-echo
ext=so; [ "$(uname)" = Darwin ] && ext=dylib
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for i in $(seq -w 1 "$N"); do cp "target/release/libkiln_echo.$ext" "$dir/libplugin_$i.$ext"; done
kiln=target/release/kiln
count=$("$kiln" flavor list --json --plugins-dir "$dir" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(len(v["flavors"]), len(v["problems"]))')
echo "plugins: $N files -> flavors, problems: $count"
if command -v hyperfine >/dev/null; then
  hyperfine --warmup 3 --runs "$RUNS" -N "$kiln flavor list --plugins-dir $dir" \
    "$kiln flavor list --plugins-dir $dir.empty"
else
  for label in "$N plugins:$dir" "no plugins:$dir.empty"; do
    d=${label#*:}
    "$kiln" flavor list --plugins-dir "$d" >/dev/null 2>&1 || true
    t0=$(date +%s%N)
    for _ in $(seq "$RUNS"); do "$kiln" flavor list --plugins-dir "$d" >/dev/null 2>&1 || true; done
    t1=$(date +%s%N)
    echo "${label%%:*}: mean $(( (t1 - t0) / RUNS / 1000 )) us over $RUNS runs"
  done
fi
