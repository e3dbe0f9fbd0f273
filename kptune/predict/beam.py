"""Decoding: beam search whose every step keeps only tokens that leave a completable prefix.

`constrained_allowed(space, problem, device)` asks `SearchSpace.prefix_valid` (hardware limits
and expert rules), so every config returned is valid by construction. `all_allowed` is the
unconstrained beam (only the position's own vocabulary), and width 1 with the constraint is
MIOpen KTN's greedy decoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from kptune.device import DeviceInfo
from kptune.predict.tokenizer import BOS, TargetVocab
from kptune.problem import Problem
from kptune.space import Config, SearchSpace

#: values of parameter len(prefix) that may follow `prefix` (a tuple of values)
Allowed = Callable[[tuple[int, ...]], Sequence[int]]


@dataclasses.dataclass(frozen=True)
class Candidate:
    config: Config
    log_prob: float


def constrained_allowed(space: SearchSpace, problem: Problem, device: DeviceInfo) -> Allowed:
    def allowed(prefix: tuple[int, ...]) -> list[int]:
        param = space.params[len(prefix)]
        return [v for v in param.values if space.prefix_valid(problem, device, (*prefix, v))]

    return allowed


def all_allowed(vocab: TargetVocab) -> Allowed:
    return lambda prefix: vocab.values[len(prefix)]


@torch.no_grad()
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
        scored: list[tuple[float, int, int]] = []  # (score, beam, value index)
        for b, (prefix, score) in enumerate(beams):
            ok = allowed(prefix)
            if not ok:
                continue
            index = [vocab.values[t].index(v) for v in ok]
            logp = torch.log_softmax(logp_all[b, index], dim=0).tolist()
            scored += [(score + lp, b, j) for lp, j in zip(logp, index, strict=True)]
        if not scored:
            return []
        scored.sort(key=lambda x: -x[0])
        scored = scored[:keep]
        pick = torch.tensor([b for _, b, _ in scored])
        memory = model.select(memory, pick)
        beams = [((*beams[b][0], vocab.values[t][j]), s) for s, b, j in scored]
        last = torch.tensor([vocab.offsets[t] + j for _, _, j in scored])
    out = [Candidate(Config(tuple(zip(vocab.names, values, strict=True))), score) for values, score in beams]
    return out[:k]
