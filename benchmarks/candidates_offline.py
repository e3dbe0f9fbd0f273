"""Which candidates should autotune measure? The model's top k, more of them, or some lent by the nearest tuned shape.

    PYTHONPATH=. python benchmarks/candidates_offline.py --out results/               # test split, shipped model
    PYTHONPATH=. python benchmarks/candidates_offline.py --cv 4 --seeds 0 1 --out results/   # train folds only

Scores, offline on the dataset (`evaluation.scores`: geomean of t_best / best time among the
candidates), these candidate sets: the model's hedged constrained beam, top 5 and top 7; the nearest
tuned shape's top 5 (`evaluation.nearest_shape` over train + validation); and the model's top k plus
the nearest tuned shape's fastest m not already among them (`kptune.neighbours`, autotune's default
5 + 2, and 4 + 1, 3 + 2 at the same budget of 5; 7 + 3 and 10 + 5: what more measured configs buy).
On the test split (the shipped model and dataset),
or with --cv N by network folds of train + validation as `model_cv.py` (a model trained per fold,
fixed --epochs, never the test split; train problems keep only their 32 fastest configs, so a pick
outside them counts as the 32nd time: upper bounds, as in model_cv).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import geomean, provenance, write_json
from model_cv import network_folds

SETS = (("model 5", 5, 0), ("model 7", 7, 0), ("nearest 5", 0, 5), ("model 5 + nearest 2", 5, 2),
        ("model 4 + nearest 1", 4, 1), ("model 3 + nearest 2", 3, 2), ("model 7 + nearest 3", 7, 3),
        ("model 10 + nearest 5", 10, 5))  # fmt: skip


def candidate_sets(model: Callable[[Any, int], list[str]], near: Callable[[Any, int], list[str]]) -> dict[str, Any]:
    """name -> (ranker, k) for SETS: the model's first `km`, then the nearest shape's fastest `kn` not among them."""

    def union(km: int, kn: int) -> Callable[[Any, int], list[str]]:
        def rank(problem: Any, k: int) -> list[str]:
            out = model(problem, km) if km else []
            lent = [c for c in near(problem, kn) if c not in out] if kn else []  # as autotune lends them
            return out + lent

        return rank

    return {name: (union(km, kn), km + kn) for name, km, kn in SETS}


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
    ap.add_argument("--cv", type=int, default=0, help="score by N network folds of train + validation instead")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    import torch

    from kptune import dataset as ds
    from kptune.device import DeviceInfo
    from kptune.kernel import get_family
    from kptune.predict import checkpoint, evaluation
    from kptune.predict.beam import hedged_position, prepare
    from kptune.predict.models import ModelConfig
    from kptune.predict.training import train

    torch.set_num_threads(1)
    data = ds.load(args.dataset)
    family = get_family(data.meta["family"])
    device = DeviceInfo(**data.meta["device_limits"])
    lendable = data.split("train") + data.split("validation")
    ratios: dict[str, list[float]] = {}
    if not args.cv:
        pred = checkpoint.load(args.model, family.name, family.source_hash)
        prepare(pred.model)
        test = [p for p in data.split("test") if f"dtype={args.dtype}," in p.key]
        model = evaluation.model_ranker(pred.model, pred.vocab, family.space, device, "beam", 8,
                                        hedged_position(family.name, pred.vocab))  # fmt: skip
        ratios = score(test, candidate_sets(model, evaluation.nearest_shape(lendable, family.space, device)))
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
                model = evaluation.model_ranker(result.model, result.vocab, family.space, device, "beam", 8,
                                                hedged_position(family.name, result.vocab))  # fmt: skip
                near = evaluation.nearest_shape(fit, family.space, device)
                for name, values in score(held, candidate_sets(model, near)).items():
                    ratios.setdefault(name, []).extend(values)
    table = {name: {"candidates": km + kn, "geomean_ratio": round(geomean(ratios[name]), 4),
                    "share_ge_0.99": round(sum(r >= 0.99 for r in ratios[name]) / len(ratios[name]), 3)}
             for name, km, kn in SETS}  # fmt: skip
    for name, row in table.items():
        print(f"{name:22s} {row['candidates']} candidates: best-of ratio {row['geomean_ratio']:.3f}, "
              f">= 0.99 {row['share_ge_0.99']:.2f}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    name = "candidates_offline-cv.json" if args.cv else "candidates_offline.json"
    write_json(args.out / name, {"benchmark": "candidates_offline", **provenance(), "dataset": str(args.dataset),
               "model": None if args.cv else str(args.model), "cv_folds": args.cv, "seeds": args.seeds if args.cv
               else None, "epochs": args.epochs if args.cv else None, "problems": len(next(iter(ratios.values()))),
               "table": table})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
