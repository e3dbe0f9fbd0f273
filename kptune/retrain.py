"""`retrain()`, for a nightly job: learn from everything in the perf db, promote only if not worse.

1. Cut the dataset from the db (`kptune.dataset.build`: every exhaustively tuned problem,
   model-sourced and audit measurements included, with the corpus's fixed split), on top of the
   dataset autotune lends from now where that one was measured on this very device and kernel
   source (`--base`, the default: the db's problems extend the shipped installment, or the
   current version's cut, instead of replacing it; `base=False`: the db alone).
2. Train a candidate checkpoint, and fit a cost model on the cut's train and validation problems
   (`kptune.predict.costmodel`). Autotune measures the model's top 5 and the configs the tuned
   shapes lend (`kptune.neighbours`: the cost model's first picks), so a version is all three: the
   checkpoint, the cut it lends from, and the cost model fit on that cut.
3. Score the candidate and what autotune serves now on the same, fixed test split of the cut:
   first the geomean ratio of the best of what autotune measures by default (the model's 5,
   `NEIGHBOURS` lent, `COVER`, then `LOCAL` by its local search, run on the test problems' recorded times),
   then the constrained beam's top-5 and top-1 ratio as tie-breaks
   (closer than `TIE` is a tie).
   What autotune serves now: the registry's current version for the device, else (no version
   yet) the shipped checkpoint and dataset, so a first nightly run cannot replace them with worse.
4. Add the candidate to the registry; promote it only if it is not worse; else keep the
   current one and say why.

Exit codes (CLI): 0 promoted, 10 kept the current model (candidate worse), 2 error.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kptune import dataset as ds
from kptune.corpus import CorpusEntry
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import KernelFamily, get_family
from kptune.local_search import LOCAL, guided, recorded
from kptune.neighbours import COVER, NEIGHBOURS, dataset_for, default_dataset_places, lender_for, lent_dataset
from kptune.perfdb import PerfDB
from kptune.predict.models import ModelConfig
from kptune.registry import Registry

EXIT_PROMOTED, EXIT_KEPT = 0, 10
#: the model's candidates autotune measures by default (its -k)
MODEL_K = 5
AUTOTUNE = "autotune_ratio_geomean"
GATE = (AUTOTUNE, "ratio_top5_geomean", "ratio_top1_geomean")
#: gate metrics closer than this count as a tie, and the next one decides: on the ~200 test problems of
#: the H200 dataset, refitting the cost model on the same data in another order moved the first by 0.0015
TIE = 1e-3


@dataclasses.dataclass(frozen=True)
class Served:
    """What autotune serves a device with: a checkpoint, and the dataset whose tuned shapes lend the rest
    of its candidates (the cost model fit on it beside it), if any."""

    label: str  # "v3", or "the shipped model-h200.safetensors"
    model: Path
    lent: Path | None
    version: int | None = None


def served_now(registry: Registry, device: DeviceInfo, family: KernelFamily,
               shipped: tuple[Path, ...] | None = None) -> Served | None:  # fmt: skip
    """What autotune uses for `device` now: the registry's current version (`autotune.model_for`,
    `neighbours.lent_dataset`), else the checkpoint and dataset among `shipped` (default: those shipped
    with kptune) made for it; None if neither."""
    from kptune.autotune import model_for

    places = _places(shipped)
    current = registry.current(device.key, family.name)
    if current is not None and current[0]["source_hash"] == family.source_hash and current[1].is_file():
        entry, path = current
        return Served(f"v{entry['version']}", path, lent_dataset(device, family, registry, places), entry["version"])
    model = model_for(device, family, list(places))
    return Served(f"the shipped {model.name}", model, dataset_for(device, family, places)) if model else None


@dataclasses.dataclass
class RetrainResult:
    promoted: bool
    reason: str
    version: int
    current_version: int | None
    candidate: dict[str, Any]
    current: dict[str, Any] | None
    data: dict[str, int]
    current_label: str | None = None  # "v3", "the shipped model-h200.safetensors", or None: nothing served yet

    @property
    def exit_code(self) -> int:
        return EXIT_PROMOTED if self.promoted else EXIT_KEPT

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "exit_code": self.exit_code}


def decide(candidate: dict[str, Any], current: dict[str, Any] | None, label: str = "current") -> tuple[bool, str]:
    """Promote when nothing is served yet, or the candidate is not worse on the gate metrics: the first
    that differs by more than TIE decides (`label`: what is served now, for the reason)."""
    if current is None:
        return True, "no current model for this device"
    for key in GATE:
        c, o = candidate.get(key), current.get(key)
        if c is None or o is None:
            continue
        if c > o + TIE:
            return True, f"{key} {c:.4f} > {label} {o:.4f}"
        if c < o - TIE:
            return False, f"{key} {c:.4f} < {label} {o:.4f}"
    return True, f"as good as {label} (within {TIE}) on " + " and ".join(k for k in GATE if k in candidate)


def score(served: Served, test: Sequence[ds.DatasetProblem], device: DeviceInfo,
          family: KernelFamily) -> dict[str, Any]:  # fmt: skip
    """`kptune eval`'s metrics of the served model's constrained beam (hedged, as autotune runs it) on
    the `test` problems, and AUTOTUNE: the geomean ratio of the best of what autotune measures by default
    (the model's MODEL_K, then NEIGHBOURS and COVER lent by `served.lent`, then LOCAL by its local search,
    each round's times read from the problem's recorded ones)."""
    from kptune.predict import checkpoint, evaluation
    from kptune.problem import problem_from_key
    from kptune.space import Config

    pred = checkpoint.load(served.model, family.name)
    beam = evaluation.predict_ranker(pred.model, pred.vocab, family, device)
    ranked = {p.key: beam(p, MODEL_K) for p in test}
    lender = lender_for(device, family, (served.lent,)) if served.lent is not None else None

    def candidates(problem: ds.DatasetProblem, count: int) -> list[str]:
        keys = ranked[problem.key]
        conv = problem_from_key(problem.key)
        if lender is not None:
            chosen = [Config.parse(key) for key in keys]
            keys = keys + [c.key() for c in lender.complete(conv, chosen, NEIGHBOURS, COVER)]  # type: ignore[arg-type]
        timed = recorded(dict(problem.times), problem.times[-1][1])  # (an unstored config: the slowest stored)
        start = timed(Config.parse(key) for key in keys)
        found = guided(start, LOCAL, timed, family.space, conv, device, pred.model, pred.vocab)  # type: ignore[arg-type]
        return [c.key() for c in found]

    size = MODEL_K + NEIGHBOURS + COVER + LOCAL
    metrics = evaluation.scores(test, lambda problem, k: ranked[problem.key][:k], MODEL_K)
    return {**metrics, AUTOTUNE: evaluation.scores(test, candidates, size)[f"ratio_top{size}_geomean"],
            "autotune_configs": size, "lender": lender.cost_note if lender is not None else "nothing lent"}  # fmt: skip


def retrain(db: Path, device: str | None = None, family: str = "conv2d_fwd", registry: Registry | None = None,
            cfg: ModelConfig | None = None, log: Callable[[str], None] = lambda s: None,
            corpus: Sequence[CorpusEntry] | None = None, shipped: tuple[Path, ...] | None = None,
            base: bool = True, reranker: ModelConfig | None = None) -> RetrainResult:  # fmt: skip
    """See the module docstring; `corpus` (default: the shipped one) decides the split of the db's
    problems; `shipped`: where to find what autotune serves while the registry has no version for the
    device (default: the checkpoints and datasets shipped with kptune; () for none); `base`: cut on
    top of the dataset autotune lends from now; `reranker`: also fit the reranker of the beam on the cut
    (`kptune.predict.rerank`), its folds' seq2seqs trained with this config, kept with the version."""
    from kptune.predict.api import train_checkpoint
    from kptune.predict.checkpoint import read_meta

    registry = registry or Registry()
    cfg = cfg or ModelConfig()
    kernel = get_family(family)
    if not Path(db).is_file():
        raise KptuneError(f"no perf db at {db}")
    with PerfDB(db) as perfdb:
        device_id, device_key = perfdb.find_device(device)
        measured_on = perfdb.device_info(device_id)
        now = served_now(registry, measured_on, kernel, shipped)  # what the candidate is gated against
        lent = now.lent if now is not None else lent_dataset(measured_on, kernel, registry, _places(shipped))
        below = _base(lent, device_key, log) if base else None
        top = max(ds.TOP, int(below.meta.get("top", ds.TOP))) if below is not None else ds.TOP  # keep what it kept
        data, counts = ds.build(perfdb, device_key, family, top=top, corpus=corpus, base=below)
    if not counts.get("test"):
        raise KptuneError("the db has no exhaustively tuned problem of the test networks to gate on")
    with tempfile.TemporaryDirectory(prefix="kptune-retrain-") as tmp:
        data_path, candidate_path = Path(tmp) / "dataset-candidate.db.gz", Path(tmp) / "candidate.safetensors"
        data_path.write_bytes(data)
        cut = ds.load(data_path)
        log(f"dataset: {', '.join(f'{k} {v}' for k, v in counts.items())}")
        train_checkpoint(data_path, candidate_path, cfg, log)
        cost_model = _fit_cost_model(cut, data_path, log)
        reranker_file = _fit_reranker(cut, data_path, reranker, log) if reranker is not None else None
        test = cut.split("test")
        scored = score(Served("the candidate", candidate_path, data_path), test, measured_on, kernel)
        current_scored = score(now, test, measured_on, kernel) if now is not None else None
        log(f"{AUTOTUNE}: candidate {scored[AUTOTUNE]:.4f}"
            + (f", {now.label} {current_scored[AUTOTUNE]:.4f}" if now and current_scored else ""))  # fmt: skip
        promoted, reason = decide(scored, current_scored, now.label if now is not None else "current")
        meta = read_meta(candidate_path) or {}
        entry = registry.add(candidate_path, meta, scored, data_path, cost_model, reranker_file)
    if promoted:
        registry.promote(entry["version"])
    elif now is not None:  # (decide promotes whenever nothing is served)
        reason += f": kept {now.label}"
    return RetrainResult(promoted, reason, entry["version"], now.version if now is not None else None, scored,
                         current_scored, counts, now.label if now is not None else None)  # fmt: skip


