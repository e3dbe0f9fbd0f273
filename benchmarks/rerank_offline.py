"""Would a learned cost model pick autotune's candidates better than the cover? (tried, not adopted)

    PYTHONPATH=. python benchmarks/rerank_offline.py --split test --out results/
    PYTHONPATH=. python benchmarks/rerank_offline.py --split validation --out results/
    PYTHONPATH=. python benchmarks/rerank_offline.py --cv 4 --out results/

The pool of a problem: the configs stored for its `--near` nearest lendable tuned shapes that are
valid for it (at most `--pool`, by their mean log ratio over those shapes). A gradient-boosted
regressor (scikit-learn) scores each pool config for the problem from the problem's sizes, the
config's parameters, its launch geometry on this device (CTAs, wave efficiency over the SMs, how
full the last M, N and K tiles are) and its record on the neighbours (mean, max and nearest log
ratio, how often stored), as TVM's and Ansor's cost models rank candidates; trained on the lendable
problems, each with the pools of its neighbours but itself, to predict log(t_best / t) (a config
outside a problem's stored fastest counts as `neighbours.UNSTORED` of the slowest stored one's
ratio, as in the cover). Compared at equal counts with the nearest shape and the cover
(`neighbours.cover_ranker`), without the seq2seq model, so the CV folds need no training of it.
Scored as `candidates_offline.py`: on the test split, or on validation (train alone lent), or by
network folds of train + validation; train and validation problems keep only their 32 fastest
configs, so there a pick outside them counts as the 32nd time (upper bounds).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import best_of_table, provenance, write_json
from model_cv import network_folds

#: name -> (nearest shape's, cover's, reranker's) counts, in that order of lending
SETS = {"nearest 1": (1, 0, 0), "rerank 1": (0, 0, 1), "nearest 2 + cover 13": (2, 13, 0), "rerank 15": (0, 0, 15),
        "nearest 2 + rerank 13": (2, 0, 13), "nearest 2 + cover 8 + rerank 5": (2, 8, 5),
        "nearest 2 + cover 23": (2, 23, 0), "rerank 25": (0, 0, 25)}  # fmt: skip


class Reranker:
    """The cost model over `lent` tuned shapes (see the module docstring)."""

    def __init__(self, lent: Sequence[Any], space: Any, device: Any, near: int, pool: int) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        from kptune.neighbours import UNSTORED
        from kptune.predict.evaluation import features
        from kptune.problem import problem_from_key

        self.space, self.device, self.near, self.pool = space, device, near, pool
        self.feats = np.array([features(problem_from_key(p.key)) for p in lent])  # type: ignore[arg-type]
        ids: dict[str, int] = {}
        self.rows = []  # per shape: {config id: log ratio}, the log ratio of one not stored
        for p in lent:
            best = p.times[0][1]
            stored = {ids.setdefault(c, len(ids)): math.log(best / t) for c, t in p.times}
            self.rows.append((stored, math.log(UNSTORED * best / p.times[-1][1])))
        self.keys = list(ids)
        xs, ys = [], []
        for i, p in enumerate(lent):
            keys, x = self.pool_of(p.key, leave_out=i)
            stored, unstored = self.rows[i]
            ys.append([stored.get(ids[k], unstored) for k in keys])
            xs.append(x)
        x_all = np.vstack([x for x in xs if len(x)])
        self.model = HistGradientBoostingRegressor(max_iter=400, learning_rate=0.05, max_leaf_nodes=63,
                                                   random_state=0).fit(x_all, np.concatenate(ys))  # fmt: skip

    def pool_of(self, key: str, leave_out: int | None = None) -> tuple[list[str], np.ndarray]:
        from kptune.predict.evaluation import distances, features
        from kptune.problem import problem_from_key
        from kptune.space import Config, completer

        q = problem_from_key(key)
        dist = distances(self.feats, features(q))  # type: ignore[arg-type]
        if leave_out is not None:
            dist[leave_out] = np.inf
        near = np.argsort(dist, kind="stable")[: self.near]
        cols = sorted(set().union(*(self.rows[i][0].keys() for i in near)))
        ratio = np.array([[self.rows[i][0].get(c, self.rows[i][1]) for i in near] for c in cols])
        stored = np.array([[c in self.rows[i][0] for i in near] for c in cols])
        mean = ratio.mean(axis=1)
        valid = completer(self.space, q, self.device).completable  # type: ignore[arg-type]
        keys, rows = [], []
        for j in np.argsort(-mean, kind="stable"):
            config = Config.parse(self.keys[cols[j]])
            if not valid(config.values()):
                continue
            keys.append(self.keys[cols[j]])
            record = [mean[j], ratio[j].max(), stored[j].mean(), ratio[j, 0], ratio[j, :10].mean(),
                      stored[j, :10].mean()]  # fmt: skip
            rows.append([*_problem_features(q), *_config_features(q, config, self.device), *record, len(keys)])
            if len(keys) >= self.pool:
                break
        return keys, np.array(rows)

    def rank(self, problem: Any, k: int) -> list[str]:
        keys, x = self.pool_of(problem.key)
        if not keys:
            return []
        return [keys[j] for j in np.argsort(-self.model.predict(x), kind="stable")[:k]]


def _problem_features(q: Any) -> list[float]:
    m, kk = q.derived()["GEMM_M"], q.c * q.r * q.s
    sizes = (q.n, q.c, q.h, q.w, q.k, q.out_h, q.out_w, m, kk, m * q.k * kk)
    return [*(math.log2(x) for x in sizes), q.r, q.s, q.stride_h]


def _config_features(q: Any, c: Any, device: Any) -> list[float]:
    """The config's values and its launch on the device: CTAs, waves over the SMs, tile fill."""
    from kptune.families.conv2d import geometry
    from kptune.space import ceil_div

    (gx, gy, gz), (threads, _, _) = geometry(q, c)
    ctas, sms = gx * gy * gz, device.compute_units
    waves = math.ceil(ctas / sms)
    m, k_split = q.derived()["GEMM_M"], q.c * q.r * q.s / c["KSPLIT"]
    fill_m = m / (ceil_div(m, c["BM"]) * c["BM"])
    fill_n = q.k / (ceil_div(q.k, c["BN"]) * c["BN"])
    fill_k = k_split / (math.ceil(k_split / c["BK"]) * c["BK"])
    return [*c.values(), math.log2(ctas), ctas / (waves * sms), math.log2(waves), threads, fill_m, fill_n, fill_k,
            math.log2(max(k_split, 1))]  # fmt: skip


