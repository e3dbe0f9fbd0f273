"""The dataset's batch inversions timed again at both batches: faults of the recording, or a kernel effect?

    python benchmarks/batch_inversions.py --problems 3 --per-problem 300 --out results/

A batch inversion (`kptune.recheck.batch_inversions`) is a config recorded more than 1.25x slower on a
problem than on the same problem at twice the batch, which cannot take longer but by noise if every
algorithm tiles the batch into blocks of the same work. For the `--problems` problems of the dataset with
the most, up to `--per-problem` of their inverted configs (evenly spaced by key), with each problem's
recorded winner, are timed in full (no early stop, as `kptune db recheck` times) at the batch and at twice
it, one after the other, on this machine's device. Reports per problem the median time at n over 2n as
recorded and as timed now, how many are still inverted now, and the median of now over recorded at n.
On the dataset's own device this says which recorded times were faults; on another device of the same
architecture (reported as `same_device: false`), whether the kernels themselves are slower at the smaller
batch. Writes batch_inversions.json under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import add_full_timing_options, provenance, spread, time_again, write_json


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--device", default=None, help="cupy:N or opencl:P:D (default: the first GPU, else OpenCL)")
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--per-problem", type=int, default=300)
    add_full_timing_options(ap)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)

    from kptune import dataset as ds
    from kptune.backends import resolve_device
    from kptune.perfdb import PerfDB
    from kptune.problem import problem_from_key
    from kptune.recheck import batch_inversions

    data = ds.load(args.dataset)
    device = resolve_device(args.device)
    recorded = {p.key: dict(p.times) for p in data.problems}
    found = batch_inversions([(p.key, list(p.times)) for p in data.problems])
    worst = sorted(found, key=lambda key: -len(found[key]))[: args.problems]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, PerfDB(Path(tmp) / "inversions.db") as db:
        for key in worst:
            half = problem_from_key(key)
            twin = dataclasses.replace(half, n=2 * half.n)  # type: ignore[attr-defined, call-arg]
            twin_key = twin.key()
            winner = next(iter(recorded[key]))
            chosen = [winner, *spread(sorted(c for c in found[key] if c != winner), args.per_problem)]
            now = {p.key(): time_again(p, chosen, device, db, args.target_ms, args.max_runs) for p in (half, twin)}
            both = [c for c in chosen[1:] if c in now[key] and c in now[twin_key]]
            again = batch_inversions([(k, list(now[k].items())) for k in (key, twin_key)]).get(key, {})
            inverted_now = [c for c in both if c in again]
            row = {
                "problem": key, "inverted_recorded": len(found[key]), "timed": len(both),
                "median_n_over_2n_recorded": _median([recorded[key][c] / recorded[twin_key][c] for c in both]),
                "median_n_over_2n_now": _median([now[key][c] / now[twin_key][c] for c in both]),
                "still_inverted_now": len(inverted_now),
                "median_now_over_recorded_at_n": _median([now[key][c] / recorded[key][c] for c in both]),
                "median_now_over_recorded_at_2n": _median([now[twin_key][c] / recorded[twin_key][c] for c in both]),
                "winner_now_over_recorded_at_n": round(now[key].get(winner, math.nan) / recorded[key][winner], 4),
            }  # fmt: skip
            print(row, flush=True)
            rows.append(row)
    doc = {"benchmark": "batch_inversions", **provenance(), "dataset": str(args.dataset), "device": device.key,
           "recorded_on": data.meta["device"], "same_device": device.key == data.meta["device"],
           "settings": {"target_ms": args.target_ms, "max_runs": args.max_runs}, "problems": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "batch_inversions.json", doc)
    return 0


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


if __name__ == "__main__":
    from kptune.errors import KptuneError

    try:
        sys.exit(main())
    except KptuneError as exc:
        print(f"batch_inversions.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
