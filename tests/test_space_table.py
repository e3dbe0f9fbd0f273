from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_space import H100, POCL, SPACE, SUB_SPACE, _brute_force_prefixes, problems

from kptune.device import DeviceInfo
from kptune.problem import Conv2dProblem
from kptune.space import Completer, Constraint, Param, SearchSpace
from kptune.space_table import table_for


@settings(max_examples=20, deadline=None)
@given(problem=problems, device=st.sampled_from([H100, POCL]))
def test_the_table_answers_as_brute_force(problem: Conv2dProblem, device: DeviceInfo) -> None:
    expected = _brute_force_prefixes(SUB_SPACE, problem, device)
    completer = Completer(SUB_SPACE, problem, device, table=True)
    assert completer._table is not None
    for depth in range(len(SUB_SPACE.names) + 1):
        for prefix in itertools.product(*(p.values for p in SUB_SPACE.params[:depth])):
            assert completer.completable(prefix) == (prefix in expected), prefix
            if depth < len(SUB_SPACE.names) and prefix in expected:
                want = [v for v in SUB_SPACE.params[depth].values if (*prefix, v) in expected]
                assert completer.allowed(prefix) == want, prefix


@settings(max_examples=15, deadline=None)
@given(problem=problems, device=st.sampled_from([H100, POCL]), seed=st.integers(0, 2**16))
def test_the_table_and_the_search_agree_on_the_whole_space(problem: Conv2dProblem, device: DeviceInfo,
                                                           seed: int) -> None:  # fmt: skip
    # the full conv space (1.5 million raw configs): a random walk of prefixes, the two ways of answering
    import random

    rng = random.Random(seed)
    searched = Completer(SPACE, problem, device, table=False)
    tabled = Completer(SPACE, problem, device, table=True)
    frontier: list[tuple[int, ...]] = [()]
    for depth in range(len(SPACE.names)):
        nxt = []
        for prefix in frontier:
            allowed = searched.allowed(prefix)
            assert tabled.allowed(prefix) == allowed, prefix
            for v in SPACE.params[depth].values:
                assert tabled.completable((*prefix, v)) == (v in allowed)
            nxt += [(*prefix, v) for v in allowed]
        frontier = rng.sample(nxt, min(8, len(nxt)))
    assert not tabled.completable((0,) * (len(SPACE.names) + 1))
    assert not tabled.completable((3,))  # not a value of ALGO


def test_a_rule_that_raises_makes_its_configs_invalid() -> None:
    # k // A: A = 0 raises for every problem; A = 3 for problems with k < 3 only (an error is invalid, as
    # when the rules are searched)
    space = SearchSpace.from_dict({
        "params": [{"name": "A", "values": [0, 1, 3]}, {"name": "B", "values": [1, 2]}],
        "constraints": [{"expr": "k // A >= B", "why": "w"}, {"expr": "B <= device.compute_units", "why": "d"}],
    })  # fmt: skip
    for k in (1, 2, 4):
        problem = Conv2dProblem.parse(f"n=1,c=1,h=1,w=1,k={k},r=1,s=1")
        tabled = Completer(space, problem, H100, table=True)
        want = [c.values() for c in space.configs(problem, H100)]
        assert [v for v in itertools.product((0, 1, 3), (1, 2)) if tabled.completable(v)] == want
        assert tabled.allowed(()) == [a for a in (0, 1, 3) if any(v[0] == a for v in want)]


def test_a_space_with_a_callable_rule_has_no_table() -> None:
    space = SearchSpace([Param("A", (1, 2))], [Constraint(("A",), lambda env: env["A"] <= env["k"], "A <= k")])
    problem = Conv2dProblem.parse("n=1,c=1,h=1,w=1,k=1,r=1,s=1")
    assert table_for(space, H100) is None
    completer = Completer(space, problem, H100, table=True)  # answers by search
    assert completer.allowed(()) == [1]
    assert table_for(SPACE, H100) is table_for(SPACE, H100)  # built once per device


def test_rules_with_names_of_their_own_are_checked_per_config() -> None:
    # a rule's parts that read only the problem are computed once per problem; a comprehension's or a
    # lambda's own names are not the problem's
    space = SearchSpace.from_dict({
        "params": [{"name": "A", "values": [1, 2, 4, 8]}],
        "constraints": [{"expr": "max([x * A for x in (1, 2)]) >= k and (lambda y: y * A)(c) <= 4 * max(c, 1)",
                         "why": "w"}],
    })  # fmt: skip
    for k, c in ((3, 1), (8, 2), (20, 1)):
        problem = Conv2dProblem.parse(f"n=1,c={c},h=1,w=1,k={k},r=1,s=1")
        want = [v for (v,) in (cfg.values() for cfg in space.configs(problem, H100))]
        assert Completer(space, problem, H100, table=True).allowed(()) == want


def test_combinations_found_without_numbering_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # a group of rules whose parameters have too many combinations to number in int64 finds them by rows
    import kptune.space_table as space_table

    problem = Conv2dProblem.parse("n=4,c=96,h=30,w=30,k=72,r=3,s=3,pad=1")
    numbered = space_table.DeviceTable(SPACE, space_table._device_rows(SPACE, H100) or [])
    monkeypatch.setattr(space_table, "CODED", 1)
    by_rows = space_table.DeviceTable(SPACE, space_table._device_rows(SPACE, H100) or [])
    env = SPACE._env(problem, H100)
    assert [r.combos for r in by_rows._rules] == [r.combos for r in numbered._rules]
    assert np.array_equal(by_rows.counts(env), numbered.counts(env))
