"""Training: teacher forcing on each train problem's best configs, early stopping on validation ratios.

Targets of a problem: its configs within `targets_within` of its best time (at most
`max_targets`, fastest first), each a full target sentence; they teach the model which
near-optimal configs exist, not only the single winner (a 1 % timing tie is noise). Early stopping
keeps the epoch whose constrained beam, hedged as `predict()` runs it, ranks the validation problems
best: the geometric mean of the top-1 and best-of-VALIDATION_K performance ratios
(`evaluation.scores`; a config outside a problem's stored fastest counts as its slowest stored), the
metric autotune lives by. The validation loss (cross-
entropy on the winners) is recorded beside it but no longer decides: on the sixth installment it was
lowest after the first epoch and rose while the ratios improved (a sharper model is more confidently
wrong about which of several near-tied configs won). Validation problems: the validation split's;
with fewer than MIN_VALIDATION of them a seeded tenth of the train problems is held out instead (and
the checkpoint says so). Where the dataset's kernel family is not registered (no search space to
constrain the beam), the loss decides as before. With
`early_stop=False` nothing is held out: the validation problems join the train problems, training
runs exactly `epochs` epochs and keeps the last weights (the epoch count chosen beforehand, e.g.
by cross-validation, `benchmarks/model_cv.py`).

Lookahead (`ModelConfig.lookahead`, on by default for the LSTM): each target row carries, per
position, the launch features of every value of that position after the row's prefix
(`launch.lookahead_rows`), computed for the dataset's device, and the model learns to score them
with the rest. It is turned off where it cannot apply: a transformer, or a space without conv2d's
tile parameters (`with_lookahead_where_it_applies`; the checkpoint records what was trained).

Restarts (`ModelConfig.restarts` = R > 1): R runs from seeds seed .. seed+R-1, and the one whose kept
epoch scores best on the validation problems wins (by the same ratio, or the loss where no ratio
applies): random restarts chosen on validation, never on test. On the H200 dataset's sixteenth
installment three seeds' validation ratios spanned 0.929 to 0.940 and their best epochs 8 to 82
(`benchmarks/RESULTS.md`); a restart is a whole run, so R times the training time. Each run is
the run a lone seed gives, weight for weight.

Members (`ModelConfig.members` = M > 1): M runs from seeds seed .. seed+M-1, as restarts train them,
and all are kept as one `ensemble.Ensemble` (the mean of their log-probabilities each step). Where
restarts bet on the one seed that validation favours, members keep every seed. On the H200
dataset's seventeenth and eighteenth installments three members scored ~0.01 above the best of their
seeds on the test split's top-1 ratio, and validation did not pick that best seed
(`benchmarks/RESULTS.md`). M times the training time and about twice the prediction time.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kptune.dataset import Dataset, DatasetProblem
from kptune.device import DeviceInfo
from kptune.predict.ensemble import Ensemble
from kptune.predict.launch import PARAMETERS, Launch, lookahead_rows
from kptune.predict.models import ModelConfig, build_model
from kptune.predict.threads import one_thread
from kptune.predict.tokenizer import BOS, TargetVocab, encode_source
from kptune.problem import problem_from_key
from kptune.space import Config

#: Fewest validation-split problems to early-stop on. Two networks' few layers are no guide: with the
#: 6 problems of SqueezeNet 1.1 and UNet (dataset of 237 problems) the validation loss was lowest
#: after the first epoch, and early stopping kept a model that had barely trained.
MIN_VALIDATION = 16
#: candidates of the beam scored for early stopping (autotune measures 5 of the model's)
VALIDATION_K = 5


@dataclasses.dataclass
class TrainResult:
    model: nn.Module
    vocab: TargetVocab
    history: list[dict[str, float]]
    best_epoch: int
    validation: str  # "validation split" or "held-out train"
    seconds: float
    seed: int = 0  # the kept run's seed (an ensemble's: its first member's)
    restarts: tuple[dict[str, float | None], ...] = ()  # restarts or members: each run's seed, best epoch, score
    cfg: ModelConfig | None = None  # the settings trained with (lookahead off where it cannot apply)
    ensemble_ratio: float | None = None  # members: the ensemble's ratio on the validation split (None: not scored)


def targets(problem: DatasetProblem, within: float, limit: int) -> list[str]:
    best = problem.times[0][1]
    return [c for c, t in problem.times[:limit] if t <= best * within]


def _tensors(problems: Sequence[DatasetProblem], vocab: TargetVocab, within: float, limit: int,
             gemm_view: bool, device: DeviceInfo | None = None) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """(sources, decoder inputs, targets) of every target config, and with `device` (lookahead models)
    each position's launch features [rows, positions, widest position, FEATURES]."""
    src, tin, tout, looks = [], [], [], []
    width = max(len(v) for v in vocab.values)
    for p in problems:
        problem = problem_from_key(p.key)
        source = encode_source(problem, gemm_view)  # type: ignore[arg-type]
        launch = Launch(problem, device.compute_units, vocab.names) if device is not None else None  # type: ignore[arg-type]
        for key in targets(p, within, limit):
            config = Config.parse(key)
            tokens = vocab.encode(config)[1:-1]  # the parameters, no <s> </s>
            src.append(source)
            tin.append([BOS, *tokens[:-1]])
            tout.append(tokens)
            if launch is not None:
                looks.append(lookahead_rows(launch, config.values(), vocab.values, width))
    tensors = torch.tensor(src), torch.tensor(tin), torch.tensor(tout)
    return (*tensors, torch.tensor(looks)) if device is not None else tensors


