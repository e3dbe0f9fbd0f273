"""Decoding: beam search whose every step keeps only tokens that leave a completable prefix.

`constrained_allowed(space, problem, device)` asks a `Completer` (the same answers as
`SearchSpace.prefix_valid`: hardware limits and expert rules, lazily, or from the device's table of
valid configs, `kptune.space_table`), so every config returned
is valid by construction. `all_allowed` is the
unconstrained beam (only the position's own vocabulary), and width 1 with the constraint is
MIOpen KTN's greedy decoding. A one-layer LSTM decodes through `LSTMBeamDecoder` (built once per
model), any other translator through its own `step`; renormalising and ranking the few allowed
tokens of at most `width` beams is plain Python, cheaper than tensor ops at that size.
"""

from __future__ import annotations

import array
import collections
import dataclasses
import heapq
import math
import operator
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from kptune.device import DeviceInfo
from kptune.predict.ensemble import Ensemble, EnsembleBeamDecoder, EnsembleDecoder
from kptune.predict.launch import Launch
from kptune.predict.models import LSTMBeamDecoder, LSTMTranslator, StepDecoder, log_softmax
from kptune.predict.tokenizer import BOS, TargetVocab
from kptune.problem import Problem
from kptune.space import Config, SearchSpace, completer

#: family -> the parameter its top-k candidates hedge over (`beam_search`'s `spread`): conv2d's split
#: factor, the parameter whose wrong guess cost most on the H200 (the 4 fp32 test problems whose best of
#: 5 was below 0.7 had the optimum at split 4 or 8 and all five candidates at one other split)
HEDGED: dict[str, str] = {"conv2d_fwd": "KSPLIT"}

#: family -> the parameters whose values the top k diversify over (`beam_search`'s `diverse`): conv2d's
#: tile, BM x BN. Chosen on the validation split (RESULTS.md, "the top 5 spread over tiles").
DIVERSE: dict[str, tuple[str, ...]] = {"conv2d_fwd": ("BM", "BN")}

#: log-probability a candidate pays, when the top k are chosen, for each earlier pick with its values
#: at the `diverse` positions
REPEAT_PENALTY = 0.5

#: the default beam width: with `diverse`, also the pool the top k are chosen from
WIDTH = 12

#: values of parameter len(prefix) that may follow `prefix` (a tuple of values)
Allowed = Callable[[tuple[int, ...]], Sequence[int]]


@dataclasses.dataclass(frozen=True)
class Candidate:
    config: Config
    log_prob: float


@torch.inference_mode()
def prepare(model: torch.nn.Module) -> None:
    """Build `model`'s decoder tables now (part of loading it), not in its first prediction."""
    _decoder(model)


def constrained_allowed(space: SearchSpace, problem: Problem, device: DeviceInfo) -> Allowed:
    """Values that keep the prefix completable (memoized; a lazy search, or the device's table: `Completer`)."""
    return completer(space, problem, device).allowed  # memoized answers carry over to the next prediction


def hedged_position(family: str, vocab: TargetVocab) -> int | None:
    """The target position of `family`'s hedged parameter (None: the family hedges over nothing)."""
    name = HEDGED.get(family)
    return vocab.names.index(name) if name in vocab.names else None


def diverse_positions(family: str, vocab: TargetVocab) -> tuple[int, ...]:
    """The target positions of `family`'s diversified parameters (empty: the family has none)."""
    return tuple(vocab.names.index(name) for name in DIVERSE.get(family, ()) if name in vocab.names)


def hedges(family: str, vocab: TargetVocab) -> tuple[int | None, tuple[int, ...]]:
    """`beam_search`'s `spread` and `diverse` for `family`, as `kptune predict` (so autotune) runs it."""
    return hedged_position(family, vocab), diverse_positions(family, vocab)


def all_allowed(vocab: TargetVocab) -> Allowed:
    return lambda prefix: vocab.values[len(prefix)]


