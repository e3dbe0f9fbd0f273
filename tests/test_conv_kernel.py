"""The real convolution kernels (all three algorithms), compiled and run on PoCL, checked against float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kptune.backends import open_backend
from kptune.campaign import campaign
from kptune.device import DeviceInfo
from kptune.families.conv2d import conv2d_reference
from kptune.kernel import get_family
from kptune.measure import measure_config, prepare
from kptune.measurement import Outcome, TimingSettings
from kptune.problem import Conv2dProblem
from kptune.space import Config

FAMILY = get_family("conv2d_fwd")
ONE_RUN = TimingSettings(warmup=0, first_batch=1, min_runs=1, max_runs=1, max_input_sets=1)

SHAPES = [
    "n=2,c=5,h=9,w=7,k=6,r=3,s=2,pad_h=1,pad_w=0,stride=2,dil_h=2",  # odd sizes, R!=S, stride 2, dilation 2
    "n=1,c=8,h=11,w=13,k=20,r=5,s=5,pad=2,dilation=2",  # dilation on both axes, pads, K not a tile multiple
    "n=3,c=16,h=6,w=6,k=33,r=1,s=1,stride=2",  # 1x1, stride 2, vector loads possible
    "n=1,c=4,h=7,w=5,k=4,r=3,s=1,pad_h=2,pad_w=1,stride_h=1,stride_w=3",  # asymmetric everything
    "n=2,c=5,h=9,w=7,k=6,r=3,s=2,pad_h=1,pad_w=0,stride=2,dil_h=2,dtype=fp16",  # fp16 storage
    "n=3,c=16,h=6,w=6,k=33,r=1,s=1,stride=2,dtype=fp16",
    "n=1,c=20,h=5,w=4,k=9,r=3,s=3,pad=1",  # split-K 2 and 4, partial unroll, direct
]

#: Small shapes on which every valid config is compiled, run and verified (196 configs; fp16 with
#: the direct algorithm is sampled in SHAPES, to keep CI on two cores well under 20 minutes).
EVERY_CONFIG_SHAPES = [
    "n=1,c=2,h=6,w=6,k=8,r=5,s=5,pad=2",  # implicit GEMM, split-K, direct with a 5x5 filter
    "n=1,c=3,h=4,w=5,k=7,r=1,s=1,dtype=fp16",  # the 1x1 GEMM, A_VEC 2 and 4, fp16
    "n=1,c=3,h=9,w=7,k=5,r=3,s=2,pad_h=1,pad_w=0,stride=2,dil_h=2",  # odd, R != S, stride/dilation 2
]


def _sample(configs: list[Config]) -> list[Config]:
    """The first and the last config of each (algorithm, split-K, unroll, padding) group."""
    groups: dict[tuple[int, int, int, int], list[Config]] = {}
    for c in configs:
        groups.setdefault((c["ALGO"], c["KSPLIT"], c["UNROLL"], c["BPAD"]), []).append(c)
    out = []
    for group in groups.values():
        out += [group[0], group[-1]]
    return list(dict.fromkeys(out))


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


def test_the_array_versions_are_the_host_ones_with_numpy(cpu_device: DeviceInfo) -> None:
    """A CuPy worker makes each problem on the GPU with this code and xp=cupy (checked there in
    tests/test_gpu.py); with NumPy the reference is the host's, the inputs are alike. OpenCL
    workers get the host's."""
    from kptune.backends import made_on_device
    from kptune.runner import Runner

    assert FAMILY.array_inputs is not None and FAMILY.array_reference is not None
    for shape in SHAPES:
        p = Conv2dProblem.parse(shape)
        inputs = FAMILY.make_inputs(p, np.random.default_rng(0))
        np.testing.assert_array_equal(FAMILY.array_reference(p, inputs, np), FAMILY.reference(p, inputs))
        made = FAMILY.array_inputs(p, 0, np)
        assert {k: (v.shape, v.dtype) for k, v in made.items()} == {k: (v.shape, v.dtype) for k, v in inputs.items()}
        assert all(-1 <= v.min() and v.max() <= 1 and np.all(v != 0) for v in made.values())
    assert not made_on_device(cpu_device, FAMILY)
    with Runner(FAMILY, cpu_device) as runner:
        runner.set_problem(p)
        assert runner._payload is not None and runner._payload[1] is not None and runner._payload[2] is not None


