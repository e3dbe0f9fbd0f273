"""Choose the predictor's training setting by cross-validation on the train split, never the test split.

    PYTHONPATH=. python benchmarks/model_cv.py --dataset kptune/data/dataset-h200.db.gz \
        --folds 4 --epochs-at 20 40 80 120 --seeds 0 --out results/
    python benchmarks/model_cv.py --merge a/model_cv.json b/model_cv.json --out results/

The pool is the train split plus the validation split (its 2 problems are too few to stop on).
Problems are grouped by their set of networks (a problem's fp16 twin has the same set, so a
shape never sits on both sides of a fold); the groups go, largest first, to the fold with the
fewest problems. Each candidate setting is trained for a fixed number of epochs
(`early_stop=False`) on all folds but one, and scored on the held-out fold after each epoch
count of --epochs-at, in one run: top-1 and top-k ratio geomean of the constrained beam (the
`kptune eval` metric, `evaluation.scores`), pooled over every held-out problem.

Train problems carry only their 32 fastest configs. A pick outside them is given the 32nd time,
the slowest the dataset knows: `evaluation.scores`' own rule for a config without a time. Its
true time is at least that, so the ratios are upper bounds (the 32nd time is ~0.85 of the best);
"in_top32" (the share of top-1 picks with a known time) says how often the bound was needed.
The baselines of `kptune eval` are scored on the same folds. Writes model_cv.json under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import geomean, positive_int, provenance, write_json

#: name -> ModelConfig fields changed from the defaults; a small grid (each costs folds x seeds trainings)
CANDIDATES: dict[str, dict[str, Any]] = {
    "default": {},
    "hidden64": {"embed": 32, "hidden": 64},
    "hidden256": {"embed": 128, "hidden": 256},
    "dropout0.3": {"dropout": 0.3},
    "targets1": {"targets_within": 1.0, "max_targets": 1},
    "targets1.10x16": {"targets_within": 1.10, "max_targets": 16},
    "transformer": {"arch": "transformer"},
}


def network_folds(problems: Sequence[Any], folds: int) -> list[list[int]]:
    """Indices of `problems` per fold: whole network groups, largest first, each to the smallest fold."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, p in enumerate(problems):
        groups.setdefault(tuple(sorted(p.networks)) or ("?",), []).append(i)
    out: list[list[int]] = [[] for _ in range(folds)]
    for _, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        min(out, key=len).extend(members)
    return out


def fold_scores(held: Sequence[Any], rank: Any, k: int) -> dict[str, Any]:
    """`evaluation.scores` of `rank` on `held`, plus the share of top-1 picks among the known configs."""
    from kptune.predict import evaluation

    picks: dict[str, list[str]] = {}

    def recording(problem: Any, kk: int) -> list[str]:
        picks[problem.key] = rank(problem, kk)
        return picks[problem.key]

    s = evaluation.scores(held, recording, k)
    known = sum(bool(picks[p.key]) and picks[p.key][0] in dict(p.times) for p in held)
    return {"ratio1": s["ratio_top1_geomean"], f"ratio{k}": s[f"ratio_top{k}_geomean"],
            "exact": s["exact_match"], "in_top32": known / max(len(held), 1),
            "per_problem": picks}  # fmt: skip


def pooled(rows: Sequence[dict[str, Any]], k: int) -> dict[str, float | None]:
    """Geomean over every held-out problem of all folds: a fold's geomean counts once per problem of it,
    which gives the geomean of the per-problem ratios (the rows keep only the fold geomeans)."""
    n = sum(r["problems"] for r in rows)
    out: dict[str, float | None] = {}
    for key in ("ratio1", f"ratio{k}"):
        out[key] = geomean(r[key] for r in rows for _ in range(r["problems"]))
    out["in_top32"] = sum(r["in_top32"] * r["problems"] for r in rows) / max(n, 1)
    return out


