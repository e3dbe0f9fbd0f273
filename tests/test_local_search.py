"""kptune.local_search: the neighbourhood, the rounds, and autotune's search after its candidates on PoCL."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.local_search import LocalSearch, neighbours, recorded, search, shuffled, unguided
from kptune.problem import Conv2dProblem

FAMILY = get_family("conv2d_fwd")


def test_the_neighbours_are_valid_and_one_step_along_one_or_two_parameters(cpu_device: DeviceInfo) -> None:
    space = FAMILY.space
    problem = Conv2dProblem.parse("n=1,c=32,h=14,w=14,k=64,r=3,s=3,pad=1")
    for base in space.configs(problem, cpu_device)[::97]:
        near = neighbours(space, problem, cpu_device, base)
        assert near and len(set(near)) == len(near) and base not in near
        for config in near:
            assert space.valid(problem, cpu_device, config)
            steps = [abs(p.values.index(a) - p.values.index(b))
                     for p, a, b in zip(space.params, base.values(), config.values(), strict=True)]  # fmt: skip
            assert max(steps) == 1 and 1 <= sum(steps) <= 2
        singles = [c for c in near if sum(a != b for a, b in zip(base.values(), c.values(), strict=True)) == 1]
        assert near[: len(singles)] == singles  # one parameter's steps first


def test_the_search_spends_its_budget_in_rounds_from_the_fastest_and_never_loses_it() -> None:
    times = {"a": 2.0, "b": 3.0, "a1": 1.5, "a2": 2.5, "a11": 1.0, "b1": 0.5}
    near = {"a": ["a2", "a1"], "a1": ["a11", "a"], "b": ["b1"], "a11": [], "a2": [], "b1": []}
    rounds: list[list[str]] = []

    def measure(batch: list[str]) -> dict[str, float]:
        rounds.append(batch)
        return {k: times[k] for k in batch if k in times}

    def best(start: list[str], more: int, size: int = 5) -> float:
        rounds.clear()
        found = search({k: times.get(k, math.inf) for k in start}, more, measure, near.__getitem__, sorted, size)  # type: ignore[arg-type]
        assert len(found) == len(set(found)) <= len(start) + more and set(start) <= set(found)
        return min(found.values())

    assert best(["a", "b"], 0) == 2.0 and rounds == []
    assert best(["a", "b"], 1) == 1.5 and rounds == [["a1"]]  # a's likeliest neighbour first
    assert best(["a", "b"], 2) == 1.5 and rounds == [["a1", "a2"]]  # one round: measured together
    assert best(["a", "b"], 3) == 1.0 and rounds == [["a1", "a2"], ["a11"]]  # then from a1, now the fastest
    assert best(["a", "b"], 9) == 0.5  # and from b once a's are spent
    assert best(["a", "b"], 9, size=1) == 0.5 and rounds[:2] == [["a1"], ["a11"]]  # rounds of one: greedy
    assert best(["gone"], 5) == math.inf and rounds == []  # nothing ran: nothing to search from
    with pytest.raises(ValueError, match="at least 1"):
        LocalSearch(near.__getitem__, round_size=0)  # type: ignore[arg-type]


def test_with_no_model_the_neighbours_come_shuffled_by_the_seed_and_the_search_climbs(cpu_device: DeviceInfo) -> None:
    configs = [f"c{i}" for i in range(30)]
    orders = [shuffled(seed)(configs) for seed in (0, 0, 1)]
    assert orders[0] == orders[1] != orders[2] and sorted(orders[0]) == sorted(configs)  # the seed decides it
    space = FAMILY.space
    problem = Conv2dProblem.parse("n=1,c=32,h=14,w=14,k=64,r=3,s=3,pad=1")
    every = space.configs(problem, cpu_device)
    # a table whose time falls with the distance to one config: a climb from anywhere reaches it
    goal = every[len(every) // 2].values()
    times = {c.key(): 1.0 + sum(abs(p.values.index(a) - p.values.index(b))
                                for p, a, b in zip(space.params, c.values(), goal, strict=True))
             for c in every}  # fmt: skip
    measure = recorded(times)
    start = measure(every[:: len(every) // 3][:3])
    found = unguided(start, 60, measure, space, problem, cpu_device, seed=0)
    assert set(start) <= set(found) and len(found) <= len(start) + 60
    assert min(found.values()) < min(start.values()) and all(space.valid(problem, cpu_device, c) for c in found)
    assert unguided(start, 60, measure, space, problem, cpu_device, seed=0) == found  # reproducible


def test_autotune_searches_around_its_fastest_candidate(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    from test_autotune import _model_for

    from kptune.autotune import autotune
    from kptune.errors import KptuneError

    path = _model_for(cpu_device, tmp_path / "cpu.safetensors")
    problem = Conv2dProblem.parse("n=1,c=8,h=12,w=12,k=16,r=3,s=3,pad=1")
    plain = autotune(problem, device=cpu_device, db=tmp_path / "a.db", model=path, k=3, neighbours=0, local=0)
    searched = autotune(problem, device=cpu_device, db=tmp_path / "b.db", model=path, k=3, neighbours=0, local=4)
    first = {m.config for m in plain.measured}
    more = [m.config for m in searched.measured if m.config not in first]
    assert first <= {m.config for m in searched.measured} and len(more) == 4
    assert "local search" in searched.note and "local search" not in plain.note
    assert all(FAMILY.space.valid(problem, cpu_device, c) for c in more)
    reachable = set(first)  # each found one or two steps from a config measured before it
    for config in more:
        assert any(config in neighbours(FAMILY.space, problem, cpu_device, c) for c in reachable)
        reachable.add(config)
    assert searched.best is not None and searched.best.time_ms == min(m.time_ms for m in searched.measured if m.ok)
    with pytest.raises(KptuneError, match="local must be 0 or more"):
        autotune(problem, device=cpu_device, db=tmp_path / "a.db", model=path, local=-1)
