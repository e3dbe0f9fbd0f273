"""After autotune's candidates: a greedy local search around the fastest measured config.

Kernel Tuner's greedy local search, seeded by the model: in rounds of `ROUND`, the fastest measured config
not yet searched from lends its valid neighbours (`neighbours`: one parameter one step along its values, or
two parameters one step each) not yet measured, the `ROUND` the model finds likeliest first; a round's
configs are measured together (compiled in parallel), then the next round starts from whichever config is
now the fastest. Far from the shapes a model learnt from, its picks and the tuned shapes' land near the
optimum more often than on it (on 227 random conv layers outside the corpus, timed exhaustively on an
H100, the optimum was often one or two steps from autotune's best): `benchmarks/RESULTS.md`. With no model
for the device (`unguided`), autotune's fallback runs the same search after half its budget of random
configs, a config's neighbours in an order shuffled by the timing seed.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from kptune.device import DeviceInfo
from kptune.measurement import Measurement
from kptune.problem import Conv2dProblem, Problem
from kptune.space import Config, SearchSpace

if TYPE_CHECKING:
    from torch import nn

    from kptune.predict.tokenizer import TargetVocab

#: configs measured after autotune's candidates, by default
LOCAL = 10
#: configs measured together in one round
ROUND = 5

#: configs -> the same configs, likeliest first
Order = Callable[[list[Config]], list[Config]]


def neighbours(space: SearchSpace, problem: Problem, device: DeviceInfo, config: Config) -> list[Config]:
    """The configs valid for `problem` on `device` one step from `config` along one parameter's values, then
    those one step along each of two parameters; each once, `config` itself never."""
    values = config.values()
    steps = [[(i, j + d) for d in (-1, 1) if 0 <= (j := p.values.index(v)) + d < len(p.values)]
             for i, (p, v) in enumerate(zip(space.params, values, strict=True))]  # fmt: skip
    moves = [[m] for ms in steps for m in ms]
    moves += [[a, b] for s, t in itertools.combinations(steps, 2) for a in s for b in t]
    out: dict[Config, None] = {}
    for move in moves:
        new = list(values)
        for i, j in move:
            new[i] = space.params[i].values[j]
        candidate = Config(tuple(zip(space.names, new, strict=True)))
        if space.valid(problem, device, candidate):
            out[candidate] = None
    return list(out)


class LocalSearch:
    """The rounds of one problem's search (module docstring). `expand(config)`: its neighbours; `order`:
    likeliest first (default: as `expand` gives them)."""

    def __init__(self, expand: Callable[[Config], list[Config]], order: Order | None = None,
                 round_size: int = ROUND) -> None:  # fmt: skip
        if round_size < 1:
            raise ValueError(f"a round measures at least 1 config, not {round_size}")
        self.expand, self.order, self.round_size = expand, order or (lambda configs: configs), round_size
        self.searched: set[Config] = set()

    def next_round(self, measured: Mapping[Config, float], left: int) -> list[Config]:
        """At most min(ROUND, left) configs to measure next, given every config measured so far and its time
        (math.inf: failed); empty when the search is over (nothing left to spend, every measured config
        searched from, or the fastest left to search from failed)."""
        while left > 0:
            base = next((c for c in sorted(measured, key=measured.__getitem__) if c not in self.searched), None)
            if base is None or measured[base] == math.inf:
                return []
            self.searched.add(base)
            fresh = [c for c in self.expand(base) if c not in measured]
            if fresh:
                return self.order(fresh)[: min(self.round_size, left)]
        return []


def search(start: Mapping[Config, float], more: int, measure: Callable[[list[Config]], Mapping[Config, float]],
           expand: Callable[[Config], list[Config]], order: Order | None = None,
           round_size: int = ROUND) -> dict[Config, float]:  # fmt: skip
    """Every config measured: `start`'s (config -> time, math.inf where it failed) and up to `more` found by the
    search from them, each round's times given by `measure(configs)` (a config it leaves out counts as
    failed)."""
    measured = dict(start)
    rounds = LocalSearch(expand, order, round_size)
    spent = 0
    while batch := rounds.next_round(measured, more - spent):
        times = measure(batch)
        for config in batch:
            measured[config] = times.get(config, math.inf)
        spent += len(batch)
    return measured


def guided(start: Mapping[Config, float], more: int, measure: Callable[[list[Config]], Mapping[Config, float]],
           space: SearchSpace, problem: Conv2dProblem, device: DeviceInfo, model: nn.Module,
           vocab: TargetVocab) -> dict[Config, float]:  # fmt: skip
    """`search` as autotune runs it: each config's `neighbours` in `space`, the seq2seq's likeliest first
    (`model_order`)."""
    order = model_order(model, vocab, problem, device)
    return search(start, more, measure, lambda c: neighbours(space, problem, device, c), order)


def unguided(start: Mapping[Config, float], more: int, measure: Callable[[list[Config]], Mapping[Config, float]],
             space: SearchSpace, problem: Problem, device: DeviceInfo, seed: int) -> dict[Config, float]:  # fmt: skip
    """`search` as autotune's fallback runs it, with no model: each config's `neighbours` in `space`, in an order
    shuffled by `seed` (`shuffled`)."""
    return search(start, more, measure, lambda c: neighbours(space, problem, device, c), shuffled(seed))


def shuffled(seed: int) -> Order:
    """Configs in an order shuffled by `seed` (one generator for a whole search: each round draws anew)."""
    draw = random.Random(seed)
    return lambda configs: draw.sample(configs, len(configs))


#: configs -> each one's time
Measure = Callable[[Iterable[Config]], dict[Config, float]]


def recorded(times: Mapping[str, float], missing: float = math.inf) -> Measure:
    """A `measure` that reads times already recorded, by config key; `missing` for a config with none."""
    return lambda configs: {c: times.get(c.key(), missing) for c in configs}


def model_order(model: nn.Module, vocab: TargetVocab, problem: Conv2dProblem, device: DeviceInfo) -> Order:
    """Configs likeliest first by the seq2seq's log-probability (`blend.sequence_log_probs`; ties keep their
    order)."""
    from kptune.predict.blend import sequence_log_probs

    def order(configs: list[Config]) -> list[Config]:
        logp = sequence_log_probs(model, vocab, problem, [c.key() for c in configs], device)
        return [configs[i] for i in sorted(range(len(configs)), key=lambda i: -logp[i])]

    return order


def times_of(measured: Iterable[Measurement]) -> dict[Config, float]:
    """Each measurement's config and time (math.inf where it is not ok)."""
    return {m.config: (m.time_ms if m.ok and m.time_ms else math.inf) for m in measured}