def _places(shipped: tuple[Path, ...] | None) -> tuple[Path, ...]:
    """Where the shipped checkpoints and datasets lie (`shipped`, default: those shipped with kptune)."""
    from kptune.autotune import default_model_places

    return shipped if shipped is not None else (*default_model_places(), *default_dataset_places())


def _base(path: Path | None, device_key: str, log: Callable[[str], None]) -> ds.Dataset | None:
    """The dataset at `path` to cut on top of, if it was measured on this very device and labelled by
    exhaustive search, as the cut will be (None otherwise: another CPU's, a sampled bootstrap such as
    the shipped PoCL dataset, or none)."""
    if path is None:
        return None
    try:
        data = ds.load(path)
    except ds.DatasetError as exc:
        log(f"not cut on top of {path.name}: {exc}")
        return None
    if data.meta.get("device") != device_key:
        log(f"not cut on top of {path.name}: measured on {data.meta.get('device')}, not {device_key}")
        return None
    if data.meta.get("labels", "exhaustive") != "exhaustive":
        log(f"not cut on top of {path.name}: its labels are '{data.meta['labels']}', the cut's exhaustive")
        return None
    log(f"cut on top of {path.name} ({len(data.problems)} problems)")
    return data


def _fit_reranker(cut: ds.Dataset, data_path: Path, cfg: ModelConfig, log: Callable[[str], None]) -> Path | None:
    """Fit the reranker on the cut's lent problems, beside it (`neighbours.reranker_path`); None where it
    cannot be (no lent fp32 problem outside a fold, no scikit-learn): `kptune predict --rerank` says so."""
    from kptune.neighbours import reranker_path
    from kptune.predict import rerank

    path = reranker_path(data_path)
    try:
        model = rerank.fit(cut, cfg, log=log)
        model.save(path)
    except (KptuneError, ImportError) as exc:
        log(f"reranker not fit ({exc})")
        return None
    log(f"reranker fit on {model.meta['problems']} problems ranked out of fold")
    return path


def _fit_cost_model(cut: ds.Dataset, data_path: Path, log: Callable[[str], None]) -> Path | None:
    """Fit the cost model on the cut's lent problems, beside it (`neighbours.cost_model_path`); None
    where it cannot be (no lent problem, no scikit-learn): the nearest tuned shapes lend instead."""
    from kptune.neighbours import cost_model_path
    from kptune.predict.costmodel import fit_for_dataset

    path = cost_model_path(data_path)
    try:
        fit_for_dataset(cut, path)
    except (KptuneError, ImportError) as exc:
        log(f"cost model not fit ({exc}): the nearest tuned shapes lend instead")
        return None
    log(f"cost model fit on {len(cut.split('train')) + len(cut.split('validation'))} problems")
    return path
