"""The forward convolution family: implicit GEMM, 1x1 GEMM and direct (kernels/conv2d_*).

One search space (kernels/conv2d_fwd.toml) whose first parameter, ALGO, picks the
algorithm; one source, the two kernel files behind `#if ALGO`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kptune.kernel import Dim3, KernelFamily, load_space, read_kernel_file, register_family
from kptune.problem import Conv2dProblem
from kptune.space import Config, ceil_div

ALGO_IGEMM, ALGO_GEMM_1X1, ALGO_DIRECT = 0, 1, 2


def geometry(problem: Conv2dProblem, config: Config) -> tuple[Dim3, Dim3]:
    bm, bn = config["BM"], config["BN"]
    threads = (bm // config["TM"]) * (bn // config["TN"])
    if config["ALGO"] == ALGO_DIRECT:
        th = config["TH"]
        tiles = ceil_div(problem.out_h, th) * ceil_div(problem.out_w, bm // th)
        return (problem.n * tiles, ceil_div(problem.k, bn), 1), (threads, 1, 1)
    groups = (ceil_div(problem.derived()["GEMM_M"], bm), ceil_div(problem.k, bn), config["KSPLIT"])
    return groups, (threads, 1, 1)


_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {"fp32": np.dtype(np.float32), "fp16": np.dtype(np.float16)}
#: ||out - ref|| / ||ref|| accepted per dtype: fp32 accumulation either way; fp16 adds the
#: rounding of the output to 11 significant bits (about 3e-4 in norm).
TOLERANCES = {"fp32": 1e-4, "fp16": 2e-3}


def make_inputs(problem: Conv2dProblem, rng: np.random.Generator) -> dict[str, np.ndarray]:
    # Uniform in [-1, 1): never zeros, which would hide unwritten outputs and bad indexing.
    dtype = _NUMPY_DTYPES[problem.dtype]
    x = rng.uniform(-1.0, 1.0, (problem.n, problem.c, problem.h, problem.w)).astype(dtype)
    w = rng.uniform(-1.0, 1.0, (problem.k, problem.c, problem.r, problem.s)).astype(dtype)
    return {"x": x, "w": w}


def array_inputs(problem: Conv2dProblem, seed: int, xp: Any) -> dict[str, Any]:
    """Inputs made where `xp` keeps its arrays (CuPy: on the GPU, by its generator; other values
    than `make_inputs`, same distribution)."""
    dtype = _NUMPY_DTYPES[problem.dtype]
    rng = xp.random.RandomState(seed)
    x = rng.uniform(-1.0, 1.0, (problem.n, problem.c, problem.h, problem.w)).astype(dtype)
    w = rng.uniform(-1.0, 1.0, (problem.k, problem.c, problem.r, problem.s)).astype(dtype)
    return {"x": x, "w": w}


def output(problem: Conv2dProblem) -> tuple[str, tuple[int, ...], np.dtype[Any]]:
    return "y", (problem.n, problem.k, problem.out_h, problem.out_w), _NUMPY_DTYPES[problem.dtype]


def tolerance(problem: Conv2dProblem) -> float:
    return TOLERANCES[problem.dtype]


def problem_defines(problem: Conv2dProblem, config: Config) -> dict[str, int]:
    out = {"KP_FP16": 1} if problem.dtype == "fp16" else {}
    if config["ALGO"] == ALGO_DIRECT:  # the direct kernel compiles the filter geometry in
        out.update(KR=problem.r, KS=problem.s, SH=problem.stride_h, SW=problem.stride_w,
                   DH=problem.dil_h, DW=problem.dil_w)  # fmt: skip
    return out


def zeroed_output(config: Config) -> bool:
    return config["KSPLIT"] > 1  # split-K adds its partial sums into y


def scalars(p: Conv2dProblem) -> tuple[int, ...]:
    return (p.n, p.c, p.h, p.w, p.k, p.r, p.s, p.out_h, p.out_w,
            p.pad_h, p.pad_w, p.stride_h, p.stride_w, p.dil_h, p.dil_w)  # fmt: skip


def reference(problem: Conv2dProblem, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Forward convolution in float64 on the host: one GEMM over channels per filter tap."""
    return conv2d_reference(problem, inputs["x"], inputs["w"])


def array_reference(problem: Conv2dProblem, inputs: Mapping[str, Any], xp: Any) -> Any:
    """The same with array module `xp`: with CuPy, on the GPU (cuBLAS DGEMM per filter tap)."""
    return conv2d_reference(problem, inputs["x"], inputs["w"], xp)


def conv2d_reference(p: Conv2dProblem, x: Any, w: Any, xp: Any = np) -> Any:
    x64 = xp.pad(x.astype(xp.float64), ((0, 0), (0, 0), (p.pad_h, p.pad_h), (p.pad_w, p.pad_w)))
    w64 = w.astype(xp.float64)
    y = xp.zeros((p.n, p.k, p.out_h, p.out_w), dtype=xp.float64)
    h_end = p.stride_h * (p.out_h - 1) + 1
    w_end = p.stride_w * (p.out_w - 1) + 1
    for r in range(p.r):
        for s in range(p.s):
            h0, w0 = r * p.dil_h, s * p.dil_w
            tap = x64[:, :, h0 : h0 + h_end : p.stride_h, w0 : w0 + w_end : p.stride_w]
            # (n, c, P, Q) x (k, c) -> (n, P, Q, k)
            y += xp.moveaxis(xp.tensordot(tap, w64[:, :, r, s], axes=([1], [1])), 3, 1)
    return y


CONV2D_FWD = register_family(
    KernelFamily(
        name="conv2d_fwd",
        problem_type=Conv2dProblem,
        source=read_kernel_file("conv2d_igemm_fwd.kp") + "\n" + read_kernel_file("conv2d_direct_fwd.kp"),
        entry="conv2d_fwd",
        space=load_space("conv2d_fwd.toml"),
        geometry=geometry,
        make_inputs=make_inputs,
        output=output,
        buffers=("x", "w", "y"),
        scalars=scalars,
        reference=reference,
        array_inputs=array_inputs,
        array_reference=array_reference,
        tolerance=tolerance,
        problem_defines=problem_defines,
        zeroed_output=zeroed_output,
    )
)
