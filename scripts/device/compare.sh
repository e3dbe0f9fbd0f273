#!/usr/bin/env bash
# `compare_gpus.py` on layers of a shapes CSV (e.g. benchmarks/random_shapes-sN.csv): autotune, then every valid
# config of each layer, on every GPU of the machine; the run's files to $OUT/NAME. The kernels compile on the
# device (a compile pass on all cores first, bounded by --pre-limit) unless an archive of them is carried and
# loaded first (`KERNELS=path.tar.xz`, made here by `scripts/cross_compile.py`).
#   bash scripts/device/compare.sh CSV TIME_LIMIT NAME [more compare_gpus.py options, e.g. --no-model, --dtype fp16]
source scripts/device/prelude.sh
csv=$(realpath "$1") limit=$2 name=$3
shift 3
[ -n "${KERNELS:-}" ] && python3 -m kptune cache load "$KERNELS"
cd benchmarks || exit 1
python3 compare_gpus.py --corpus "$csv" --split test --shapes 400 --dtype fp32 --pre-limit 150 \
  --time-limit "$limit" --grace 30 --out "$OUT/$name" "$@" 2>&1 | grep -v "^WARNING" | tail -25
rm -f "$OUT/$name"/*.jsonl "$OUT/$name"/*.png
