"""A device and the limits its driver reports. Never hard-coded: backends fill it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """One usable device of one backend, with the limits constraints may read.

    `spec` ("cupy:0", "opencl:1:0") selects it on this machine; `key` names it in
    the perf db, so measurements from two machines with the same GPU and backend
    are comparable.
    """

    backend: str
    index: str
    name: str
    vendor: str
    kind: str  # "gpu", "cpu" or "accelerator"
    driver: str
    compiler: str
    max_work_group_size: int
    max_local_mem_bytes: int
    max_registers_per_group: int  # 0 where the driver does not report it
    compute_units: int
    simd_width: int  # warp / wavefront size; 1 where unknown
    l2_bytes: int
    global_mem_bytes: int

    @property
    def spec(self) -> str:
        return f"{self.backend}:{self.index}"

    @property
    def key(self) -> str:
        return f"{self.backend}:{self.name}"

    def limits(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def arch(self) -> str | None:
        """The GPU architecture its backend reports ("sm_90": CuPy writes it after the driver's version,
        `backends.cupy_backend`); None where it reports none (OpenCL, CPUs)."""
        return _arch(self.driver)

    def may_borrow(self, meta: dict[str, Any]) -> bool:
        """Whether a model or dataset made for another device (its `meta`: device key, device_limits) may
        serve this one. A CPU device may borrow a CPU's of the same backend (CPUs differ less than GPUs).
        A GPU may borrow one made for a GPU of the same backend, vendor, architecture and number of SMs
        (compute units), as MIOpen keys its shipped perf dbs by architecture and CU count (gfx90a, 110 CUs):
        the H200's for an H100 SXM, both sm_90 with 132 SMs. Either way every config is still checked
        against this device's own limits, so whatever it proposes is valid here."""
        limits = meta.get("device_limits")
        if meta.get("device") == self.key or not isinstance(limits, dict) or limits.get("backend") != self.backend:
            return False
        if self.kind == "cpu":
            return limits.get("kind") == "cpu"
        return (self.kind == "gpu" and limits.get("kind") == "gpu" and self.arch is not None
                and limits.get("vendor") == self.vendor and _arch(str(limits.get("driver", ""))) == self.arch
                and limits.get("compute_units") == self.compute_units)  # fmt: skip


def _arch(driver: str) -> str | None:
    """The architecture at the end of a driver string ("cuda driver 13000; sm_90" -> "sm_90"), if any."""
    last = driver.rsplit(";", 1)[-1].strip()
    return last if ";" in driver and last.startswith(("sm_", "gfx")) else None


def newest_made_for(device: DeviceInfo, files: Iterable[tuple[Path, dict[str, Any]]]) -> Path | None:
    """Of (path, meta) files made for some device (models, datasets), the newest made for `device`
    itself, else the newest it may borrow (`DeviceInfo.may_borrow`); None if neither."""
    own, borrowed = [], []
    for path, meta in files:
        if meta.get("device") == device.key:
            own.append(path)
        elif device.may_borrow(meta):
            borrowed.append(path)
    found = own or borrowed
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def check_fits(problem: Any, device: DeviceInfo) -> None:
    """Refuse, before any launch, a problem whose tensors cannot fit in the device's memory."""
    from kptune.errors import DeviceError

    need = problem.device_bytes()
    if need and device.global_mem_bytes and need > device.global_mem_bytes:
        raise DeviceError(
            f"{problem.key()} needs {_size(need)} of device memory (inputs, output and its float64 "
            f"reference), {device.name} has {_size(device.global_mem_bytes)}"
        )


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
