"""An ensemble of translators trained alike from different seeds, decoded as one model.

Its next-token distribution at each position is the members' product, renormalised (the mean of
their log-probabilities over the position's tokens), as neural translation ensembles decode: a
beam over the ensemble is a beam over one model whose score is the members' mean log-probability,
so constrained beam search, hedging, `sequence_log_probs` and the blend take it as they take one
model. Seeds of one setting disagree most where each is wrong (their validation ratios spread by
~0.01 on the H200 dataset), and the mean cancels much of that (`benchmarks/RESULTS.md`).

`EnsembleBeamDecoder` decodes one-layer LSTM members together: each member's tables stacked on a
leading member axis, so a step is the same handful of batched tensor ops as one member's step
(`models.LSTMBeamDecoder`), not one set per member. The arithmetic and the weights read are still
every member's: on one CPU core a step of three members costs ~3x one member's, and a prediction
for a new shape ~1.7x one model's (p50 6.9 against 4.1 ms on the H200 model, `benchmarks/RESULTS.md`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from kptune.predict.models import LSTMBeamDecoder, StepDecoder, log_softmax, lstm_cell


class Ensemble(nn.Module):
    """Members of one architecture and vocabulary (`members.i.*` in the checkpoint's weights)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, not {len(members)}")
        # how the members read sources and whether they score launches: the same for all
        reads = {(type(m), bool(getattr(m, "gemm_view", True)), bool(getattr(m, "lookahead", False))) for m in members}
        if len(reads) > 1:
            raise ValueError("an ensemble's members must be one architecture, reading the same sources and launches")
        self.members = nn.ModuleList(members)
        _, self.gemm_view, self.lookahead = reads.pop()


class EnsembleDecoder:
    """The members' decoders stepped side by side; a step's logits are the mean of their
    log-softmaxes over the position's tokens (any decoders with `encode`/`step`/`select`)."""

    def __init__(self, decoders: Sequence[StepDecoder]) -> None:
        self.decoders = list(decoders)

    def encode(self, source: Sequence[int]) -> list[Any]:
        return [d.encode(source) for d in self.decoders]

    def step(self, state: list[Any], token: np.ndarray, span: range,
             look: np.ndarray | None = None) -> tuple[np.ndarray, list[Any]]:  # fmt: skip
        steps = [d.step(s, token, span, look) for d, s in zip(self.decoders, state, strict=True)]
        logp = np.stack([log_softmax(logits) for logits, _ in steps]).mean(axis=0)
        return logp, [s for _, s in steps]

    def select(self, state: list[Any], index: np.ndarray) -> list[Any]:
        return [d.select(s, index) for d, s in zip(self.decoders, state, strict=True)]


class EnsembleBeamDecoder:
    """One-layer LSTM members' `LSTMBeamDecoder` tables stacked [members, ...]: one batched step for all.
    The same logits as `EnsembleDecoder` over the members' own decoders, up to float rounding."""

    def __init__(self, members: Sequence[LSTMBeamDecoder]) -> None:
        self.members = list(members)
        self.hidden = members[0].hidden
        stack = lambda name: torch.stack([getattr(m, name) for m in members])  # noqa: E731
        self.token_gates = stack("token_gates")  # [M, V, 4H]
        self.state_weights = stack("state_weights")  # [M, 2H, 4H]
        self.out_weight, self.out_bias = stack("out_weight"), stack("out_bias")  # [M, H, V], [M, V]
        looks = [m.look for m in members]
        self.look = (
            (torch.stack([w for w, _ in looks]), torch.stack([b for _, b in looks]).unsqueeze(1))  # type: ignore[misc]
            if all(x is not None for x in looks) else None
        )  # fmt: skip
        self._out: dict[range, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode(self, source: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """Each member's `LSTMBeamDecoder.encode`, stacked (its per-source cache kept)."""
        states = [m.encode(source) for m in self.members]
        query, bias, values, feed_h, c = (torch.from_numpy(np.stack(parts)) for parts in zip(*states, strict=True))
        return query, bias.unsqueeze(1), values, feed_h, c

    def step(self, state: tuple[torch.Tensor, ...], token: np.ndarray, span: range,
             look: np.ndarray | None = None) -> tuple[np.ndarray, tuple[torch.Tensor, ...]]:  # fmt: skip
        """`LSTMBeamDecoder.step` for every member at once ([M, B, ...]); the logits returned [B, len(span)]
        are the members' mean log-softmax."""
        query, bias, values, feed_h, c = state
        h = self.hidden
        token_gates = self.token_gates[:, torch.from_numpy(token)]
        hidden, c = lstm_cell(torch.baddbmm(token_gates, feed_h, self.state_weights), c)
        pre, scores = torch.baddbmm(bias, hidden, query).tensor_split((h,), dim=2)
        feed = torch.tanh(torch.baddbmm(pre, torch.softmax(scores, dim=2), values))
        out = self._out.get(span)
        if out is None:
            out = self._out[span] = (self.out_bias[:, None, span.start : span.stop],
                                     self.out_weight[:, :, span.start : span.stop].contiguous())  # fmt: skip
        logits = torch.baddbmm(out[0], feed, out[1])  # [M, B, len(span)]
        if look is not None and self.look is not None:
            weights = torch.baddbmm(self.look[1], feed, self.look[0])  # [M, B, FEATURES]
            logits = logits + torch.matmul(torch.from_numpy(look), weights.unsqueeze(3)).squeeze(3)
        logp = torch.log_softmax(logits, dim=2).mean(dim=0)
        return logp.numpy(), (query, bias, values, torch.cat([feed, hidden], dim=2), c)

    @staticmethod
    def select(state: tuple[torch.Tensor, ...], index: np.ndarray) -> tuple[torch.Tensor, ...]:
        query, bias, values, feed_h, c = state
        picked = torch.from_numpy(index)
        return query, bias, values, feed_h.index_select(1, picked), c.index_select(1, picked)
