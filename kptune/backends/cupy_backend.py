"""CuPy backend: CUDA through NVRTC, or HIP through hipRTC on a ROCm build of CuPy.

HIP is untested until someone runs it on an AMD GPU (see README). Compiled
binaries are cached by CuPy under kptune's cache dir (CUPY_CACHE_DIR), keyed on
source, options, architecture and the NVRTC and CuPy versions.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kptune.backends import CompileError, LaunchError, cache_dir, first_lines
from kptune.device import DeviceInfo
from kptune.errors import DeviceError

if TYPE_CHECKING:
    from kptune.kernel import KernelFamily
    from kptune.problem import Problem


def cupy_cache_dir() -> Path:
    """Where CuPy files its binaries for kptune: CUPY_CACHE_DIR, else kptune's cache dir/cupy."""
    return Path(os.environ.get("CUPY_CACHE_DIR") or cache_dir() / "cupy")


def _cp() -> Any:
    os.environ.setdefault("CUPY_CACHE_DIR", str(cupy_cache_dir()))
    try:
        import cupy
    except ImportError:
        raise DeviceError("CuPy is not installed: pip install cupy-cuda12x (or a ROCm build)") from None
    return cupy


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def list_devices() -> list[DeviceInfo]:
    cp = _cp()
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception:
        return []
    hip = bool(getattr(cp.cuda.runtime, "is_hip", False))
    try:
        driver = cp.cuda.runtime.driverGetVersion()
        major, minor = cp.cuda.nvrtc.getVersion()
        compiler = f"{'hiprtc' if hip else 'nvrtc'} {major}.{minor}; cupy {cp.__version__}"
    except Exception:
        driver, compiler = 0, f"cupy {cp.__version__}"
    out = []
    for i in range(count):
        props = cp.cuda.runtime.getDeviceProperties(i)
        # the architecture, which a GPU borrowing another's model matches (`DeviceInfo.may_borrow`)
        gcn = _str(props.get("gcnArchName", b"")).split(":")[0] if hip else ""
        arch = gcn or f"sm_{props.get('major', 0)}{props.get('minor', 0)}"
        out.append(
            DeviceInfo(
                backend="cupy",
                index=str(i),
                name=_str(props["name"]).strip(),
                vendor="AMD" if hip else "NVIDIA",
                kind="gpu",
                driver=f"{'hip' if hip else 'cuda'} driver {driver}; {arch}",
                compiler=compiler,
                max_work_group_size=int(props["maxThreadsPerBlock"]),
                max_local_mem_bytes=int(props["sharedMemPerBlock"]),
                max_registers_per_group=int(props.get("regsPerBlock", 0)),
                compute_units=int(props["multiProcessorCount"]),
                simd_width=int(props.get("warpSize", 32)),
                l2_bytes=int(props.get("l2CacheSize", 0)),
                global_mem_bytes=int(props["totalGlobalMem"]),
            )
        )
    return out


def kernel_text(source: str, defines: Mapping[str, int]) -> str:
    """What NVRTC compiles: the defines, then the source (cupy_cache.py compiles the same)."""
    return "".join(f"#define {k} {v}\n" for k, v in sorted(defines.items())) + source


def open_device(device: DeviceInfo) -> CupyBackend:
    return CupyBackend(device)


#: a GPU-side wait that keeps timed launches back to back while the host enqueues them
#: (NVBench's blocking kernel does the same)
_SPIN_SOURCE = r"""
extern "C" __global__ void kptune_spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
"""
#: NVRTC options of every kernel (CuPy adds its include paths and -ftz=true)
NVRTC_OPTIONS = ("--std=c++14",)
HOLD_MARGIN = 2.0  # the spin lasts this many times the host's enqueue time it must cover
_REDUCE_ROWS = 4096  # parallel row sums in relative_error: enough blocks to fill any GPU


