"""Does blending the seq2seq with the cost model help on networks neither has seen? Network-fold CV.

    PYTHONPATH=. python benchmarks/blend_cv.py --folds 4 --epochs 60 --out results/
    PYTHONPATH=. python benchmarks/blend_cv.py --folds 4 --epochs 60 --no-gemm-view --out results/

Folds of whole network sets over train + validation (`model_cv.network_folds`; the test split is
never read). Per fold: the seq2seq trained with the defaults for a fixed --epochs
(`early_stop=False`, one thread, --seed) and the cost model fit on the other folds; each scored on
the fold's fp32 problems with `evaluation.scores` (k 5): the seq2seq's hedged constrained beam (as
`predict()`), the cost model, and their blend (`kptune.predict.blend`) at the seq2seq weights
--weights (0.5 is the shipped one). Pooled over the folds. --no-gemm-view trains the seq2seq on
sources without the GEMM view's sizes (`ModelConfig.gemm_view`, as checkpoints before it were), to
compare the two. Train and validation problems keep only their 32 fastest configs (256 for those
recorded from the ninth installment on), so a pick outside them counts as the slowest stored: upper
bounds, as in model_cv. Writes blend_cv.json under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common import geomean, provenance, write_json
from model_cv import network_folds


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument(
        "--no-gemm-view",
        dest="gemm_view",
        action="store_false",
        help="sources without the GEMM view's sizes (tokenizer.DERIVED_FIELDS)",
    )
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    import torch

    from kptune import dataset as ds
    from kptune.device import DeviceInfo
    from kptune.kernel import get_family
    from kptune.predict import evaluation
    from kptune.predict.beam import hedged_position
    from kptune.predict.blend import blended_ranker
    from kptune.predict.costmodel import CostModel
    from kptune.predict.models import ModelConfig
    from kptune.predict.training import train

    torch.set_num_threads(1)
    data = ds.load(args.dataset)
    family, device = get_family(data.meta["family"]), DeviceInfo(**data.meta["device_limits"])
    pool = data.split("train") + data.split("validation")
    cfg = dataclasses.replace(
        ModelConfig(), epochs=args.epochs, early_stop=False, seed=args.seed, gemm_view=args.gemm_view
    )
    rows: dict[str, list[dict[str, float]]] = {}
    for f, members in enumerate(network_folds(pool, args.folds)):
        t0, inside = time.perf_counter(), set(members)
        held = [pool[i] for i in members if "dtype=fp32," in pool[i].key]
        fit = [p for i, p in enumerate(pool) if i not in inside]
        trained = train(ds.Dataset(data.meta, tuple(dataclasses.replace(p, split="train") for p in fit)), cfg)
        cost = CostModel(fit, family.space, device)
        spread = hedged_position(family.name, trained.vocab)
        rankers = {"seq2seq beam": evaluation.model_ranker(trained.model, trained.vocab, family.space, device, "beam",
                                                           8, spread),
                   "cost model": cost.rank}  # fmt: skip
        rankers |= {f"blend {w}": blended_ranker(trained.model, trained.vocab, cost, w) for w in args.weights}
        for name, rank in rankers.items():
            for p in held:
                s = evaluation.scores([p], rank, 5)
                row = {"ratio1": s["ratio_top1_geomean"], "ratio5": s["ratio_top5_geomean"], "hit5": s["top5_hit"]}
                rows.setdefault(name, []).append({"fold": f, "key": p.key, **row})
        print(f"fold {f}: {len(held)} fp32 problems, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    table = {name: {"problems": len(r), "ratio_top1_geomean": geomean(x["ratio1"] for x in r),
                    "ratio_top5_geomean": geomean(x["ratio5"] for x in r),
                    "top5_hit": sum(x["hit5"] for x in r) / len(r)} for name, r in rows.items()}  # fmt: skip
    for name, t in table.items():
        print(f"{name:14s} {t['problems']} problems: top-1 {t['ratio_top1_geomean']:.4f}, best of 5 "
              f"{t['ratio_top5_geomean']:.4f}, top-5 hit {t['top5_hit']:.2f}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    name = "blend_cv.json" if args.gemm_view else "blend_cv-no-gemm-view.json"
    write_json(args.out / name, {"benchmark": "blend_cv", **provenance(), "dataset": str(args.dataset),
                                 "folds": args.folds, "epochs": args.epochs, "seed": args.seed,
                                 "gemm_view": args.gemm_view, "table": table, "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
