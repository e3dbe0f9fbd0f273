"""Decoding: beam search whose every step keeps only tokens that leave a completable prefix.

`constrained_allowed(space, problem, device)` asks a `Completer` (the same answers as
`SearchSpace.prefix_valid`: hardware limits and expert rules, lazily), so every config returned
is valid by construction. `all_allowed` is the
unconstrained beam (only the position's own vocabulary), and width 1 with the constraint is
MIOpen KTN's greedy decoding.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import torch

from kptune.device import DeviceInfo
from kptune.predict.tokenizer import BOS, TargetVocab
from kptune.problem import Problem
from kptune.space import Completer, Config, SearchSpace

_NEG_INF = float("-inf")

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
        logp_all = logits[:, span.start : span.stop]
        keep = max(width, k) if t == positions - 1 else width
        values = vocab.values[t]
        where = {v: j for j, v in enumerate(values)}
        choices = [allowed(prefix) for prefix, _ in beams]
        if all(len(c) == 1 for c in choices):  # one value left for every beam: renormalised, its log p is 0
            beams = [((*prefix, c[0]), score) for (prefix, score), c in zip(beams, choices, strict=True)]
            last = torch.tensor([vocab.offsets[t] + where[c[0]] for c in choices])
            continue
        rows = []  # the additive mask, built in Python and converted once (element writes cost ~5 us each)
        allowed_count = 0
        for c in choices:
            row = [_NEG_INF] * len(values)
            for v in c:
                row[where[v]] = 0.0
                allowed_count += 1
            rows.append(row)
        # renormalised over the allowed tokens only; a beam with none left drops out (-inf)
        logp = torch.log_softmax(logp_all + torch.tensor(rows), dim=1)
        logp = torch.nan_to_num(logp, nan=_NEG_INF) + torch.tensor([score for _, score in beams]).unsqueeze(1)
        flat = logp.flatten()  # (a row with nothing allowed was NaN, now -inf)
        count = min(keep, allowed_count)
        if count == 0:
            return []
        top = torch.topk(flat, count)
        scored = [
            (s, i // len(values), i % len(values))
            for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
        pick = torch.tensor([b for _, b, _ in scored])
        memory = model.select(memory, pick)
        beams = [((*beams[b][0], vocab.values[t][j]), s) for s, b, j in scored]
        last = torch.tensor([vocab.offsets[t] + j for _, _, j in scored])
    out = [Candidate(Config(tuple(zip(vocab.names, values, strict=True))), score) for values, score in beams]
    return out[:k]
