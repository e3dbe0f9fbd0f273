"""Score checkpoints as `kptune retrain`'s gate does, on a dataset's test split, and say which would win.

    PYTHONPATH=. python benchmarks/gate_models.py --models kptune/data/model-h200.safetensors new.safetensors \
        [--dataset kptune/data/dataset-h200.db.gz] [--dtype fp32] [--out results/]

For each checkpoint, `retrain.score` with the dataset as what it lends (its cost model beside it): the
best of what autotune measures by default (the model's 5, then 20 lent, then 10 searched), the hedged beam's
top 5 and top 1 performance ratios. Then `retrain.decide` of each later checkpoint against the first (ties within
`retrain.TIE`, the next metric decides). Writes gate_models.json under --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import provenance, write_json

from kptune import dataset as ds
from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.retrain import GATE, Served, decide, score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, nargs="+", required=True, help="the first is what is served now")
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--dtype", default="fp32", help="fp32, fp16 or all")
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args()
    data = ds.load(args.dataset)
    family, device = get_family(data.meta["family"]), DeviceInfo(**data.meta["device_limits"])
    test = [p for p in data.split("test") if args.dtype == "all" or f"dtype={args.dtype}," in p.key]
    if not test:
        sys.exit(f"gate_models.py: error: {args.dataset} has no {args.dtype} test problems")
    rows = []
    for model in args.models:
        got = score(Served(str(model), model, args.dataset), test, device, family)
        rows.append({"model": str(model), **{k: round(got[k], 4) for k in GATE}, "lender": got["lender"]})
        print(f"{model}: " + ", ".join(f"{k} {got[k]:.4f}" for k in GATE), flush=True)
    for row in rows[1:]:
        row["promoted_over_first"], row["reason"] = decide(row, rows[0], rows[0]["model"])
        print(f"{row['model']}: {'promoted' if row['promoted_over_first'] else 'not promoted'}: {row['reason']}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gate_models.json", {**provenance(), "dataset": str(args.dataset), "dtype": args.dtype,
                                               "test_problems": len(test), "models": rows})  # fmt: skip


if __name__ == "__main__":
    main()
