"""Search strategies: which configs of a space to measure. One signature, one registry.

A strategy gets the valid configs of a (problem, device) in space order and
returns the ones to measure, in order. Measuring is the runner's job; every
strategy's results land in the perf db in the same form.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from kptune.errors import KptuneError
from kptune.space import Config

Strategy = Callable[[Sequence[Config], "int | None", int], list[Config]]


def exhaustive(configs: Sequence[Config], budget: int | None, seed: int) -> list[Config]:
    """Every valid config (the yardstick); a budget is not allowed to cut it short."""
    return list(configs)


def random_sample(configs: Sequence[Config], budget: int | None, seed: int) -> list[Config]:
    """`budget` configs drawn without replacement; the same seed gives the same sample (resumable)."""
    if budget is None or budget < 1:
        raise KptuneError("the random strategy needs --budget N with N >= 1")
    if budget >= len(configs):
        return list(configs)
    return random.Random(seed).sample(list(configs), budget)


STRATEGIES: dict[str, Strategy] = {"exhaustive": exhaustive, "random": random_sample}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KptuneError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}") from None
