"""A model's top-k, measured live, against the best of the random sample it was trained beside.

    python benchmarks/model_vs_sample.py --db pocl.db --model kptune/data/model-pocl-cpu.safetensors \
        --dataset kptune/data/dataset-pocl-cpu.db.gz --split test validation --out results/

For a model trained on a sampled dataset (`kptune dataset build --sampled N`), offline scores
mean little: its picks are mostly configs the sample never measured. So, for each problem of the
given splits, this autotunes the problem with the model on this machine's device (`kptune.autotune`,
force: the model's top-k compiled, verified and timed, stored with source=model in a copy of the
db) and compares the fastest of them with the fastest of the sample (source=random) already in the
db: ratio = sample best / model best (> 1: the model's k configs beat the N random ones).
Prints one line per problem and the geometric mean; writes model_vs_sample.json under --out.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from common import geomean, positive_int, provenance, write_json

from kptune.errors import KptuneError


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, required=True, help="perf db holding the random samples (copied, not written)")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, required=True, help="the sampled dataset the model was trained on")
    ap.add_argument("--split", nargs="+", default=["test"])
    ap.add_argument("--device", default=None, help="device spec (default: the first GPU, else OpenCL)")
    ap.add_argument("-k", type=positive_int, default=5)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    from kptune import dataset
    from kptune.autotune import autotune
    from kptune.backends import resolve_device
    from kptune.kernel import get_family
    from kptune.perfdb import PerfDB
    from kptune.problem import problem_from_key

    try:
        data = dataset.load(args.dataset)
        device = resolve_device(args.device)
    except KptuneError as exc:
        print(f"model_vs_sample: {exc}", file=sys.stderr)
        return 2
    family = get_family("conv2d_fwd")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "perf.db"
        shutil.copyfile(args.db, copy)
        with PerfDB(copy) as db:
            did, kid = db.device_id(device), db.kernel_id(family.name, family.source_hash, family.space.names)
            for p in (p for split in args.split for p in data.split(split)):
                problem = problem_from_key(p.key)
                pid = db.problem_id(problem)
                sample_ms = db.best_ms_of_source(pid, did, kid, "random")
                result = autotune(problem, device=device, db=db, model=args.model, k=args.k, force=True)
                model_ms = db.best_ms_of_source(pid, did, kid, "model")
                ratio = sample_ms / model_ms if sample_ms and model_ms else None
                rows.append({"problem": p.key, "split": p.split, "sampled": p.ok_configs, "sample_best_ms": sample_ms,
                             "model_best_ms": model_ms, "ratio": ratio,
                             "model_outcomes": [str(m.outcome) for m in result.measured]})  # fmt: skip
                print(f"{p.split:10} {p.key.split(':', 1)[1][:60]:60} sample {sample_ms} ms, model {model_ms} ms, "
                      f"ratio {ratio}")  # fmt: skip
    ratios = [r["ratio"] for r in rows]
    summary = {"problems": len(rows), "k": args.k, "ratio_geomean": geomean(ratios),
               "model_at_least_as_fast": sum(1 for r in ratios if r is not None and r >= 1.0)}  # fmt: skip
    print(f"\n{summary['problems']} problems: sample best / model best (k={args.k}) geomean "
          f"{summary['ratio_geomean']}, model at least as fast on {summary['model_at_least_as_fast']}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "model_vs_sample.json", {"benchmark": "model_vs_sample", **provenance(),
               "device": device.key, "model": str(args.model), "dataset": str(args.dataset), "splits": args.split,
               "summary": summary, "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