def position_mask(vocab: TargetVocab) -> torch.Tensor:
    """[positions, vocab]: 0 where the token belongs to the position, -inf elsewhere."""
    mask = torch.full((len(vocab.values), vocab.size), float("-inf"))
    for t in range(len(vocab.values)):
        mask[t, vocab.span(t).start : vocab.span(t).stop] = 0.0
    return mask


def _loss(
    model: nn.Module, batch: tuple[torch.Tensor, ...], mask: torch.Tensor, spans: Sequence[range]
) -> torch.Tensor:
    src, tin, tout, *looks = batch
    logits = (model(src, tin, looks[0], spans) if looks else model(src, tin)) + mask
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tout.reshape(-1))


def train(data: Dataset, cfg: ModelConfig, log: Callable[[str], None] = lambda s: None,
          on_epoch: Callable[[int, nn.Module, TargetVocab], None] | None = None) -> TrainResult:  # fmt: skip
    """Train `cfg` on `data`'s train split; `on_epoch(epoch, model, vocab)` sees the model (in eval
    mode) after each epoch, e.g. to score it at several epoch counts in one run. On one PyTorch thread
    (`threads.one_thread`): the same weights on any machine."""
    cfg = with_lookahead_where_it_applies(cfg, data)
    if cfg.restarts < 1:
        raise ValueError(f"restarts must be at least 1, not {cfg.restarts}")
    if cfg.restarts > 1 and not cfg.early_stop:
        raise ValueError("restarts are chosen on validation problems: they need early stopping")
    if cfg.members < 1:
        raise ValueError(f"members must be at least 1, not {cfg.members}")
    if cfg.members > 1 and cfg.restarts > 1:
        raise ValueError("restarts keep one seed, members keep them all: ask for one or the other")
    runs_of, what = max(cfg.restarts, cfg.members), "restart" if cfg.restarts > 1 else "member"
    with one_thread():
        if runs_of == 1:
            return dataclasses.replace(_train(data, cfg, log, on_epoch), cfg=cfg)
        runs: list[TrainResult] = []
        for seed in range(cfg.seed, cfg.seed + runs_of):
            log(f"{what} {seed - cfg.seed + 1} of {runs_of}: seed {seed}")
            one = dataclasses.replace(cfg, seed=seed, restarts=1, members=1)
            runs.append(_train(data, one, log, on_epoch))
        table = tuple({"seed": r.seed, "best_epoch": r.best_epoch, "score": _validation_score(r)} for r in runs)
        seconds = sum(r.seconds for r in runs)
        if cfg.members > 1:
            model = Ensemble([r.model for r in runs]).eval()
            score = _ensemble_score(data, cfg, model, runs[0].vocab)
            scored = f": validation {score:.4f}" if score is not None else ""
            log(f"kept all {len(runs)} seeds as an ensemble{scored}")
            return dataclasses.replace(runs[0], model=model, seconds=seconds, restarts=table, cfg=cfg,
                                       ensemble_ratio=score)  # fmt: skip
    by_score = [(ratio, r) for r in runs if (ratio := _validation_score(r)) is not None]  # restarts stop early: all
    kept = max(by_score, key=lambda pair: pair[0])[1]
    log(f"kept seed {kept.seed}: " + ", ".join(f"seed {r.seed} {ratio:.4f}" for ratio, r in by_score))
    return dataclasses.replace(kept, seconds=seconds, restarts=table, cfg=cfg)


