"""The predictor's entry points: train a checkpoint, evaluate it against the baselines, predict."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from kptune import dataset as ds
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.predict import checkpoint, evaluation
from kptune.predict.beam import (
    WIDTH,
    Candidate,
    all_allowed,
    beam_search,
    constrained_allowed,
    hedges,
    prepare,
)
from kptune.predict.blend import blended_ranker, sequence_log_probs
from kptune.predict.launch import launch_for
from kptune.predict.models import ModelConfig, source_of
from kptune.predict.threads import one_thread
from kptune.predict.training import plot_curve, summary, train
from kptune.problem import Conv2dProblem

#: The checkpoint shipped with the package, for the GPU the dataset came from.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "data" / "model-h200.safetensors"


def train_checkpoint(dataset_path: Path, out: Path, cfg: ModelConfig, log: Any = print) -> dict[str, Any]:
    """Train on a dataset file, write the checkpoint and its training curve (PNG beside it)."""
    data = ds.load(dataset_path)
    family = get_family(data.meta["family"])
    if family.source_hash != data.meta["source_hash"]:
        log(f"note: the dataset was measured with kernel source {data.meta['source_hash']}, "
            f"this kptune has {family.source_hash}")  # fmt: skip
    result = train(data, cfg, log)
    info = summary(result)
    curve = out.with_suffix(".png")
    plot_curve(result.history, curve, f"{cfg.arch}, {len(data.split('train'))} train problems")
    meta = {"family": data.meta["family"], "source_hash": data.meta["source_hash"], "device": data.meta["device"],
            "device_limits": data.meta["device_limits"], "dataset": str(dataset_path),
            "dataset_hash": ds.content_hash(data.problems), "training": info}  # fmt: skip
    checkpoint.save(out, result.model, result.cfg or cfg, result.vocab, meta)
    return {**info, "checkpoint": str(out), "curve": str(curve)}


def evaluate(model_path: Path, dataset_path: Path, k: int = 5, dtype: str | None = "fp32",
             width: int = WIDTH, baselines: bool = True, reranker: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Every metric on the test split, for the model (beam, greedy, unconstrained) and, with `baselines`,
    the baselines (the cost model among them is fit here: tens of seconds on a dataset of hundreds) and
    the model blended with that cost model (`blend`). `reranker`: also the beam reordered by that reranker
    (`kptune.predict.rerank`), reading the train and validation problems as tuned shapes, as the shipped one
    does; and, where the cost model fit on the dataset lies beside it, that order with the far shapes' rules of
    `kptune predict --rerank` (`rerank.far_mixed`), as served."""
    from kptune.neighbours import TunedShapes, lender_for, lent_problems
    from kptune.predict import rerank
    from kptune.predict.costmodel import CostModel

    data = ds.load(dataset_path)
    family = get_family(data.meta["family"])
    pred = checkpoint.load(model_path, family.name)
    device = pred.device
    test = [p for p in data.split("test") if dtype is None or f"dtype={dtype}," in p.key]
    if not test:
        raise KptuneError(f"{dataset_path} has no test problems{f' in {dtype}' if dtype else ''}")
    train_set = data.split("train")
    space = family.space
    rankers = {
        "seq2seq constrained beam": evaluation.predict_ranker(pred.model, pred.vocab, family, device, width),
        "seq2seq constrained beam, no hedge": evaluation.model_ranker(pred.model, pred.vocab, space, device, "beam",
                                                                      width),
        "seq2seq greedy constrained": evaluation.model_ranker(pred.model, pred.vocab, space, device, "greedy"),
        "seq2seq unconstrained beam": evaluation.model_ranker(pred.model, pred.vocab, space, device,
                                                              "unconstrained", width),
    }  # fmt: skip
    if baselines:
        cost = CostModel(train_set, space, device)
        rankers |= {
            "most frequent winner": evaluation.most_frequent_winner(train_set, space, device),
            "nearest tuned shape": evaluation.nearest_shape(train_set, space, device),
            "tree per parameter": evaluation.tree_per_parameter(train_set, space, device),
            "cost model (boosted trees)": cost.rank,
            "seq2seq + cost model (blend)": blended_ranker(pred.model, pred.vocab, cost),
        }
    if reranker is not None:
        lent = lent_problems(data)
        model = rerank.Reranker.load(reranker, ds.content_hash(lent))
        lender = lender_for(device, family, (dataset_path,))  # the same tuned shapes, and the cost model beside
        tuned = lender.tuned if lender is not None and lender.tuned is not None else TunedShapes(lent)
        rankers["seq2seq beam, reranked"] = rerank.ranker(pred.model, pred.vocab, family, device, tuned, model)
        if lender is not None and lender.cost is not None:  # the far rules read the cost model beside the dataset
            rankers["seq2seq beam, reranked, as served"] = rerank.ranker(pred.model, pred.vocab, family, device,
                                                                         tuned, model, lender)  # fmt: skip
    results = {name: evaluation.scores(test, rank, k) for name, rank in rankers.items()}
    return {
        "model": str(model_path),
        "reranker": str(reranker) if reranker is not None else None,
        "arch": pred.cfg.arch,
        "dataset": str(dataset_path),
        "device": data.meta["device"],
        "dtype": dtype,
        "k": k,
        "width": width,
        "test_problems": len(test),
        "results": results,
    }


