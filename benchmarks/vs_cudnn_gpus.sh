#!/bin/bash
# vs_cudnn.py over every GPU of one host: one compile pass on all cores (configs not yet measured
# only), one shard per GPU over a shared perf db (saved gzipped to $OUT every 45 s, so a killed run
# keeps what it measured; each shard's table and JSON, with cuDNN timed in that process, go to
# $OUT/sI), then one same-run pass that tunes nothing already measured and prints the whole table.
#   NETS="resnet50 vgg16" BATCHES="1 32" DTYPES="fp32 fp16" LIMIT=300 bash benchmarks/vs_cudnn_gpus.sh
# DB_IN=earlier.db.gz resumes from an earlier run's db; PRE_LIMIT caps the compile pass (seconds).
set -u
OUT=${OUT:-out}; W=${WORK:-/tmp/vs}; mkdir -p $W $OUT
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
SEL="--nets $NETS --batches $BATCHES --dtype $DTYPES"
COMMON="--target-ms ${TARGET_MS:-2} --db $W/vs.db --device cupy:0"
save() {
  python3 -c "import sqlite3; sqlite3.connect('$W/vs.db', timeout=60).execute('PRAGMA wal_checkpoint(PASSIVE)')"
  gzip -c $W/vs.db > $OUT/vs_cudnn.db.gz.tmp && mv $OUT/vs_cudnn.db.gz.tmp $OUT/vs_cudnn.db.gz
}
t0=$(date +%s)
if [ -n "${DB_IN:-}" ] && [ ! -e $W/vs.db ]; then gunzip -c "$DB_IN" > $W/vs.db; fi
CUDA_VISIBLE_DEVICES=0 timeout ${PRE_LIMIT:-300} python3 benchmarks/vs_cudnn.py $SEL $COMMON --out $W/pre \
  --precompile-only
echo "precompiled at $(( $(date +%s) - t0 )) s"
pids=()
for i in $(seq 0 $((GPUS - 1))); do
  CUDA_VISIBLE_DEVICES=$i python3 benchmarks/vs_cudnn.py $SEL $COMMON --jobs 0 --shard $i/$GPUS \
    --out $OUT/s$i --time-limit ${LIMIT:-300} > $W/s$i.log 2>&1 &
  pids+=($!)
done
( while sleep 45; do save; done ) & saver=$!
wait "${pids[@]}"; kill $saver; save
echo "shards done at $(( $(date +%s) - t0 )) s"
for f in $W/s*.log; do echo "=== $f"; cat $f; done > $OUT/shard-logs.txt
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/vs_cudnn.py $SEL $COMMON --jobs 0 --out $OUT --time-limit ${FINAL:-60}
