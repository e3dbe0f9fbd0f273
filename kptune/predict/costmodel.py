"""A cost model of conv2d configs: which of the configs near tuned shapes ran fast will run fast here.

The pool of a problem: the configs stored for its NEAR nearest tuned shapes (log2 size features,
`evaluation.features`) that are valid for it, at most POOL, by their mean log ratio over those
shapes. A gradient-boosted regressor (scikit-learn) scores each pool config from the problem's
sizes, the config's parameters, its launch on the device (CTAs, wave efficiency over the compute
units, fill of the last M, N and K tiles) and its record on the neighbours (mean, max and nearest
log ratio, how often stored), as TVM's and Ansor's cost models rank candidates. It is fit on the
tuned shapes themselves, each with the pool of its neighbours but itself, to predict log(t_best /
t); a config outside a shape's stored fastest counts as `neighbours.UNSTORED` of the slowest stored
one's ratio, as in the cover. A baseline of `kptune eval` (fit at evaluation time, not shipped)
and the subject of `benchmarks/rerank_offline.py` and `candidates_offline.py`: alone it is level
with the cover in CV; beside the seq2seq's picks it helps, but autotune does not use it yet (it
would have to be shipped without pickle; `benchmarks/RESULTS.md`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kptune.dataset import DatasetProblem
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.families.conv2d import geometry
from kptune.neighbours import UNSTORED
from kptune.predict.evaluation import distances, features
from kptune.problem import Conv2dProblem, problem_from_key
from kptune.space import Config, SearchSpace, ceil_div, completer

#: tuned shapes whose stored configs make a problem's pool
NEAR = 100
#: pool configs per problem, at most
POOL = 400


class CostModel:
    """A gradient-boosted regressor of log(t_best / t) for a problem's pool configs, fit on `lent` (see
    the module docstring); `rank` is a Ranker (`evaluation.Ranker`)."""

    def __init__(self, lent: Sequence[DatasetProblem], space: SearchSpace, device: DeviceInfo, near: int = NEAR,
                 pool: int = POOL, seed: int = 0) -> None:  # fmt: skip
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.space, self.device, self.near, self.pool = space, device, near, pool
        self.feats = np.array([features(problem_from_key(p.key)) for p in lent])  # type: ignore[arg-type]
        ids: dict[str, int] = {}
        self.rows: list[tuple[dict[int, float], float]] = []  # per shape: {config id: log ratio}, one unstored
        for p in lent:
            best = p.times[0][1]
            stored = {ids.setdefault(c, len(ids)): math.log(best / t) for c, t in p.times}
            self.rows.append((stored, math.log(UNSTORED * best / p.times[-1][1])))
        self.keys = list(ids)
        self.configs = [Config.parse(key) for key in self.keys]  # parsed once: pools ask for hundreds each
        xs, ys = [], []
        for i, p in enumerate(lent):
            keys, x = self.pool_of(p.key, leave_out=i)
            stored, unstored = self.rows[i]
            ys.append([stored.get(ids[k], unstored) for k in keys])
            xs.append(x)
        if not any(len(x) for x in xs):
            raise KptuneError("the cost model has nothing to learn from: no tuned shape lends a valid config")
        x_all = np.vstack([x for x in xs if len(x)])
        self.model = HistGradientBoostingRegressor(max_iter=400, learning_rate=0.05, max_leaf_nodes=63,
                                                   random_state=seed).fit(x_all, np.concatenate(ys))  # fmt: skip

    def pool_of(self, key: str, leave_out: int | None = None) -> tuple[list[str], np.ndarray]:
        """The pool's config keys (by their mean log ratio over the nearest shapes) and their feature rows;
        `leave_out`: an index of `lent` not to count among the nearest (its own pool when fitting)."""
        q = problem_from_key(key)
        if not isinstance(q, Conv2dProblem):
            raise KptuneError(f"the cost model ranks conv2d configs, not those of {key}")
        dist = distances(self.feats, features(q))
        if leave_out is not None:
            dist[leave_out] = np.inf
        near = np.argsort(dist, kind="stable")[: self.near]
        cols = sorted(set().union(*(self.rows[i][0].keys() for i in near)))
        ratio = np.array([[self.rows[i][0].get(c, self.rows[i][1]) for i in near] for c in cols])
        stored = np.array([[c in self.rows[i][0] for i in near] for c in cols])
        mean = ratio.mean(axis=1)
        valid = completer(self.space, q, self.device).completable
        shape = _problem_features(q)
        keys, rows = [], []
        for j in np.argsort(-mean, kind="stable"):
            config = self.configs[cols[j]]
            if not valid(config.values()):
                continue
            keys.append(self.keys[cols[j]])
            record = [mean[j], ratio[j].max(), stored[j].mean(), ratio[j, 0], ratio[j, :10].mean(),
                      stored[j, :10].mean()]  # fmt: skip
            rows.append([*shape, *_config_features(q, config, self.device), *record, len(keys)])
            if len(keys) >= self.pool:
                break
        return keys, np.array(rows)

    def rank(self, problem: DatasetProblem, k: int) -> list[str]:
        keys, x = self.pool_of(problem.key)
        if not keys:
            return []
        return [keys[j] for j in np.argsort(-self.model.predict(x), kind="stable")[:k]]


def _problem_features(q: Conv2dProblem) -> list[float]:
    m, kk = q.derived()["GEMM_M"], q.c * q.r * q.s
    sizes = (q.n, q.c, q.h, q.w, q.k, q.out_h, q.out_w, m, kk, m * q.k * kk)
    return [*(math.log2(x) for x in sizes), q.r, q.s, q.stride_h]


def _config_features(q: Conv2dProblem, c: Config, device: DeviceInfo) -> list[float]:
    """The config's values and its launch on the device: CTAs, waves over the SMs, tile fill."""
    (gx, gy, gz), (threads, _, _) = geometry(q, c)
    ctas, sms = gx * gy * gz, device.compute_units
    waves = math.ceil(ctas / sms)
    m, k_split = q.derived()["GEMM_M"], q.c * q.r * q.s / c["KSPLIT"]
    fill_m = m / (ceil_div(m, c["BM"]) * c["BM"])
    fill_n = q.k / (ceil_div(q.k, c["BN"]) * c["BN"])
    fill_k = k_split / (math.ceil(k_split / c["BK"]) * c["BK"])
    return [*c.values(), math.log2(ctas), ctas / (waves * sms), math.log2(waves), threads, fill_m, fill_n, fill_k,
            math.log2(max(k_split, 1))]  # fmt: skip
