from __future__ import annotations

import pytest

from kptune.errors import KptuneError
from kptune.space import Config
from kptune.strategies import STRATEGIES, get_strategy

CONFIGS = [Config.of({"A": i}) for i in range(50)]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_returns_distinct_configs_from_the_space(name: str) -> None:
    chosen = STRATEGIES[name](CONFIGS, 10, 0)
    assert chosen and len(set(chosen)) == len(chosen) and set(chosen) <= set(CONFIGS)


def test_random_is_seeded_and_budgeted() -> None:
    random = get_strategy("random")
    assert random(CONFIGS, 10, 1) == random(CONFIGS, 10, 1) != random(CONFIGS, 10, 2)
    assert len(random(CONFIGS, 10, 1)) == 10 and len(random(CONFIGS, 500, 1)) == 50
    with pytest.raises(KptuneError, match="budget"):
        random(CONFIGS, None, 0)


def test_exhaustive_takes_everything() -> None:
    assert get_strategy("exhaustive")(CONFIGS, None, 0) == CONFIGS
    with pytest.raises(KptuneError, match="unknown strategy"):
        get_strategy("annealing")
