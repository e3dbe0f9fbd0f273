#!/usr/bin/env bash
# On an H200 only (exit 3 elsewhere): the dataset's next fp32 problems of <= 1 GFLOP (`kptune campaign --unseen`,
# record_dataset.sh's order and timing), bounded to SECONDS; the kernels cross-compiled here loaded first from
# kcache_camp/*.tar.xz where carried (`carry: [".whl", "kcache_camp"]`); the perf db to $OUT/campaign.db.gz, for
# `kptune db merge` and `kptune dataset build --base kptune/data/dataset-h200.db.gz` here. Make the archives with
#   python scripts/cross_compile.py --target scripts/cupy-target-sm90.json --cache DIR --dtype fp32 --max-gflop 1 \
#     --unseen kptune/data/dataset-h200.db.gz --most 24000 --pack-mb 23 --out-dir kcache_camp
# (~40 MB; with the tree's benchmarks/results set aside, it fits a call's 64 MiB).
#   bash scripts/device/campaign.sh [SECONDS]      (default 300)
source scripts/device/prelude.sh
is_h200 || { echo "not an H200: $GPU"; exit 3; }
for archive in kcache_camp/*.tar.xz; do
  [ -e "$archive" ] && python3 -m kptune cache load "$archive" 2>&1 | tail -1
done
timeout -k 10 -s INT "${1:-300}" python3 -m kptune campaign --shapes kptune/data/corpus.csv --dtype fp32 \
  --max-gflop 1 --unseen kptune/data/dataset-h200.db.gz --order shuffled --chunk 512 --target-ms 0.5 --max-runs 20 \
  --db /tmp/campaign.db 2>&1 | grep -v "^WARNING" | tail -3
gzip -c /tmp/campaign.db > "$OUT/campaign.db.gz"
