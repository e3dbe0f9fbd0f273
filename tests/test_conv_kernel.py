"""The real implicit-GEMM kernel, compiled and run on PoCL, checked against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

from kptune.backends import open_backend
from kptune.device import DeviceInfo
from kptune.families.conv2d import conv2d_reference
from kptune.kernel import get_family
from kptune.measure import measure_config, prepare
from kptune.measurement import Outcome, TimingSettings
from kptune.problem import Conv2dProblem

FAMILY = get_family("conv2d_igemm_fwd")
ONE_RUN = TimingSettings(warmup=0, first_batch=1, min_runs=1, max_runs=1, max_input_sets=1)

SHAPES = [
    "n=2,c=5,h=9,w=7,k=6,r=3,s=2,pad_h=1,pad_w=0,stride=2,dil_h=2",  # odd sizes, R!=S, stride 2, dilation 2
    "n=1,c=8,h=11,w=13,k=20,r=5,s=5,pad=2,dilation=2",  # dilation on both axes, pads, K not a tile multiple
    "n=3,c=16,h=6,w=6,k=33,r=1,s=1,stride=2",  # 1x1, stride 2, vector loads possible
    "n=1,c=4,h=7,w=5,k=4,r=3,s=1,pad_h=2,pad_w=1,stride_h=1,stride_w=3",  # asymmetric everything
    "n=2,c=5,h=9,w=7,k=6,r=3,s=2,pad_h=1,pad_w=0,stride=2,dil_h=2,dtype=fp16",  # fp16 storage
    "n=3,c=16,h=6,w=6,k=33,r=1,s=1,stride=2,dtype=fp16",
]


def test_reference_matches_a_direct_loop() -> None:
    p = Conv2dProblem.parse(SHAPES[0])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((p.n, p.c, p.h, p.w))
    w = rng.standard_normal((p.k, p.c, p.r, p.s))
    y = conv2d_reference(p, x, w)
    expect = np.zeros_like(y)
    for n, k, oh, ow in np.ndindex(*y.shape):
        for c, r, s in np.ndindex(p.c, p.r, p.s):
            ih, iw = oh * p.stride_h - p.pad_h + r * p.dil_h, ow * p.stride_w - p.pad_w + s * p.dil_w
            if 0 <= ih < p.h and 0 <= iw < p.w:
                expect[n, k, oh, ow] += x[n, c, ih, iw] * w[k, c, r, s]
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_sample_of_configs_verifies_on_pocl(cpu_device: DeviceInfo, shape: str) -> None:
    problem = Conv2dProblem.parse(shape)
    configs = FAMILY.space.configs(problem, cpu_device)
    assert len(configs) >= 8
    sample = [*configs[:: max(1, len(configs) // 3)][:3], configs[-1]]
    backend = open_backend(cpu_device)
    inputs = FAMILY.make_inputs(problem, np.random.default_rng(0))
    state = prepare(backend, FAMILY, problem, inputs, FAMILY.reference(problem, inputs), ONE_RUN)
    for config in sample:
        m = measure_config(backend, FAMILY, state, config, None, ONE_RUN)
        assert m.outcome is Outcome.OK, (config.key(), m.error)
        assert m.rel_error is not None and m.rel_error < (1e-3 if problem.dtype == "fp16" else 1e-5)


@pytest.mark.parametrize("shape", ["n=2,c=12,h=6,w=6,k=20,r=1,s=1", "n=3,c=9,h=4,w=5,k=8,r=1,s=1,dtype=fp16"])
def test_1x1_vector_loads_verify_on_pocl(cpu_device: DeviceInfo, shape: str) -> None:
    problem = Conv2dProblem.parse(shape)
    configs = FAMILY.space.configs(problem, cpu_device)
    by_vec = {v: [c for c in configs if c["A_VEC"] == v] for v in (1, 2, 4)}
    assert all(by_vec.values()), {v: len(cs) for v, cs in by_vec.items()}
    backend = open_backend(cpu_device)
    inputs = FAMILY.make_inputs(problem, np.random.default_rng(0))
    state = prepare(backend, FAMILY, problem, inputs, FAMILY.reference(problem, inputs), ONE_RUN)
    for vec, group in by_vec.items():
        for config in group[:: max(1, len(group) // 2)][:2]:
            m = measure_config(backend, FAMILY, state, config, None, ONE_RUN)
            assert m.outcome is Outcome.OK, (vec, config.key(), m.error)


def test_vector_loads_are_refused_where_pixels_are_not_contiguous(cpu_device: DeviceInfo) -> None:
    for shape in ("n=1,c=8,h=6,w=6,k=8,r=3,s=3,pad=1", "n=1,c=8,h=6,w=6,k=8,r=1,s=1,stride=2",
                  "n=1,c=8,h=5,w=5,k=8,r=1,s=1"):  # fmt: skip
        configs = FAMILY.space.configs(Conv2dProblem.parse(shape), cpu_device)
        assert configs and all(c["A_VEC"] == 1 for c in configs), shape
