"""`kptune.torch.conv2d`: PyTorch tensors through kptune's tuned kernel.

    import kptune.torch
    y = kptune.torch.conv2d(x, w, stride=1, padding=1, dilation=1)

The winner for the shape and device comes from the perf db; on first sight of a shape it is
found by `kptune.autotune` (predict and measure; the best of the model's picks, or of its fallback search) and
stored. CUDA tensors run in place: CuPy views their memory through DLPack (no copy) and the
kernel is launched on it; the output is a new torch tensor. CPU tensors run on the OpenCL CPU
device (PoCL), through copies to and from OpenCL buffers. Groups = 1, float32 or float16, no bias
(add it after). Compare with `torch.nn.functional.conv2d`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from kptune.autotune import autotune
from kptune.backends import Backend, list_devices, open_backend, resolve_device
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.measurement import TimingSettings
from kptune.problem import Conv2dProblem
from kptune.space import Config

_DTYPES = {"torch.float32": "fp32", "torch.float16": "fp16"}


@dataclasses.dataclass
class _Prepared:
    kernel: Any
    groups: tuple[int, ...]
    local: tuple[int, ...]
    config: Config
    zeroed: bool


_backends: dict[str, Backend] = {}
_prepared: dict[tuple[str, str], _Prepared] = {}


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def problem_of(x: Any, w: Any, stride: Any, padding: Any, dilation: Any) -> Conv2dProblem:
    if x.dim() != 4 or w.dim() != 4:
        raise KptuneError(f"conv2d takes NCHW input and KCRS weights, got {x.dim()}-D and {w.dim()}-D tensors")
    if x.dtype != w.dtype or str(x.dtype) not in _DTYPES:
        raise KptuneError(f"conv2d takes float32 or float16 tensors of one dtype, got {x.dtype} and {w.dtype}")
    if x.shape[1] != w.shape[1]:
        raise KptuneError(f"input has {x.shape[1]} channels, weights expect {w.shape[1]} (groups=1 only)")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, wd = (int(v) for v in x.shape)
    k, _, r, s = (int(v) for v in w.shape)
    return Conv2dProblem(n=n, c=c, h=h, w=wd, k=k, r=r, s=s, pad_h=ph, pad_w=pw, stride_h=sh, stride_w=sw,
                         dil_h=dh, dil_w=dw, dtype=_DTYPES[str(x.dtype)])  # fmt: skip


def _device_for(x: Any) -> DeviceInfo:
    if x.device.type == "cuda":
        return resolve_device(f"cupy:{x.device.index or 0}")
    if x.device.type == "cpu":
        cpus = [d for d in list_devices(("opencl",)) if d.kind == "cpu"]
        if not cpus:
            raise KptuneError("CPU tensors need the OpenCL CPU device (apt-get install pocl-opencl-icd)")
        return cpus[0]
    raise KptuneError(f"tensors on {x.device} are not supported (CUDA or CPU)")


def _prepare(problem: Conv2dProblem, device: DeviceInfo, db: str | Path | None, k: int, budget: int,
             settings: TimingSettings | None) -> _Prepared:  # fmt: skip
    key = (device.key, problem.key())
    if key not in _prepared:
        family = get_family("conv2d_fwd")
        result = autotune(problem, device=device, k=k, db=db, budget=budget, settings=settings)
        if result.best is None:
            raise KptuneError(f"no config of {family.name} ran correctly for {problem.key()} on {device.spec}")
        backend = _backends.get(device.spec) or _backends.setdefault(device.spec, open_backend(device))
        config = result.best.config
        kernel = backend.compile(family.full_source, family.entry, family.defines(problem, config))
        groups, local = family.geometry(problem, config)
        _prepared[key] = _Prepared(kernel, tuple(groups), tuple(local), config, family.needs_zeroed_output(config))
    return _prepared[key]


def conv2d(x: Any, w: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1, *, db: str | Path | None = None,
           k: int = 5, budget: int = 24, settings: TimingSettings | None = None) -> Any:  # fmt: skip
    """y = conv2d(x, w) with kptune's tuned kernel (see the module docstring)."""
    import torch

    problem = problem_of(x, w, stride, padding, dilation)
    device = _device_for(x)
    prep = _prepare(problem, device, db, k, budget, settings)
    backend = _backends[device.spec]
    family = get_family("conv2d_fwd")
    scalars = [backend.scalar(v) for v in family.scalars(problem)]
    out_shape = (problem.n, problem.k, problem.out_h, problem.out_w)
    if device.backend == "cupy":
        import cupy as cp

        xc, wc = x.contiguous(), w.contiguous()
        y = torch.empty(out_shape, dtype=x.dtype, device=x.device)
        xs, ws, ys = cp.from_dlpack(xc), cp.from_dlpack(wc), cp.from_dlpack(y)  # views, no copies
        torch.cuda.current_stream(x.device).synchronize()  # the inputs are written
        backend.time_launches(prep.kernel, prep.groups, prep.local, [[xs, ws, ys, *scalars]],
                              ys if prep.zeroed else None)  # fmt: skip
        return y
    dtype = np.float32 if problem.dtype == "fp32" else np.float16
    xb = backend.upload(x.detach().contiguous().numpy().astype(dtype, copy=False))
    wb = backend.upload(w.detach().contiguous().numpy().astype(dtype, copy=False))
    yb = backend.empty(out_shape, np.dtype(dtype))
    backend.time_launches(prep.kernel, prep.groups, prep.local, [[xb, wb, yb, *scalars]], yb if prep.zeroed else None)
    return torch.from_numpy(backend.download(yb, out_shape, np.dtype(dtype)))
