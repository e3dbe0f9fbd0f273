#!/bin/bash
# vs_cudnn.py over every GPU of one host, for one or more selections (SELS, ";"-separated):
# one compile pass on all cores per selection (configs not yet measured only), then per selection one
# shard per GPU over a shared perf db (saved gzipped to $OUT every 45 s, so a killed run keeps what it
# measured; each shard logs its rows, cuDNN timed in the same process, to $OUT/shard-logs.txt, saved
# with the db), then
# one same-run pass per selection that tunes nothing already measured and writes $OUT/fK/vs_cudnn.json.
#   SELS="--nets resnet50 --batches 32 --dtype fp32 fp16; --nets vgg16 --batches 1 --dtype fp32" \
#     LIMIT=300 bash benchmarks/vs_cudnn_gpus.sh
# DB_IN=earlier.db.gz resumes from an earlier run's db; PRE_LIMIT caps each compile pass (seconds);
# FINAL=0 skips the same-run passes (the shard logs hold each layer's same-process cuDNN time).
set -u
OUT=${OUT:-out}; W=${WORK:-/tmp/vs}; mkdir -p $W $OUT
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
IFS=';' read -ra SEL_LIST <<< "$SELS"
COMMON="--target-ms ${TARGET_MS:-2} --db $W/vs.db --device cupy:0"
save() {  # the db (gzipped) and every shard's log so far: a run killed at any point keeps both
  python3 -c "import sqlite3; sqlite3.connect('$W/vs.db', timeout=60).execute('PRAGMA wal_checkpoint(PASSIVE)')"
  gzip -c $W/vs.db > $OUT/vs_cudnn.db.gz.tmp && mv $OUT/vs_cudnn.db.gz.tmp $OUT/vs_cudnn.db.gz
  for f in $W/s*.log; do [ -e "$f" ] && { echo "=== $f"; cat "$f"; }; done > $OUT/shard-logs.txt
}
t0=$(date +%s)
if [ -n "${DB_IN:-}" ] && [ ! -e $W/vs.db ]; then gunzip -c "$DB_IN" > $W/vs.db; fi
( while sleep 45; do save; done ) & saver=$!
for k in "${!SEL_LIST[@]}"; do
  SEL=${SEL_LIST[$k]}
  CUDA_VISIBLE_DEVICES=0 timeout ${PRE_LIMIT:-300} python3 benchmarks/vs_cudnn.py $SEL $COMMON --out $W/pre \
    --precompile-only
  echo "[$SEL] precompiled at $(( $(date +%s) - t0 )) s"
  pids=()
  for i in $(seq 0 $((GPUS - 1))); do
    CUDA_VISIBLE_DEVICES=$i python3 benchmarks/vs_cudnn.py $SEL $COMMON --jobs 0 --shard $i/$GPUS \
      --out $W/s$k-$i --time-limit ${LIMIT:-300} > $W/s$k-$i.log 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  echo "[$SEL] shards done at $(( $(date +%s) - t0 )) s"
done
kill $saver; save
[ "${FINAL:-60}" = 0 ] && exit 0
for k in "${!SEL_LIST[@]}"; do
  CUDA_VISIBLE_DEVICES=0 python3 benchmarks/vs_cudnn.py ${SEL_LIST[$k]} $COMMON --jobs 0 --out $OUT/f$k \
    --time-limit ${FINAL:-60}
done
