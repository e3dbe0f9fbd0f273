"""How far do two recording sessions on one device disagree? A perf db of another session against the dataset.

    python benchmarks/session_noise.py --db results/2026-11-22-h200x4-compare-test-12.db.xz --out results/

`timing_repeatability.py` times configs again on the device; this reads what was already timed twice: a perf db
(`--db`, gzipped or not: a campaign's, a `kptune compare` run's) whose exhaustive times of some problems were
recorded in another session than the dataset's times of them. Only pairs of the same device and kernel source
count (the db's device key and kernel source hash must be the dataset's), and a pair with the very same time is
one measurement copied into the dataset, not two sessions: left out, and counted. Over every other (problem,
config) held by both, and over each problem's `--top` recorded fastest:
- the log ratio of the two times: its median, its spread as a standard deviation (which spikes inflate) and
  robustly (1.4826 x the median absolute deviation), each over sqrt(2), the sigma of one time;
- the share of pairs more than 10% apart (spikes: a time recorded far too slow in one session);
- `timing_repeatability.noise_bound` at the robust sigma: the top-5 hit a predictor of the true order would
  reach on the dataset's fp32 test problems.
Writes session_noise.json under --out.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import exhaustive_times, open_db, provenance, write_json
from timing_repeatability import noise_bound

#: a pair further apart than this (in log ratio, ~10%) is a spike
SPIKE = math.log(1.1)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True, help="a perf db of another session (.db or .db.gz)")
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    from kptune import dataset as ds
    from kptune.errors import DatabaseError

    try:
        data = ds.load(args.dataset)
        with open_db(args.db) as db:
            recorded = exhaustive_times(db, data.meta["device"], data.meta["family"], data.meta["source_hash"])
    except (ds.DatasetError, DatabaseError, OSError) as exc:
        print(f"session_noise: {exc}", file=sys.stderr)
        return 2
    held = {p.key: p for p in data.problems}
    pairs: list[float] = []
    top: list[float] = []
    problems = []
    same = 0  # pairs with the very same time: one measurement, in the db and copied into the dataset
    for key, times in sorted(recorded.items()):
        if key not in held:
            continue
        ours = dict(held[key].times)
        both = {c: t for c, t in times.items() if c in ours}
        shared = {c for c, t in both.items() if t == ours[c]}
        same += len(shared)
        logs = [math.log(t / ours[c]) for c, t in both.items() if c not in shared]
        firsts = [math.log(times[c] / t) for c, t in held[key].times[: args.top] if c in times and c not in shared]
        if logs:
            pairs += logs
            top += firsts
            problems.append({"problem": key, "split": held[key].split, "pairs": len(logs), **_spread(logs)})
    if not pairs:
        print(f"session_noise: {args.db} holds no time of a dataset problem on {data.meta['device']} from another "
              f"session ({same} of the very same measurement)", file=sys.stderr)  # fmt: skip
        return 2
    test = [[t for _, t in p.times] for p in data.split("test") if "dtype=fp32," in p.key]
    doc: dict[str, Any] = {"benchmark": "session_noise", **provenance(), "db": str(args.db),
                           "dataset": str(args.dataset), "device": data.meta["device"], "top": args.top,
                           "same_measurement": same, "all": _spread(pairs),
                           f"top{args.top}": _spread(top)}  # fmt: skip
    for name in ("all", f"top{args.top}"):
        doc[name]["noise_bound"] = noise_bound(test, doc[name]["sigma_robust"])
    doc["problems"] = problems
    for name in ("all", f"top{args.top}"):
        s = doc[name]
        print(f"{name}: {s['pairs']} pairs ({same} more of one measurement left out) over {len(problems)} problems, "
              f"median log ratio {s['median']:+.4f}, "
              f"sigma of one time {s['sigma_robust']:.4f} robust, {s['sigma_sd']:.4f} as sd; "
              f"{s['spikes']:.1%} > 10% apart; top-5 hit it allows {s['noise_bound']['top5_hit']:.1%}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "session_noise.json", doc)
    return 0


def _spread(logs: Sequence[float]) -> dict[str, Any]:
    x = np.asarray(logs)
    median = float(np.median(x))
    return {"pairs": len(x), "median": round(median, 5),
            "sigma_robust": round(float(1.4826 * np.median(np.abs(x - median)) / math.sqrt(2)), 5),
            "sigma_sd": round(float(x.std() / math.sqrt(2)), 5),
            "spikes": round(float(np.mean(np.abs(x) > SPIKE)), 4)}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
