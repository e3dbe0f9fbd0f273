#!/usr/bin/env bash
# On an H200 only (exit 3 elsewhere): `scripts/record_dataset.sh` for the dataset's next fp32 problems of <= 1 GFLOP,
# its campaign bounded to SECONDS and its recheck to 30 s, the kernels cross-compiled here loaded first from
# kcache_camp/*.tar.xz where carried (`carry: [".whl", "kcache_camp"]`). The next installment (and its cost model)
# to $OUT, with the perf db as $OUT/campaign.db.gz (for `kptune db merge` with a later call's). Make the archives with
#   python scripts/cross_compile.py --target scripts/cupy-target-sm90.json --cache DIR --dtype fp32 --max-gflop 1 \
#     --unseen kptune/data/dataset-h200.db.gz --most 24000 --pack-mb 23 --out-dir kcache_camp
# (~40 MB; with the tree's benchmarks/results set aside, it fits a call's 64 MiB). The cut and the cost model take
# ~1 minute after the campaign: leave it that much of the call.
#   bash scripts/device/campaign.sh [SECONDS]      (default 300)
source scripts/device/prelude.sh
is_h200 || { echo "not an H200: $GPU"; exit 3; }
shopt -s nullglob
archives=(kcache_camp/*.tar.xz)
KERNEL_ARCHIVES="${archives[*]}" CAMPAIGN_TIMEOUT="${1:-300}" RECHECK_TIMEOUT=30 \
  CAMPAIGN_ARGS="--dtype fp32 --max-gflop 1" bash scripts/record_dataset.sh /tmp/campaign.db \
  "$OUT/dataset-h200.db.gz" 2>&1 | grep -v "^WARNING" | tail -12
gzip -c /tmp/campaign.db > "$OUT/campaign.db.gz"
