"""A cost model of conv2d configs: which of the configs near tuned shapes ran fast will run fast here.

The pool of a problem: the configs stored for its NEAR nearest tuned shapes (`evaluation.point`,
`neighbours.TunedShapes`) that are valid for it, at most POOL, by their mean log ratio over those
shapes. A gradient-boosted regressor (scikit-learn, to fit) scores each pool config from the
problem's sizes, the config's parameters, its launch on the device (CTAs, wave efficiency over the
compute units, fill of the last M, N and K tiles) and its record on the neighbours (mean, max and
nearest log ratio, how often stored), as TVM's and Ansor's cost models rank candidates. It is fit
on the tuned shapes themselves, each with the pool of its neighbours but itself, to predict
log(t_best / t); a config outside a shape's stored fastest counts as `neighbours.UNSTORED` of the
slowest stored one's ratio, as in the cover.

Shipped beside the dataset it was fit on (`costmodel-<device>.safetensors`, `kptune dataset
costmodel`): the fitted trees as plain arrays in a safetensors file, its metadata (the dataset's
content hash, NEAR, POOL) in the header, no pickle; `Trees.predict` walks them with NumPy, so
autotune needs no scikit-learn. Autotune measures its first picks beside the seq2seq's (see
`kptune.neighbours`); `kptune eval` scores it as a baseline (fit at evaluation time).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kptune import dataset as ds
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.families.conv2d import geometry
from kptune.neighbours import TunedShapes
from kptune.problem import Conv2dProblem, problem_from_key
from kptune.space import Config, SearchSpace, ceil_div, completer

#: tuned shapes whose stored configs make a problem's pool
NEAR = 100
#: pool configs per problem, at most
POOL = 400
FORMAT = "kptune-costmodel"
#: 2: shapes near by their implicit GEMM (`evaluation.point`), so a format-1 file was fit on other pools
FORMAT_VERSION = 2
_SCALARS = ("baseline", "depth")  # Trees' fields kept in the header, not as arrays
#: `Trees.predict` sets the walks on their leaf aside every SETTLE steps, while more than SPARE steps remain
SETTLE, SPARE = 3, 6


class CostModelError(KptuneError):
    """A cost model file that cannot be read, or was fit on other data."""


@dataclasses.dataclass(frozen=True)
class Trees:
    """A fitted ensemble of regression trees as flat arrays: node i of every tree in one numbering. An
    inner node sends a row right when its feature is > the threshold, else left; a leaf holds its
    value and steps to itself (its threshold +inf), so a walk of `depth` steps ends on every tree's
    leaf. Prediction: the baseline plus one leaf value per tree. The features are never missing, so
    the walk refuses NaN rather than guess where the fit would have sent it."""

    feature: np.ndarray  # int32, per node
    threshold: np.ndarray  # float64
    left: np.ndarray  # int32, global node index
    right: np.ndarray  # int32
    value: np.ndarray  # float64
    roots: np.ndarray  # int32, per tree
    baseline: float
    depth: int  # the deepest leaf's depth: the walk's step count

    @classmethod
    def from_sklearn(cls, model: Any) -> Trees:
        """From a fitted HistGradientBoostingRegressor (numeric features only)."""
        nodes = [predictors[0].nodes for predictors in model._predictors]
        offsets = np.cumsum([0] + [len(n) for n in nodes])[:-1]
        cat = np.concatenate(nodes)
        if cat["is_categorical"].any():
            raise CostModelError("categorical splits are not supported")
        shift = np.repeat(offsets, [len(n) for n in nodes])
        leaf = cat["is_leaf"].astype(bool)
        here = np.arange(len(cat))
        return cls(feature=cat["feature_idx"].astype(np.int32),
                   threshold=np.where(leaf, np.inf, cat["num_threshold"]).astype(np.float64),
                   left=np.where(leaf, here, cat["left"].astype(np.int64) + shift).astype(np.int32),
                   right=np.where(leaf, here, cat["right"].astype(np.int64) + shift).astype(np.int32),
                   value=cat["value"].astype(np.float64), roots=offsets.astype(np.int32),
                   baseline=float(np.ravel(model._baseline_prediction)[0]), depth=int(cat["depth"].max()))  # fmt: skip

    @functools.cached_property
    def _children(self) -> np.ndarray:
        """node * 2 + (go right) -> the next node: one gather a step."""
        return np.stack([self.left, self.right], axis=1).ravel().astype(np.intp)

    @functools.cached_property
    def _feature(self) -> np.ndarray:
        return self.feature.astype(np.intp)

    @functools.cached_property
    def _leaf(self) -> np.ndarray:
        return self.left == np.arange(len(self.left))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The ensemble's prediction for each row of `x`: every (row, tree) walked at once, one level a
        step; every SETTLE steps, while more than SPARE remain, the walks that reached their leaf are set
        aside, so a step costs what is still walking (most leaves lie far above the deepest) and a shallow
        ensemble (the reranker's) skips setting aside that would cost more than the steps it spares."""
        if not len(x):
            return np.zeros(0)
        if np.isnan(x).any():
            raise CostModelError("a feature row holds NaN: the cost model's features are never missing")
        n, trees = len(x), len(self.roots)
        flat = x.astype(np.float64, copy=False).ravel()  # exact: compared as float64 with the thresholds anyway
        node = np.tile(self.roots.astype(np.intp), n)  # walk i: row i // trees, tree i % trees
        base = np.repeat(np.arange(n, dtype=np.intp) * x.shape[1], trees)  # the walk's row in `flat`
        walking = np.arange(n * trees)
        leaf_value = np.empty(n * trees)
        for step in range(self.depth):
            at = self._feature[node]
            at += base
            go_right = flat[at] > self.threshold[node]
            node *= 2
            node += go_right
            node = self._children[node]
            if step == self.depth - 1:  # every walk is on its leaf
                leaf_value[walking] = self.value[node]
            elif step % SETTLE == SETTLE - 1 and self.depth - step > SPARE:
                done = self._leaf[node]
                leaf_value[walking[done]] = self.value[node[done]]
                keep = np.flatnonzero(~done)
                walking, node, base = walking[keep], node[keep], base[keep]
                if not len(walking):
                    break
        return self.baseline + leaf_value.reshape(n, trees).sum(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _SCALARS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], baseline: float, depth: int) -> Trees:
        names = {f.name for f in dataclasses.fields(cls)} - set(_SCALARS)
        if set(arrays) != names:
            raise CostModelError(f"tree arrays {sorted(arrays)}, expected {sorted(names)}")
        n = len(arrays["feature"])
        if any(len(arrays[k]) != n for k in names - {"roots"}) or not len(arrays["roots"]):
            raise CostModelError("tree arrays of unequal lengths")
        links = np.concatenate([arrays["left"], arrays["right"], arrays["roots"]])
        if n == 0 or links.min() < 0 or links.max() >= n:
            raise CostModelError("tree arrays link outside the trees")
        return cls(**{k: np.asarray(v) for k, v in arrays.items()}, baseline=baseline, depth=depth)


