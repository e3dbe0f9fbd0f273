"""Autotune alone, in a fresh process, on the problems of an earlier `compare_gpus.py` run.

    python benchmarks/autotune_time.py --rows results/2026-12-03-h200-compare_gpus-default25.json --out /tmp/at

`compare_gpus.py` measures both paths through one warm worker, so by a problem's turn its
candidates' modules were mostly loaded already by the earlier problems' exhaustive searches. Here
autotune runs alone (its candidates compiled into the cache first, on all cores, as a service's
cache would hold them; each module still loaded by the worker on first use), its time set against
the earlier run's exhaustive time and optimum for the same problems (another process, maybe another
machine of the same kind: the ratio carries that run-to-run noise). Writes autotune_time.json and
one row per problem to autotune_time.jsonl as it goes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common import geomean, provenance, write_json

from kptune.neighbours import COVER, NEIGHBOURS


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=Path, required=True, help="a compare_gpus.json whose problems to autotune")
    ap.add_argument("--neighbours", type=int, default=NEIGHBOURS)
    ap.add_argument("--cover", type=int, default=COVER)
    ap.add_argument("--target-ms", type=float, default=2.0, help="as the earlier run (its settings)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    from kptune.autotune import autotune, candidates, model_for
    from kptune.backends import resolve_device
    from kptune.errors import KptuneError
    from kptune.kernel import get_family
    from kptune.measurement import TimingSettings
    from kptune.perfdb import PerfDB
    from kptune.problem import problem_from_key
    from kptune.runner import Runner, precompile

    try:
        earlier = json.loads(args.rows.read_text())["rows"]
        dev = resolve_device(args.device)
    except (OSError, ValueError, KeyError, KptuneError) as exc:
        print(f"autotune_time: {exc}", file=sys.stderr)
        return 2
    family = get_family("conv2d_fwd")
    model = model_for(dev, family)
    if model is None:
        print(f"autotune_time: no model for {dev.key}", file=sys.stderr)
        return 2
    settings = TimingSettings(target_ms=args.target_ms)
    problems = [problem_from_key(r["problem"]) for r in earlier]
    t0 = time.perf_counter()
    chosen = {p: candidates(p, dev, family, model, 5, args.neighbours, args.cover)[0] for p in problems}
    sets = [family.defines(p, c) for p in chosen for c in chosen[p]]
    defines = {json.dumps(d, sort_keys=True): d for d in sets}
    errors = precompile(family, dev, list(defines.values()), settings)
    setup_s = time.perf_counter() - t0
    print(f"candidates of {len(problems)} problems, {len(defines)} configs compiled ({len(errors)} errors) in "
          f"{setup_s:.1f} s", flush=True)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with PerfDB(args.out / "autotune_time.db") as db, Runner(family, dev, settings) as runner:
        for problem, before in zip(problems, earlier, strict=True):
            result = autotune(problem, device=dev, db=db, force=True, settings=settings, runner=runner,
                              neighbours=args.neighbours, cover=args.cover)  # fmt: skip
            best = result.best.time_ms if result.best is not None and result.best.time_ms else None
            row = {"problem": before["problem"], "autotune_s": result.wall_s, "predict_ms": result.predict_ms,
                   "measured": len(result.measured), "best_ms": best,
                   "earlier_exhaustive_s": before["exhaustive_s"], "earlier_optimum_ms": before["optimum_ms"],
                   "earlier_autotune_s": before["model_s"], "earlier_predict_ms": before["predict_ms"],
                   "speedup": before["exhaustive_s"] / result.wall_s,
                   "ratio": before["optimum_ms"] / best if best else None}  # fmt: skip
            rows.append(row)
            with open(args.out / "autotune_time.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{result.wall_s:.3f} s (earlier {before['model_s']:.3f}), predict {result.predict_ms:.0f} ms, "
                  f"{row['speedup']:.1f}x, ratio {row['ratio']}", flush=True)  # fmt: skip
    rest = rows[1:]  # the first problem of a process loads the model, dataset and device
    summary = {"problems": len(rows), "median_speedup_after_first": statistics.median(r["speedup"] for r in rest),
               "median_autotune_s_after_first": statistics.median(r["autotune_s"] for r in rest),
               "median_predict_ms_after_first": statistics.median(r["predict_ms"] for r in rest),
               "geomean_ratio_to_earlier_optimum": geomean(r["ratio"] for r in rows)}  # fmt: skip
    print("summary:", json.dumps(summary))
    doc = {"benchmark": "autotune_time", **provenance(), "earlier": str(args.rows), "neighbours": args.neighbours,
           "cover": args.cover, "setup_s": setup_s, "summary": summary, "rows": rows}  # fmt: skip
    write_json(args.out / "autotune_time.json", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
