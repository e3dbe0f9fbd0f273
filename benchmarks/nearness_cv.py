"""Which tuned shapes are near a problem? Network-fold CV of ways to place a problem, for the reranker and autotune.

    PYTHONPATH=. python benchmarks/nearness_cv.py --points sizes gemm --cache /tmp/folds --out results/

Everything that reads a problem's neighbourhood (`neighbours.TunedShapes.nearest`: the reranker's pool and its
record features, the cost model's pool, the nearest-shape baseline) places shapes by `evaluation.point` and
measures L1 distances between those points. This scores other points in its place, each on the same
out-of-fold seq2seqs (`rerank_pool_cv.fold_models`: per fold of networks over train + validation, the test
split never read):
- the reranker, as `rerank_pool_cv.py` scores it: each fold's fp32 pools ordered by trees fit on the other
  folds' pools (top 1, best of 5, top-5 hit) and the best of the pool;
- with --autotune, autotune's candidates (the fold's seq2seq's 5, then the first 20 of a cost model fit on
  the other folds), the cost model's first 1 and 5, and the nearest shape's fastest. Train and validation
  problems keep only their fastest configs, so a pick outside them counts as the slowest kept: upper bounds.
Points (`POINTS`): "sizes", the problem's log2 sizes and geometry (`evaluation.features`, kptune's point
until 2026-12-06); "gemm", its implicit GEMM's log2 M, N, K (`evaluation.point`); and mixes of the two.
Prints and writes nearness_cv.json under --out.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from common import provenance, write_json
from rerank_cv import out_of_fold_orders, scores
from rerank_pool_cv import add_fold_arguments, fold_models, lent_folds

from kptune.predict import evaluation
from kptune.problem import Conv2dProblem

SHIPPED = evaluation.point


def _gemm(q: Conv2dProblem) -> list[float]:
    return SHIPPED(q)[:3]


def _dtype(q: Conv2dProblem) -> list[float]:
    return SHIPPED(q)[3:]  # the shipped point's dtype flag


def _geometry(q: Conv2dProblem) -> list[float]:
    return [q.r, q.s, q.pad_h, q.pad_w, q.stride_h, q.stride_w, q.dil_h, q.dil_w]


#: name -> a problem's point (its dtype last: `evaluation.distances` keeps other dtypes 100 away)
POINTS: dict[str, Callable[[Conv2dProblem], list[float]]] = {
    "sizes": evaluation.features,
    "sizes+gemm": lambda q: [*_gemm(q), *evaluation.features(q)],
    "gemm+n+geometry": lambda q: [*_gemm(q), math.log2(q.n), *_geometry(q), *_dtype(q)],
    "gemm+geometry": lambda q: [*_gemm(q), *_geometry(q), *_dtype(q)],
    "gemm+1x1": lambda q: [*_gemm(q), 1.0 if (q.r, q.s) == (1, 1) else 0.0, *_dtype(q)],
    "gemm": SHIPPED,
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fold_arguments(ap)
    ap.add_argument("--points", nargs="+", default=["sizes", "gemm"], choices=sorted(POINTS))
    ap.add_argument("--autotune", action="store_true", help="also score autotune's candidates (a cost model a fold)")
    args = ap.parse_args(argv)
    from kptune.neighbours import Lender, TunedShapes, cover_ranker
    from kptune.predict import rerank
    from kptune.predict.api import search
    from kptune.predict.beam import WIDTH
    from kptune.predict.costmodel import CostModel
    from kptune.predict.models import ModelConfig
    from kptune.predict.threads import one_thread
    from kptune.problem import problem_from_key

    data, family, device, lent, fold = lent_folds(args.dataset, args.folds)
    held = [p for p in lent if rerank.fitted(problem_from_key(p.key))]  # type: ignore[arg-type]
    cfg = ModelConfig(seed=args.seed, early_stop=False, epochs=args.epochs)
    models = fold_models(data, lent, fold, args.folds, cfg, args.cache)
    beams, fives = {}, {}
    for p in held:
        m, problem = models[fold[p.key]], problem_from_key(p.key)
        assert isinstance(problem, Conv2dProblem)
        with one_thread():
            beams[p.key] = search(m.model, m.vocab, family, problem, device, rerank.WIDTH, rerank.WIDTH)
            if args.autotune:
                fives[p.key] = [c.config for c in search(m.model, m.vocab, family, problem, device, 5, WIDTH)]

    def ratio(p: Any, keys: Sequence[str]) -> float:
        """log(t_best / the fastest of `keys`), a key not kept counting as the slowest kept."""
        times, slowest = dict(p.times), p.times[-1][1]
        return math.log(p.times[0][1] / min([times.get(k, slowest) for k in keys] or [slowest]))

    results: list[dict[str, Any]] = []
    try:
        for name in args.points:
            evaluation.point = POINTS[name]  # type: ignore[assignment]  # what TunedShapes and nearest_shape read
            started = time.perf_counter()
            tuned = {f: TunedShapes([p for p in lent if fold[p.key] != f]) for f in range(args.folds)}
            rows, folds = [], []
            for p in held:
                if not beams[p.key]:
                    continue
                f, problem = fold[p.key], problem_from_key(p.key)
                pool, x = rerank.pooled(problem, beams[p.key], tuned[f], device, family.space)  # type: ignore[arg-type]
                rows.append((p.key, x, np.array([ratio(p, [c.config.key()]) for c in pool])))
                folds.append(f)
            targets = [y for _, _, y in rows]
            order = out_of_fold_orders(rows, folds, rows, folds, args.folds, args.seed)
            result: dict[str, Any] = {
                "point": name, "problems": len(rows), "mean_pool": round(float(np.mean([len(y) for y in targets])), 1),
                "reranked": scores(targets, order),
                "best_of_the_pool": scores(targets, [list(np.argsort(-y, kind="stable")) for y in targets],
                                           max(len(y) for y in targets)),
            }  # fmt: skip
            if args.autotune:
                sets: dict[str, list[float]] = {"model 5 + cost 20": [], "cost 1": [], "cost 5": [], "nearest 1": []}
                for f in range(args.folds):
                    rest = [p for p in lent if fold[p.key] != f]
                    cost = CostModel(tuned[f], family.space, device, seed=args.seed)
                    nearest = evaluation.nearest_shape(rest, family.space, device)
                    lender = Lender(nearest, cover_ranker(tuned[f], family.space, device), cost, "fold", tuned=tuned[f])
                    for p in (p for p in held if fold[p.key] == f):
                        problem = problem_from_key(p.key)
                        ranked = lender.rank_neighbours(problem, 25)  # type: ignore[arg-type]
                        five = fives[p.key]
                        lent_configs = lender.complete(problem, five, 20, 0, ranked)  # type: ignore[arg-type]
                        sets["model 5 + cost 20"].append(ratio(p, [c.key() for c in five + lent_configs]))
                        sets["cost 1"].append(ratio(p, ranked[:1]))
                        sets["cost 5"].append(ratio(p, ranked[:5]))
                        sets["nearest 1"].append(ratio(p, nearest(p, 1)))
                result["autotune"] = {k: round(math.exp(float(np.mean(v))), 4) for k, v in sets.items()}
            result["seconds"] = round(time.perf_counter() - started, 1)
            print(result, flush=True)
            results.append(result)
    finally:
        evaluation.point = SHIPPED
    doc = {"benchmark": "nearness_cv", **provenance(), "dataset": str(args.dataset), "folds": args.folds,
           "epochs": args.epochs, "seed": args.seed, "results": results}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "nearness_cv.json", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
