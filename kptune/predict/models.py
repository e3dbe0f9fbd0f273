"""The two translators: the paper's LSTM encoder-decoder with attention, and a small Transformer.

Both map (source ids [B, S], target prefix ids [B, T]) to logits [B, T, target vocab]; the
decoder is autoregressive, so beam search calls `step` with a cached encoding.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from kptune.predict.launch import FEATURES
from kptune.predict.tokenizer import PAD, encode_source, source_vocab_size

if TYPE_CHECKING:
    from kptune.problem import Conv2dProblem


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Every hyperparameter; saved in the checkpoint's metadata."""

    arch: str = "lstm"  # "lstm" | "transformer"
    embed: int = 64
    hidden: int = 128
    layers: int = 1
    heads: int = 4  # transformer only
    dropout: float = 0.1
    lr: float = 3e-3
    weight_decay: float = 1e-4
    epochs: int = 300
    batch: int = 64
    patience: int = 40  # epochs without a better validation score before stopping
    early_stop: bool = True  # False: exactly `epochs` epochs on train + validation, the last weights kept
    targets_within: float = 1.05  # configs within this factor of the best are targets too
    max_targets: int = 8
    seed: int = 0
    restarts: int = 1  # train seeds seed .. seed+restarts-1 and keep the best on validation
    members: int = 1  # train seeds seed .. seed+members-1 and keep them all: an ensemble (predict.ensemble)
    gemm_view: bool = True  # the source carries the GEMM view's sizes (tokenizer.DERIVED_FIELDS)
    lookahead: bool = True  # LSTM: each value's logit also scores the launch it leads to (predict.launch)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class StepDecoder(Protocol):
    """What beam search steps: a source's decoding state, one step's logits over a position's tokens
    `span` [B, len(span)] after the beams' last tokens `token` [B] (with lookahead, `look` [B, len(span),
    FEATURES]), the state of the beams `index` picks. NumPy arrays in and out: the search's own work on
    the logits is in Python, and a decoder may step in torch or NumPy."""

    def encode(self, source: Sequence[int]) -> Any: ...

    def step(self, state: Any, token: np.ndarray, span: range,
             look: np.ndarray | None = None) -> tuple[np.ndarray, Any]: ...  # fmt: skip

    def select(self, state: Any, index: np.ndarray) -> Any: ...