class CupyBackend:
    """Compiles with NVRTC/hipRTC through cupy.RawModule; times with CUDA events."""

    def __init__(self, device: DeviceInfo) -> None:
        self.cp = _cp()
        self.device = device
        self._device = self.cp.cuda.Device(int(device.index))
        self._device.use()
        self._kernels: dict[tuple[int, tuple[tuple[str, int], ...]], Any] = {}
        self._cycles_per_ms: float | None = None  # of the spin kernel; 0.0: no hold
        self._spin: Any = None
        self._host_ms = 0.02  # host ms to enqueue one timed launch, updated as launches are timed
        self._squared_distance = self.cp.ReductionKernel(
            "T x, float64 y", "float64 z", "((double)(float)x - y) * ((double)(float)x - y)",
            "a + b", "z = a", "0", "kptune_squared_distance",
        )  # fmt: skip

    def compile(self, source: str, entry: str, defines: Mapping[str, int]) -> Any:
        key = (hash(source), tuple(sorted(defines.items())))
        if key in self._kernels:
            return self._kernels[key]
        # Defines go into the source, not the options: CuPy compiles an empty file once per
        # distinct option tuple (to fingerprint the compiler), which per config cost ~15 ms
        # even when the kernel itself came from the disk cache.
        try:
            module = self.cp.RawModule(code=kernel_text(source, defines), options=NVRTC_OPTIONS)
            kernel = module.get_function(entry)
            kernel.num_regs  # noqa: B018 - forces compilation and module load now
        except self.cp.cuda.compiler.CompileException as exc:
            raise CompileError(first_lines(str(exc))) from None
        except self.cp.cuda.driver.CUDADriverError as exc:
            raise CompileError(first_lines(str(exc))) from None
        self._kernels[key] = kernel
        return kernel

    def upload(self, array: np.ndarray) -> Any:
        return self.cp.asarray(np.ascontiguousarray(array))

    def empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        return self.cp.empty(shape, dtype)

    def fill_nan(self, buffer: Any, dtype: np.dtype[Any]) -> None:
        buffer.fill(np.nan)

    def _enqueue_zero(self, buffer: Any) -> None:
        cuda = self.cp.cuda
        cuda.runtime.memsetAsync(buffer.data.ptr, 0, buffer.nbytes, cuda.get_current_stream().ptr)

    def download(self, buffer: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        try:
            return self.cp.asnumpy(buffer).reshape(shape).astype(dtype, copy=False)
        except Exception as exc:
            raise LaunchError(first_lines(str(exc)), fatal=True) from None

    def upload_reference(self, reference: np.ndarray) -> Any:
        ref = self.cp.asarray(reference, dtype=self.cp.float64)
        return ref, float(self.cp.linalg.norm(ref)) or 1.0

    def make_on_device(self, family: KernelFamily, problem: Problem, seed: int) -> tuple[dict[str, Any], Any]:
        assert family.array_inputs is not None and family.array_reference is not None
        cp = self.cp
        try:
            inputs = family.array_inputs(problem, seed, cp)
        except cp.cuda.memory.OutOfMemoryError:
            raise DeviceError(f"the inputs of {problem.key()} do not fit in device memory") from None
        try:
            ref = cp.asarray(family.array_reference(problem, inputs, cp), dtype=cp.float64)
        except cp.cuda.memory.OutOfMemoryError:  # its temporaries do not fit beside the inputs: on the host
            cp.get_default_memory_pool().free_all_blocks()
            host = {k: cp.asnumpy(v) for k, v in inputs.items()}
            ref = cp.asarray(np.asarray(family.reference(problem, host), dtype=np.float64))
        return inputs, (ref, float(cp.linalg.norm(ref)) or 1.0)

    def relative_error(self, output: Any, reference: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> float:
        # On the device, one fused pass and one sync per config: no download, no big temporaries.
        # NaN/inf in the output propagate into the sum. CuPy reduces each output element of a
        # ReductionKernel in one thread block, so a reduction straight to a scalar runs on one
        # SM (~20 ms for a 25M-element output): reduce rows in parallel first, then the row sums.
        ref, ref_norm = reference
        try:
            flat, ref_flat = output.reshape(-1), ref.reshape(-1)
            rows = min(_REDUCE_ROWS, flat.size)
            main = flat.size // rows * rows
            partial = self._squared_distance(flat[:main].reshape(rows, -1), ref_flat[:main].reshape(rows, -1), axis=1)
            total = partial.sum()
            if main < flat.size:
                total = total + self._squared_distance(flat[main:], ref_flat[main:])
            squares = float(total)
        except Exception as exc:
            raise LaunchError(first_lines(str(exc)), fatal=True) from None
        return math.sqrt(squares) / ref_norm if math.isfinite(squares) else math.inf

    def check_launch(self, kernel: Any, local: Sequence[int]) -> None:
        allowed = int(kernel.max_threads_per_block)
        threads = int(np.prod(local))
        if threads > allowed:
            raise LaunchError(
                f"too many resources: {threads} threads per block, kernel allows {allowed} "
                f"({kernel.num_regs} registers per thread)"
            )

    def time_launches(
        self,
        kernel: Any,
        groups: Sequence[int],
        local: Sequence[int],
        arg_sets: Sequence[Sequence[Any]],
        zeroed: Any = None,
        expect_ms: float | None = None,
    ) -> list[float]:
        """Each launch between two CUDA events, the batch queued behind a GPU-side spin (`_hold`).

        Without the spin, an event pair around a launch that the GPU reaches before the host has
        enqueued it also times the host's launch overhead (~10-20 us of CuPy argument handling):
        most of a small kernel's time. OpenCL's profiling times the command itself and needs none.
        """
        cuda = self.cp.cuda
        try:
            self._hold(len(arg_sets), expect_ms)
            events = []
            t0 = time.perf_counter()
            for args in arg_sets:
                start, end = cuda.Event(), cuda.Event()
                start.record()
                if zeroed is not None:
                    self._enqueue_zero(zeroed)
                kernel(tuple(groups), tuple(local), tuple(args))
                end.record()
                events.append((start, end))
            host_ms = (time.perf_counter() - t0) * 1e3 / len(arg_sets)
            self._host_ms = 0.8 * self._host_ms + 0.2 * host_ms
            events[-1][1].synchronize()
            return [cuda.get_elapsed_time(s, e) for s, e in events]
        except Exception as exc:
            raise LaunchError(first_lines(str(exc)), fatal=True) from None

    def _hold(self, launches: int, expect_ms: float | None) -> None:
        """Keep the GPU busy (a spin kernel) while the host enqueues `launches` timed launches.

        The GPU would wait for the host only where a launch takes less than the host needs to
        enqueue one (`_host_ms`, measured as it goes): the spin lasts HOLD_MARGIN times the host's
        time for the first launch plus that shortfall for the rest (the whole batch if unknown).
        """
        if self._cycles_per_ms is None:
            self._cycles_per_ms = self._calibrate_spin()
        if not self._cycles_per_ms:
            return
        host = self._host_ms
        short = host if expect_ms is None else max(0.0, host - expect_ms)
        hold_ms = HOLD_MARGIN * (host + (launches - 1) * short)
        self._spin((1,), (1,), (np.int64(hold_ms * self._cycles_per_ms),))

    def _calibrate_spin(self) -> float:
        """GPU clock cycles per ms of the spin kernel, timed with events (0.0: no hold on this device)."""
        cuda = self.cp.cuda
        try:
            self._spin = self.cp.RawKernel(_SPIN_SOURCE, "kptune_spin")
            cycles = 1_000_000
            times = []
            for _ in range(3):
                start, end = cuda.Event(), cuda.Event()
                start.record()
                self._spin((1,), (1,), (np.int64(cycles),))
                end.record()
                end.synchronize()
                times.append(cuda.get_elapsed_time(start, end))
            ms = sorted(times)[1]
            return cycles / ms if ms > 0 else 0.0
        except Exception:  # no clock64 (an odd HIP build): time without the hold, as OpenCL cannot need it
            return 0.0

    def scalar(self, value: int) -> Any:
        return np.int32(value)

    def close(self) -> None:
        self.cp.cuda.get_current_stream().synchronize()