class CostModel:
    """Scores a problem's pool configs (see the module docstring); `rank` is a Ranker (`evaluation.Ranker`).
    `CostModel(lent, ...)` fits one (scikit-learn); `CostModel.load` reads a shipped one."""

    def __init__(self, lent: Sequence[ds.DatasetProblem] | TunedShapes, space: SearchSpace, device: DeviceInfo,
                 near: int = NEAR, pool: int = POOL, seed: int = 0, trees: Trees | None = None) -> None:  # fmt: skip
        self.tuned = lent if isinstance(lent, TunedShapes) else TunedShapes(lent)
        self.space, self.device, self.near, self.pool = space, device, near, pool
        self.trees = trees if trees is not None else self._fit(seed)

    def _fit(self, seed: int) -> Trees:
        from sklearn.ensemble import HistGradientBoostingRegressor

        xs, ys = [], []
        for i, p in enumerate(self.tuned.shapes):
            ids, x = self._pool(p.key, leave_out=i)
            stored_ids, ratios, unstored = self.tuned.rows[i]
            ratio_of = dict(zip(stored_ids.tolist(), ratios.tolist(), strict=True))
            ys.append(np.log([ratio_of.get(c, unstored) for c in ids]))
            xs.append(x)
        if not any(len(x) for x in xs):
            raise KptuneError("the cost model has nothing to learn from: no tuned shape lends a valid config")
        model = HistGradientBoostingRegressor(max_iter=400, learning_rate=0.05, max_leaf_nodes=63, random_state=seed)
        model.fit(np.vstack([x for x in xs if len(x)]), np.concatenate(ys))
        return Trees.from_sklearn(model)

    def _pool(self, key: str, leave_out: int | None = None) -> tuple[list[int], np.ndarray]:
        """The pool's config ids (by their mean log ratio over the nearest shapes) and their feature rows."""
        q = problem_from_key(key)
        if not isinstance(q, Conv2dProblem):
            raise KptuneError(f"the cost model ranks conv2d configs, not those of {key}")
        if not self.tuned.shapes:
            return [], np.zeros((0, 0))
        near = self.tuned.nearest(q, self.near, leave_out)
        cols, ratio, stored = self.tuned.log_ratios(near)
        record = neighbour_record(ratio, stored)
        mean = record[:, 0]
        valid = completer(self.space, q, self.device).completable
        shape = problem_features(q)
        ids, rows = [], []
        for j in np.argsort(-mean, kind="stable"):
            if not valid(self.tuned.values[cols[j]]):
                continue
            ids.append(int(cols[j]))
            rows.append([*shape, *config_features(q, self.tuned.configs[cols[j]], self.device), *record[j], len(ids)])
            if len(ids) >= self.pool:
                break
        return ids, np.array(rows)

    def pool_of(self, key: str) -> tuple[list[str], np.ndarray]:
        """The pool's config keys and their feature rows."""
        ids, x = self._pool(key)
        return [self.tuned.keys[i] for i in ids], x

    def rank(self, problem: ds.DatasetProblem, k: int) -> list[str]:
        keys, x = self.pool_of(problem.key)
        if not keys:
            return []
        return [keys[j] for j in np.argsort(-self.trees.predict(x), kind="stable")[:k]]

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """The trees as a safetensors file, `meta` (and NEAR, POOL) in its header."""
        header = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION, "near": self.near, "pool": self.pool}
        save_trees(path, self.trees, header)

    @classmethod
    def load(cls, path: Path, lent: Sequence[ds.DatasetProblem] | TunedShapes, space: SearchSpace,
             device: DeviceInfo, dataset_hash: str | None = None) -> CostModel:  # fmt: skip
        """A saved cost model over the tuned shapes `lent`; CostModelError if the file is not one, or
        (with `dataset_hash`) was fit on other data."""
        meta = read_meta(path, dataset_hash=dataset_hash)
        trees = load_trees(path, meta)
        return cls(lent, space, device, int(meta["near"]), int(meta["pool"]), trees=trees)


