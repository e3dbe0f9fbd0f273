"""Does the seq2seq learn from the cost model? Train it on the measured train problems plus pseudo-labels.

    PYTHONPATH=. python benchmarks/pseudo_labels.py --out pseudo.safetensors [--top 3] [--max-gflop 1000] [--seed 0]

The corpus's train-split fp32 shapes that the dataset does not hold (no test or validation network's
shape, so nothing scored is labelled) get the cost model's top configs (`costmodel.CostModel.rank`,
the model shipped beside the dataset) as targets, all equally good; the seq2seq then trains with every
default (`training.train`, early-stopped on the validation split, which stays measured). Score the
checkpoint with `kptune eval` and `benchmarks/gate_models.py`. Distillation of a ranker into the
translator: the cost model is ahead of the seq2seq alone on the H200 test split (RESULTS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from kptune import dataset as ds
from kptune.corpus import load_corpus
from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.neighbours import cost_model_path, lent_problems
from kptune.predict import checkpoint
from kptune.predict.costmodel import CostModel
from kptune.predict.models import ModelConfig
from kptune.predict.training import summary, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--top", type=int, default=3, help="the cost model's top configs, each a target")
    ap.add_argument("--max-gflop", type=float, default=1000.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = ds.load(args.dataset)
    family, device = get_family(data.meta["family"]), DeviceInfo(**data.meta["device_limits"])
    lent = lent_problems(data)
    cost = CostModel.load(cost_model_path(args.dataset), lent, family.space, device, ds.content_hash(lent))
    held, pseudo, t0 = {p.key for p in data.problems}, [], time.perf_counter()
    for entry in load_corpus():
        key = entry.problem.key()
        if entry.split != "train" or entry.problem.dtype != "fp32" or key in held:
            continue
        if entry.problem.flops() > args.max_gflop * 1e9:
            continue
        blank = ds.DatasetProblem(key, "train", entry.networks, 0, 0, ())
        if top := cost.rank(blank, args.top):
            pseudo.append(dataclasses.replace(blank, times=tuple((c, 1.0) for c in top)))
    print(f"{len(pseudo)} pseudo-labelled train shapes in {time.perf_counter() - t0:.0f} s", flush=True)
    cfg = ModelConfig(seed=args.seed)
    result = train(ds.Dataset(data.meta, data.problems + tuple(pseudo)), cfg, lambda s: print(s, flush=True))
    info = summary(result)
    print(json.dumps(info), flush=True)
    meta = {"family": data.meta["family"], "source_hash": data.meta["source_hash"], "device": data.meta["device"],
            "device_limits": data.meta["device_limits"], "dataset": str(args.dataset),
            "dataset_hash": ds.content_hash(data.problems), "training": info,
            "pseudo_labels": {"shapes": len(pseudo), "top": args.top, "max_gflop": args.max_gflop}}  # fmt: skip
    checkpoint.save(args.out, result.model, cfg, result.vocab, meta)


if __name__ == "__main__":
    main()
