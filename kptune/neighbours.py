"""The fastest configs of the nearest tuned shapes: candidates that autotune measures beside the model's.

MIOpen ships a system perf db of tuned problems beside its heuristics; kptune ships, per device, the
dataset its model learned from (`kptune/data/dataset-*.db.gz`). The nearest of its train and
validation problems (log2 size features, same dtype first: `evaluation.nearest_shape`) lends its
fastest configs, re-checked against this device's limits, so every one is valid here. The two
rankers miss in different places: scored offline, the model's top 5 plus the nearest shape's top 2
beat the model's top 7 (`benchmarks/RESULTS.md`). Test problems are never lent: the test split
stays unseen, as in training.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kptune import dataset as ds
from kptune.device import DeviceInfo, newest_made_for
from kptune.kernel import KernelFamily
from kptune.problem import Conv2dProblem
from kptune.space import Config

if TYPE_CHECKING:
    from kptune.predict.evaluation import Ranker

#: configs lent by the nearest tuned shapes, by default
NEIGHBOURS = 2
SPLITS_LENT = ("train", "validation")


def neighbour_configs(problem: Conv2dProblem, device: DeviceInfo, family: KernelFamily, count: int = NEIGHBOURS,
                      places: tuple[Path, ...] | None = None) -> list[Config]:  # fmt: skip
    """Up to `count` configs, valid for `problem` on `device`: the fastest of the nearest tuned shapes
    of the dataset made for this device and kernel source (for a CPU device with none of its own,
    one made for another CPU of the same backend); none where no such dataset is shipped."""
    if count < 1:
        return []
    path = dataset_for(device, family, places or default_dataset_places())
    if path is None:
        return []
    rank = _ranker(str(path), path.stat().st_mtime_ns, family.name, device)
    if rank is None:
        return []
    probe = ds.DatasetProblem(problem.key(), "", (), 0, 0, ())
    return [Config.parse(key) for key in rank(probe, count)]


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
def _ranker(path: str, stamp: int, family_name: str, device: DeviceInfo) -> Ranker | None:
    """`evaluation.nearest_shape` over the dataset's lent splits, for `device` (loaded once per file version)."""
    from kptune.kernel import get_family
    from kptune.predict.evaluation import nearest_shape

    try:
        data = ds.load(Path(path))
    except ds.DatasetError:
        return None
    lent = [p for p in data.problems if p.split in SPLITS_LENT and p.times]
    return nearest_shape(lent, get_family(family_name).space, device) if lent else None
