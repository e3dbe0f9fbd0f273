"""What a device without a model of its own reaches, scored on a `kptune compare` run's exhaustive times.

    python benchmarks/borrowed_offline.py --compare results/DIR   # DIR: compare_gpus.py's --out

For each problem the run compared (its merged perf db, `compare.db.gz`, or `.xz` as archived in `results/`,
holds every valid config's time from the exhaustive pass, `source=exhaustive`), three candidate sets are scored
against the optimum, all on those same times, so they compare alike (`kptune compare`'s own ratio times
autotune's candidates in their own pass):
- `random`: the random search autotune falls back to where no model serves the device, its default
  `--budget` drawn as it draws them (`strategies.random_sample`, the timing settings' seed);
- `model top 1`, `model top k`: the first and the top k of the model autotune finds for the device (its
  own, or one it borrows: `DeviceInfo.may_borrow`), by the constrained beam (`kptune predict`), alone;
- `reranked top 1`, `reranked top k`: the same by `kptune predict --rerank` (the reranker beside the
  dataset the device's model came with);
- `reranked, the cost model's last`: the reranked top k with its last place given to the cost model's first pick
  not above it (the ranker autotune lends its configs by), where the device's dataset has a cost model;
- `autotune's candidates`: autotune's default candidates (`autotune.candidates`: the model's k and the configs
  the tuned shapes lend);
- `autotune`: those and `--local` more by autotune's local search around the fastest (`kptune.local_search`),
  its rounds run on these exhaustive times: what autotune measures by default (the run itself measured them
  with its own times, so its local search may have taken other steps).
With --recorded DATASET, the model's five sets are also scored on the dataset's recorded times of the
problems it holds (e.g. the H200's, for problems an H100 compared), beside this run's times of the same problems.
With --model, another checkpoint stands in for the device's model (e.g. the CPU's on a GPU's times: what a
device gets from a model made for a very different one, `DeviceInfo.may_borrow`).
Prints the geomean ratio, the share >= 0.99 and >= 0.95, how many hold the fastest config (issue 5's top-k hit)
and the worst of each, and writes
borrowed_offline.json under --out (default: --compare).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from common import exhaustive_times, open_db, positive_int, provenance, ratio_summary, write_json

#: the candidate sets scored, in the order printed
SETS = (
    "random",
    "model top 1",
    "model top k",
    "reranked top 1",
    "reranked top k",
    "reranked, the cost model's last",
    "autotune's candidates",
    "autotune",
)
#: the sets of the model alone, which --recorded also scores on a dataset's times
MODEL_SETS = SETS[1:6]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", type=Path, required=True, help="compare_gpus.py's --out (its JSON and db)")
    ap.add_argument("-k", type=positive_int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--model",
        type=Path,
        default=None,
        help="score this checkpoint in place of the model autotune finds (e.g. another device's)",
    )
    ap.add_argument("--local", type=int, default=None, help="autotune's local search (default: autotune's, LOCAL)")
    ap.add_argument("--recorded", type=Path, default=None,
                    help="a dataset: also score the model's sets on its times of the problems it holds")  # fmt: skip
    args = ap.parse_args(argv)
    from kptune import dataset as ds
    from kptune import local_search
    from kptune.autotune import FALLBACK_BUDGET, candidates, model_for
    from kptune.errors import KptuneError
    from kptune.kernel import get_family
    from kptune.measurement import TimingSettings
    from kptune.neighbours import lender_for
    from kptune.predict.api import load_predictor, predict
    from kptune.problem import problem_from_key
    from kptune.strategies import random_sample

    try:
        run = json.loads((args.compare / "compare_gpus.json").read_text())
        packed = [args.compare / f"compare.db.{ext}" for ext in ("gz", "xz")]
        with open_db(next((p for p in packed if p.exists()), packed[0])) as db:
            times = exhaustive_times(db)
            device = db.device_info(db.find_device(None)[0])
    except (KptuneError, OSError, ValueError) as exc:
        print(f"borrowed_offline: {args.compare} holds no compare run to read: {exc}", file=sys.stderr)
        return 2
    family = get_family("conv2d_fwd")
    model = args.model or model_for(device, family, None)
    if model is None:
        print(f"borrowed_offline: no model serves {device.key}, nor one it may borrow", file=sys.stderr)
        return 2
    try:
        recorded = {p.key: p.times for p in ds.load(args.recorded).problems} if args.recorded else {}
    except KptuneError as exc:
        print(f"borrowed_offline: {exc}", file=sys.stderr)
        return 2
    seed = TimingSettings().seed
    pred = load_predictor(model)
    local = local_search.LOCAL if args.local is None else args.local
    lender = lender_for(device, family)
    cost = lender if lender is not None and lender.cost_model is not None else None
    rows = []
    for row in run["rows"]:
        problem = problem_from_key(row["problem"])
        measured = times.get(row["problem"], {})
        if not measured:
            continue
        best = min(measured.values())
        valid = family.space.configs(problem, device)  # type: ignore[arg-type]
        try:
            top, _ = predict(problem, args.k, model, device=device)  # type: ignore[arg-type]
            lent, _ = candidates(problem, device, family, model, args.k)  # type: ignore[arg-type]
        except KptuneError as exc:
            print(f"borrowed_offline: {row['problem']}: {exc}", file=sys.stderr)
            return 2

        timed = local_search.recorded(measured)
        searched = local_search.guided(timed(lent), local, timed, family.space, problem, device, pred.model,  # type: ignore[arg-type]
                                       pred.vocab)  # fmt: skip
        sets = {"random": random_sample(valid, FALLBACK_BUDGET, seed), "model top 1": [top[0].config],
                "model top k": [c.config for c in top], "autotune's candidates": lent,
                "autotune": list(searched)}  # fmt: skip
        try:
            reranked, _ = predict(problem, args.k, model, device=device, rerank=True)  # type: ignore[arg-type]
            sets |= {"reranked top 1": [reranked[0].config], "reranked top k": [c.config for c in reranked]}
            if cost is not None:
                above = [c.config for c in reranked[: args.k - 1]]
                sets["reranked, the cost model's last"] = above + cost.complete(problem, above, 1, cover=0)
        except KptuneError:  # no reranker beside the device's dataset (PoCL's): those three are left out
            pass
        rows.append({"problem": row["problem"], "networks": row.get("networks", []), "configs": len(measured),
                     **{name: best / min((measured.get(c.key(), math.inf) for c in cs), default=math.inf)
                        for name, cs in sets.items()},
                     "sizes": {name: len(cs) for name, cs in sets.items()}})  # fmt: skip
        if row["problem"] in recorded:  # a config outside the stored fastest counts as the slowest stored
            stored = dict(recorded[row["problem"]])
            slowest, fastest = max(stored.values()), min(stored.values())
            rows[-1]["recorded"] = {name: fastest / min(stored.get(c.key(), slowest) for c in sets[name])
                                    for name in MODEL_SETS if name in sets}  # fmt: skip
    summary = {name: ratio_summary([r[name] for r in rows if name in r]) for name in SETS}
    both = [r for r in rows if "recorded" in r]
    on_recorded = {name: {"compared": ratio_summary([r[name] for r in both if name in r["recorded"]]),
                          "recorded": ratio_summary([r["recorded"][name] for r in both if name in r["recorded"]])}
                   for name in MODEL_SETS}  # fmt: skip
    for name, s in summary.items():
        if not s["n"]:
            continue
        print(f"{name}: geomean {s['geomean']:.4f}, >= 0.99 {s['ge_0.99']}/{s['n']}, >= 0.95 {s['ge_0.95']}/{s['n']}, "
              f"the fastest {s['hit']}/{s['n']}, min {s['min']:.3f}")  # fmt: skip
    for name, s in on_recorded.items() if both else ():
        a, b = s["compared"], s["recorded"]
        if a["n"]:
            print(f"{name}, the {a['n']} the dataset holds: geomean {a['geomean']:.4f} here, {b['geomean']:.4f} on its "
                  f"times; the fastest {a['hit']}/{a['n']} here, {b['hit']}/{b['n']} there")  # fmt: skip
    doc = {"benchmark": "borrowed_offline", **provenance(), "compare": str(args.compare), "device": device.key,
           "model": str(model), "k": args.k, "random_budget": FALLBACK_BUDGET, "summary": summary,
           "recorded": str(args.recorded) if args.recorded else None, "on_recorded": on_recorded,
           "rows": rows}  # fmt: skip
    out = args.out or args.compare
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "borrowed_offline.json", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