def _ensemble_score(data: Dataset, cfg: ModelConfig, model: nn.Module, vocab: TargetVocab) -> float | None:
    """The ensemble's ratio on the validation split, as each member's epochs were scored (None where no
    ratio applies: no early stopping, too few validation problems, or no registered family)."""
    val_set = data.split("validation")
    if not cfg.early_stop or len(val_set) < MIN_VALIDATION:
        return None  # (each member may have held out its own tenth of train: no common validation)
    rank_score = _ranking_score(data, val_set)
    return rank_score(model, vocab) if rank_score is not None else None


def with_lookahead_where_it_applies(cfg: ModelConfig, data: Dataset) -> ModelConfig:
    """`cfg`, with lookahead off for a transformer or a space without conv2d's tile parameters."""
    applies = cfg.arch == "lstm" and set(PARAMETERS) <= set(data.meta["parameters"])
    return cfg if applies or not cfg.lookahead else dataclasses.replace(cfg, lookahead=False)


def _validation_score(result: TrainResult) -> float | None:
    """The higher the better: the kept epoch's validation ratio, else minus its validation loss; None where
    nothing was held out (no early stopping: members trained for fixed epochs)."""
    row = result.history[result.best_epoch]
    if "val_ratio" in row:
        return row["val_ratio"]
    return -row["val_loss"] if "val_loss" in row else None


