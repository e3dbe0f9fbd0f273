#!/usr/bin/env bash
# On an H200 only (exit 3 elsewhere): `kptune db recheck` of the shipped H200 dataset's suspect times (spikes and
# batch inversions, the problems with the most first), bounded to SECONDS; the perf db to $OUT/recheck.db.gz,
# for `kptune dataset build --base kptune/data/dataset-h200.db.gz` here.
#   bash scripts/device/recheck.sh [SECONDS]      (default 300)
source scripts/device/prelude.sh
is_h200 || { echo "not an H200: $GPU"; exit 3; }
timeout -s INT "${1:-300}" python3 -m kptune db recheck --db /tmp/rec.db --dataset kptune/data/dataset-h200.db.gz \
  --target-ms 0.5 --max-runs 20 2>&1 | grep -v "^WARNING" | tail -5
gzip -c /tmp/rec.db > "$OUT/recheck.db.gz"
