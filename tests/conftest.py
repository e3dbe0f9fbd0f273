"""Shared fixtures. Real devices only: PoCL (OpenCL on the CPU) in CI, GPUs where present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kptune.backends import list_devices
from kptune.device import DeviceInfo


@pytest.fixture(scope="session", autouse=True)
def _compile_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # One compile cache for the whole session (also seen by subprocesses), never the user's.
    os.environ.setdefault("KPTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("kptune-cache")))
    os.environ.setdefault("KPTUNE_MODELS", str(tmp_path_factory.mktemp("kptune-models")))  # never the user's


def _opencl_cpu() -> DeviceInfo | None:
    devices = [d for d in list_devices(("opencl",)) if d.kind == "cpu"]
    return devices[0] if devices else None


@pytest.fixture(scope="session")
def cpu_device() -> DeviceInfo:
    """The OpenCL CPU device (PoCL); CI installs it, so its absence fails loudly there."""
    dev = _opencl_cpu()
    if dev is None:
        if os.environ.get("CI"):
            pytest.fail("no OpenCL CPU device: apt-get install pocl-opencl-icd")
        pytest.skip("no OpenCL CPU device")
    return dev


def gpu_devices() -> list[DeviceInfo]:
    return [d for d in list_devices() if d.kind == "gpu"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "perf.db"
