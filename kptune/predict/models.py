"""The two translators: the paper's LSTM encoder-decoder with attention, and a small Transformer.

Both map (source ids [B, S], target prefix ids [B, T]) to logits [B, T, target vocab]; the
decoder is autoregressive, so beam search calls `step` with a cached encoding.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import torch
from torch import nn

from kptune.predict.tokenizer import PAD, SOURCE_VOCAB


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
    targets_within: float = 1.05  # configs within this factor of the best are targets too
    max_targets: int = 8
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LSTMTranslator(nn.Module):
    """Bi-LSTM encoder; LSTM decoder with Luong (general) attention over the encoder states."""

    def __init__(self, cfg: ModelConfig, target_size: int) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(len(SOURCE_VOCAB), cfg.embed, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(target_size, cfg.embed, padding_idx=PAD)
        self.encoder = nn.LSTM(cfg.embed, cfg.hidden // 2, num_layers=cfg.layers, batch_first=True, bidirectional=True)
        # LSTMCells, not nn.LSTM: decoding is one step at a time, and a cell step costs a third
        self.decoder = nn.ModuleList(
            nn.LSTMCell(cfg.embed + cfg.hidden if i == 0 else cfg.hidden, cfg.hidden) for i in range(cfg.layers)
        )
        self.attn = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.combine = nn.Linear(2 * cfg.hidden, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, target_size)
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
        self, memory: dict[str, torch.Tensor], token: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One decoder step: logits [B, V] for the next token after `token` [B], and the new state."""
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
        return self.out(self.drop(feed) if self.training else feed), {**memory, "h": h, "c": c, "feed": feed}

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory = self.encode(src)
        logits = []
        for t in range(tgt_in.shape[1]):
            step_logits, memory = self.step(memory, tgt_in[:, t])
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    @staticmethod
    def select(memory: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The memory of the beams `index` picks (batch dim 1 for h/c, 0 otherwise; one shared source's
        encoder states, batch 1, stay as they are)."""
        return {k: (v[:, index] if k in ("h", "c") else v if k == "states" and len(v) == 1 else v[index])
                for k, v in memory.items()}  # fmt: skip


class TransformerTranslator(nn.Module):
    """A small pre-norm Transformer encoder-decoder with learned positions."""

    def __init__(self, cfg: ModelConfig, target_size: int, max_len: int = 64) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(len(SOURCE_VOCAB), cfg.hidden, padding_idx=PAD)
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


def build_model(cfg: ModelConfig, target_size: int) -> LSTMTranslator | TransformerTranslator:
    if cfg.arch == "lstm":
        return LSTMTranslator(cfg, target_size)
    if cfg.arch == "transformer":
        return TransformerTranslator(cfg, target_size)
    raise ValueError(f"unknown model arch {cfg.arch!r}: lstm or transformer")