def test_sample_of_configs_verifies_on_pocl(cpu_device: DeviceInfo, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The first and last config of every (algorithm, split-K, unroll, padding) group of each of SHAPES,
    as a 2-worker campaign (a sampling strategy registered for the test): all verified."""
    from kptune import strategies
    from kptune.perfdb import PerfDB

    monkeypatch.setitem(strategies.STRATEGIES, "groups", lambda valid, budget, seed: _sample(list(valid)))
    problems = [Conv2dProblem.parse(shape) for shape in SHAPES]
    result = campaign(problems, FAMILY, devices=[cpu_device], workers=2, db=tmp_path / "perf.db",
                      strategy="groups", settings=ONE_RUN)  # fmt: skip
    assert all(r.complete and r.candidates >= 4 for r in result.problems)
    assert result.outcomes == {"ok": sum(r.candidates for r in result.problems)}
    with PerfDB(tmp_path / "perf.db") as db:
        for t in db.tuned_problems():
            limit = 1e-3 if "dtype=fp16" in t.problem_key else 1e-5
            errors = [m.rel_error for m in db.measurements(t.problem_id, t.device_id, t.kernel_id)]
            assert all(e is not None and e < limit for e in errors), (t.problem_key, max(errors))


def test_every_config_verifies_on_pocl(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    # A campaign with two workers on the one PoCL device: PoCL compiles each kernel for its
    # work-group size at first launch, in the launching process, so two workers halve that on two cores.
    problems = [Conv2dProblem.parse(shape) for shape in EVERY_CONFIG_SHAPES]
    result = campaign(problems, FAMILY, devices=[cpu_device], workers=2, chunk=16, db=tmp_path / "perf.db",
                      settings=ONE_RUN)  # fmt: skip
    for problem, report in zip(problems, result.problems, strict=True):
        assert report.candidates == len(FAMILY.space.configs(problem, cpu_device)) >= 20
        assert report.complete and report.measured == report.candidates
    assert result.outcomes == {"ok": sum(r.candidates for r in result.problems)}


def test_every_algorithm_and_knob_is_covered_by_the_every_config_shapes(cpu_device: DeviceInfo) -> None:
    seen: dict[str, set[int]] = {}
    for shape in EVERY_CONFIG_SHAPES:
        for config in FAMILY.space.configs(Conv2dProblem.parse(shape), cpu_device):
            for name, value in config.items:
                seen.setdefault(name, set()).add(value)
    assert seen["ALGO"] == {0, 1, 2} and seen["A_VEC"] == {1, 2, 4} and seen["KSPLIT"] >= {1, 2, 4}
    assert seen["STAGES"] == {1, 2} and seen["TH"] >= {1, 2, 4}


@pytest.mark.parametrize("shape", ["n=2,c=12,h=6,w=6,k=20,r=1,s=1", "n=3,c=9,h=4,w=5,k=8,r=1,s=1,dtype=fp16"])
def test_1x1_vector_loads_verify_on_pocl(cpu_device: DeviceInfo, shape: str) -> None:
    problem = Conv2dProblem.parse(shape)
    configs = FAMILY.space.configs(problem, cpu_device)
    assert all(c["ALGO"] == 1 for c in configs)  # the 1x1 GEMM replaces the implicit GEMM here
    by_vec = {v: [c for c in configs if c["A_VEC"] == v] for v in (2, 4)}
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
        assert configs and all(c["A_VEC"] == 1 and c["ALGO"] != 1 for c in configs), shape
