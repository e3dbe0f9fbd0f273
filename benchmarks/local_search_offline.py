"""After autotune's candidates: a local search around the fastest, or more of what the tuned shapes lend?

    PYTHONPATH=. python benchmarks/local_search_offline.py --dataset kptune/data/dataset-h200.db.gz --out results/
    PYTHONPATH=. python benchmarks/local_search_offline.py --compare results/compare.db.gz --out results/
    PYTHONPATH=. python benchmarks/local_search_offline.py --dataset D.db.gz --split train validation test --more 10

Scored offline on full tables: the dataset's fp32 test problems (a test problem keeps every config that
ran), or the exhaustive pass of a `kptune compare` run (its merged perf db). For each problem, autotune's
default candidates (`autotune.candidates`: the model's 5 and the cost model's 20, or whatever the device's
model and dataset give) are "measured" by reading their times, then N more configs, two ways:
- `local N`: Kernel Tuner's greedy local search, seeded by the model (`kptune.local_search`, what autotune
  runs after its candidates with `--local N`): in rounds of ROUND, the fastest
  measured config not yet searched from lends its valid neighbours (one parameter one step along its
  values, or two parameters one step each) not yet measured, the ROUND the model finds likeliest
  (`blend.sequence_log_probs`); a round's configs are measured together, as autotune compiles in parallel;
- `lent N`: the N next of the cost model's picks (`neighbours=20+N`): what autotune measures at that budget.
A config that never ran counts as no time. `--split`: the dataset's problems of these splits; outside the test
split a dataset keeps only each problem's fastest configs, and the rest count as its slowest stored. Prints each
set's geomean ratio t_best / best measured, the share >= 0.99 and the worst, and writes local_search_offline.json
under --out.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from common import exhaustive_times, open_db, provenance, ratio_summary, write_json


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="a dataset file: its fp32 test problems")
    source.add_argument("--compare", type=Path, help="a compare run's perf db (.db or .db.gz): its exhaustive times")
    ap.add_argument("--split", nargs="+", default=["test"], help="with --dataset: its fp32 problems of these splits")
    ap.add_argument("--more", type=int, nargs="+", default=[5, 10, 15], help="configs measured after autotune's")
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    from kptune import dataset as ds
    from kptune.autotune import candidates, model_for
    from kptune.device import DeviceInfo
    from kptune.errors import KptuneError
    from kptune.kernel import get_family
    from kptune.local_search import ROUND, guided, recorded
    from kptune.neighbours import NEIGHBOURS
    from kptune.predict.api import load_predictor
    from kptune.problem import Conv2dProblem, problem_from_key

    family = get_family("conv2d_fwd")
    try:
        if args.dataset is not None:
            data = ds.load(args.dataset)
            device = DeviceInfo(**data.meta["device_limits"])
            chosen = [p for s in args.split for p in data.split(s) if ",dtype=fp32," in p.key]
            tables = {p.key: dict(p.times) for p in chosen}
            # outside the test split only a problem's fastest are stored: the rest count as its slowest stored
            unstored = {p.key: math.inf if p.split == "test" else max(t for _, t in p.times) for p in chosen}
        else:
            with open_db(args.compare) as db:
                tables = exhaustive_times(db)
                device = db.device_info(db.find_device(None)[0])
            unstored = dict.fromkeys(tables, math.inf)
        model = model_for(device, family)
        if model is None:
            raise KptuneError(f"no model serves {device.key}, nor one it may borrow")
        pred = load_predictor(model)
    except (KptuneError, OSError, ValueError) as exc:
        print(f"local_search_offline: {exc}", file=sys.stderr)
        return 2
    names = ["autotune", *(f"{how} {n}" for n in args.more for how in ("local", "lent"))]
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for key, times in tables.items():
        problem = problem_from_key(key)
        assert isinstance(problem, Conv2dProblem)
        best = min(times.values())
        start = candidates(problem, device, family, model)[0]
        missing = unstored[key]
        measure = recorded(times, missing)
        timed = measure(start)

        ratios["autotune"].append(best / min(timed.values()))
        for n in args.more:
            found = guided(timed, n, measure, family.space, problem, device, pred.model, pred.vocab)
            ratios[f"local {n}"].append(best / min(found.values()))
            lent = [c.key() for c in candidates(problem, device, family, model, neighbours=NEIGHBOURS + n)[0]]
            ratios[f"lent {n}"].append(best / min(times.get(c, missing) for c in lent))
    summary = {name: ratio_summary(rs) for name, rs in ratios.items()}
    for name, s in summary.items():
        print(f"{name}: geomean {s['geomean']:.4f}, >= 0.99 {s['ge_0.99']}/{s['n']}, min {s['min']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "local_search_offline.json", {
        "benchmark": "local_search_offline", **provenance(), "source": str(args.dataset or args.compare),
        "device": device.key, "model": str(model), "round": ROUND, "summary": summary,
        "rows": [{"problem": key, **{name: rs[i] for name, rs in ratios.items()}}
                 for i, key in enumerate(tables)]})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