def predict(problem: Conv2dProblem, k: int = 5, model_path: Path | None = None, width: int = WIDTH,
            constrained: bool = True, device: Any = None, hedge: bool = True, kernel: str = "conv2d_fwd",
            blend: bool = False, rerank: bool = False) -> tuple[list[Candidate], checkpoint.Predictor]:  # fmt: skip
    """The top-k configs of kernel family `kernel` for `problem`, valid by construction when constrained:
    for `device`'s limits (the device they will run on), or by default for the device the checkpoint
    was trained for. `hedge`: the k spread over the family's hedged parameter (`beam.HEDGED`: conv2d's
    split factor) and its tile (`beam.DIVERSE`). `blend`: the configs of the tuned shapes' pool ranked
    by the model and the cost model shipped for the device together (`kptune.predict.blend`; ~40 ms
    instead of ~3 ms), then the beam's where the pool holds fewer than k; each with the model's log-probability.
    `rerank`: the candidates of a beam of width `rerank.WIDTH` (at least k) and the nearest tuned shapes' winners,
    ordered by the reranker shipped for the device (`kptune.predict.rerank`; it reads the tuned shapes too:
    ~5.5-6.5 ms for a new shape on one core), fp32 and fp16 alike (`rerank.RERANKED_DTYPES`); for a shape far from
    every tuned one, the first and (k >= 2) the last of k are the cost model's (`rerank.far_mixed`)."""
    from kptune.predict import rerank as reranking

    family = get_family(kernel)
    pred = load_predictor(model_path, kernel)
    target = device if device is not None else pred.device
    with one_thread():
        size, width = reranking.beam_size(problem, k, width) if rerank else (k, width)
        found = search(pred.model, pred.vocab, family, problem, target, size, width, constrained, hedge)
        if rerank:
            found = _scored_lent(pred, problem, target, found, _reranked(problem, found, target, family, k))
        if blend:
            picked = _blended(problem, k, pred, target, family)
            keys = {c.config.key() for c in picked}
            found = (picked + [c for c in found if c.config.key() not in keys])[:k]
    if not found:
        raise KptuneError(f"no valid config of {family.name} exists for {problem.key()} on {target.key}")
    return found, pred


def search(model: Any, vocab: Any, family: Any, problem: Conv2dProblem, device: Any, k: int, width: int = WIDTH,
           constrained: bool = True, hedge: bool = True) -> list[Candidate]:  # fmt: skip
    """The model's beam for `problem` on `device`, as `predict` runs it (its caller picks the torch threads)."""
    allowed = constrained_allowed(family.space, problem, device) if constrained else all_allowed(vocab)
    spread, diverse = hedges(family.name, vocab) if hedge else (None, ())
    launch = launch_for(model, problem, device, family.space.names)
    return beam_search(model, vocab, source_of(model, problem), allowed, max(width, k), k, spread, launch, diverse)


def _reranked(problem: Conv2dProblem, found: list[Candidate], device: Any, family: Any, k: int) -> list[Candidate]:
    """The first k of `found`'s pool reordered by the reranker shipped for `device` (KptuneError if none), far
    shapes' places given to its cost model (`rerank.far_mixed`)."""
    from kptune.neighbours import lender_for
    from kptune.predict.rerank import far_mixed

    lender = lender_for(device, family)
    if lender is None:
        raise KptuneError(f"--rerank needs the reranker shipped for the device: no dataset of tuned shapes for "
                          f"{device.key}")  # fmt: skip
    if lender.reranker is None or lender.tuned is None:
        raise KptuneError(f"--rerank needs the reranker shipped for the device: {lender.rerank_note}")
    return far_mixed(problem, lender.reranker.order(problem, found, lender.tuned, device, family.space), k, lender)