def read_meta(path: Path, fmt: str = FORMAT, version: int = FORMAT_VERSION,
              scalars: Sequence[str] = ("near", "pool", "baseline", "depth"), what: str = "cost model",
              dataset_hash: str | None = None,
              refit: str = "kptune dataset costmodel DATASET") -> dict[str, Any]:  # fmt: skip
    """A tree file's header (a cost model's, or with `fmt`, `version`, the numbers it must hold, `what` it is and
    the command that `refit`s it, another file of `Trees`: `rerank.Reranker`'s); CostModelError if it is not
    one, or (with `dataset_hash`) was fit on other data."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("kptune", "null"))
    except (OSError, SafetensorError, ValueError) as exc:
        raise CostModelError(f"{path}: not a readable {what} ({str(exc)[:120]})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise CostModelError(f"{path}: not a kptune {what}")
    if meta.get("format_version") != version:
        raise CostModelError(f"{path}: {what} format {meta.get('format_version')}, this kptune reads {version}; fit "
                             f"it again: {refit}")  # fmt: skip
    for key in scalars:
        if not isinstance(meta.get(key), int | float):
            raise CostModelError(f"{path}: {what} header lacks {key}")
    if dataset_hash is not None and meta.get("dataset_hash") != dataset_hash:
        raise CostModelError(f"{path}: fit on dataset {meta.get('dataset_hash')}, not {dataset_hash}")
    return meta


def save_trees(path: Path, trees: Trees, header: dict[str, Any]) -> None:
    """`trees` as a safetensors file, `header` (and their baseline and depth) in its header."""
    from safetensors.numpy import save_file

    header = {**header, "baseline": trees.baseline, "depth": trees.depth}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(trees.arrays(), str(path), metadata={"kptune": json.dumps(header)})


def load_trees(path: Path, meta: dict[str, Any], what: str = "cost model") -> Trees:
    """The `Trees` saved in a tree file (`what` it is) whose header `meta` (`read_meta`) holds their baseline and
    depth."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise CostModelError(f"{path}: not a readable {what} ({str(exc)[:120]})") from None
    return Trees.from_arrays(arrays, float(meta["baseline"]), int(meta["depth"]))