@torch.inference_mode()
def beam_search(model: torch.nn.Module, vocab: TargetVocab, source: Sequence[int], allowed: Allowed,
                width: int = WIDTH, k: int = 5, spread: int | None = None,
                launch: Launch | None = None, diverse: Sequence[int] = ()) -> list[Candidate]:  # fmt: skip
    """The top-k distinct complete configs by total log-probability (fewer if fewer exist).

    `launch`: the problem's launch features on the device (`launch.launch_for`), which a lookahead
    model needs (ValueError without them) and any other ignores.

    `spread`: a position whose value the candidates hedge over. From that position on, at most half
    of the beams (and of the k returned) share its value, as long as other allowed values have beams
    to fill the rest: a beam otherwise commits all k candidates to one value of a parameter that the
    model is least sure of, and one wrong guess there costs all k (conv2d's split factor: see
    `hedged_position`).

    `diverse`: positions whose values the k returned spread over. The search keeps max(width, k)
    complete configs; the k are then picked one at a time, each the best by log-probability less
    REPEAT_PENALTY for every earlier pick with the same values there (conv2d's tile: see
    `diverse_positions`). The first is always the most likely; the k are in the order picked."""
    if any(m.training for m in model.modules()):  # (eval() on a model already in eval mode costs ~50 us)
        model.eval()
    positions = len(vocab.values)
    decoder = _decoder(model)
    look = _looks(model, vocab, launch)
    memory = decoder.encode(source)
    beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    last = _ids([BOS])
    for t in range(positions):
        span = vocab.span(t)
        keep = max(width, k) if t == positions - 1 else width
        values = vocab.values[t]
        where = {v: j for j, v in enumerate(values)}
        choices = [[where[v] for v in allowed(prefix)] for prefix, _ in beams]
        single = all(len(c) == 1 for c in choices)
        logits, memory = decoder.step(memory, last, span, None if single else look(t, [p for p, _ in beams]))
        if single:  # one value left for every beam: renormalised, its log p is 0
            beams = [((*prefix, values[c[0]]), score) for (prefix, score), c in zip(beams, choices, strict=True)]
            last = _ids([span.start + c[0] for c in choices])
            continue
        # log p renormalised over each beam's allowed values, in Python: a beam has at most a few
        # (a tensor op costs more than this loop); a beam with none left drops out
        rows = logits.tolist()
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
        if spread is None or t < spread:
            scored = heapq.nlargest(keep, scored, key=operator.itemgetter(0))
        else:
            scored.sort(key=operator.itemgetter(0), reverse=True)
            hedged = [values[j] if t == spread else beams[b][0][spread] for _, b, j in scored]
            scored = _capped(scored, keep, hedged)
        memory = decoder.select(memory, _ids([b for _, b, _ in scored]))
        beams = [((*beams[b][0], values[j]), s) for s, b, j in scored]
        last = _ids([span.start + j for _, _, j in scored])
    if diverse:
        beams = _diversified(beams, k, diverse)
    elif spread is not None:
        beams = _capped(beams, k, [prefix[spread] for prefix, _ in beams])
    out = [Candidate(Config(tuple(zip(vocab.names, values, strict=True))), score) for values, score in beams]
    return out[:k]


@torch.inference_mode()
def sequence_log_probs(model: torch.nn.Module, vocab: TargetVocab, source: Sequence[int],
                       rows: Sequence[Sequence[int]], launch: Launch | None = None) -> list[float]:  # fmt: skip
    """log P(row | source) of each row of parameter tokens (one id of `vocab` per position): each
    position's softmax over that position's tokens, as the unconstrained beam scores. The rows are
    decoded as a prefix tree, one decoder step per distinct prefix: configs that share their first
    parameters (the algorithm, the vector width, ...) share those steps. `launch` as `beam_search`'s."""
    if any(m.training for m in model.modules()):
        model.eval()
    decoder = _decoder(model)
    look = _looks(model, vocab, launch)
    memory = decoder.encode(source)
    totals = [0.0] * len(rows)
    node = [0] * len(rows)  # each row's prefix among this depth's distinct prefixes
    prefixes: list[tuple[int, ...]] = [()]  # this depth's distinct prefixes, as values
    last = _ids([BOS])
    for t in range(len(vocab.values) if rows else 0):
        span = vocab.span(t)
        logits, memory = decoder.step(memory, last, span, look(t, prefixes))
        logp = log_softmax(logits).tolist()
        children: dict[tuple[int, int], int] = {}
        parents: list[int] = []
        tokens: list[int] = []
        for i, row in enumerate(rows):
            totals[i] += logp[node[i]][row[t] - span.start]
            child = children.setdefault((node[i], row[t]), len(parents))
            if child == len(parents):
                parents.append(node[i])
                tokens.append(row[t])
            node[i] = child
        memory = decoder.select(memory, _ids(parents))
        prefixes = [(*prefixes[p], vocab.value(t, token)) for p, token in zip(parents, tokens, strict=True)]
        last = _ids(tokens)
    return totals


