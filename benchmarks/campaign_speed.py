"""Campaign throughput: the same shapes tuned exhaustively on 1 GPU, then on N GPUs, in one run.

    python benchmarks/campaign_speed.py --shapes 24 --gpus 1 4 --out results/
    python benchmarks/campaign_speed.py --shapes 6 --gpus 1 2 --device opencl:0:0 --out /tmp/s   # PoCL, CI-sized

Shapes: `--shapes N` evenly spaced rows of the shipped corpus (every split, every batch,
so sizes spread from batch 1 to 256), in each --dtype. Each run is a fresh perf db, so
both tune the same shapes from nothing; the compile pass (done once per config and
device on all cores) is timed apart, and the first run leaves the compile cache warm for
the next, so "measure" seconds compare measuring alone. Reported per run: shapes per
GPU-minute, configs per second, the median seconds per shape (one worker's wall time on
a shape, every valid config verified and timed), the speed-up over the first run, and where
the worker seconds went (cache loads, verification, timed launches and their device time).
Writes campaign_speed.json under --out; keeps each run's db there (--keep-db) for the dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import provenance, spread, write_json

from kptune.backends import campaign_devices
from kptune.campaign import campaign
from kptune.corpus import load_corpus
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.measurement import TimingSettings
from kptune.problem import Conv2dProblem


def pick_problems(n: int, dtypes: Sequence[str]) -> list[Conv2dProblem]:
    problems = [e.problem for e in spread(load_corpus(), n)]
    return [dataclasses.replace(p, dtype=d) for p in problems for d in dtypes]


def speedups(runs: list[dict[str, Any]]) -> float:
    """Set each run's speed-up over the run with the fewest workers so far (runs may come in any order)."""
    base = min(runs, key=lambda r: r["workers"])["measure_s"]
    for run in runs:
        run["speedup"] = round(base / run["measure_s"], 3) if run["measure_s"] else None
    return float(base)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", type=int, default=24, help="corpus rows, evenly spaced")
    ap.add_argument("--dtype", nargs="+", default=["fp32"])
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 4], help="worker counts to compare, in order")
    ap.add_argument("--device", nargs="*", default=None, help="devices (default: every GPU); with one, "
                    "the worker counts are slots on it")  # fmt: skip
    ap.add_argument("--chunk", type=int, default=512, help="configs per hand-out, so workers share shapes")
    ap.add_argument("--target-ms", type=float, default=TimingSettings().target_ms)
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--keep-db", action="store_true", help="keep each run's perf db under --out")
    args = ap.parse_args(argv)
    try:
        devices = campaign_devices(args.device or ())
        problems = pick_problems(args.shapes, args.dtype)
        family = get_family("conv2d_fwd")
    except KptuneError as exc:
        print(f"campaign_speed: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    settings = TimingSettings(target_ms=args.target_ms)
    doc: dict[str, Any] = {"benchmark": "campaign_speed", **provenance(), "device": devices[0].name,
                           "devices": [d.spec for d in devices], "problems": [p.key() for p in problems],
                           "settings": dataclasses.asdict(settings), "runs": []}  # fmt: skip
    base: float | None = None
    for workers in args.gpus:
        use = devices[:workers] if len(devices) >= workers else devices
        db = args.out / f"campaign-{workers}.db"
        db.unlink(missing_ok=True)
        result = campaign(
            problems, family, devices=use, workers=workers, db=db, settings=settings, chunk=args.chunk, overlap=False
        )  # the compile pass first, timed apart: "measure" is measuring alone
        run = {k: v for k, v in result.to_json().items() if k != "per_problem"}
        run["per_problem_s"] = {p.problem: round(p.seconds, 3) for p in result.problems}
        doc["runs"].append(run)
        base = speedups(doc["runs"])
        write_json(args.out / "campaign_speed.json", doc)
        print(f"{workers} worker(s) on {', '.join(d.spec for d in use)}: {len(problems)} shapes, "
              f"{result.measured} configs in {result.measure_s:.1f} s (compile pass {result.compile_s:.1f} s, "
              f"{result.compiled} configs): {result.configs_per_s:.1f} configs/s, "
              f"{result.shapes_per_gpu_minute:.2f} shapes per GPU-minute, median shape "
              f"{result.median_problem_s or 0:.2f} s, speed-up {run['speedup']} (over {base:.1f} s); worker seconds: "
              + ", ".join(f"{k} {v:.1f}" for k, v in result.phases_s.items()), flush=True)  # fmt: skip
        if not args.keep_db:
            db.unlink(missing_ok=True)
    print(f"wrote {args.out / 'campaign_speed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
