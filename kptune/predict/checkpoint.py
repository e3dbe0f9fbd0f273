"""Checkpoints: one .safetensors file, weights plus JSON metadata in its header. No pickle.

Metadata: format version, model hyperparameters (with `members` > 1 the weights are an ensemble's,
`members.i.*`: `predict.ensemble`), target vocabulary (parameter order and values),
kernel family and source hash, the device (key and limits, so predictions need no device), the
dataset's hash, and the metrics measured at training time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.predict.ensemble import Ensemble
from kptune.predict.models import ModelConfig, build_model
from kptune.predict.tokenizer import TargetVocab, source_vocab_size

FORMAT = "kptune-predictor/1"


class CheckpointError(KptuneError):
    """A checkpoint is missing, corrupted, or made for another kernel source or vocabulary."""


def save(path: Path, model: torch.nn.Module, cfg: ModelConfig, vocab: TargetVocab, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    header = {"format": FORMAT, "model": cfg.to_json(), "target_vocab": vocab.to_json(),
              "source_vocab_size": source_vocab_size(cfg.gemm_view), **meta}  # fmt: skip
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    try:
        save_file(tensors, str(path), metadata={"kptune": json.dumps(header)})
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None


class Predictor:
    """A loaded checkpoint: the model in eval mode, its vocabulary and metadata."""

    def __init__(self, model: torch.nn.Module, cfg: ModelConfig, vocab: TargetVocab, meta: dict[str, Any]) -> None:
        self.model, self.cfg, self.vocab, self.meta = model, cfg, vocab, meta

    @property
    def device(self) -> DeviceInfo:
        return DeviceInfo(**self.meta["device_limits"])


def read_meta(path: Path) -> dict[str, Any] | None:
    """A checkpoint's metadata without its weights; None if it is not a readable kptune checkpoint."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {}).get("kptune", "null"))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) and header.get("format") == FORMAT else None


def load(path: Path, family_name: str | None = None, source_hash: str | None = None) -> Predictor:
    """Load and check a checkpoint; `family_name`/`source_hash` must match the kernel it predicts for."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {}).get("kptune", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({str(exc)[:120]})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a kptune predictor checkpoint (format {FORMAT} expected)")
    if family_name is not None and header.get("family") != family_name:
        raise CheckpointError(f"{path}: made for kernel {header.get('family')!r}, not {family_name!r}")
    if source_hash is not None and header.get("source_hash") != source_hash:
        raise CheckpointError(f"{path}: made for kernel source {header.get('source_hash')}, this kptune has "
                              f"{source_hash}: retrain (kptune train) on data measured with this source")  # fmt: skip
    try:
        # a checkpoint from before the GEMM view's words (or the launch lookahead) was trained without them
        cfg = ModelConfig(**{"gemm_view": False, "lookahead": False, **header["model"]})
    except TypeError as exc:
        raise CheckpointError(f"{path}: unknown model settings ({' '.join(str(exc).split())[:160]})") from None
    if header.get("source_vocab_size") != source_vocab_size(cfg.gemm_view):
        raise CheckpointError(f"{path}: source vocabulary of {header.get('source_vocab_size')} words, "
                              f"this kptune has {source_vocab_size(cfg.gemm_view)} for it")  # fmt: skip
    try:
        vocab = TargetVocab(header["target_vocab"]["names"], header["target_vocab"]["values"])
        model = _untrained(cfg, vocab.size)
        model.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: weights do not fit the model they describe ({' '.join(str(exc).split())[:160]})"
        ) from None
    model.eval()
    return Predictor(model, cfg, vocab, header)


def _untrained(cfg: ModelConfig, target_size: int) -> torch.nn.Module:
    """The model `cfg` describes, weights untrained: an ensemble of `cfg.members` translators if more than one."""
    if cfg.members < 1:
        raise ValueError(f"members must be at least 1, not {cfg.members}")
    if cfg.members == 1:
        return build_model(cfg, target_size)
    return Ensemble([build_model(cfg, target_size) for _ in range(cfg.members)])
