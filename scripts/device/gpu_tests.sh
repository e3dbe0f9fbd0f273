#!/usr/bin/env bash
# The GPU tests (`tests/test_gpu.py`, skipped where no GPU is) on the lent machine; the log to $OUT/gpu-tests.txt.
#   bash scripts/device/gpu_tests.sh [SECONDS] [PYTEST -k EXPRESSION]      (default: 150, "not every_config")
source scripts/device/prelude.sh
timeout -s INT "${1:-150}" python3 -m pytest -q tests/test_gpu.py -k "${2:-not every_config}" -p no:cacheprovider \
  > "$OUT/gpu-tests.txt" 2>&1
echo "gpu tests: rc $?; $(tail -1 "$OUT/gpu-tests.txt")"