class LSTMTranslator(nn.Module):
    """Bi-LSTM encoder; LSTM decoder with Luong (general) attention over the encoder states."""

    def __init__(self, cfg: ModelConfig, target_size: int) -> None:
        super().__init__()
        self.gemm_view = cfg.gemm_view  # how its sources are written (tokenizer.encode_source)
        self.src_embed = nn.Embedding(source_vocab_size(cfg.gemm_view), cfg.embed, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(target_size, cfg.embed, padding_idx=PAD)
        self.encoder = nn.LSTM(cfg.embed, cfg.hidden // 2, num_layers=cfg.layers, batch_first=True, bidirectional=True)
        # LSTMCells, not nn.LSTM: decoding is one step at a time, and a cell step costs a third
        self.decoder = nn.ModuleList(
            nn.LSTMCell(cfg.embed + cfg.hidden if i == 0 else cfg.hidden, cfg.hidden) for i in range(cfg.layers)
        )
        self.attn = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.combine = nn.Linear(2 * cfg.hidden, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, target_size)
        # lookahead: the launch features of each candidate value, scored against the output state
        self.look = nn.Linear(cfg.hidden, FEATURES) if cfg.lookahead else None
        self.lookahead = cfg.lookahead
        self.drop = nn.Dropout(cfg.dropout)
        self.layers, self.hidden = cfg.layers, cfg.hidden

    def encode(self, src: torch.Tensor) -> dict[str, torch.Tensor]:
        states, (h, c) = self.encoder(self.drop(self.src_embed(src)))
        # the two directions' final states side by side start the decoder
        h = h.view(self.layers, 2, src.shape[0], -1).transpose(1, 2).reshape(self.layers, src.shape[0], -1)
        c = c.view(self.layers, 2, src.shape[0], -1).transpose(1, 2).reshape(self.layers, src.shape[0], -1)
        return {"states": states, "h": h.contiguous(), "c": c.contiguous(),
                "feed": torch.zeros(src.shape[0], self.hidden)}  # fmt: skip

    def step(
        self, memory: dict[str, torch.Tensor], token: torch.Tensor, look: torch.Tensor | None = None,
        span: range | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """One decoder step: logits [B, V] for the next token after `token` [B], and the new state. With
        lookahead, `look` [B, n, FEATURES] holds the launch features of the first n values of the
        position's vocabulary `span` (the rest get no lookahead score)."""
        embedded = self.tgt_embed(token)
        x = torch.cat([self.drop(embedded) if self.training else embedded, memory["feed"]], dim=-1)
        hs, cs = [], []
        for i, cell in enumerate(self.decoder):
            h_i, c_i = cell(x, (memory["h"][i], memory["c"][i]))
            hs.append(h_i)
            cs.append(c_i)
            x = h_i
        h, c = torch.stack(hs), torch.stack(cs)
        query = x
        # states [B or 1, S, H]: in a beam search every beam shares one source (batch 1, broadcast)
        scores = torch.matmul(memory["states"], self.attn(query).unsqueeze(2)).squeeze(2)
        context = torch.matmul(torch.softmax(scores, dim=1).unsqueeze(1), memory["states"]).squeeze(1)
        feed = torch.tanh(self.combine(torch.cat([query, context], dim=-1)))
        logits = self.out(self.drop(feed) if self.training else feed)
        if look is not None and self.look is not None and span is not None:
            score = torch.einsum("bf,bvf->bv", self.look(feed), look)  # the span's first values
            logits = logits + nn.functional.pad(score, (span.start, logits.shape[1] - span.start - score.shape[1]))
        return logits, {**memory, "h": h, "c": c, "feed": feed}

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, looks: torch.Tensor | None = None,
                spans: Sequence[range] | None = None) -> torch.Tensor:  # fmt: skip
        """Teacher-forced logits [B, T, V]; with lookahead, `looks` [B, T, n, FEATURES] (each position's
        first n values of `spans[t]`, zero-padded: `launch.lookahead_rows`)."""
        memory = self.encode(src)
        logits = []
        for t in range(tgt_in.shape[1]):
            look = looks[:, t, : len(spans[t])] if looks is not None and spans is not None else None
            step_logits, memory = self.step(memory, tgt_in[:, t], look, spans[t] if spans is not None else None)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    @staticmethod
    def select(memory: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The memory of the beams `index` picks (batch dim 1 for h/c, 0 otherwise; one shared source's
        encoder states, batch 1, stay as they are)."""
        return {k: (v[:, index] if k in ("h", "c") else v if k == "states" and len(v) == 1 else v[index])
                for k, v in memory.items()}  # fmt: skip


class LSTMBeamDecoder:
    """`LSTMTranslator`'s encode/step/select for inference (eval mode, one layer), rearranged for a beam
    of a few rows on one source: the same logits up to float rounding, in under half the time.

    Each step is a handful of array ops instead of module calls (NumPy: see `step`): the token
    embedding's share of the gates is a table lookup (embedding times input weights, both biases
    folded in), the attention's keys and the combination's context half are multiplied into the
    encoder states once per source (scores = q . (W_attn^T s); combine(q, p @ S) = W_q q + p @ (S
    W_ctx^T) + b), and the output layer is restricted to the position's vocabulary (`span`). The
    tables are a snapshot of the weights: build a new decoder after changing them.
    """

    def __init__(self, model: LSTMTranslator) -> None:
        if model.layers != 1 or model.training:
            raise ValueError("LSTMBeamDecoder decodes a one-layer LSTMTranslator in eval mode")
        with torch.no_grad():
            cell = cast(nn.LSTMCell, model.decoder[0])
            h = model.hidden
            embed = model.tgt_embed.weight.shape[1]
            # gate rows reordered from (i, f, g, o) to (i, f, o, g): one sigmoid covers the first three
            order = torch.cat([torch.arange(2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)])
            self.token_gates = torch.addmm(cell.bias_ih + cell.bias_hh, model.tgt_embed.weight,
                                           cell.weight_ih[:, :embed].t())[:, order]  # [V, 4H]  # fmt: skip
            # [feed, h] [B, 2H] @ this [2H, 4H]: the recurrent share of the gates
            self.state_weights = torch.cat([cell.weight_ih[:, embed:], cell.weight_hh], dim=1)[order].t().contiguous()
            self.combine_query = model.combine.weight[:, :h].t().contiguous()  # [H, H]
            self.combine_context = model.combine.weight[:, h:].t().contiguous()  # [H, H]
            self.combine_bias = model.combine.bias.detach()
            self.attn_t = model.attn.weight.detach().t()
            self.out_weight = model.out.weight.t().contiguous()  # [H, V]
            self.out_bias = model.out.bias.detach()
            self.look = (
                (model.look.weight.t().contiguous(), model.look.bias.detach()) if model.look is not None else None
            )
        self._arrays = _DecoderArrays.of(self)
        self._out: dict[range, tuple[np.ndarray, np.ndarray]] = {}
        # the modules, not the model: a cache of decoders keyed weakly by model must not keep it alive
        self.src_embed, self.encoder, self.hidden = model.src_embed, model.encoder, h
        self._encoded = functools.lru_cache(maxsize=1024)(self._encode)

    def encode(self, source: Sequence[int]) -> tuple[np.ndarray, ...]:
        """The decoding state of one source (token ids): (query weights, their bias, context values,
        [feed, h], c). The encoder's outputs are kept for the last 1024 sources (~13 KB each): a shape
        predicted again skips the encoder, the largest single cost of a prediction."""
        states, h, c = self._encoded(tuple(source))
        keys = self._arrays.attn_t @ states.T  # [H, S]: scores = q @ keys
        query = np.concatenate([self._arrays.combine_query, keys], axis=1)  # [H, H + S]: combine's q half, the scores
        bias = np.concatenate([self._arrays.combine_bias, np.zeros(keys.shape[1], dtype=np.float32)])
        values = states @ self._arrays.combine_context  # [S, H]
        return query, bias, values, np.concatenate([np.zeros_like(h), h], axis=1), c

    def _encode(self, source: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`LSTMTranslator.encode` for one source: states [S, H], final h and c [1, H] (the two
        directions' side by side)."""
        with torch.no_grad():
            states, (h, c) = self.encoder(self.src_embed(torch.tensor([source])))
        return states[0].numpy(), h.reshape(1, -1).numpy(), c.reshape(1, -1).numpy()

    def step(self, state: tuple[np.ndarray, ...], token: np.ndarray, span: range,
             look: np.ndarray | None = None) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:  # fmt: skip
        """Logits [B, len(span)] of the tokens in `span` after `token` [B], and the new state; `look`
        [B, len(span), FEATURES]: the launch features of each token's value (lookahead models). In NumPy,
        in place where it can: at a beam's few rows a step is some twenty small ops, and NumPy's calls cost
        less than torch's (`benchmarks/decoder_step.py`, this against torch: 91 / 116 us at 12 beams and 45 / 75 at 3 on
        this project's AMD VM; 135 / 114 and 65 / 107 on an H100 host's Xeon, where torch's MKL makes the
        12-row product twice as fast, yet whole predictions there run faster than with torch's step, RESULTS)."""
        query, bias, values, feed_h, c = state
        h, tables = self.hidden, self._arrays
        gates = tables.token_gates[token]  # [B, 4H], (i, f, o, g)
        gates += feed_h @ tables.state_weights
        ifo, g = gates[:, : 3 * h], gates[:, 3 * h :]
        ifo *= 0.5  # sigmoid(x) = (tanh(x / 2) + 1) / 2, in place
        np.tanh(ifo, out=ifo)
        ifo += 1.0
        ifo *= 0.5
        np.tanh(g, out=g)
        c = gates[:, h : 2 * h] * c
        c += gates[:, :h] * g
        hidden = np.tanh(c)
        hidden *= gates[:, 2 * h : 3 * h]
        mixed = hidden @ query  # [B, H + S]: combine's q half, then the attention scores
        mixed += bias
        scores = mixed[:, h:]
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        feed = scores @ values
        feed += mixed[:, :h]
        np.tanh(feed, out=feed)
        out = self._out.get(span)
        if out is None:
            out = self._out[span] = (
                tables.out_bias[span.start : span.stop].copy(),
                np.ascontiguousarray(tables.out_weight[:, span.start : span.stop]),
            )
        logits = feed @ out[1]
        logits += out[0]
        if look is not None and tables.look is not None:
            weights = feed @ tables.look[0]
            weights += tables.look[1]
            logits += np.matmul(look, weights[:, :, None])[:, :, 0]
        return logits, (query, bias, values, np.concatenate([feed, hidden], axis=1), c)

    @staticmethod
    def select(state: tuple[np.ndarray, ...], index: np.ndarray) -> tuple[np.ndarray, ...]:
        """The state of the beams `index` picks."""
        query, bias, values, feed_h, c = state
        return query, bias, values, feed_h[index], c[index]


@dataclasses.dataclass(frozen=True)
class _DecoderArrays:
    """`LSTMBeamDecoder`'s tables as contiguous float32 NumPy arrays (sharing the tensors' memory where they
    are contiguous already)."""

    token_gates: np.ndarray
    state_weights: np.ndarray
    combine_query: np.ndarray
    combine_context: np.ndarray
    combine_bias: np.ndarray
    attn_t: np.ndarray
    out_weight: np.ndarray
    out_bias: np.ndarray
    look: tuple[np.ndarray, np.ndarray] | None

    @classmethod
    def of(cls, decoder: LSTMBeamDecoder) -> _DecoderArrays:
        arr = lambda t: np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)  # noqa: E731
        look = (arr(decoder.look[0]), arr(decoder.look[1])) if decoder.look is not None else None
        return cls(arr(decoder.token_gates), arr(decoder.state_weights), arr(decoder.combine_query),
                   arr(decoder.combine_context), arr(decoder.combine_bias), arr(decoder.attn_t),
                   arr(decoder.out_weight), arr(decoder.out_bias), look)  # fmt: skip


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis (of a `StepDecoder`'s logits)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An LSTM cell's new (h, c) from its gates [..., 4H], rows in `LSTMBeamDecoder`'s (i, f, o, g) order,
    and its cell state c [..., H] (any leading dims: one model's beams, or an ensemble's members' too)."""
    ifo, g = gates.tensor_split((3 * c.shape[-1],), dim=-1)  # (tensor_split: split's Python wrapper costs more)
    i, f, o = torch.sigmoid(ifo).tensor_split(3, dim=-1)
    c = torch.addcmul(f * c, i, torch.tanh(g))
    return o * torch.tanh(c), c


class TransformerTranslator(nn.Module):
    """A small pre-norm Transformer encoder-decoder with learned positions."""

    def __init__(self, cfg: ModelConfig, target_size: int, max_len: int = 64) -> None:
        super().__init__()
        self.gemm_view = cfg.gemm_view
        self.src_embed = nn.Embedding(source_vocab_size(cfg.gemm_view), cfg.hidden, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(target_size, cfg.hidden, padding_idx=PAD)
        self.pos = nn.Embedding(max_len, cfg.hidden)
        with warnings.catch_warnings():  # nested tensors do not apply to pre-norm layers; torch says so each time
            warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
            self.model = nn.Transformer(d_model=cfg.hidden, nhead=cfg.heads, num_encoder_layers=max(cfg.layers, 1) * 2,
                                        num_decoder_layers=max(cfg.layers, 1) * 2, dim_feedforward=2 * cfg.hidden,
                                        dropout=cfg.dropout, batch_first=True, norm_first=True)  # fmt: skip
        self.out = nn.Linear(cfg.hidden, target_size)
        self.scale = math.sqrt(cfg.hidden)

    def _embed(self, table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        return table(ids) * self.scale + self.pos(torch.arange(ids.shape[1]))

    def encode(self, src: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"memory": self.model.encoder(self._embed(self.src_embed, src)),
                "prefix": torch.zeros(src.shape[0], 0, dtype=torch.long)}  # fmt: skip

    def _decode(self, memory: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1])
        return self.out(
            self.model.decoder(self._embed(self.tgt_embed, tgt_in), memory, tgt_mask=mask, tgt_is_causal=True)
        )

    def step(
        self, memory: dict[str, torch.Tensor], token: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        prefix = torch.cat([memory["prefix"], token.unsqueeze(1)], dim=1)
        return self._decode(memory["memory"], prefix)[:, -1], {**memory, "prefix": prefix}

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self._decode(self.encode(src)["memory"], tgt_in)

    @staticmethod
    def select(memory: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in memory.items()}


def source_of(model: nn.Module, problem: Conv2dProblem) -> list[int]:
    """`problem`'s source sentence as `model` was trained to read it (with or without the GEMM view)."""
    return encode_source(problem, bool(getattr(model, "gemm_view", True)))


def build_model(cfg: ModelConfig, target_size: int) -> LSTMTranslator | TransformerTranslator:
    if cfg.arch == "lstm":
        return LSTMTranslator(cfg, target_size)
    if cfg.arch == "transformer":
        if cfg.lookahead:
            raise ValueError("lookahead scores an LSTM decoder's choices: a transformer needs lookahead=False")
        return TransformerTranslator(cfg, target_size)
    raise ValueError(f"unknown model arch {cfg.arch!r}: lstm or transformer")
