#!/usr/bin/env bash
# Record (or resume) the dataset on this machine's GPUs, in one command:
#   bash scripts/record_dataset.sh [perf.db] [dataset file]
# Tunes every corpus shape exhaustively in fp32 and fp16 on every local GPU (resumes from the
# perf db: run it again, or on other machines and `kptune db merge` their dbs, until every shape
# is done), then cuts the dataset from the db. Extra arguments for `kptune campaign` go in
# $CAMPAIGN_ARGS (e.g. "--split test", "--limit 200", or "--max-gflop 1" for the cheapest first:
# 1,438 of the corpus's 2,675 problems are at most 1 GFLOP).
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-perf-h200.db}
OUT=${2:-kptune/data/dataset-h200.db.gz}
python -m kptune campaign --shapes kptune/data/corpus.csv --dtype fp32 --dtype fp16 --chunk 512 --target-ms 2 \
  --db "$DB" ${CAMPAIGN_ARGS:-} || echo "campaign incomplete; the dataset keeps the shapes done so far" >&2
python -m kptune dataset build --db "$DB" --out "$OUT"
python -m kptune dataset show "$OUT"
