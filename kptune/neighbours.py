"""Candidates from the tuned shapes that autotune measures beside the model's.

MIOpen ships a system perf db of tuned problems beside its heuristics; kptune ships, per device, the
dataset its model learned from (`kptune/data/dataset-*.db.gz`). Two kinds of candidates come from it,
each re-checked against this device's limits, so every one is valid here:

- **nearest**: the fastest configs of the nearest of its train and validation problems (log2 size
  features, same dtype first: `evaluation.nearest_shape`);
- **cover**: configs that best complete the candidates chosen so far over the `COVER_SHAPES`
  nearest tuned shapes (`cover_ranker`): greedily, the config that most raises the geomean over
  those shapes of t_best / (fastest chosen config's time), as a portfolio of algorithms is
  chosen. A config outside a shape's stored fastest 32 counts there as half the 32nd's ratio.

The rankers miss in different places: scored offline, the model's top 5 plus the nearest shape's
top 2 beat the model's top 7, and a cover of the rest beats more of either (`benchmarks/RESULTS.md`,
`benchmarks/candidates_offline.py`). Test problems are never lent: the test split stays unseen, as
in training.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kptune import dataset as ds
from kptune.device import DeviceInfo, newest_made_for
from kptune.kernel import KernelFamily
from kptune.problem import Conv2dProblem, problem_from_key
from kptune.space import Config, SearchSpace, completer

if TYPE_CHECKING:
    from kptune.predict.evaluation import Ranker

#: configs lent by the nearest tuned shapes, by default
NEIGHBOURS = 2
#: configs added to cover the nearest tuned shapes, by default
COVER = 8
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

    def complete(self, problem: Conv2dProblem, chosen: Sequence[Config], neighbours: int = NEIGHBOURS,
                 cover: int = COVER) -> list[Config]:  # fmt: skip
        """Configs to measure beside `chosen`: the nearest shape's fastest `neighbours` not among them,
        then `cover` more that best complete the lot over the nearest tuned shapes."""
        probe = ds.DatasetProblem(problem.key(), "", (), 0, 0, ())
        keys = [c.key() for c in chosen]
        lent = [key for key in (self.nearest(probe, neighbours + len(keys)) if neighbours > 0 else [])
                if key not in keys][:neighbours]  # fmt: skip
        lent += self.cover(probe, keys + lent, cover) if cover > 0 else []
        return [Config.parse(key) for key in lent]


def cover_ranker(lent: Sequence[ds.DatasetProblem], space: SearchSpace, device: DeviceInfo,
                 shapes: int = COVER_SHAPES) -> Coverer:  # fmt: skip
    """See the module docstring: the greedy cover of the `shapes` tuned shapes nearest each problem."""
    from kptune.predict.evaluation import distances, features

    tuned = [p for p in lent if p.times]
    feats = np.array([features(problem_from_key(p.key)) for p in tuned])  # type: ignore[arg-type]
    ids: dict[str, int] = {}
    rows = []  # per tuned shape: its configs' ids, their ratios t_best / t, the ratio of one not stored
    for p in tuned:
        best = p.times[0][1]
        rows.append((np.array([ids.setdefault(c, len(ids)) for c, _ in p.times]),
                     np.array([best / t for _, t in p.times]), UNSTORED * best / p.times[-1][1]))  # fmt: skip
    keys = list(ids)
    values = [Config.parse(key).values() for key in keys]

    def cover(problem: ds.DatasetProblem, chosen: Sequence[str], count: int) -> list[str]:
        if count < 1 or not tuned:
            return []
        conv = problem_from_key(problem.key)
        near = np.argsort(distances(feats, features(conv)), kind="stable")[:shapes]  # type: ignore[arg-type]
        cols = np.unique(np.concatenate([rows[i][0] for i in near]))
        ratio = np.empty((len(cols), len(near)))
        unstored = np.array([rows[i][2] for i in near])
        for j, i in enumerate(near):
            ratio[:, j] = unstored[j]
            ratio[np.searchsorted(cols, rows[i][0]), j] = rows[i][1]
        ratio = np.log(ratio)
        have = np.full(len(near), math.log(1e-6))  # the best log ratio on each shape of the configs chosen so far
        where = {keys[c]: n for n, c in enumerate(cols)}
        for key in chosen:
            have = np.maximum(have, ratio[where[key]] if key in where else np.log(unstored))
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
    """The tuned shapes of the dataset made for this device and kernel source (for a CPU device with
    none of its own, one made for another CPU of the same backend); None where no such dataset is
    shipped. Loaded once per process and file version."""
    path = dataset_for(device, family, places or default_dataset_places())
    if path is None:
        return None
    return _lender(str(path), path.stat().st_mtime_ns, family.name, device)


def neighbour_configs(problem: Conv2dProblem, device: DeviceInfo, family: KernelFamily, count: int = NEIGHBOURS,
                      places: tuple[Path, ...] | None = None) -> list[Config]:  # fmt: skip
    """Up to `count` configs, valid for `problem` on `device`: the fastest of the nearest tuned shape
    (`lender_for`); none where no dataset is shipped for the device."""
    lender = lender_for(device, family, places) if count > 0 else None
    return lender.complete(problem, [], count, cover=0) if lender is not None else []


def default_dataset_places() -> tuple[Path, ...]:
    return (Path(__file__).resolve().parent / "data",)


def dataset_for(device: DeviceInfo, family: KernelFamily, places: tuple[Path, ...]) -> Path | None:
    """The newest dataset among `places` made for this device key and kernel source, else (CPU devices)
    one made for another CPU device of the same backend."""
    files = [f for place in places for f in (sorted(place.glob("dataset-*.db.gz")) if place.is_dir() else [place])]
    metas = ((f, _meta(str(f), f.stat().st_mtime_ns)) for f in files)
    ours = (
        (f, m) for f, m in metas if m and (m.get("family"), m.get("source_hash")) == (family.name, family.source_hash)
    )
    return newest_made_for(device, ours)


@functools.lru_cache(maxsize=8)
def _meta(path: str, stamp: int) -> dict[str, Any] | None:
    try:
        return ds.read_meta(Path(path))
    except ds.DatasetError:
        return None


@functools.lru_cache(maxsize=8)
def _lender(path: str, stamp: int, family_name: str, device: DeviceInfo) -> Lender | None:
    """The dataset's lent splits as a Lender for `device` (loaded once per file version)."""
    from kptune.kernel import get_family
    from kptune.predict.evaluation import nearest_shape

    try:
        data = ds.load(Path(path))
    except ds.DatasetError:
        return None
    lent = [p for p in data.problems if p.split in SPLITS_LENT and p.times]
    if not lent:
        return None
    space = get_family(family_name).space
    return Lender(nearest_shape(lent, space, device), cover_ranker(lent, space, device))
