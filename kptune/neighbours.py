"""Candidates from the tuned shapes that autotune measures beside the model's.

MIOpen ships a system perf db of tuned problems beside its heuristics; kptune ships, per device, the
dataset its model learned from (`kptune/data/dataset-*.db.gz`); once `kptune retrain` has promoted a
version, the dataset that version learned from (`lent_dataset`). Two kinds of candidates come from
it, each re-checked against this device's limits, so every one is valid here:

- **neighbours**: the first picks of the cost model fit on the dataset and shipped beside it
  (`kptune.predict.costmodel`: a gradient-boosted ranking of the configs stored for the nearest
  tuned shapes); where none is shipped (or it was fit on other data), the fastest configs of the
  nearest of its train and validation problems (by their implicit GEMM's sizes, same dtype first:
  `evaluation.point`, `evaluation.nearest_shape`);
- **cover**: configs that best complete the candidates chosen so far over the `COVER_SHAPES`
  nearest tuned shapes (`cover_ranker`): greedily, the config that most raises the geomean over
  those shapes of t_best / (fastest chosen config's time), as a portfolio of algorithms is
  chosen. A config outside a shape's stored fastest counts there as half the slowest stored one's
  ratio.

The rankers miss in different places: scored offline, the model's top 5 plus the nearest shape's
top 2 beat the model's top 7, a cover of the rest beats more of either, and the cost model's picks
beat both: chosen by network-fold CV (`benchmarks/candidates_offline.py --cv 4`, where of the sets of
25 the model's 5 + the cost model's 20 scored best), the default is the model's 5 and the cost
model's first 20 not among them, no cover (`benchmarks/RESULTS.md`). Test problems are never lent:
the test split stays unseen, as in training.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kptune import dataset as ds
from kptune.device import DeviceInfo, newest_made_for
from kptune.kernel import KernelFamily
from kptune.problem import Conv2dProblem, problem_from_key
from kptune.registry import Registry
from kptune.space import Config, SearchSpace, completer

if TYPE_CHECKING:
    from kptune.predict.costmodel import CostModel
    from kptune.predict.evaluation import Ranker
    from kptune.predict.rerank import Reranker

#: configs lent by the nearest tuned shapes, by default (the cost model's picks where one is shipped)
NEIGHBOURS = 20
#: configs lent instead of NEIGHBOURS to a problem far from every tuned shape (`TunedShapes.far`)
FAR_NEIGHBOURS = 70
#: a problem is far when its nearest tuned shape lies farther than this percentile of the tuned shapes' own
#: nearest-other distances
FAR_PERCENTILE = 99
#: problems whose ranked neighbours a Lender keeps (`Lender.rank_neighbours`)
RANKED_KEPT = 1024
#: configs added to cover the nearest tuned shapes, by default
COVER = 0
#: how many nearest tuned shapes the cover is chosen over
COVER_SHAPES = 100
#: a config outside a tuned shape's stored fastest counts as this share of the slowest stored one's ratio
UNSTORED = 0.5
SPLITS_LENT = ("train", "validation")

#: (problem, chosen config keys, count) -> up to `count` more config keys, valid for the problem
Coverer = Callable[[ds.DatasetProblem, Sequence[str], int], list[str]]


@dataclasses.dataclass(frozen=True)
class Lender:
    """The tuned shapes of one dataset, for one device: what they lend a new problem."""

    nearest: Ranker
    cover: Coverer
    cost_model: CostModel | None = None  # the cost model shipped with the dataset, if any
    cost_note: str = "no cost model"  # which cost model lends, or why none does
    reranker: Reranker | None = None  # the reranker fit on the dataset, if any (`kptune.predict.rerank`)
    rerank_note: str = "no reranker"  # which reranker, or why none
    tuned: TunedShapes | None = None  # the tuned shapes themselves, which the reranker reads
    #: problem key -> (count asked, `rank_neighbours`' answer): a shape asked again is not ranked again
    ranked: dict[str, tuple[int, list[str]]] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    ranked_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, compare=False, repr=False)

    @property
    def cost(self) -> Ranker | None:
        """The cost model's ranking, if there is one."""
        return self.cost_model.rank if self.cost_model is not None else None

    def far(self, problem: Conv2dProblem) -> bool:
        """Whether `problem` lies far from every tuned shape (`TunedShapes.far`; False where none are held)."""
        return self.tuned is not None and self.tuned.far(problem)

    def rank_neighbours(self, problem: Conv2dProblem, count: int) -> list[str]:
        """The nearest tuned shapes' first `count` configs for `problem`: the cost model's ranking of
        theirs, or without one the nearest shape's fastest. Kept for the last RANKED_KEPT problems asked
        (the cost model's ranking takes ~17 ms; a service predicts the same shapes again)."""
        key = problem.key()
        with self.ranked_lock:  # autotune ranks in a thread of its own
            asked, answer = self.ranked.get(key, (0, []))
        if asked < count:
            ranker = self.cost if self.cost is not None else self.nearest
            answer = ranker(ds.DatasetProblem(key, "", (), 0, 0, ()), count)
            with self.ranked_lock:
                if len(self.ranked) >= RANKED_KEPT:
                    del self.ranked[next(iter(self.ranked))]  # the first asked
                self.ranked[key] = (count, answer)
        return answer[:count]

    def complete(self, problem: Conv2dProblem, chosen: Sequence[Config], neighbours: int = NEIGHBOURS,
                 cover: int = COVER, ranked: Sequence[str] | None = None) -> list[Config]:  # fmt: skip
        """Configs to measure beside `chosen`: `neighbours` not among them from the nearest tuned shapes
        (`rank_neighbours`; `ranked`: its answer computed beforehand, at least `neighbours` +
        len(chosen) long), then `cover` more that best complete the lot over the nearest tuned shapes."""
        keys = [c.key() for c in chosen]
        if ranked is None:
            ranked = self.rank_neighbours(problem, neighbours + len(keys)) if neighbours > 0 else []
        lent = [key for key in ranked if key not in keys][:neighbours]
        probe = ds.DatasetProblem(problem.key(), "", (), 0, 0, ())
        lent += self.cover(probe, keys + lent, cover) if cover > 0 else []
        return [Config.parse(key) for key in lent]


