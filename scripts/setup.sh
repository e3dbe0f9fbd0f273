#!/usr/bin/env bash
# Sets kptune up from nothing, idempotently: PoCL (OpenCL on the CPU) from Debian when
# running as root, then a virtual environment .venv with PyTorch's CPU build and kptune
# (editable) with its test, model and dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /etc/OpenCL/vendors/pocl.icd ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq pocl-opencl-icd ocl-icd-libopencl1 clinfo >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch==2.13.0 exactly: that pin takes the CPU build; a looser one pulls gigabytes of CUDA.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,model,dev]"
