from __future__ import annotations

import dataclasses
import itertools
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.problem import Conv2dProblem
from kptune.space import Completer, Config, Constraint, Param, SearchSpace

# Limits as drivers report them for two real devices (an H100 through CUDA, PoCL on a CPU).
H100 = DeviceInfo("cupy", "0", "NVIDIA H100 80GB HBM3", "NVIDIA", "gpu", "", "", 1024, 49152, 65536, 132, 32,
                  52428800, 85_000_000_000)  # fmt: skip
POCL = DeviceInfo("opencl", "0:0", "pthread-cpu", "GenuineIntel", "cpu", "", "", 4096, 2097152, 0, 2, 1,
                  1 << 20, 4 << 30)  # fmt: skip
SPACE = get_family("conv2d_fwd").space

problems = st.builds(
    lambda n, c, hw, k, r, s, pad, stride: Conv2dProblem(
        n=n, c=c, h=hw + r, w=hw + s, k=k, r=r, s=s, pad_h=pad, pad_w=pad, stride_h=stride, stride_w=stride
    ),
    n=st.integers(1, 64), c=st.integers(1, 512), hw=st.integers(0, 60), k=st.integers(1, 512),
    r=st.integers(1, 7), s=st.integers(1, 7), pad=st.integers(0, 3), stride=st.integers(1, 2),
)  # fmt: skip


def _brute_force_prefixes(space: SearchSpace, problem: Conv2dProblem, device: DeviceInfo) -> set[tuple[int, ...]]:
    prefixes = set()
    for values in itertools.product(*(p.values for p in space.params)):
        if space.valid(problem, device, dict(zip(space.names, values, strict=True))):
            prefixes.update(values[:i] for i in range(len(values) + 1))
    return prefixes


