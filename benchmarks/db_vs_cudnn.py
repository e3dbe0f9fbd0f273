"""Best tuned times in a perf db against cuDNN times recorded by an earlier vs_cudnn.py run.

    python benchmarks/db_vs_cudnn.py --db results/X.db.gz --cudnn results/Y-vs_cudnn.json [--out Z.json]
    python benchmarks/db_vs_cudnn.py --db results/X.db.gz --cudnn-log shard-logs.txt --cudnn results/Y.json

cuDNN times come from vs_cudnn.json files (--cudnn) and from the per-layer lines that
vs_cudnn.py prints to stderr ("resnet50 b32 fp32 layer1.0.conv1: ours ... cuDNN 0.1 ms ...",
--cudnn-log, e.g. vs_cudnn_gpus.sh's shard-logs.txt: cuDNN timed in the same process as the
tuning); a log line wins over a JSON row for the same problem.

For when a device session ended before vs_cudnn.py printed its own table: every problem of
the db that was tuned exhaustively (every valid config measured) is matched by shape to a
row of the JSON, whose cuDNN time was measured in the same way on the same kind of device
(an fp16 problem is matched to the fp32 row's shape only if the JSON has an fp16 row).
Prints a markdown table and the geomean of cuDNN time / our best time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

from common import geomean, open_db, provenance, write_json
from layers import layers
from vs_cudnn import short_shape

from kptune.kernel import get_family
from kptune.perfdb import PerfDB
from kptune.problem import parse_problem

_LOG_ROW = re.compile(
    r"^(?P<net>\w+) b(?P<batch>\d+) (?P<dtype>\w+) (?P<layer>[\w.]+): ours .*?, "
    r"cuDNN (?P<ms>[\d.]+) ms"
)


def cudnn_rows_from_log(text: str) -> dict[str, dict[str, Any]]:
    """{problem key: row} from vs_cudnn.py's per-layer stderr lines (rows without a cuDNN time are skipped)."""
    rows = {}
    for line in text.splitlines():
        match = _LOG_ROW.match(line.strip())
        if match is None:
            continue
        named = dict(layers(match["net"], int(match["batch"])))
        problem = dataclasses.replace(named[match["layer"]], dtype=match["dtype"])
        rows[problem.key()] = {"problem": problem.key(), "net": match["net"], "layer": match["layer"],
                               "shape": short_shape(problem),
                               "cudnn": {"time_ms": float(match["ms"])}, "from": "log"}  # fmt: skip
    return rows


def compare(db: PerfDB, family_name: str, cudnn: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A row per exhaustively tuned problem (every valid config measured ok) that has a cuDNN time."""
    family = get_family(family_name)
    rows = []
    for t in db.tuned_problems(family=family_name):
        ref = cudnn.get(t.problem_key)
        if ref is None or t.source_hash != family.source_hash:
            continue
        problem = parse_problem(t.problem_key.split(":", 1)[1])
        measured = db.measurements(t.problem_id, t.device_id, t.kernel_id)
        best = db.best(t.problem_id, t.device_id, t.kernel_id)
        n_ok = sum(m.ok for m in measured)
        if best is None or not best.time_ms or n_ok < len(family.space.configs(problem, db.device_info(t.device_id))):
            continue
        rows.append({"net": ref.get("net", "?"), "layer": ref["layer"], "batch": problem.n, "dtype": problem.dtype,
                     "shape": ref["shape"],
                     "configs": n_ok, "ours_ms": best.time_ms, "cudnn_ms": ref["cudnn"]["time_ms"],
                     "ratio": ref["cudnn"]["time_ms"] / best.time_ms, "cudnn_from": ref.get("from", "json"),
                     "ours_tflops": problem.flops() / best.time_ms / 1e9, "device": t.device_key})  # fmt: skip
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["net"], r["batch"], r["dtype"]), []).append(r)
    out = []
    for (net, batch, dtype), group in sorted(groups.items()):
        low = min(group, key=lambda r: r["ratio"])
        ratios = [r["ratio"] for r in group]
        out.append({"net": net, "batch": batch, "dtype": dtype, "layers": len(group), "geomean": geomean(ratios),
                    "min": low["ratio"], "min_layer": low["layer"]})  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--cudnn", type=Path, nargs="*", default=[], help="vs_cudnn.json file(s) with cuDNN times")
    ap.add_argument("--cudnn-log", type=Path, nargs="*", default=[], help="vs_cudnn.py stderr logs (win over JSON)")
    ap.add_argument("--family", default="conv2d_fwd")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cudnn = {row["problem"]: row for path in args.cudnn for row in json.loads(path.read_text())["rows"]
             if row["cudnn"].get("time_ms")}  # fmt: skip
    for path in args.cudnn_log:
        cudnn.update(cudnn_rows_from_log(path.read_text()))
    with open_db(args.db) as db:
        rows = compare(db, args.family, cudnn)
    if not rows:
        print("no exhaustively tuned problem of the db has a cuDNN row", file=sys.stderr)
        return 1
    print("| net | layer | batch | dtype | shape | configs | ours ms | cuDNN ms | cuDNN/ours | ours TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["net"], -r["batch"], r["dtype"])):
        print(f"| {r['net']} | {r['layer']} | {r['batch']} | {r['dtype']} | {r['shape']} | {r['configs']} | "
              f"{r['ours_ms']:.4f} | "
              f"{r['cudnn_ms']:.4f} | {r['ratio']:.2f} | {r['ours_tflops']:.1f} |")  # fmt: skip
    summary = summarize(rows)
    for line in summary:
        print(f"{line['net']} batch {line['batch']} {line['dtype']}: {line['layers']} layers, cuDNN/ours geomean "
              f"{line['geomean']:.3f}, min {line['min']:.3f} ({line['min_layer']})")  # fmt: skip
    if args.out:
        doc = {
            "benchmark": "db_vs_cudnn",
            **provenance(),
            "db": str(args.db),
            "cudnn_from": [str(p) for p in args.cudnn + args.cudnn_log],
            "rows": rows,
            "summary": summary,
        }
        write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
