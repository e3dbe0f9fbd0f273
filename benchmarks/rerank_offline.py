"""Would a learned cost model pick autotune's candidates better than the cover? (tried, not adopted)

    PYTHONPATH=. python benchmarks/rerank_offline.py --split test --out results/
    PYTHONPATH=. python benchmarks/rerank_offline.py --split validation --out results/
    PYTHONPATH=. python benchmarks/rerank_offline.py --cv 4 --out results/

The cost model (`kptune.predict.costmodel`): a gradient-boosted regressor that scores the configs
stored for a problem's nearest tuned shapes from the problem, the config, its launch on the device
and its record on the neighbours, as TVM's and Ansor's cost models rank candidates. Compared at
equal counts with the nearest shape and the cover (`neighbours.cover_ranker`), without the seq2seq
model, so the CV folds need no training of it. Scored as `candidates_offline.py`: on the test
split, or on validation (train alone lent), or by network folds of train + validation; train and
validation problems keep only their 32 fastest configs, so there a pick outside them counts as the
32nd time (upper bounds).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import best_of_table, provenance, write_json
from model_cv import network_folds

from kptune.predict.costmodel import CostModel

#: name -> (nearest shape's, cover's, reranker's) counts, in that order of lending
SETS = {"nearest 1": (1, 0, 0), "rerank 1": (0, 0, 1), "nearest 2 + cover 13": (2, 13, 0), "rerank 15": (0, 0, 15),
        "nearest 2 + rerank 13": (2, 0, 13), "nearest 2 + cover 8 + rerank 5": (2, 8, 5),
        "nearest 2 + cover 23": (2, 23, 0), "rerank 25": (0, 0, 25)}  # fmt: skip


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
        rerank = CostModel(lent, space, device, args.near, args.pool)
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