def summarise(rows: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """One line per (setting, epochs): the pooled scores per seed, then their geomean over seeds; printed."""
    table = []
    for key in dict.fromkeys((r["setting"], r["epochs"]) for r in rows):
        mine = [r for r in rows if (r["setting"], r["epochs"]) == key]
        per_seed = [pooled([r for r in mine if r["seed"] == s], k) for s in dict.fromkeys(r["seed"] for r in mine)]
        table.append({"setting": key[0], "epochs": key[1], "seeds": len(per_seed),
                      "ratio1": geomean(p["ratio1"] for p in per_seed),
                      f"ratio{k}": geomean(p[f"ratio{k}"] for p in per_seed),
                      "ratio1_by_seed": [p["ratio1"] for p in per_seed],
                      f"ratio{k}_by_seed": [p[f"ratio{k}"] for p in per_seed],
                      "in_top32": sum(p["in_top32"] for p in per_seed) / len(per_seed)})  # fmt: skip
    print(f"\n{'setting':22} {'epochs':>6} {'seeds':>5} {'ratio1':>7} {f'ratio{k}':>7} {'sum':>6} {'in_top32':>8}")
    for t in table:
        print(f"{t['setting']:22} {t['epochs'] or '-':>6} {t['seeds']:>5} {t['ratio1']:7.3f} {t[f'ratio{k}']:7.3f} "
              f"{t['ratio1'] + t[f'ratio{k}']:6.3f} {t['in_top32']:8.2f}")  # fmt: skip
    return table


def merge(paths: Sequence[Path], out: Path) -> int:
    """Pool the rows of earlier runs (same dataset, folds and k; a row repeated, as the baselines are, once)."""
    docs = [json.loads(p.read_text()) for p in paths]
    if len({(d["dataset"], json.dumps(d["folds"]), d["k"], d["width"]) for d in docs}) != 1:
        print("model_cv: --merge: the runs differ in dataset, folds, k or width", file=sys.stderr)
        return 2
    rows = list({(r["setting"], r["seed"], r["epochs"], r["fold"]): r for d in docs for r in d["rows"]}.values())
    table = summarise(rows, docs[0]["k"])
    out.mkdir(parents=True, exist_ok=True)
    keep = ("dataset", "dataset_device", "pool", "folds", "k", "width", "out_of_top32")
    write_json(out / "model_cv.json", {"benchmark": "model_cv", **provenance(), **{k: docs[0][k] for k in keep},
               "merged_from": [{"file": str(p), "commit": d["commit"], "command": d["command"]}
                               for p, d in zip(paths, docs, strict=True)],
               "candidates": {n: c for d in docs for n, c in d["candidates"].items()},
               "table": table, "rows": rows})  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument(
        "--epochs-at",
        type=int,
        nargs="+",
        default=[20, 40, 80, 120],
        help="score each fold's model after these many epochs (one training to the largest)",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("-k", type=positive_int, default=5)
    ap.add_argument("--width", type=int, default=None, help="beam width (default: kptune eval's, beam.WIDTH)")
    ap.add_argument(
        "--spread",
        action="store_true",
        help="also score each model with its beam hedging over the split factor (as SETTING+spread)",
    )
    ap.add_argument("--no-validation", action="store_true", help="leave the validation split out of the pool")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--merge", type=Path, nargs="+", help="pool the model_cv.json of earlier runs; train nothing")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    import torch

    from kptune import dataset as ds
    from kptune.device import DeviceInfo
    from kptune.kernel import get_family
    from kptune.predict import evaluation
    from kptune.predict.beam import WIDTH, hedged_position
    from kptune.predict.models import ModelConfig
    from kptune.predict.training import train

    args.width = WIDTH if args.width is None else args.width

    torch.set_num_threads(args.threads)
    data = ds.load(args.dataset)
    family = get_family(data.meta["family"])
    device = DeviceInfo(**data.meta["device_limits"])
    pool = data.split("train") + ([] if args.no_validation else data.split("validation"))
    folds = network_folds(pool, args.folds)
    fold_docs = [{"problems": len(f), "networks": sorted({n for i in f for n in pool[i].networks})} for f in folds]
    for i, f in enumerate(fold_docs):
        print(f"fold {i}: {f['problems']} problems, networks {', '.join(f['networks'])}")
    k, marks = args.k, sorted(set(args.epochs_at))
    rows: list[dict[str, Any]] = []

    def splits(held: set[int]) -> ds.Dataset:
        problems = tuple(dataclasses.replace(p, split="heldout" if i in held else "train") for i, p in enumerate(pool))
        return ds.Dataset(data.meta, problems)

    for f, members in enumerate(folds):
        held, fit = [pool[i] for i in members], [p for i, p in enumerate(pool) if i not in set(members)]
        space = family.space
        for name, rank in (("nearest tuned shape", evaluation.nearest_shape(fit, space, device)),
                           ("most frequent winner", evaluation.most_frequent_winner(fit, space, device)),
                           ("tree per parameter", evaluation.tree_per_parameter(fit, space, device))):  # fmt: skip
            rows.append({"setting": name, "seed": None, "epochs": None, "fold": f, "problems": len(held),
                         **fold_scores(held, rank, k)})  # fmt: skip
    for name in args.candidates:
        for seed in args.seeds:
            cfg = dataclasses.replace(ModelConfig(), **CANDIDATES[name], epochs=max(marks), early_stop=False, seed=seed)
            for f, members in enumerate(folds):
                held = [pool[i] for i in members]
                t0 = time.perf_counter()

                def score(epoch: int, model: Any, vocab: Any, held: list[Any] = held, f: int = f, name: str = name,
                          seed: int = seed) -> None:  # fmt: skip
                    if epoch + 1 not in marks:
                        return
                    for suffix, spread in (("", None), *((("+spread", hedged_position(family.name, vocab)),)
                                                         if args.spread else ())):  # fmt: skip
                        rank = evaluation.model_ranker(model, vocab, family.space, device, "beam", args.width, spread)
                        rows.append({"setting": name + suffix, "seed": seed, "epochs": epoch + 1, "fold": f,
                                     "problems": len(held), **fold_scores(held, rank, k)})  # fmt: skip

                train(splits(set(members)), cfg, on_epoch=score)
                last = next(r for r in reversed(rows) if r["setting"] == name)
                print(f"{name} seed {seed} fold {f}: {time.perf_counter() - t0:.0f} s, at {last['epochs']} epochs "
                      f"ratio1 {last['ratio1']:.3f} ratio{k} {last[f'ratio{k}']:.3f}", flush=True)  # fmt: skip
    table = summarise(rows, k)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "model_cv.json", {"benchmark": "model_cv", **provenance(), "dataset": str(args.dataset),
               "dataset_device": data.meta["device"], "pool": len(pool), "folds": fold_docs, "k": k,
               "width": args.width, "epochs_at": marks, "seeds": args.seeds,
               "candidates": {n: CANDIDATES[n] for n in args.candidates},
               "out_of_top32": "scored as the 32nd time (evaluation.scores' rule): ratios are upper bounds",
               "table": table, "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
