"""Backends: one file each behind the `Backend` protocol (compile, alloc, time launches).

Optional dependencies are imported inside the backend; a missing one turns into
a `DeviceError` with an install hint. Device specs: "cupy:0", "opencl:1:0".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kptune.device import DeviceInfo
from kptune.errors import DeviceError

if TYPE_CHECKING:
    from kptune.kernel import KernelFamily
    from kptune.problem import Problem

BACKEND_NAMES = ("cupy", "opencl")


class CompileError(Exception):
    """The kernel did not compile for this config (an outcome, not a crash)."""


class LaunchError(Exception):
    """The kernel could not be launched or failed while running.

    `fatal` means the device context may be unusable (e.g. an illegal address on
    CUDA): the worker process must be restarted.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class Backend(Protocol):
    """What the runner needs from a device."""

    device: DeviceInfo

    def compile(self, source: str, entry: str, defines: Mapping[str, int]) -> Any:
        """Compiled kernel, from the persistent cache when possible; raises CompileError."""

    def upload(self, array: np.ndarray) -> Any: ...

    def empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any: ...

    def fill_nan(self, buffer: Any, dtype: np.dtype[Any]) -> None:
        """Poison a buffer of `dtype` elements with NaN, so unwritten outputs fail verification."""

    def download(self, buffer: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray: ...

    def upload_reference(self, reference: np.ndarray) -> Any:
        """Keep the float64 reference where `relative_error` can use it."""

    def make_on_device(self, family: KernelFamily, problem: Problem, seed: int) -> tuple[dict[str, Any], Any]:
        """The problem's inputs and float64 reference made on the device (`KernelFamily.array_inputs`,
        `.array_reference`); the reference kept as `upload_reference` keeps one. Only backends in
        `ON_DEVICE_BACKENDS`."""

    def relative_error(self, output: Any, reference: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> float:
        """||output - reference|| / ||reference||, NaN or inf when the output is not finite."""

    def check_launch(self, kernel: Any, local: Sequence[int]) -> None:
        """Raise LaunchError if the compiled kernel cannot run with this local size."""

    def time_launches(
        self,
        kernel: Any,
        groups: Sequence[int],
        local: Sequence[int],
        arg_sets: Sequence[Sequence[Any]],
        zeroed: Any = None,
        expect_ms: float | None = None,
    ) -> list[float]:
        """Launch once per argument set; return each launch's device time in ms (events).

        With `zeroed`, that buffer is zeroed before each launch, inside the timed span.
        `expect_ms` (a launch's time so far, if known) lets a backend keep the host's launch
        overhead out of the timed spans at the least cost (CuPy's spin; see there).
        """

    def scalar(self, value: int) -> Any:
        """A 32-bit integer kernel argument."""

    def close(self) -> None: ...


#: backends that make a family's inputs and float64 reference on the device, so the driver sends
#: the worker nothing but the problem: seconds of host arithmetic and up to hundreds of MB less
ON_DEVICE_BACKENDS = frozenset({"cupy"})


def made_on_device(device: DeviceInfo, family: KernelFamily) -> bool:
    """Whether the measuring worker makes `family`'s problems (inputs, reference) on `device` itself."""
    return (device.backend in ON_DEVICE_BACKENDS and family.array_inputs is not None
            and family.array_reference is not None)  # fmt: skip


def host_relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """||got - ref|| / ||ref|| in float64 on the host; inf if anything is NaN or infinite."""
    got64 = got.astype(np.float64)
    if not np.all(np.isfinite(got64)):
        return float("inf")
    denom = float(np.linalg.norm(ref)) or 1.0
    return float(np.linalg.norm(got64 - ref)) / denom


def first_lines(text: str, limit: int = 400) -> str:
    """A driver's multi-line error as one short line for the perf db."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= {"="}]
    return " | ".join(lines)[:limit]


def cache_dir() -> Path:
    """Persistent compile cache (KPTUNE_CACHE_DIR, else the user's cache dir)."""
    env = os.environ.get("KPTUNE_CACHE_DIR")
    if env:
        path = Path(env)
    else:
        import platformdirs

        path = platformdirs.user_cache_path("kptune")
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_devices(backends: Sequence[str] = BACKEND_NAMES) -> list[DeviceInfo]:
    """Every usable device of every installed backend (missing backends are skipped)."""
    out: list[DeviceInfo] = []
    for name in backends:
        try:
            module = _module(name)
            out.extend(module.list_devices())
        except DeviceError:
            continue
    return out


def resolve_device(spec: str | None = None) -> DeviceInfo:
    """The device a spec names; with none, the first GPU (CuPy, then OpenCL), else the first device."""
    if spec:
        backend, _, index = spec.partition(":")
        if backend not in BACKEND_NAMES:
            raise DeviceError(f"unknown backend in device {spec!r}; use cupy:N or opencl:P:D")
        devices = _module(backend).list_devices()
        matches = [d for d in devices if d.spec == spec or (not index and d.backend == backend)]
        if not matches:
            known = ", ".join(d.spec for d in devices) or "none"
            raise DeviceError(f"no device {spec!r} (devices of {backend}: {known})")
        return matches[0]
    devices = list_devices()
    if not devices:
        raise DeviceError(
            "no usable device: install CuPy for a GPU, or PyOpenCL and an OpenCL driver "
            "(e.g. apt-get install pocl-opencl-icd for the CPU)"
        )
    gpus = [d for d in devices if d.kind == "gpu"]
    return (gpus or devices)[0]


def campaign_devices(specs: Sequence[str] = ()) -> list[DeviceInfo]:
    """The devices `specs` name; with none, every GPU of the first backend that has one, else the default device."""
    if specs:
        return [resolve_device(spec) for spec in specs]
    devices = list_devices()
    for backend in BACKEND_NAMES:
        gpus = [d for d in devices if d.kind == "gpu" and d.backend == backend]
        if gpus:
            return gpus
    return [resolve_device()]


def open_backend(device: DeviceInfo) -> Backend:
    """A live backend on `device` (call in the process that will measure)."""
    module = _module(device.backend)
    backend: Backend = module.open_device(device)
    return backend


def _module(name: str) -> Any:
    if name == "cupy":
        from kptune.backends import cupy_backend

        return cupy_backend
    if name == "opencl":
        from kptune.backends import opencl_backend

        return opencl_backend
    raise DeviceError(f"unknown backend {name!r}")