class TunedShapes:
    """The tuned shapes of a dataset as arrays: their points (`evaluation.point`), and per shape the ids of its
    stored configs, their ratios t_best / t and the ratio of a config it did not store (`UNSTORED`). What the
    cover and the cost model (`kptune.predict.costmodel`) read a problem's neighbourhood from. The shapes
    are kept in key order, so the same problems in another order (a retrain's cut lists its perf db's
    before its base's) give the same neighbourhoods, ties included, and the same cost model fit."""

    def __init__(self, lent: Sequence[ds.DatasetProblem]) -> None:
        from kptune.predict.evaluation import point

        self.shapes = sorted((p for p in lent if p.times), key=lambda p: p.key)
        self.points = np.array([point(problem_from_key(p.key)) for p in self.shapes])  # type: ignore[arg-type]
        ids: dict[str, int] = {}
        self.rows = []  # per tuned shape: its configs' ids, their ratios, the ratio of one not stored
        for p in self.shapes:
            best = p.times[0][1]
            self.rows.append((np.array([ids.setdefault(c, len(ids)) for c, _ in p.times]),
                              np.array([best / t for _, t in p.times]), UNSTORED * best / p.times[-1][1]))  # fmt: skip
        self.keys = list(ids)
        self.index = ids  # config key -> id
        self.configs = [Config.parse(key) for key in self.keys]  # parsed once: pools and covers ask for hundreds
        self.values = [c.values() for c in self.configs]
        self.unstored = np.array([unstored for _, _, unstored in self.rows])  # per tuned shape
        self.stored_by = _stored_by(self.rows, len(self.keys))

    def nearest(self, problem: Conv2dProblem, count: int, leave_out: int | None = None) -> np.ndarray:
        """Indices of the `count` tuned shapes nearest `problem` (`evaluation.distances`), nearest first;
        `leave_out`: a shape's index not to count (a shape's own neighbourhood when fitting on it)."""
        from kptune.predict.evaluation import distances, point

        dist = distances(self.points, point(problem))
        if leave_out is not None:
            dist[leave_out] = np.inf
        return np.argsort(dist, kind="stable")[:count]

    @functools.cached_property
    def far_distance(self) -> float:
        """FAR_PERCENTILE of the distances from each tuned shape to its nearest other: how far the tuned shapes
        themselves lie apart (inf with fewer than two)."""
        from kptune.predict.evaluation import distances

        if len(self.points) < 2:
            return math.inf
        nearest = [np.partition(distances(self.points, row), 1)[1] for row in self.points]
        return float(np.percentile(nearest, FAR_PERCENTILE))

    def far(self, problem: Conv2dProblem) -> bool:
        """Whether `problem`'s nearest tuned shape lies farther than `far_distance`: a shape unlike any tuned,
        where the cost model's first 20 miss the fastest more often (`benchmarks/RESULTS.md`)."""
        from kptune.predict.evaluation import distances, point

        return bool(len(self.points)) and float(distances(self.points, point(problem)).min()) > self.far_distance

    def log_ratios(self, near: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(config ids stored by any of `near`, sorted; their log ratio on each of `near`, one per column,
        unstored ones at the shape's unstored ratio; whether each stored it)."""
        rows = [self.rows[i] for i in near]
        cols, at = np.unique(np.concatenate([ids for ids, _, _ in rows]), return_inverse=True)
        shape = np.repeat(np.arange(len(rows)), [len(ids) for ids, _, _ in rows])  # each stored time's column
        ratio = np.tile(np.array([unstored for _, _, unstored in rows]), (len(cols), 1))
        ratio[at, shape] = np.concatenate([ratios for _, ratios, _ in rows])
        stored = np.zeros((len(cols), len(rows)), dtype=bool)
        stored[at, shape] = True
        return cols, np.log(ratio), stored

    def log_ratios_of(self, near: np.ndarray, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`log_ratios` of the configs `keys` alone, one row each (a config no tuned shape stored: at each
        shape's unstored ratio), on the distinct shapes `near`: what a few candidates did on the neighbours,
        read from `stored_by` without the whole union."""
        column = np.full(len(self.shapes), -1)  # each tuned shape's column: its place in `near`, -1 if absent
        column[near] = np.arange(len(near))
        row, shape, ratios = self.stored_by.of([self.index.get(key, -1) for key in keys])
        col = column[shape]
        hit = col >= 0  # each stored time on one of `near`
        row, col = row[hit], col[hit]
        ratio = np.tile(self.unstored[near], (len(keys), 1))
        stored = np.zeros((len(keys), len(near)), dtype=bool)
        ratio[row, col] = ratios[hit]
        stored[row, col] = True
        return np.log(ratio), stored


@dataclasses.dataclass(frozen=True)
class StoredBy:
    """The tuned shapes' stored times by config, an inverted `TunedShapes.rows`: config id c's are
    `shape[start[c]:start[c + 1]]` (shape indices, ascending) and their `ratio`s."""

    start: np.ndarray  # per config id, and one past the last
    shape: np.ndarray  # int32
    ratio: np.ndarray  # float64

    def of(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the place in `ids` of each, the shape, the ratio) of the stored times of the config ids `ids`
        (-1: a config no shape stored), in the order of `ids`."""
        wanted = np.asarray(ids, dtype=np.intp)
        known = wanted >= 0
        first = np.where(known, self.start[wanted], 0)
        count = np.where(known, self.start[wanted + 1] - first, 0)
        ends = np.cumsum(count)
        at = np.arange(ends[-1] if len(ends) else 0) + np.repeat(first - (ends - count), count)
        return np.repeat(np.arange(len(wanted)), count), self.shape[at], self.ratio[at]


def _stored_by(rows: Sequence[tuple[np.ndarray, np.ndarray, float]], configs: int) -> StoredBy:
    """`rows` (`TunedShapes.rows`, over `configs` config ids) by config: see `StoredBy`."""
    if not rows:
        return StoredBy(np.zeros(configs + 1, dtype=np.intp), np.zeros(0, dtype=np.int32), np.zeros(0))
    ids = np.concatenate([ids for ids, _, _ in rows])
    by_config = np.argsort(ids, kind="stable")  # stable: each config's shapes stay in shape order
    shape = np.repeat(np.arange(len(rows), dtype=np.int32), [len(ids) for ids, _, _ in rows])
    start = np.concatenate([[0], np.cumsum(np.bincount(ids, minlength=configs))]).astype(np.intp)
    return StoredBy(start, shape[by_config], np.concatenate([ratios for _, ratios, _ in rows])[by_config])


def cover_ranker(lent: Sequence[ds.DatasetProblem] | TunedShapes, space: SearchSpace, device: DeviceInfo,
                 shapes: int = COVER_SHAPES) -> Coverer:  # fmt: skip
    """See the module docstring: the greedy cover of the `shapes` tuned shapes nearest each problem."""
    tuned = lent if isinstance(lent, TunedShapes) else TunedShapes(lent)
    keys, values = tuned.keys, tuned.values

    def cover(problem: ds.DatasetProblem, chosen: Sequence[str], count: int) -> list[str]:
        if count < 1 or not tuned.shapes:
            return []
        conv = problem_from_key(problem.key)
        near = tuned.nearest(conv, shapes)  # type: ignore[arg-type]
        cols, ratio, _ = tuned.log_ratios(near)
        unstored = np.log([tuned.rows[i][2] for i in near])
        have = np.full(len(near), math.log(1e-6))  # the best log ratio on each shape of the configs chosen so far
        where = {keys[c]: n for n, c in enumerate(cols)}
        for key in chosen:
            have = np.maximum(have, ratio[where[key]] if key in where else unstored)
        valid = completer(space, conv, device).completable
        out: list[str] = []
        shut = np.array([keys[c] in chosen for c in cols])  # chosen already, or not valid here
        while len(out) < count and not shut.all():
            gain = np.maximum(ratio, have).sum(axis=1)
            gain[shut] = -math.inf
            for n in np.argsort(-gain, kind="stable"):  # the best gain that is valid here
                if shut[n]:
                    break
                shut[n] = True
                if valid(values[cols[n]]):
                    out.append(keys[cols[n]])
                    have = np.maximum(have, ratio[n])
                    break
        return out

    return cover


def lender_for(device: DeviceInfo, family: KernelFamily, places: tuple[Path, ...] | None = None) -> Lender | None:
    """The tuned shapes of the dataset made for this device and kernel source (for a device with none of
    its own, one made for a device it may borrow from: `DeviceInfo.may_borrow`) among `places`, by default
    `lent_dataset`; None where there is no such dataset. Loaded once per process and file version."""
    path = dataset_for(device, family, places) if places is not None else lent_dataset(device, family)
    if path is None:
        return None
    return _lender(str(path), path.stat().st_mtime_ns, family.name, device)


def neighbour_configs(problem: Conv2dProblem, device: DeviceInfo, family: KernelFamily, count: int = NEIGHBOURS,
                      places: tuple[Path, ...] | None = None) -> list[Config]:  # fmt: skip
    """Up to `count` configs, valid for `problem` on `device`: the fastest of the nearest tuned shape
    (`lender_for`); none where no dataset is shipped for the device."""
    lender = lender_for(device, family, places) if count > 0 else None
    return lender.complete(problem, [], count, cover=0) if lender is not None else []


@functools.cache
def default_dataset_places() -> tuple[Path, ...]:
    return (Path(__file__).resolve().parent / "data",)


def lent_dataset(device: DeviceInfo, family: KernelFamily, registry: Registry | None = None,
                 shipped: tuple[Path, ...] | None = None) -> Path | None:  # fmt: skip
    """The dataset autotune lends from: the one kept by the model registry's current version for this
    device and kernel source (`kptune retrain` keeps the dataset it trained on, and the cost model fit
    on it), as `autotune.model_for` takes that version's checkpoint; else the one among `shipped`
    (default: `default_dataset_places`)."""
    registry = registry or Registry()
    current = registry.current(device.key, family.name)
    kept = registry.lent_dataset(current[0]) if current is not None else None
    if kept is not None and kept.is_file():
        found = dataset_for(device, family, (kept,))
        if found is not None:
            return found
    return dataset_for(device, family, shipped if shipped is not None else default_dataset_places())


def dataset_for(device: DeviceInfo, family: KernelFamily, places: tuple[Path, ...]) -> Path | None:
    """The newest dataset among `places` made for this device key and kernel source, else one made for a
    device it may borrow from (`DeviceInfo.may_borrow`)."""
    files = [f for place in places for f in _datasets_in(place)]
    metas = ((f, _meta(str(f), f.stat().st_mtime_ns)) for f in files)
    ours = (
        (f, m) for f, m in metas if m and (m.get("family"), m.get("source_hash")) == (family.name, family.source_hash)
    )
    return newest_made_for(device, ours)


def _datasets_in(place: Path) -> list[Path]:
    """The dataset files in a folder (sorted by name), or the file `place` itself."""
    try:
        info = place.stat()
    except OSError:
        return [place]  # what is wrong with it is said where it is read
    if not stat.S_ISDIR(info.st_mode):
        return [place]
    if time.time_ns() - info.st_mtime_ns < RACY_NS:  # changed just now: a change in the same clock tick may follow
        return _glob_datasets(place)
    return _listing(str(place), info.st_mtime_ns)


#: a folder changed this recently (ns) is listed afresh: its modification time has the clock's coarse tick, so a
#: second change within the tick would leave it as it was (git's "racily clean" files, the same answer)
RACY_NS = 2_000_000_000


@functools.lru_cache(maxsize=16)
def _listing(folder: str, stamp: int) -> list[Path]:
    """`_glob_datasets`, once per version of the folder (a file added, removed or renamed changes its
    modification time): every prediction asks (`lent_dataset`)."""
    return _glob_datasets(Path(folder))


def _glob_datasets(folder: Path) -> list[Path]:
    return sorted(folder.glob("dataset-*.db.gz"))


@functools.lru_cache(maxsize=8)
def _meta(path: str, stamp: int) -> dict[str, Any] | None:
    try:
        return ds.read_meta(Path(path))
    except ds.DatasetError:
        return None


@functools.lru_cache(maxsize=8)
def _lender(path: str, stamp: int, family_name: str, device: DeviceInfo) -> Lender | None:
    """The dataset's lent splits as a Lender for `device` (loaded once per file version), with the
    cost model and the reranker fit on them where they lie beside the dataset (`cost_model_path`,
    `reranker_path`)."""
    from kptune.kernel import get_family
    from kptune.predict.evaluation import nearest_shape

    try:
        data = ds.load(Path(path))
    except ds.DatasetError:
        return None
    lent = lent_problems(data)
    if not lent:
        return None
    space = get_family(family_name).space
    tuned = TunedShapes(lent)
    lent_hash = ds.content_hash(lent)
    cost, note = _cost_model(Path(path), tuned, space, device, lent_hash)
    reranker, rerank_note = _reranker(Path(path), lent_hash)
    return Lender(nearest_shape(lent, space, device), cover_ranker(tuned, space, device), cost, note, reranker,
                  rerank_note, tuned)  # fmt: skip


def lent_problems(data: ds.Dataset) -> list[ds.DatasetProblem]:
    """The problems a dataset lends (train and validation, with times): what the lender reads and the
    cost model beside it is fit on (its hash must match them)."""
    return [p for p in data.problems if p.split in SPLITS_LENT and p.times]


def cost_model_path(dataset: Path) -> Path:
    """Where the cost model fit on a dataset lies: dataset-X.db.gz -> costmodel-X.safetensors beside it."""
    return _beside(dataset, "costmodel")


def reranker_path(dataset: Path) -> Path:
    """Where the reranker fit on a dataset lies: dataset-X.db.gz -> reranker-X.safetensors beside it."""
    return _beside(dataset, "reranker")


def _beside(dataset: Path, kind: str) -> Path:
    stem = dataset.name.removesuffix(".db.gz").removeprefix("dataset-")
    return dataset.with_name(f"{kind}-{stem}.safetensors")


def _reranker(dataset: Path, dataset_hash: str) -> tuple[Reranker | None, str]:
    """The reranker beside the dataset, if there is one and it was fit on this dataset's lent shapes, and a
    note saying which, or why none."""
    from kptune.predict.costmodel import CostModelError
    from kptune.predict.rerank import Reranker

    path = reranker_path(dataset)
    if not path.is_file():
        return None, f"no reranker beside {dataset.name}"
    try:
        return Reranker.load(path, dataset_hash), f"reranker {path.name}"
    except CostModelError as exc:
        return None, f"reranker not used: {exc}"


def _cost_model(dataset: Path, tuned: TunedShapes, space: SearchSpace, device: DeviceInfo,
                dataset_hash: str) -> tuple[CostModel | None, str]:  # fmt: skip
    """The cost model beside the dataset, if there is one and it was fit on this dataset's lent shapes,
    and a note saying which, or why none (the nearest shape lends instead)."""
    from kptune.predict.costmodel import CostModel, CostModelError

    path = cost_model_path(dataset)
    if not path.is_file():
        return None, f"no cost model beside {dataset.name}"
    try:
        return CostModel.load(path, tuned, space, device, dataset_hash), f"cost model {path.name}"
    except (CostModelError, ImportError) as exc:
        return None, f"cost model not used: {exc}"