def lend_sets(near: Callable[[Any, int], list[str]], cover: Callable[[Any, list[str], int], list[str]],
              rerank: Callable[[Any, int], list[str]], problem: Any) -> dict[str, list[str]]:  # fmt: skip
    """SETS for one problem: the nearest shape's first, then the cover's, then the reranker's not among them."""
    out = {}
    ranked = rerank(problem, max(r for _, _, r in SETS.values()) + max(n + c for n, c, _ in SETS.values()))
    for name, (kn, kc, kr) in SETS.items():
        got = near(problem, kn) if kn else []
        got += cover(problem, got, kc) if kc else []
        out[name] = got + [c for c in ranked if c not in got][:kr]
    return out


def ratio(problem: Any, candidates: Sequence[str], complete: bool) -> float:
    """t_best / the best candidate's time; on a problem with only its fastest stored, an unstored pick
    counts as the slowest stored (upper bound); with every config stored, an absent one failed. No
    candidate at all (none lent was valid here) counts as the slowest stored."""
    times, best, slowest = dict(problem.times), problem.times[0][1], problem.times[-1][1]
    miss = math.inf if complete else slowest
    return best / min((times.get(c, miss) for c in candidates), default=slowest)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--split", choices=("test", "validation"), default="test")
    ap.add_argument("--cv", type=int, default=0, help="score by N network folds of train + validation instead")
    ap.add_argument("--near", type=int, default=100, help="tuned shapes whose stored configs make the pool")
    ap.add_argument("--pool", type=int, default=400, help="pool configs per problem, at most")
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    from kptune import dataset as ds
    from kptune.device import DeviceInfo
    from kptune.kernel import get_family
    from kptune.neighbours import cover_ranker
    from kptune.predict.evaluation import nearest_shape

    data = ds.load(args.dataset)
    space = get_family(data.meta["family"]).space
    device = DeviceInfo(**data.meta["device_limits"])
    runs: list[tuple[list[Any], list[Any], bool]] = []  # (lent, scored, scored problems complete)
    if args.cv:
        lendable = data.split("train") + data.split("validation")
        for members in network_folds(lendable, args.cv):
            held = set(members)
            runs.append(([p for i, p in enumerate(lendable) if i not in held],
                         [p for i, p in enumerate(lendable) if i in held], False))  # fmt: skip
    else:
        lent = data.split("train") + (data.split("validation") if args.split == "test" else [])
        runs.append((lent, data.split(args.split), args.split == "test"))
    ratios: dict[str, list[float]] = {name: [] for name in SETS}
    for lent, scored, complete in runs:
        rerank = Reranker(lent, space, device, args.near, args.pool)
        near, cover = nearest_shape(lent, space, device), cover_ranker(lent, space, device)
        for p in scored:
            if f"dtype={args.dtype}," not in p.key:
                continue
            for name, candidates in lend_sets(near, cover, rerank.rank, p).items():
                ratios[name].append(ratio(p, candidates, complete))
    table = best_of_table(ratios, {name: sum(counts) for name, counts in SETS.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    name = "rerank_offline-cv.json" if args.cv else f"rerank_offline-{args.split}.json"
    write_json(args.out / name, {"benchmark": "rerank_offline", **provenance(), "dataset": str(args.dataset),
               "split": None if args.cv else args.split, "cv_folds": args.cv, "near": args.near, "pool": args.pool,
               "problems": len(next(iter(ratios.values()))), "table": table})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
