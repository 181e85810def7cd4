#!/usr/bin/env bash
# make bench: every benchmark in turn on the running local stack, each printing its figures next to
# the original approach's; logs in bench/out/. Run on an otherwise idle machine (2 cores here).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
PY=.venv/bin/python
export PYSPARK_PYTHON=$PWD/$PY
$PY -m deploy.stack up
for bench in train tag index search quality pack; do
  echo "== bench/$bench.py"
  case $bench in
    # Keeps its cores between runs (loading them takes a while); the growth from 100k to 3M documents.
    search) args=(--reuse --sizes "${TINYTAGS_BENCH_SEARCH_SIZES:-100000,1000000,3000000}") ;;
    index) args=(--sizes "${TINYTAGS_BENCH_INDEX_SIZES:-200000,2000000}") ;;
    *) args=() ;;
  esac
  $PY -m bench.$bench "${args[@]}" 2>&1 | tee "bench/out/$bench.log"
done