def _scored_lent(pred: checkpoint.Predictor, problem: Conv2dProblem, device: Any, beam: list[Candidate],
                 picked: list[Candidate]) -> list[Candidate]:  # fmt: skip
    """`picked` with the seq2seq's log-probability for each config the reranker took from the tuned shapes, not
    the beam (ranked without one, `rerank.LENT_LOG_PROB`): one decode, only where such a config is picked."""
    proposed = {c.config.key() for c in beam}
    lent = [i for i, c in enumerate(picked) if c.config.key() not in proposed]
    if not lent:
        return picked
    logp = sequence_log_probs(pred.model, pred.vocab, problem, [picked[i].config.key() for i in lent], device)
    out = list(picked)
    for i, lp in zip(lent, logp, strict=True):
        out[i] = Candidate(picked[i].config, float(lp))
    return out


def _blended(problem: Conv2dProblem, k: int, pred: checkpoint.Predictor, device: Any, family: Any) -> list[Candidate]:
    """The blend's first k for `problem` on `device`, from the cost model shipped for it (KptuneError if none)."""
    from kptune.neighbours import lender_for
    from kptune.predict.blend import blend
    from kptune.space import Config

    lender = lender_for(device, family)
    if lender is None or lender.cost_model is None:
        why = lender.cost_note if lender is not None else f"no dataset of tuned shapes for {device.key}"
        raise KptuneError(f"--blend needs the cost model shipped for the device: {why}")
    keys = [key for key, _ in blend(pred.model, pred.vocab, lender.cost_model, problem)[:k]]
    logp = sequence_log_probs(pred.model, pred.vocab, problem, keys, lender.cost_model.device)
    return [Candidate(Config.parse(key), float(lp)) for key, lp in zip(keys, logp, strict=True)]


def served_model(kernel: str = "conv2d_fwd") -> Path:
    """The checkpoint `predict` uses by default: what autotune serves for the shipped checkpoint's GPU, that is
    the model registry's current version once `kptune retrain` has promoted one (`autotune.model_for`), else
    the shipped checkpoint (DEFAULT_MODEL). So `kptune predict` and `--rerank`'s reranker, which reads the
    current version's tuned shapes (`neighbours.lent_dataset`), follow a promotion together."""
    from kptune.registry import Registry

    family = get_family(kernel)
    try:
        stamp = DEFAULT_MODEL.stat().st_mtime_ns
    except OSError:
        return DEFAULT_MODEL  # load() says what is wrong
    device = _device_of(str(DEFAULT_MODEL), stamp)
    current = Registry().current_model(device, family.name, family.source_hash) if device else None
    return current or DEFAULT_MODEL


@functools.lru_cache(maxsize=4)
def _device_of(path: str, stamp: int) -> str | None:
    """The device key a checkpoint was trained for (None: not a readable checkpoint)."""
    meta = checkpoint.read_meta(Path(path))
    return str(meta["device"]) if meta and "device" in meta else None


def load_predictor(model_path: Path | None = None, kernel: str = "conv2d_fwd") -> checkpoint.Predictor:
    """The checkpoint `predict` uses (default: `served_model`), loaded once per modification time:
    call it ahead so that a first prediction does not pay the load. A bad checkpoint, or one of another
    kernel family or source, raises KptuneError."""
    family = get_family(kernel)
    path = Path(model_path) if model_path else served_model(kernel)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = 0  # load() says what is wrong
    return _loaded(str(path), stamp, family.name, family.source_hash)


@functools.lru_cache(maxsize=4)
def _loaded(path: str, stamp: int, family: str, source_hash: str) -> checkpoint.Predictor:
    """A checkpoint loaded once per (path, modification time): a service predicts without reloading."""
    loaded = checkpoint.load(Path(path), family, source_hash)
    prepare(loaded.model)
    return loaded


def to_json(doc: Any) -> str:
    return json.dumps(doc, indent=2)
