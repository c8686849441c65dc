#!/usr/bin/env bash
# Worker overhead per build (issue 12): a real build's execute step runs in
# a worker process (`kiln __worker`). This times, with the release build and
# the `echo` builder (which does no work), the worker from spawn to exit and
# the plan's execution inside it; the difference is what isolation costs.
# Prints one line per run and the median overhead in milliseconds.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
cargo build --release --locked -q -p kiln -p kiln-echo
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/plugins" "$work/ctx"
cp target/release/libkiln_echo.* "$work/plugins/"
printf 'FROM scratch\nCOPY a /a\n' > "$work/ctx/Dockerfile"
echo hello > "$work/ctx/a"
for _ in $(seq 1 "$runs"); do
  KILN_LOG=kiln=debug NO_COLOR=1 ./target/release/kiln --plugins-dir "$work/plugins" \
    build "$work/ctx" -t bench:1 --builder-flavor echo 2>&1 |
    sed 's/\x1b\[[0-9;]*m//g' | grep 'worker:' | grep -o 'ms=[0-9.]*' | cut -d= -f2 | tr '\n' ' '
  echo
done | awk '{ d = $2 - $1; print "spawn-to-exit " $2 " ms, execute " $1 " ms, overhead " d " ms" }' |
  tee "$work/runs.txt"
sort -n -k8 "$work/runs.txt" | awk '{ o[NR] = $8 } END { printf "median overhead over %d runs: %.1f ms\n", NR, (NR % 2) ? o[(NR + 1) / 2] : (o[NR / 2] + o[NR / 2 + 1]) / 2 }'
