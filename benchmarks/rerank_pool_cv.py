"""How wide a beam and how many lenders should the reranker's pool have? Network-fold CV, several settings.

    PYTHONPATH=. python benchmarks/rerank_pool_cv.py --widths 24 16 12 --lenders 16 32 --cache /tmp/folds --out results/

`rerank_cv.py` scores the shipped setting; this scores each pair of beam width (`rerank.WIDTH`) and lenders
(`rerank.LENDERS`: the nearest tuned shapes whose winners join the beam) on the same out-of-fold seq2seqs:
per fold of networks (`rerank.network_folds` over train + validation; the test split never read) one is
trained as `rerank.out_of_fold_rows` trains it (kept under --cache, so that more settings cost no training),
its beam of each width pooled with the other folds' winners (`rerank.pooled`), and the reranker's trees fit on
the other folds' pools order each fold's (`rerank.fit_rows`), as `rerank_cv.py` does. Prints and writes
rerank_pool_cv.json under --out: per setting, the reranked top-1 and best-of-5 ratios and top-5 hit, the beam's
own order's, and the best of the pool.

    PYTHONPATH=. python benchmarks/rerank_pool_cv.py --score-dtype fp16 --cache /tmp/folds --out results/

With --score-dtype fp16 the trees are still fit on the other folds' fp32 pools (`rerank.fitted`, as the shipped
reranker is) and order each fold's lent fp16 problems: whether the fp32-fit reranker should order fp16 too.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import provenance, write_json
from rerank_cv import out_of_fold_orders, scores


def add_fold_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of a network-fold CV on the folds' seq2seqs: the dataset, the folds, how they are trained."""
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="keep each fold's seq2seq here (torch.save)")
    ap.add_argument("--out", type=Path, default=Path("."))


def lent_folds(dataset: Path, folds: int) -> tuple[Any, Any, Any, list[Any], dict[str, int]]:
    """(the dataset, its kernel family, its device, its lent problems, each one's fold of networks)."""
    from kptune import dataset as ds
    from kptune.device import DeviceInfo
    from kptune.kernel import get_family
    from kptune.neighbours import lent_problems
    from kptune.predict import rerank

    data = ds.load(dataset)
    lent = lent_problems(data)
    fold = rerank.problem_folds(lent, folds)
    return data, get_family(data.meta["family"]), DeviceInfo(**data.meta["device_limits"]), lent, fold


def fold_models(data: Any, lent: Sequence[Any], fold: dict[str, int], folds: int, cfg: Any,
                cache: Path | None) -> dict[int, Any]:  # fmt: skip
    """Per fold of networks, the seq2seq trained on the other folds' problems as `rerank.out_of_fold_rows` trains
    it (`rerank.train_fold`: `cfg`, fixed epochs), read from or kept under `cache` (torch.save: our own files)."""
    import torch

    from kptune.predict.rerank import train_fold

    models = {}
    for f in range(folds):
        path = cache / f"fold{f}-of-{folds}-seed{cfg.seed}.pt" if cache else None
        if path is not None and path.exists():
            models[f] = torch.load(path, weights_only=False)  # our own file, written below
            continue
        rest = [p for p in lent if fold[p.key] != f]
        print(f"fold {f + 1}/{folds}: training on {len(rest)} problems", file=sys.stderr, flush=True)
        models[f] = train_fold(data, rest, cfg)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(models[f], path)
    return models


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fold_arguments(ap)
    ap.add_argument("--widths", type=int, nargs="+", default=None, help="default: the shipped rerank.WIDTH")
    ap.add_argument("--lenders", type=int, nargs="+", default=None, help="default: the shipped rerank.LENDERS")
    ap.add_argument("--score-dtype", default=None,
                    help="score lent problems of this dtype (default: fp32, as the reranker is fit)")  # fmt: skip
    args = ap.parse_args(argv)
    from kptune.neighbours import TunedShapes
    from kptune.predict import rerank
    from kptune.predict.api import search
    from kptune.predict.models import ModelConfig
    from kptune.predict.threads import one_thread
    from kptune.problem import problem_from_key

    data, family, device, lent, fold = lent_folds(args.dataset, args.folds)
    cfg = ModelConfig(seed=args.seed, early_stop=False, epochs=args.epochs)
    fit = [p for p in lent if rerank.fitted(problem_from_key(p.key))]  # type: ignore[arg-type]
    score_dtype = args.score_dtype or rerank.FIT_DTYPE
    held = [p for p in lent if f",dtype={score_dtype}," in p.key]
    if not held:
        print(f"rerank_pool_cv: {args.dataset} lends no {score_dtype} problem to score", file=sys.stderr)
        return 2
    models = fold_models(data, lent, fold, args.folds, cfg, args.cache)
    tuned = {f: TunedShapes([p for p in lent if fold[p.key] != f]) for f in range(args.folds)}

    def pools(problems: list[Any], width: int, lenders: int) -> tuple[Any, list[int]]:
        """Each problem's pool, its fold's seq2seq's beam of `width` and `lenders` winners: (key, feature rows,
        log ratios), and its fold."""
        rows, folds = [], []
        for p in problems:
            f, problem = fold[p.key], problem_from_key(p.key)
            with one_thread():
                found = search(models[f].model, models[f].vocab, family, problem, device, width, width)  # type: ignore[arg-type]
            if not found:
                continue
            times = dict(p.times)
            slowest, best = max(times.values()), p.times[0][1]
            pool, x = rerank.pooled(problem, found, tuned[f], device, family.space, lenders=lenders)  # type: ignore[arg-type]
            rows.append((p.key, x, np.array([math.log(best / times.get(c.config.key(), slowest)) for c in pool])))
            folds.append(f)
        return rows, folds

    results: list[dict[str, Any]] = []
    for width in args.widths or [rerank.WIDTH]:
        for lenders in args.lenders or [rerank.LENDERS]:
            started = time.perf_counter()
            fit_rows, fit_folds = pools(fit, width, lenders)
            rows, folds = (fit_rows, fit_folds) if score_dtype == rerank.FIT_DTYPE else pools(held, width, lenders)
            targets = [y for _, _, y in rows]
            order = out_of_fold_orders(fit_rows, fit_folds, rows, folds, args.folds, args.seed)
            result = {"width": width, "lenders": lenders, "score_dtype": score_dtype, "problems": len(rows),
                      "mean_pool": round(float(np.mean([len(y) for y in targets])), 1),
                      "reranked": scores(targets, order),
                      "beam": scores(targets, [list(range(len(y))) for y in targets]),
                      "best_of_the_pool": scores(targets, [list(np.argsort(-y, kind="stable")) for y in targets],
                                                 max(len(y) for y in targets)),
                      "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
            print(result, flush=True)
            results.append(result)
    doc = {"benchmark": "rerank_pool_cv", **provenance(), "dataset": str(args.dataset), "folds": args.folds,
           "epochs": args.epochs, "seed": args.seed, "shipped": {"width": rerank.WIDTH, "lenders": rerank.LENDERS},
           "results": results}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "rerank_pool_cv.json", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
