"""A small non-convolution kernel family registered from Python, as a user would.

`axpy` computes out = a*x + y. `axpy_faulty` adds a MODE parameter whose values
inject real faults: 1 compile error, 2 wrong result, 3 infinite loop, 4 a wild
write far outside the buffer (kills the process on the CPU), 5 a launch with too many
resources (a correct kernel launched with 8 * 1024 work-items per group, past every device's limit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from kptune import Config, KernelFamily, Param, Problem, SearchSpace, register_family
from kptune.errors import ProblemError
from kptune.space import Constraint, ceil_div

SOURCE = r"""
#ifndef MODE
#define MODE 0
#endif
KP_KERNEL void axpy(KP_GLOBAL const float *x, KP_GLOBAL const float *y, KP_GLOBAL float *out,
                    const int n, const int a)
{
    const int base = KP_GROUP_ID(0) * KP_LOCAL_SIZE(0) * ELEMS + KP_LOCAL_ID(0);
    for (int e = 0; e < ELEMS; ++e) {
        const int i = base + e * KP_LOCAL_SIZE(0);
        if (i < n) {
#if MODE == 1
            this is not a statement;
#elif MODE == 2
            out[i] = a * x[i] + y[i] + (i == n / 2 ? 1.0f : 0.0f);
#elif MODE == 3
            float acc = 0.0f;
            while (x[i] != 12345.0f) { acc += 1.0f; out[i] = acc; }
#elif MODE == 4
            out[i - 0x3fffffff] = 1.0f;
#else
            out[i] = a * x[i] + y[i];
#endif
        }
    }
}
"""


@dataclasses.dataclass(frozen=True)
class AxpyProblem(Problem):
    kind: ClassVar[str] = "axpy"
    n: int
    a: int = 2

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ProblemError("n must be >= 1")

    def flops(self) -> float:
        return 2.0 * self.n


def geometry(p: AxpyProblem, c: Config) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    return (ceil_div(p.n, c["WG"] * c["ELEMS"]), 1, 1), (c["WG"], 1, 1)


def make_inputs(p: AxpyProblem, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"x": rng.uniform(-1, 1, p.n).astype(np.float32), "y": rng.uniform(-1, 1, p.n).astype(np.float32)}


def output(p: AxpyProblem) -> tuple[str, tuple[int, ...], np.dtype[Any]]:
    return "out", (p.n,), np.dtype(np.float32)


def scalars(p: AxpyProblem) -> tuple[int, ...]:
    return (p.n, p.a)


def reference(p: AxpyProblem, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    return p.a * inputs["x"].astype(np.float64) + inputs["y"].astype(np.float64)


_params = [Param("WG", (1, 8, 32, 64)), Param("ELEMS", (1, 2, 4))]
_rules = [Constraint.from_expr("WG <= device.max_work_group_size", "group too large", ["WG", "ELEMS"])]
_common = dict(
    problem_type=AxpyProblem,
    source=SOURCE,
    entry="axpy",
    geometry=geometry,
    make_inputs=make_inputs,
    output=output,
    buffers=("x", "y", "out"),
    scalars=scalars,
    reference=reference,
    tolerance=1e-6,
)

AXPY = register_family(
    KernelFamily(name="axpy", space=SearchSpace(_params, _rules), **_common),  # type: ignore[arg-type]
    replace=True,
)


def faulty_geometry(p: AxpyProblem, c: Config) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    groups, (local, _, _) = geometry(p, c)
    return groups, (local * (1024 if c["MODE"] == 5 else 1), 1, 1)  # MODE 5: too many work-items per group


AXPY_FAULTY = register_family(
    KernelFamily(name="axpy_faulty", space=SearchSpace([Param("MODE", (0, 1, 2, 3, 4, 5)), *_params], _rules),
                 **{**_common, "geometry": faulty_geometry}),  # type: ignore[arg-type]
    replace=True,
)  # fmt: skip


def faulty(mode: int) -> Config:
    return Config.of({"MODE": mode, "WG": 8, "ELEMS": 2})
