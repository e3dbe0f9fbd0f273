"""Exhaustive tuning of one conv problem on each given device: wall time, configs/s, best config.

    python benchmarks/tune_conv.py --device cupy:0 --device opencl:0:0 --out results/

Each device tunes into its own fresh perf db under --out (cold compile cache unless
KPTUNE_CACHE_DIR says otherwise); prints a markdown table and writes tune_conv.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from kptune.backends import resolve_device
from kptune.measurement import TimingSettings
from kptune.problem import Conv2dProblem
from kptune.progress import TuneProgress
from kptune.tune import tune

DEFAULT_SHAPE = "n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default=DEFAULT_SHAPE)
    ap.add_argument("--device", action="append", required=True, help="repeat for several devices")
    ap.add_argument("--kernel", default="conv2d_fwd")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    problem = Conv2dProblem.parse(args.shape)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    for spec in args.device:
        device = resolve_device(spec)
        db = args.out / f"tune_conv_{spec.replace(':', '_')}.db"
        db.unlink(missing_ok=True)
        with TuneProgress(problem, label=spec) as progress:
            result = tune(problem, kernel=args.kernel, device=device, db=db, settings=TimingSettings(),
                          jobs=args.jobs, progress=progress)  # fmt: skip
        row = result.to_json()
        row.update(device_driver=device.driver, compiler=device.compiler, commit=commit,
                   date=datetime.date.today().isoformat())  # fmt: skip
        rows.append(row)
    (args.out / "tune_conv.json").write_text(json.dumps(rows, indent=2))
    print(f"\nproblem {problem.key()}\n")
    print("| device | backend | configs | outcomes | wall s | configs/s | best config | best ms | TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        best = r["best"] or {}
        outcomes = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items())
        print(f"| {r['device_name']} | {r['device']} | {r['candidates']} | {outcomes} | {r['wall_s']:.1f} "
              f"| {r['configs_per_s']:.2f} | {best.get('key')} | {best.get('time_ms', 0):.4f} "
              f"| {best.get('tflops', 0):.2f} |")  # fmt: skip
    print("\nwhere the wall time went (s):")
    for r in rows:
        print(f"  {r['device']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["phases_s"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