def _capped(ranked: Sequence[Any], keep: int, hedged: Sequence[int]) -> list[Any]:
    """The first `keep` of `ranked` (best first), at most half of them (rounded up) of one `hedged`
    value (hedged[i]: ranked[i]'s) while entries of other values remain; the ranking's order kept."""
    cap, taken, counts = -(-keep // 2), [], collections.Counter[int]()
    for i, value in enumerate(hedged):
        if counts[value] < cap:
            counts[value] += 1
            taken.append(i)
            if len(taken) == keep:
                break
    if len(taken) < keep:  # too few other values: fill with the best of the rest
        chosen = set(taken)
        taken += [i for i in range(len(ranked)) if i not in chosen][: keep - len(taken)]
    return [ranked[i] for i in sorted(taken)]


def _diversified(beams: Sequence[tuple[tuple[int, ...], float]], k: int,
                 positions: Sequence[int]) -> list[tuple[tuple[int, ...], float]]:  # fmt: skip
    """k of `beams` (value prefixes and log-probabilities), picked one at a time: the best log-probability
    less REPEAT_PENALTY for each earlier pick with the same values at `positions`."""
    left = [(beam, _at(beam[0], positions)) for beam in beams]  # each with its values at `positions`
    seen = collections.Counter[tuple[int, ...]]()
    picked: list[tuple[tuple[int, ...], float]] = []
    while left and len(picked) < k:
        best = max(range(len(left)), key=lambda i: left[i][0][1] - REPEAT_PENALTY * seen[left[i][1]])
        beam, at = left.pop(best)
        picked.append(beam)
        seen[at] += 1
    return picked


def _at(values: tuple[int, ...], positions: Sequence[int]) -> tuple[int, ...]:
    return tuple(values[p] for p in positions)


LookFn = Callable[[int, Sequence[tuple[int, ...]]], "np.ndarray | None"]


def _looks(model: torch.nn.Module, vocab: TargetVocab, launch: Launch | None) -> LookFn:
    """(position t, the beams' value prefixes) -> their lookahead features [B, len(span t), FEATURES],
    or None: for a model without lookahead, and at a position whose value leaves the features as
    they are (every value would get the same score, which the softmax over the position cancels)."""
    if not getattr(model, "lookahead", False):
        return lambda t, prefixes: None
    if launch is None:
        raise ValueError("this model scores launches (lookahead): pass the problem's launch features")
    varies = launch.varying()

    def look(t: int, prefixes: Sequence[tuple[int, ...]]) -> np.ndarray | None:
        if t not in varies:
            return None
        values, flat = vocab.values[t], array.array("f")
        for prefix in prefixes:
            flat.extend(launch.flat(prefix, values))
        return np.frombuffer(flat, dtype=np.float32).reshape(len(prefixes), len(values), -1)

    return look


def _ids(ids: list[int]) -> np.ndarray:
    """`ids` as the 1-D int64 array a decoder's `step` and `select` take."""
    return np.array(ids, dtype=np.int64)


class _SpanSteps:
    """Any translator's `encode`/`step`/`select`, its logits cut to the position's vocabulary."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model: Any = model

    def encode(self, source: Sequence[int]) -> Any:
        return self.model.encode(torch.tensor([list(source)]))

    def step(self, memory: Any, token: np.ndarray, span: range,
             look: np.ndarray | None = None) -> tuple[np.ndarray, Any]:  # fmt: skip
        ids = torch.from_numpy(token)
        logits, memory = (
            self.model.step(memory, ids, torch.from_numpy(look), span) if look is not None
            else self.model.step(memory, ids)
        )  # fmt: skip
        return logits[:, span.start : span.stop].detach().numpy(), memory

    def select(self, memory: Any, index: np.ndarray) -> Any:
        return self.model.select(memory, torch.from_numpy(index))


#: per model: its parameters, their versions when the decoder was built, the decoder
_decoders: weakref.WeakKeyDictionary[torch.nn.Module, tuple[list[torch.nn.Parameter], list[int], StepDecoder]] = (
    weakref.WeakKeyDictionary()
)


def _decoder(model: torch.nn.Module) -> StepDecoder:
    """The fastest decoder of `model`: a one-layer LSTM's tables (or an ensemble's, stacked) are built once
    and rebuilt when a weight changes in place (an optimiser step, load_state_dict: the tensors' version
    counters say so)."""
    if not isinstance(model, Ensemble) and not _one_layer_lstm(model):
        return _SpanSteps(model)
    cached = _decoders.get(model)
    try:
        if cached is not None and [p._version for p in cached[0]] == cached[1]:
            return cached[2]
        params = list(model.parameters())
        versions = [p._version for p in params]
    except RuntimeError:  # inference tensors have no version counter: no cache
        return _built(model)
    decoder = _built(model)
    _decoders[model] = (params, versions, decoder)
    return decoder


def _built(model: torch.nn.Module) -> StepDecoder:
    if not isinstance(model, Ensemble):
        return LSTMBeamDecoder(model)  # type: ignore[arg-type]
    if all(_one_layer_lstm(m) for m in model.members):
        return EnsembleBeamDecoder([LSTMBeamDecoder(m) for m in model.members])  # type: ignore[arg-type]
    return EnsembleDecoder([_decoder(m) for m in model.members])


def _one_layer_lstm(model: torch.nn.Module) -> bool:
    return isinstance(model, LSTMTranslator) and model.layers == 1
