# Sourced first by every script here, on the lent GPU machine (`../shared/device/README.md`): the wheels it
# lacks (carried in .whl/, made by `../shared/device/gpu-wheels.sh pytest pluggy iniconfig packaging`) into
# /tmp/site, NVIDIA's OpenCL driver registered, and $OUT/device.txt saying which card and tree ran.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/ocl && echo /usr/local/nvidia/lib64/libnvidia-opencl.so.1 > /tmp/ocl/nvidia.icd
export OCL_ICD_VENDORS=/tmp/ocl
# the tree's commit for the benchmarks' JSON (`common.git_commit`): pass KPTUNE_COMMIT, the copy's .git may be stale
export KPTUNE_COMMIT=${KPTUNE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
GPU=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)
export GPU
mkdir -p "$OUT"
{ date -u +%FT%TZ; echo "$GPU"; echo "commit $KPTUNE_COMMIT"; nproc; } > "$OUT/device.txt"
echo "device: $GPU, $(nproc) cores, commit $KPTUNE_COMMIT, $(date -u +%T) UTC"
is_h200() { case "$GPU" in *H200*) return 0 ;; *) return 1 ;; esac; }
