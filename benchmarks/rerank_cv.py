"""Does the reranker order the beam better than the beam does, on networks neither has seen? Network-fold CV.

    PYTHONPATH=. python benchmarks/rerank_cv.py --out results/

The rows are the reranker's own (`kptune.predict.rerank.out_of_fold_rows`: --folds folds of networks
over train + validation, the test split never read; per fold a seq2seq trained for --epochs on the
other folds ranks the fold's fp32 problems' beams, reading the other folds as tuned shapes). A second level
then fits the reranker's trees (`rerank.fit_rows`: LambdaMART, `rerank.PARAMS`, or each of --rounds) on
the rows of all folds but one and orders the beams of that one, pooled over the folds. Scored on each
problem's pool (`rerank.pooled`: the beam's `rerank.WIDTH` candidates and the nearest tuned shapes' winners):
the top-1 and best-of-5 ratio geomeans and the top-5 hit (a candidate at the problem's best time), in the
pool's order (the beam's first) and reranked; and the best of the whole pool, the most any order can reach.
Train and validation problems keep only their fastest configs, so a pick outside them counts as the slowest
stored: upper bounds, as in model_cv. Writes rerank_cv.json under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import provenance, write_json


def scores(targets: Sequence[np.ndarray], orders: Sequence[Sequence[int]], k: int = 5) -> dict[str, float]:
    """Top-1 and best-of-k ratio geomeans and the top-k hit rate of each problem's candidates in `orders`
    (targets: their log ratios t_best / t, 0 at the best)."""
    top1 = [y[o[0]] for y, o in zip(targets, orders, strict=True)]
    topk = [max(y[j] for j in o[:k]) for y, o in zip(targets, orders, strict=True)]
    n = len(targets)
    return {"top1": round(math.exp(sum(top1) / n), 4), f"best_of_{k}": round(math.exp(sum(topk) / n), 4),
            f"top{k}_hit": round(sum(t >= -1e-12 for t in topk) / n, 3)}  # fmt: skip


def out_of_fold_orders(fit: Sequence[tuple[Any, np.ndarray, np.ndarray]], fit_folds: Sequence[int],
                       rows: Sequence[tuple[Any, np.ndarray, np.ndarray]], folds: Sequence[int], n_folds: int,
                       seed: int, params: Any = None) -> list[list[int]]:  # fmt: skip
    """Each pool of `rows` ((key, feature rows, log ratios), of fold `folds[i]`) ordered by the reranker's trees
    fit on the pools of `fit` of the other folds (`rerank.fit_rows`, with `params` or `rerank.PARAMS`); []
    where no fold is left to fit on."""
    from kptune.predict import rerank

    order: list[list[int]] = [[] for _ in rows]
    for f in range(n_folds):
        rest = [r for r, g in zip(fit, fit_folds, strict=True) if g != f]
        if not rest or f not in folds:
            continue
        trees = rerank.fit_rows(list(rest), {}, seed, params or rerank.PARAMS).trees
        for i, (_, x, _) in enumerate(rows):
            if folds[i] == f:
                order[i] = list(np.argsort(-trees.predict(x), kind="stable"))
    return order


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, nargs="+", default=None,
                    help="LambdaMART rounds to compare on the same rows (default: the shipped setting's)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)

    from kptune import dataset as ds
    from kptune.neighbours import lent_problems
    from kptune.predict import rerank
    from kptune.predict.models import ModelConfig

    data = ds.load(args.dataset)
    started = time.perf_counter()
    cfg = ModelConfig(seed=args.seed, early_stop=False, epochs=args.epochs)
    rows = rerank.out_of_fold_rows(data, cfg, args.folds, lambda s: print(s, file=sys.stderr, flush=True))
    fold_of = rerank.problem_folds(lent_problems(data), args.folds)  # the folds out_of_fold_rows made
    fold = [fold_of[key] for key, _, _ in rows]
    targets = [y for _, _, y in rows]
    results: dict[str, Any] = {"pool order": scores(targets, [list(range(len(y))) for y in targets])}
    for rounds in args.rounds or [rerank.PARAMS.rounds]:
        params = dataclasses.replace(rerank.PARAMS, rounds=rounds)
        reranked = out_of_fold_orders(rows, fold, rows, fold, args.folds, args.seed, params)
        results["reranked" if args.rounds is None else f"reranked, {rounds} rounds"] = scores(targets, reranked)
    results["best of the pool"] = scores(
        targets, [list(np.argsort(-y, kind="stable")) for y in targets], max(len(y) for y in targets)
    )
    for name, r in results.items():
        print(f"{name:18s} " + ", ".join(f"{k} {v}" for k, v in r.items()))
    doc = {"benchmark": "rerank_cv", **provenance(), "dataset": str(args.dataset), "folds": args.folds,
           "epochs": args.epochs, "seed": args.seed, "problems": len(rows), "width": rerank.WIDTH,
           "lenders": rerank.LENDERS,
           "lambdarank": dataclasses.asdict(rerank.PARAMS),
           "seconds": round(time.perf_counter() - started, 1), "results": results}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "rerank_cv.json", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
