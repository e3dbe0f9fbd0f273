"""Which candidates should autotune measure? The model's top k, more of them, or some lent by the nearest tuned shape.

    PYTHONPATH=. python benchmarks/candidates_offline.py --out results/               # test split, shipped model
    PYTHONPATH=. python benchmarks/candidates_offline.py --split validation --out results/  # lent: train only
    PYTHONPATH=. python benchmarks/candidates_offline.py --cv 4 --seeds 0 1 --out results/   # train folds only

Scores, offline on the dataset (`evaluation.scores`: geomean of t_best / best time among the
candidates), these candidate sets: the model's hedged constrained beam, top 5 and top 7; the nearest
tuned shape's top 5 (`evaluation.nearest_shape` over train + validation); the model's top k plus
the nearest tuned shape's fastest m not already among them (`kptune.neighbours`: 5 + 2, and 4 + 1,
3 + 2 at the same budget of 5; 7 + 3 and 10 + 5: what more measured configs buy); and those plus c
configs that cover the nearest tuned shapes (`neighbours.cover_ranker`: 5 + 2 + 8 and other c; the
cover alone, for comparison); and sets with the cost model's first t (`kptune.predict.costmodel`,
fit on the lent problems) in place of the model's or the nearest shape's, up to 40 measured ("model
5 + cost 20": autotune's default, 25 measured, where a cost model is shipped; "model 5 + nearest 20"
where none is).
On the test split (the shipped model and dataset); with --split validation on the validation problems
with train alone lent (how c and the cover's shapes were chosen, never on test); or with --cv N by
network folds of train + validation as `model_cv.py` (a model trained per fold, fixed --epochs,
never the test split). Train and validation problems keep only their 32 fastest configs, so a pick
outside them counts as the 32nd time: upper bounds, as in model_cv.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import best_of_table, provenance, write_json
from model_cv import network_folds

#: (name, model's k, cost model's, nearest shape's, cover's), lent in that order
SETS = (("model 5", 5, 0, 0, 0), ("model 7", 7, 0, 0, 0), ("nearest 5", 0, 0, 5, 0), ("cost 1", 0, 1, 0, 0),
        ("cost 5", 0, 5, 0, 0), ("model 5 + nearest 2", 5, 0, 2, 0), ("model 7 + nearest 3", 7, 0, 3, 0),
        ("cover 10", 0, 0, 0, 10), ("model 5 + nearest 2 + cover 3", 5, 0, 2, 3),
        ("model 5 + nearest 2 + cover 5", 5, 0, 2, 5), ("model 5 + nearest 2 + cover 8", 5, 0, 2, 8),
        ("model 5 + nearest 2 + cover 13", 5, 0, 2, 13), ("model 5 + nearest 2 + cover 23", 5, 0, 2, 23),
        ("model 5 + cover 10", 5, 0, 0, 10), ("cost 5 + nearest 2 + cover 8", 0, 5, 2, 8),
        ("model 5 + cost 2 + cover 8", 5, 2, 0, 8), ("model 3 + cost 4 + cover 8", 3, 4, 0, 8),
        ("model 5 + cost 5 + cover 5", 5, 5, 0, 5), ("model 5 + cost 5 + cover 10", 5, 5, 0, 10),
        ("model 5 + cost 5 + cover 15", 5, 5, 0, 15), ("model 5 + cost 2 + cover 23", 5, 2, 0, 23),
        ("model 5 + cost 5 + cover 20", 5, 5, 0, 20), ("model 5 + cost 10 + cover 15", 5, 10, 0, 15),
        ("model 8 + cost 7 + cover 15", 8, 7, 0, 15), ("model 5 + cost 15 + cover 20", 5, 15, 0, 20),
        ("cost 25", 0, 25, 0, 0), ("model 5 + cost 20", 5, 20, 0, 0), ("model 5 + cost 25", 5, 25, 0, 0),
        ("model 5 + cost 15 + cover 10", 5, 15, 0, 10), ("model 5 + cost 10", 5, 10, 0, 0),
        ("model 5 + nearest 20", 5, 0, 20, 0))  # fmt: skip


def candidate_sets(model: Callable[[Any, int], list[str]], cost: Callable[[Any, int], list[str]] | None,
                   near: Callable[[Any, int], list[str]],
                   cover: Callable[[Any, list[str], int], list[str]]) -> dict[str, Any]:  # fmt: skip
    """name -> (ranker, k) for SETS: the model's first `km`, then the cost model's first `kt` not among
    them, then the nearest shape's fastest `kn` not among them, then `kc` that cover the nearest tuned
    shapes, as autotune lends them. Without a cost model, the sets that need one are left out."""

    def union(km: int, kt: int, kn: int, kc: int) -> Callable[[Any, int], list[str]]:
        def rank(problem: Any, k: int) -> list[str]:
            out = model(problem, km) if km else []
            for more, count in ((cost, kt), (near, kn)):
                if count and more is not None:
                    out += [c for c in more(problem, count + len(out)) if c not in out][:count]
            return out + (cover(problem, out, kc) if kc else [])

        return rank

    return {name: (union(*ks), sum(ks)) for name, *ks in SETS if cost is not None or not ks[1]}


def score(problems: Sequence[Any], sets: dict[str, Any]) -> dict[str, list[float]]:
    """name -> per-problem ratio t_best / best candidate time."""
    from kptune.predict import evaluation

    out: dict[str, list[float]] = {}
    for name, (rank, k) in sets.items():
        out[name] = [evaluation.scores([p], rank, k)[f"ratio_top{k}_geomean"] for p in problems]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--model", type=Path, default=Path("kptune/data/model-h200.safetensors"))
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="score on this split; validation lends train alone",
    )
    ap.add_argument("--cv", type=int, default=0, help="score by N network folds of train + validation instead")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    import torch

    from kptune import dataset as ds
    from kptune.device import DeviceInfo
    from kptune.kernel import get_family
    from kptune.neighbours import cover_ranker
    from kptune.predict import checkpoint, evaluation
    from kptune.predict.beam import prepare
    from kptune.predict.costmodel import CostModel
    from kptune.predict.models import ModelConfig
    from kptune.predict.training import train

    torch.set_num_threads(1)
    data = ds.load(args.dataset)
    family = get_family(data.meta["family"])
    device = DeviceInfo(**data.meta["device_limits"])
    lendable = data.split("train") + (data.split("validation") if args.split == "test" else [])
    ratios: dict[str, list[float]] = {}
    if not args.cv:
        pred = checkpoint.load(args.model, family.name, family.source_hash)
        prepare(pred.model)
        test = [p for p in data.split(args.split) if f"dtype={args.dtype}," in p.key]
        model = evaluation.predict_ranker(pred.model, pred.vocab, family, device)
        ratios = score(test, candidate_sets(model, CostModel(lendable, family.space, device).rank,
                                            evaluation.nearest_shape(lendable, family.space, device),
                                            cover_ranker(lendable, family.space, device)))  # fmt: skip
    else:
        folds = network_folds(lendable, args.cv)
        for seed in args.seeds:
            for members in folds:
                held = [lendable[i] for i in members]
                fit = [p for i, p in enumerate(lendable) if i not in set(members)]
                problems = tuple(dataclasses.replace(p, split="heldout" if i in set(members) else "train")
                                 for i, p in enumerate(lendable))  # fmt: skip
                cfg = dataclasses.replace(ModelConfig(), epochs=args.epochs, early_stop=False, seed=seed)
                result = train(ds.Dataset(data.meta, problems), cfg)
                model = evaluation.predict_ranker(result.model, result.vocab, family, device)
                near = evaluation.nearest_shape(fit, family.space, device)
                cost = CostModel(fit, family.space, device).rank
                sets = candidate_sets(model, cost, near, cover_ranker(fit, family.space, device))
                for name, values in score(held, sets).items():
                    ratios.setdefault(name, []).extend(values)
    table = best_of_table({name: ratios[name] for name, *_ in SETS if name in ratios},
                          {name: sum(ks) for name, *ks in SETS})  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    name = "candidates_offline-cv.json" if args.cv else f"candidates_offline-{args.split}.json"
    write_json(args.out / name, {"benchmark": "candidates_offline", **provenance(), "dataset": str(args.dataset),
               "model": None if args.cv else str(args.model), "split": None if args.cv else args.split,
               "cv_folds": args.cv, "seeds": args.seeds if args.cv else None,
               "epochs": args.epochs if args.cv else None, "problems": len(next(iter(ratios.values()))),
               "table": table})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
