#!/usr/bin/env bash
# Build-context benchmark (issue 3): kiln context pack/ls against what ZenML
# runs (docker-py), tar | pigz | sha1sum, and GNU tar, side by side in one
# hyperfine run on the generated trees, warm cache; then peak memory.
#
#   bench/context_pack.sh [medium|large|small]...     (default: medium large)
#
# Needs: python3 with docker-py (Debian: python3-docker), pigz, hyperfine,
# GNU time (/usr/bin/time). Trees come from ../shared/bench/gen_tree.py
# (override with KILN_GEN_TREE) and are cached in target/bench-trees.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(medium large)
gen=${KILN_GEN_TREE:-../shared/bench/gen_tree.py}
[ -f "$gen" ] || { echo "tree generator not found at $gen (set KILN_GEN_TREE)" >&2; exit 2; }
for tool in hyperfine pigz /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install hyperfine pigz time)" >&2; exit 2; }
done
python3 -c 'import docker' 2>/dev/null || { echo "missing docker-py (apt-get install python3-docker)" >&2; exit 2; }

cargo build --release --locked -p kiln >/dev/null
kiln=$PWD/target/release/kiln
trees=$PWD/target/bench-trees
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir -p "$trees"

# GNU tar excludes with the same effect as the generated .dockerignore
# (tar cannot re-include, so the two exceptions are spelled as narrower excludes).
excludes=(--exclude=./.git --exclude=./.gitignore --exclude=node_modules --exclude=./.venv
  --exclude=__pycache__ --exclude='*.pyc' --exclude='./*.egg-info' --exclude=./.pytest_cache
  --exclude=./build --exclude=./dist --exclude=./docs/_build --exclude='./data/raw/dump-*'
  --exclude='./logs/app-*.log')

for size in "${sizes[@]}"; do
  tree=$trees/$size
  [ -d "$tree" ] || python3 "$gen" --size "$size" --out "$tree" >/dev/null
  cd "$tree"
  echo "== $size tree: $(find . -type f | wc -l) files; kiln sends $("$kiln" context ls . | wc -l) files," \
       "GNU tar with the excludes $(tar -cf - "${excludes[@]}" . | tar -tf - | grep -vc '/$') files"
  hyperfine --warmup 1 --runs "${RUNS:-5}" --export-markdown "$out/$size.md" \
    -n "kiln context pack --gzip" "$kiln context pack . -o $out/k.tgz --gzip" \
    -n "docker-py exclude_paths+create_archive(gzip)+sha1" "python3 $OLDPWD/bench/docker_py_context.py ." \
    -n "tar | pigz | sha1sum" "tar -cf - ${excludes[*]} . | pigz | sha1sum" \
    -n "kiln context pack (tar)" "$kiln context pack . -o $out/k.tar" \
    -n "tar -cf" "tar -cf $out/t.tar ${excludes[*]} ." \
    -n "kiln context ls" "$kiln context ls . > /dev/null"
  cat "$out/$size.md"
  for mode in "--gzip" ""; do
    /usr/bin/time -f "peak RSS kiln context pack $mode: %M KiB" "$kiln" context pack . -o "$out/k" $mode >/dev/null
  done
  /usr/bin/time -f "peak RSS kiln context ls: %M KiB" "$kiln" context ls . >/dev/null
  echo "archive sizes: kiln tar.gz $(stat -c %s "$out/k.tgz"), pigz $(tar -cf - "${excludes[@]}" . | pigz | wc -c)"
  cd - >/dev/null
done
