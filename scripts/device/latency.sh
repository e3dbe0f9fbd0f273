#!/usr/bin/env bash
# Prediction latency on one pinned core of the lent machine's CPU (a server core of its own, unlike this VM's shared
# ones): `benchmarks/predict_latency.py` with --rerank and without, ROUNDS rounds. With BASE=DIR, a folder of another
# commit's files (its paths as in the tree, e.g. written by `git show OLD:PATH`), that commit is timed in each round
# too, right after this tree: old and new in the same window; then both side by side, shape by shape
# (`predict_latency.py --against`). JSONs to $OUT/latency/{new,base}-{rerank,plain}-ROUND/ and paired-{rerank,plain}/.
#   [BASE=DIR] bash scripts/device/latency.sh [ROUNDS]      (default 3; 0: with BASE, the side-by-side runs alone)
source scripts/device/prelude.sh
core=$(($(nproc --all) - 1))  # before OMP_NUM_THREADS, which nproc obeys
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
root=$PWD
trees=("new:$root")
if [ -n "${BASE:-}" ]; then
  rm -rf /tmp/base && mkdir -p /tmp/base/benchmarks && cp -r kptune kernels /tmp/base/ && cp benchmarks/*.py /tmp/base/benchmarks/
  cp -r "$BASE"/. /tmp/base/
  trees+=("base:/tmp/base")
fi
for round in $(seq "${1:-3}"); do
  for named in "${trees[@]}"; do
    name=${named%%:*} tree=${named#*:}
    for mode in rerank plain; do
      flag=()
      [ "$mode" = rerank ] && flag=(--rerank)
      echo "$name $mode round $round: $(cd "$tree/benchmarks" && PYTHONPATH="/tmp/site:$tree" taskset -c "$core" \
        python3 predict_latency.py "${flag[@]}" --threads 1 --out "$OUT/latency/$name-$mode-$round" 2>&1 | grep cold)"
    done
  done
done
if [ -n "${BASE:-}" ]; then
  for mode in rerank plain; do
    flag=()
    [ "$mode" = rerank ] && flag=(--rerank)
    (cd benchmarks && PYTHONPATH="/tmp/site:$root" taskset -c "$core" python3 predict_latency.py "${flag[@]}" --against /tmp/base \
      --out "$OUT/latency/paired-$mode" 2>&1 | grep -E "cold|ratio|predict_latency:|Error")
  done
fi