#: The conv space with fewer values per parameter (same rules): its 13,824 raw configs can be
#: brute-forced per example, the full 1.5 million cannot.
SUB_SPACE = SearchSpace(
    [dataclasses.replace(p, values=p.values[:: max(1, len(p.values) // 2)] if len(p.values) > 3 else p.values)
     for p in SPACE.params],
    SPACE.constraints,
)  # fmt: skip


@settings(max_examples=20, deadline=None)
@given(problem=problems, device=st.sampled_from([H100, POCL]))
def test_prefix_valid_agrees_with_valid(problem: Conv2dProblem, device: DeviceInfo) -> None:
    expected = _brute_force_prefixes(SUB_SPACE, problem, device)
    completer = Completer(SUB_SPACE, problem, device)  # the beam search's lazy check: same answers
    for depth in range(len(SUB_SPACE.names) + 1):
        for prefix in itertools.product(*(p.values for p in SUB_SPACE.params[:depth])):
            assert SUB_SPACE.prefix_valid(problem, device, prefix) == (prefix in expected), prefix
            assert completer.completable(prefix) == (prefix in expected), prefix
    configs = SUB_SPACE.configs(problem, device)
    assert {c.values() for c in configs} == {p for p in expected if len(p) == len(SUB_SPACE.names)}
    assert all(SUB_SPACE.valid(problem, device, c) for c in configs)


def test_space_sizes_for_a_mid_size_problem() -> None:
    problem = Conv2dProblem.parse("n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1")
    configs = SPACE.configs(problem, H100)
    assert SPACE.raw_size >= 10_000
    assert 200 <= len(configs) < SPACE.raw_size
    assert all((c["BM"] // c["TM"]) * (c["BN"] // c["TN"]) <= 1024 for c in configs)


def test_device_limits_shrink_the_space() -> None:
    problem = Conv2dProblem.parse("n=8,c=64,h=28,w=28,k=128,r=3,s=3,pad=1")
    small = dataclasses.replace(H100, max_work_group_size=128, max_local_mem_bytes=8192)
    big, little = SPACE.configs(problem, H100), SPACE.configs(problem, small)
    assert set(little) < set(big)
    assert all((c["BM"] // c["TM"]) * (c["BN"] // c["TN"]) <= 128 for c in little)


def test_violations_name_the_rule() -> None:
    problem = Conv2dProblem.parse("n=1,c=3,h=8,w=8,k=8,r=3,s=3")  # 3 input channels: BK of 4 at most
    bad = Config.of({"ALGO": 0, "A_VEC": 1, "BM": 64, "BN": 16, "BK": 16, "TM": 2, "TN": 1, "TH": 1,
                     "KSPLIT": 1, "STAGES": 2, "BPAD": 4, "UNROLL": 0})  # fmt: skip
    assert any("BK exceeds" in v for v in SPACE.violations(problem, H100, bad))
    assert any("padding helps only" in v for v in SPACE.violations(problem, H100, bad))
    assert not SPACE.prefix_valid(problem, H100, {"ALGO": 0, "A_VEC": 1, "BM": 64, "BN": 16, "BK": 16})
    assert SPACE.prefix_valid(problem, H100, {"ALGO": 0, "A_VEC": 1, "BM": 64, "BN": 16, "BK": 4})
    assert not SPACE.prefix_valid(problem, H100, {"ALGO": 1})  # 3x3: no 1x1 GEMM
    assert not SPACE.prefix_valid(problem, H100, {"ALGO": 0, "A_VEC": 4})  # vectors are the 1x1 GEMM's
    assert SPACE.prefix_valid(problem, H100, {"ALGO": 2})  # 3 channels: the direct convolution applies


def test_spaces_pickle_for_the_worker_process() -> None:
    space = pickle.loads(pickle.dumps(SPACE))
    problem = Conv2dProblem.parse("n=2,c=8,h=8,w=8,k=16,r=3,s=3,pad=1")
    assert space.configs(problem, POCL) == SPACE.configs(problem, POCL)


def test_callable_constraints_and_from_dict() -> None:
    space = SearchSpace(
        [Param("A", (1, 2, 4)), Param("B", (1, 2, 4))],
        [Constraint(("A", "B"), lambda env: env["A"] * env["B"] <= env["k"], "A*B <= k")],
    )
    problem = Conv2dProblem.parse("n=1,c=1,h=1,w=1,k=4,r=1,s=1")
    assert [c.values() for c in space.configs(problem, POCL)] == [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (4, 1)]
    assert not space.prefix_valid(problem, POCL, (8,))
    loaded = SearchSpace.from_dict({"params": [{"name": "A", "values": [1, 2]}],
                                    "constraints": [{"expr": "A < device.compute_units", "why": "w"}]})  # fmt: skip
    assert [c.values() for c in loaded.configs(problem, POCL)] == [(1,)]


@settings(max_examples=10, deadline=None)
@given(problem=problems, device=st.sampled_from([H100, POCL]))
def test_completer_allowed_matches_prefix_valid(problem: Conv2dProblem, device: DeviceInfo) -> None:
    completer = Completer(SUB_SPACE, problem, device)
    frontier: list[tuple[int, ...]] = [()]
    for depth in range(len(SUB_SPACE.names)):
        param = SUB_SPACE.params[depth]
        nxt = []
        for prefix in frontier:
            expect = [v for v in param.values if SUB_SPACE.prefix_valid(problem, device, (*prefix, v))]
            assert completer.allowed(prefix) == expect, prefix
            nxt += [(*prefix, v) for v in expect]
        frontier = nxt[:6]


def test_one_completer_answers_two_threads_alike() -> None:
    # autotune asks the same problem's Completer from two threads at once (the beam search, and the
    # cost model's pool beside it); both bind values in one environment, so without its lock one
    # thread's check read the other's values and memoized wrong answers
    import sys
    import threading

    problem = Conv2dProblem(n=8, c=96, h=30, w=30, k=72, r=3, s=3, pad_h=1, pad_w=1)
    expected = _brute_force_prefixes(SUB_SPACE, problem, H100)
    full = [v for v in itertools.product(*(p.values for p in SUB_SPACE.params))]
    answers: dict[int, list[bool]] = {}
    completer = Completer(SUB_SPACE, problem, H100)

    def ask(which: int) -> None:
        answers[which] = [completer.completable(v) for v in (full if which == 0 else full[::-1])]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert answers[0] == [v in expected for v in full]
    assert answers[1] == [v in expected for v in full[::-1]]