def fit_for_dataset(data: ds.Dataset, out: Path, seed: int = 0) -> CostModel:
    """Fit a cost model on a dataset's lent splits (train and validation) and save it to `out`."""
    from kptune.kernel import get_family
    from kptune.neighbours import lent_problems

    family = get_family(data.meta["family"])
    device = DeviceInfo(**data.meta["device_limits"])
    lent = lent_problems(data)
    model = CostModel(lent, family.space, device, seed=seed)
    model.save(out, {"device": data.meta["device"], "family": family.name, "source_hash": family.source_hash,
                     "dataset_hash": ds.content_hash(lent), "seed": seed})  # fmt: skip
    return model


def neighbour_record(ratio: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """What each config (a row of `TunedShapes.log_ratios`: its log ratio and whether stored on each of the
    nearest shapes, nearest first) did on the neighbours: its mean, max and nearest log ratio, its mean
    over the 10 nearest, and how often stored, over all and over the 10 nearest."""
    return np.column_stack([ratio.mean(axis=1), ratio.max(axis=1), stored.mean(axis=1), ratio[:, 0],
                            ratio[:, :10].mean(axis=1), stored[:, :10].mean(axis=1)])  # fmt: skip


def problem_features(q: Conv2dProblem) -> list[float]:
    m, kk = q.derived()["GEMM_M"], q.c * q.r * q.s
    sizes = (q.n, q.c, q.h, q.w, q.k, q.out_h, q.out_w, m, kk, m * q.k * kk)
    return [*(math.log2(x) for x in sizes), q.r, q.s, q.stride_h]


def config_features(q: Conv2dProblem, c: Config, device: DeviceInfo) -> list[float]:
    """The config's values and its launch on the device: CTAs, waves over the SMs, tile fill."""
    (gx, gy, gz), (threads, _, _) = geometry(q, c)
    ctas, sms = gx * gy * gz, device.compute_units
    waves = math.ceil(ctas / sms)
    v = c.as_dict()
    m, k_split = q.derived()["GEMM_M"], q.c * q.r * q.s / v["KSPLIT"]
    fill_m = m / (ceil_div(m, v["BM"]) * v["BM"])
    fill_n = q.k / (ceil_div(q.k, v["BN"]) * v["BN"])
    fill_k = k_split / (math.ceil(k_split / v["BK"]) * v["BK"])
    return [*v.values(), math.log2(ctas), ctas / (waves * sms), math.log2(waves), threads, fill_m, fill_n, fill_k,
            math.log2(max(k_split, 1))]  # fmt: skip
