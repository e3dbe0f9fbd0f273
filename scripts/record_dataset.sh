#!/usr/bin/env bash
# Record the dataset's next installment on this machine's GPUs, in one command:
#   bash scripts/record_dataset.sh [perf.db] [dataset file]
# Tunes exhaustively, on every local GPU, the corpus shapes (fp32 and fp16) that the dataset does
# not hold yet, in a seeded random order (a run cut short is a random sample), resuming from the
# perf db: run it again, or on other machines and `kptune db merge` their dbs. Then times again the
# spikes and batch inversions (`kptune db recheck`: configs recorded far slower than all their
# neighbours, or than on the same problem at twice the batch) and cuts the
# next installment onto the dataset (`dataset build --base`): the problems the db holds complete
# (train and validation ones with their 256 fastest configs, which the cost model learns from; test
# ones with all), and every problem of the earlier installment, re-timed spikes at their new times;
# and fits the cost model beside it. Extra arguments for `kptune campaign` go in
# $CAMPAIGN_ARGS (e.g. "--max-gflop 1" for the cheapest first: 1,438 of the corpus's 2,675 fp32
# problems are at most 1 GFLOP; "--dtype fp32" replaces the two dtypes; "--split test").
# CAMPAIGN_TIMEOUT=SECONDS stops the campaign after that long (SIGINT, as Ctrl-C: everything measured
# stays in the perf db; SIGKILL 30 s later) and cuts the installment all the same: one call on a lent
# machine with a time limit per call. Rerun on the same perf db to go on where it stopped.
# RECHECK_FIRST=1 runs the recheck (below) before the campaign, not after: for a call whose re-timed
# suspects matter more than new shapes (the new problems' own suspects then wait for the next run).
# KERNEL_ARCHIVES="a.tar.xz ..." first loads kernels cross-compiled on a CPU host
# (scripts/cross_compile.py) into the CuPy cache, so the campaign does not spend its first minutes
# compiling them (a fresh machine's compile pass took ~20 of a session's 30 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-perf-h200.db}
OUT=${2:-kptune/data/dataset-h200.db.gz}
BASE=$(mktemp --suffix .db.gz)
trap 'rm -f "$BASE"' EXIT
cp "$OUT" "$BASE" 2>/dev/null || cp kptune/data/dataset-h200.db.gz "$BASE"
DTYPES=("--dtype" "fp32" "--dtype" "fp16")
[[ " ${CAMPAIGN_ARGS:-} " == *" --dtype "* ]] && DTYPES=()
for archive in ${KERNEL_ARCHIVES:-}; do python -m kptune cache load "$archive"; done
LIMIT=()
[[ -n "${CAMPAIGN_TIMEOUT:-}" ]] && LIMIT=(timeout -k 30 -s INT "$CAMPAIGN_TIMEOUT")
# time again each config recorded far slower than all its neighbours (a stalled single launch) or than
# at twice the batch (an inversion), in the new problems and the base's: the re-timed values go into the
# installment (kptune/recheck.py). RECHECK_TIMEOUT=SECONDS (default 120) stops it as CAMPAIGN_TIMEOUT
# does the campaign, so that the cut still fits a call: it resumes in the next run.
recheck() {
  timeout -k 10 -s INT "${RECHECK_TIMEOUT:-120}" \
    python -m kptune db recheck --db "$DB" --dataset "$BASE" --target-ms 0.5 --max-runs 20 >/dev/null \
    || echo "recheck incomplete; the rest of the suspects wait for the next run" >&2
}
[[ "${RECHECK_FIRST:-0}" == 1 ]] && recheck
# shellcheck disable=SC2086 # CAMPAIGN_ARGS is a list of words
"${LIMIT[@]}" python -m kptune campaign --shapes kptune/data/corpus.csv "${DTYPES[@]}" --unseen "$BASE" --order shuffled \
  --chunk 512 --target-ms 0.5 --max-runs 20 --db "$DB" ${CAMPAIGN_ARGS:-} \
  || echo "campaign incomplete; the installment keeps the shapes done so far" >&2
[[ "${RECHECK_FIRST:-0}" == 1 ]] || recheck
python -m kptune dataset build --top 256 --db "$DB" --base "$BASE" --out "$OUT"
python -m kptune dataset costmodel "$OUT"
python -m kptune dataset show "$OUT"
