"""PyOpenCL backend: any OpenCL device (NVIDIA's driver, ROCm, PoCL on the CPU)."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kptune.backends import CompileError, LaunchError, cache_dir, first_lines, host_relative_error
from kptune.device import DeviceInfo
from kptune.errors import DeviceError


def _cl() -> Any:
    try:
        import pyopencl as cl
    except ImportError:
        raise DeviceError("PyOpenCL is not installed: pip install pyopencl") from None
    return cl


def _optional(device: Any, attr: str, default: int) -> int:
    try:
        return int(getattr(device, attr))
    except Exception:
        return default


def _info(cl: Any, pi: int, di: int, platform: Any, d: Any) -> DeviceInfo:
    if d.type & cl.device_type.GPU:
        kind = "gpu"
    elif d.type & cl.device_type.CPU:
        kind = "cpu"
    else:
        kind = "accelerator"
    simd = _optional(d, "warp_size_nv", 0) or _optional(d, "wavefront_width_amd", 0) or 1
    return DeviceInfo(
        backend="opencl",
        index=f"{pi}:{di}",
        name=d.name.strip(),
        vendor=d.vendor.strip(),
        kind=kind,
        driver=f"{platform.name.strip()} {platform.version.strip()}; driver {d.driver_version.strip()}",
        compiler=d.opencl_c_version.strip(),
        max_work_group_size=int(d.max_work_group_size),
        max_local_mem_bytes=int(d.local_mem_size),
        max_registers_per_group=_optional(d, "registers_per_block_nv", 0),
        compute_units=int(d.max_compute_units),
        simd_width=simd,
        l2_bytes=int(d.global_mem_cache_size),
        global_mem_bytes=int(d.global_mem_size),
    )


def _all_devices() -> list[tuple[DeviceInfo, Any]]:
    cl = _cl()
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # no ICD registered
        return []
    out = []
    for pi, platform in enumerate(platforms):
        try:
            devices = platform.get_devices()
        except cl.Error:
            continue
        for di, d in enumerate(devices):
            out.append((_info(cl, pi, di, platform, d), d))
    return out


def list_devices() -> list[DeviceInfo]:
    return [info for info, _ in _all_devices()]


def open_device(device: DeviceInfo) -> OpenCLBackend:
    for info, d in _all_devices():
        if info.spec == device.spec:
            return OpenCLBackend(info, d)
    raise DeviceError(f"OpenCL device {device.spec} not found")


class OpenCLBackend:
    """Compiles with the driver's OpenCL C compiler; times with profiling events."""

    def __init__(self, device: DeviceInfo, cl_device: Any) -> None:
        self.cl = _cl()
        self.device = device
        self._dev = cl_device
        self.ctx = self.cl.Context([cl_device])
        self.queue = self.cl.CommandQueue(self.ctx, properties=self.cl.command_queue_properties.PROFILING_ENABLE)
        self._kernels: dict[tuple[str, tuple[tuple[str, int], ...]], Any] = {}
        self._cache = cache_dir() / "opencl"
        self._cache.mkdir(parents=True, exist_ok=True)

    # -- compile ---------------------------------------------------------------------
    def compile(self, source: str, entry: str, defines: Mapping[str, int]) -> Any:
        key = (hashlib.sha256(source.encode()).hexdigest(), tuple(sorted(defines.items())))
        if key in self._kernels:
            return self._kernels[key]
        options = [f"-D{k}={v}" for k, v in sorted(defines.items())]
        # Full provenance: source, defines, device, driver and compiler versions.
        ident = "\0".join([key[0], " ".join(options), self.device.name, self.device.driver,
                           self.device.compiler, self.cl.VERSION_TEXT])  # fmt: skip
        path = self._cache / (hashlib.sha256(ident.encode()).hexdigest()[:32] + ".bin")
        program = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if path.is_file():
                try:
                    program = self.cl.Program(self.ctx, [self._dev], [path.read_bytes()]).build(options)
                except self.cl.Error:
                    program = None
            if program is None:
                try:
                    program = self.cl.Program(self.ctx, source).build(options, cache_dir=False)
                except self.cl.Error as exc:
                    raise CompileError(first_lines(str(exc))) from None
                binary = program.get_info(self.cl.program_info.BINARIES)[0]
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(binary)
                os.replace(tmp, path)
        kernel = self.cl.Kernel(program, entry)
        self._kernels[key] = kernel
        return kernel

    # -- memory ----------------------------------------------------------------------
    def upload(self, array: np.ndarray) -> Any:
        mf = self.cl.mem_flags
        return self.cl.Buffer(self.ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(array))

    def empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.cl.Buffer(self.ctx, self.cl.mem_flags.READ_WRITE, size=max(nbytes, 1))

    def fill_nan(self, buffer: Any, dtype: np.dtype[Any]) -> None:
        pattern = np.array(np.nan, dtype=dtype)  # one element: a float32 pattern would miss halves
        self.cl.enqueue_fill_buffer(self.queue, buffer, pattern, 0, buffer.size).wait()

    def _enqueue_zero(self, buffer: Any) -> Any:
        return self.cl.enqueue_fill_buffer(self.queue, buffer, np.zeros(1, np.uint8), 0, buffer.size)

    def download(self, buffer: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        out = np.empty(shape, dtype)
        try:
            self.cl.enqueue_copy(self.queue, out, buffer).wait()
        except self.cl.Error as exc:
            raise LaunchError(first_lines(str(exc)), fatal=True) from None
        return out

    def upload_reference(self, reference: np.ndarray) -> Any:
        return reference

    def make_on_device(self, family: Any, problem: Any, seed: int) -> tuple[dict[str, Any], Any]:
        raise NotImplementedError("OpenCL takes the host's inputs and reference (ON_DEVICE_BACKENDS)")

    def relative_error(self, output: Any, reference: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> float:
        return host_relative_error(self.download(output, shape, dtype), reference)

    # -- launch and time ---------------------------------------------------------------
    def check_launch(self, kernel: Any, local: Sequence[int]) -> None:
        # Nothing to check before launching: CL_KERNEL_WORK_GROUP_SIZE is not a reliable limit
        # (NVIDIA's driver reports 256 for every kernel, even a 10-register one that runs
        # with 1024 work-items; seen on an H200, driver 580.159.04). A group that really is
        # too large fails at enqueue and is recorded as launch_error.
        return None

    def _enqueue(self, kernel: Any, groups: Sequence[int], local: Sequence[int], args: Sequence[Any]) -> Any:
        global_size = tuple(int(g) * int(s) for g, s in zip(groups, local, strict=True))
        try:
            return kernel(self.queue, global_size, tuple(int(s) for s in local), *args)
        except self.cl.Error as exc:
            raise LaunchError(first_lines(str(exc))) from None

    def time_launches(
        self,
        kernel: Any,
        groups: Sequence[int],
        local: Sequence[int],
        arg_sets: Sequence[Sequence[Any]],
        zeroed: Any = None,
        expect_ms: float | None = None,
    ) -> list[float]:
        # profiling times each command on the device itself: no host overhead to keep out (expect_ms unused)
        spans = []  # (first event, last event) of each timed launch
        for args in arg_sets:
            fill = self._enqueue_zero(zeroed) if zeroed is not None else None
            event = self._enqueue(kernel, groups, local, args)
            spans.append((fill or event, event))
        try:
            spans[-1][1].wait()
            return [(last.profile.end - first.profile.start) * 1e-6 for first, last in spans]
        except self.cl.Error as exc:
            raise LaunchError(first_lines(str(exc)), fatal=True) from None

    def scalar(self, value: int) -> Any:
        return np.int32(value)

    def close(self) -> None:
        self.queue.finish()
