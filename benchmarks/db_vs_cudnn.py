"""Best tuned times in a perf db against cuDNN times recorded by an earlier vs_cudnn.py run.

    python benchmarks/db_vs_cudnn.py --db results/X.db.gz --cudnn results/Y-vs_cudnn.json [--out Z.json]

For when a device session ended before vs_cudnn.py printed its own table: every problem of
the db that was tuned exhaustively (every valid config measured) is matched by shape to a
row of the JSON, whose cuDNN time was measured in the same way on the same kind of device
(an fp16 problem is matched to the fp32 row's shape only if the JSON has an fp16 row).
Prints a markdown table and the geomean of cuDNN time / our best time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from common import geomean, provenance, write_json

from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.problem import parse_problem


def open_db(path: Path) -> sqlite3.Connection:
    if path.suffix == ".gz":
        tmp = Path(tempfile.mkdtemp()) / path.stem
        with gzip.open(path) as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        path = tmp
    return sqlite3.connect(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--cudnn", type=Path, nargs="+", required=True, help="vs_cudnn.json file(s) with cuDNN times")
    ap.add_argument("--family", default="conv2d_fwd")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cudnn: dict[str, dict] = {}
    for path in args.cudnn:
        for row in json.loads(path.read_text())["rows"]:
            if row["cudnn"].get("time_ms"):
                cudnn[row["problem"]] = row
    db = open_db(args.db)
    family = get_family(args.family)
    rows = []
    for dev_json, in db.execute("select limits from devices"):
        device = DeviceInfo(**json.loads(dev_json))
        query = ("select p.key, count(*), min(m.time_ms) from measurements m join problems p on p.id = m.problem_id "
                 "join devices d on d.id = m.device_id where d.limits = ? and m.outcome = 'ok' group by p.id")  # fmt: skip
        for key, n_ok, best_ms in db.execute(query, (dev_json,)):
            problem = parse_problem(key.split(":", 1)[1])
            complete = n_ok >= len(family.space.configs(problem, device))
            ref = cudnn.get(key)
            if ref is None or not complete:
                continue
            ratio = ref["cudnn"]["time_ms"] / best_ms
            rows.append({"layer": ref["layer"], "batch": problem.n, "dtype": problem.dtype, "shape": ref["shape"],
                         "configs": n_ok, "ours_ms": best_ms, "cudnn_ms": ref["cudnn"]["time_ms"], "ratio": ratio,
                         "ours_tflops": problem.flops() / best_ms / 1e9, "device": device.name})  # fmt: skip
    if not rows:
        print("no exhaustively tuned problem of the db has a cuDNN row", file=sys.stderr)
        return 1
    print("| layer | batch | dtype | shape | configs | ours ms | cuDNN ms | cuDNN/ours | ours TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['batch']} | {r['dtype']} | {r['shape']} | {r['configs']} | {r['ours_ms']:.4f} | "
              f"{r['cudnn_ms']:.4f} | {r['ratio']:.2f} | {r['ours_tflops']:.1f} |")  # fmt: skip
    groups: dict[tuple[int, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["batch"], r["dtype"]), []).append(r["ratio"])
    summary = []
    for (batch, dtype), ratios in sorted(groups.items()):
        low = min(rows, key=lambda r: r["ratio"] if (r["batch"], r["dtype"]) == (batch, dtype) else 9e9)
        line = {"batch": batch, "dtype": dtype, "layers": len(ratios), "geomean": geomean(ratios),
                "min": min(ratios), "min_layer": low["layer"]}  # fmt: skip
        summary.append(line)
        print(f"batch {batch} {dtype}: {len(ratios)} layers, cuDNN/ours geomean {line['geomean']:.3f}, "
              f"min {line['min']:.3f} ({line['min_layer']})")  # fmt: skip
    if args.out:
        write_json(args.out, {"benchmark": "db_vs_cudnn", **provenance(), "db": str(args.db),
                              "cudnn_from": [str(p) for p in args.cudnn], "rows": rows, "summary": summary})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