def _train(data: Dataset, cfg: ModelConfig, log: Callable[[str], None],
           on_epoch: Callable[[int, nn.Module, TargetVocab], None] | None) -> TrainResult:  # fmt: skip
    t0 = time.perf_counter()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    vocab = TargetVocab(data.meta["parameters"], _values(data))
    train_set, val_set = data.split("train"), data.split("validation")
    validation = "validation split"
    if not cfg.early_stop:
        train_set, val_set = train_set + val_set, []
        validation = f"none: fixed {cfg.epochs} epochs on train + validation"
    elif len(val_set) < MIN_VALIDATION:
        rng = random.Random(cfg.seed)
        held = set(rng.sample(range(len(train_set)), max(1, len(train_set) // 10)))
        val_set = [p for i, p in enumerate(train_set) if i in held]
        train_set = [p for i, p in enumerate(train_set) if i not in held]
        validation = f"held-out train (the validation split has fewer than {MIN_VALIDATION} problems)"
    device = _launch_device(data, cfg)
    tr = _tensors(train_set, vocab, cfg.targets_within, cfg.max_targets, cfg.gemm_view, device)
    va = _tensors(val_set, vocab, 1.0, 1, cfg.gemm_view, device) if val_set else None
    rank_score = _ranking_score(data, val_set) if val_set else None
    mask, spans = position_mask(vocab), [vocab.span(t) for t in range(len(vocab.values))]
    model = build_model(cfg, vocab.size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    best, best_epoch, best_state = float("inf"), 0, None  # best: the lower the better (-ratio or loss)
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(tr[0].shape[0], generator=gen)
        total, n = 0.0, 0
        for i in range(0, len(order), cfg.batch):
            idx = order[i : i + cfg.batch]
            loss = _loss(model, tuple(x[idx] for x in tr), mask, spans)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        model.eval()
        if on_epoch is not None:
            on_epoch(epoch, model, vocab)
        if va is None:
            history.append({"epoch": epoch, "train_loss": total / max(n, 1)})
            best_epoch = epoch
            if epoch % 20 == 0:
                log(f"epoch {epoch}: train {total / max(n, 1):.4f}")
            continue
        with torch.no_grad():
            val = _loss(model, va, mask, spans).item()
        row = {"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": val}
        if rank_score is not None:
            row["val_ratio"] = rank_score(model, vocab)
        history.append(row)
        guide = -row["val_ratio"] if rank_score is not None else val
        if guide < best - 1e-4:
            best, best_epoch = guide, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if epoch % 20 == 0:
            ratio = f", ratio {row['val_ratio']:.4f}" if rank_score is not None else ""
            log(f"epoch {epoch}: train {total / max(n, 1):.4f}, validation {val:.4f}{ratio}")
        if epoch - best_epoch >= cfg.patience:
            what = "ratio" if rank_score is not None else "loss"
            log(f"early stop at epoch {epoch}: best validation {what} {abs(best):.4f} at epoch {best_epoch}")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, vocab, history, best_epoch, validation, time.perf_counter() - t0, cfg.seed)


RankingScore = Callable[[nn.Module, TargetVocab], float]


def _launch_device(data: Dataset, cfg: ModelConfig) -> DeviceInfo | None:
    """The device whose launches a lookahead model learns to score: the dataset's (None without lookahead)."""
    return DeviceInfo(**data.meta["device_limits"]) if cfg.lookahead else None


def _ranking_score(data: Dataset, problems: Sequence[DatasetProblem]) -> RankingScore | None:
    """model, vocab -> the geometric mean of the top-1 and best-of-VALIDATION_K ratios of the hedged
    constrained beam over `problems` (None where the family is not registered: no space to constrain with)."""
    from kptune.errors import KptuneError
    from kptune.kernel import get_family
    from kptune.predict.evaluation import predict_ranker, scores

    try:
        family = get_family(data.meta["family"])
    except KptuneError:
        return None
    if list(family.space.names) != list(data.meta["parameters"]):
        return None
    device = DeviceInfo(**data.meta["device_limits"])

    def score(model: nn.Module, vocab: TargetVocab) -> float:
        with torch.no_grad():
            rank = predict_ranker(model, vocab, family, device)
            got = scores(problems, rank, VALIDATION_K)  # the hedged beam, as predict() (so autotune) runs it
        return float((got["ratio_top1_geomean"] * got[f"ratio_top{VALIDATION_K}_geomean"]) ** 0.5)

    return score


def _values(data: Dataset) -> list[list[int]]:
    """Each parameter's values: from the kernel family when registered, else those seen in the data."""
    from kptune.kernel import get_family

    family = get_family(data.meta["family"])
    if list(family.space.names) == list(data.meta["parameters"]):
        return [list(p.values) for p in family.space.params]
    seen: list[set[int]] = [set() for _ in data.meta["parameters"]]
    for p in data.problems:
        for c, _ in p.times:
            for i, v in enumerate(Config.parse(c).values()):
                seen[i].add(v)
    return [sorted(s) for s in seen]


def plot_curve(history: Sequence[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], label="train")
    if any("val_loss" in h for h in history):
        ax.plot([h["epoch"] for h in history], [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy per token")
    ax.set_title(title)
    ax.legend(loc="upper left")
    if any("val_ratio" in h for h in history):
        ratio = ax.twinx()
        val = [h.get("val_ratio", float("nan")) for h in history]
        ratio.plot([h["epoch"] for h in history], val, color="tab:green", label="validation ratio (early stop)")
        ratio.set_ylabel("performance ratio")
        ratio.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary(result: TrainResult) -> dict[str, Any]:
    """What training did, for the checkpoint's metadata and `kptune train --json`; an ensemble's
    `val_ratio` is the whole ensemble's, its best epoch and losses its first member's."""
    last = result.history[result.best_epoch]
    members = result.cfg.members if result.cfg is not None else 1
    runs = "members" if members > 1 else "restarts"
    ratio = result.ensemble_ratio if members > 1 else last.get("val_ratio")
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_loss": last["train_loss"],
        "val_loss": last.get("val_loss"),
        "val_ratio": ratio,
        "validation": result.validation,
        "seconds": round(result.seconds, 1),
        "seed": result.seed,
        **({runs: [{**r, "score": _rounded(r["score"])} for r in result.restarts]} if result.restarts else {}),
    }


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 4)
