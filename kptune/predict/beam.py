"""Decoding: beam search whose every step keeps only tokens that leave a completable prefix.

`constrained_allowed(space, problem, device)` asks a `Completer` (the same answers as
`SearchSpace.prefix_valid`: hardware limits and expert rules, lazily), so every config returned
is valid by construction. `all_allowed` is the
unconstrained beam (only the position's own vocabulary), and width 1 with the constraint is
MIOpen KTN's greedy decoding.
"""

from __future__ import annotations

import array
import dataclasses
import functools
import heapq
import math
import operator
from collections.abc import Callable, Sequence

import torch

from kptune.device import DeviceInfo
from kptune.predict.tokenizer import BOS, TargetVocab
from kptune.problem import Problem
from kptune.space import Completer, Config, SearchSpace

#: values of parameter len(prefix) that may follow `prefix` (a tuple of values)
Allowed = Callable[[tuple[int, ...]], Sequence[int]]


@dataclasses.dataclass(frozen=True)
class Candidate:
    config: Config
    log_prob: float


def constrained_allowed(space: SearchSpace, problem: Problem, device: DeviceInfo) -> Allowed:
    """Values that keep the prefix completable (a lazy, memoized search: no enumeration of the space)."""
    return _completer(space, problem, device).allowed


@functools.lru_cache(maxsize=1024)
def _completer(space: SearchSpace, problem: Problem, device: DeviceInfo) -> Completer:
    return Completer(space, problem, device)  # memoized answers carry over to the next prediction


def all_allowed(vocab: TargetVocab) -> Allowed:
    return lambda prefix: vocab.values[len(prefix)]


@torch.inference_mode()
def beam_search(model: torch.nn.Module, vocab: TargetVocab, source: Sequence[int], allowed: Allowed,
                width: int = 8, k: int = 5) -> list[Candidate]:  # fmt: skip
    """The top-k distinct complete configs by total log-probability (fewer if fewer exist)."""
    model.eval()
    memory = model.encode(torch.tensor([list(source)]))
    beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    last = torch.tensor([BOS])
    positions = len(vocab.values)
    for t in range(positions):
        logits, memory = model.step(memory, last)
        span = vocab.span(t)
        keep = max(width, k) if t == positions - 1 else width
        values = vocab.values[t]
        where = {v: j for j, v in enumerate(values)}
        choices = [[where[v] for v in allowed(prefix)] for prefix, _ in beams]
        if all(len(c) == 1 for c in choices):  # one value left for every beam: renormalised, its log p is 0
            beams = [((*prefix, values[c[0]]), score) for (prefix, score), c in zip(beams, choices, strict=True)]
            last = _long([span.start + c[0] for c in choices])
            continue
        # log p renormalised over each beam's allowed values, in Python: a beam has at most a few
        # (a tensor op costs more than this loop); a beam with none left drops out
        rows = logits[:, span.start : span.stop].tolist()
        scored: list[tuple[float, int, int]] = []
        for b, (row, js) in enumerate(zip(rows, choices, strict=True)):
            score = beams[b][1]
            if len(js) == 1:
                scored.append((score, b, js[0]))
                continue
            top = max(row[j] for j in js)
            norm = top + math.log(sum(math.exp(row[j] - top) for j in js))
            scored += [(score + row[j] - norm, b, j) for j in js]
        if not scored:
            return []
        scored = heapq.nlargest(keep, scored, key=operator.itemgetter(0))
        memory = model.select(memory, _long([b for _, b, _ in scored]))
        beams = [((*beams[b][0], values[j]), s) for s, b, j in scored]
        last = _long([span.start + j for _, _, j in scored])
    out = [Candidate(Config(tuple(zip(vocab.names, values, strict=True))), score) for values, score in beams]
    return out[:k]


def _long(ids: list[int]) -> torch.Tensor:
    """A 1-D int64 tensor of `ids`; through a buffer, a quarter of torch.tensor's cost on a short list."""
    return torch.frombuffer(array.array("q", ids), dtype=torch.int64)
