"""`kptune compare` over the test networks, on every GPU of a host: tuning-time speed-up and ratio.

    python benchmarks/compare_gpus.py --shapes 48 --time-limit 420 --out results/
    python benchmarks/compare_gpus.py --shapes 4 --gpus 2 --device opencl:0:0 --out /tmp/c   # PoCL
    python benchmarks/compare_gpus.py --shapes 40 --unseen ../kptune/data/dataset-h200.db.gz --out results/

Problems: `--shapes N` evenly spaced rows of the corpus's test split (networks no model was
trained on; `--corpus FILE`: of another shapes file in the corpus's CSV format, e.g. layers of
networks outside the corpus), in each --dtype (with --unseen, only those a dataset does not hold
yet), in a seeded random order so a run cut short by --time-limit is still an unbiased sample. First one
compile pass over the union of their configs on all cores (timed apart; --pre-limit caps
it), so both paths of a comparison find the compile cache warm and their times compare
searching, not compiling (exhaustive search would otherwise look slower still). Then one
process per GPU runs `kptune.compare.compare()` one problem at a time (autotune's
candidates measured, then every valid config), each into its own perf db, appending each
row to a JSON-lines file as it finishes; problems not reached by the time limit are listed
(`--resume` with the same --out compares only those, keeping the rows). Summary: median
speed-up T_exhaustive / T_autotune, geomean ratio t_optimum / t_autotune-winner, share >=
0.99, per network. The merged perf db (every valid config's time for each problem reached)
goes to --out as compare.db.gz.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import provenance, spread, write_json

from kptune.corpus import corpus_split, load_corpus
from kptune.dataset import problem_keys
from kptune.errors import KptuneError
from kptune.local_search import LOCAL
from kptune.measurement import TimingSettings
from kptune.neighbours import COVER, NEIGHBOURS
from kptune.problem import Conv2dProblem


def pick(args: argparse.Namespace) -> list[tuple[Conv2dProblem, tuple[str, ...]]]:
    """(problem, its networks) for --shapes evenly spaced corpus rows of --split in each --dtype, shuffled."""
    held = problem_keys(args.unseen) if args.unseen is not None else set()
    entries = [e for e in corpus_split(load_corpus(args.corpus), args.split)
               if (args.max_mflop is None or e.problem.flops() <= args.max_mflop * 1e6)
               and not any(dataclasses.replace(e.problem, dtype=d).key() in held for d in args.dtype)]  # fmt: skip
    rows = [(dataclasses.replace(e.problem, dtype=d), e.networks) for e in spread(entries, args.shapes)
            for d in args.dtype]  # fmt: skip
    random.Random(args.seed).shuffle(rows)
    return rows


def precompile_all(problems: Sequence[Conv2dProblem], device_spec: str | None) -> dict[str, Any]:
    """One compile pass over every config the problems need, on all cores."""
    from kptune.backends import resolve_device
    from kptune.campaign import plan, union_defines
    from kptune.kernel import get_family
    from kptune.perfdb import PerfDB
    from kptune.runner import precompile

    family, device = get_family("conv2d_fwd"), resolve_device(device_spec)
    clock = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, PerfDB(Path(tmp) / "empty.db") as empty:
        tasks, _, _ = plan(problems, family, device, empty)
    defines = union_defines(tasks, family)
    errors = precompile(family, device, defines)
    return {"configs": len(defines), "errors": len(errors), "seconds": round(time.monotonic() - clock, 1)}


def work(args: argparse.Namespace) -> int:
    """One GPU's share: compare problem after problem, one JSON line each, until the deadline."""
    from kptune.compare import compare_each

    index, count = args.worker
    rows = pick(args)[index::count]
    sink_path = args.out / f"rows-{index}.jsonl"
    if args.resume and sink_path.exists():  # a resumed run skips the problems its earlier run finished
        done = {json.loads(line)["problem"] for line in sink_path.read_text().splitlines() if line.strip()}
        rows = [(p, nets) for p, nets in rows if p.key() not in done]
    if not rows:
        return 0
    networks = {p.key(): nets for p, nets in rows}
    settings = TimingSettings(target_ms=args.target_ms)
    each = compare_each([p for p, _ in rows], device=args.device, k=args.k, settings=settings,
                        db=args.out / f"compare-{index}.db", neighbours=args.neighbours, cover=args.cover,
                        local=args.local, use_model=not args.no_model)  # fmt: skip
    with contextlib.closing(each) as compared, open(sink_path, "a", encoding="utf-8") as sink:
        for row in compared:  # one measuring worker, kept warm over every problem of this GPU
            sink.write(json.dumps({**row.to_json(), "networks": list(networks[row.problem])}) + "\n")
            sink.flush()
            if time.time() > args.deadline:
                break
    return 0


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`kptune compare`'s summary of the rows, plus the worst ratio, the share >= 0.95 and the paths taken."""
    from kptune.compare import Comparison, summary

    ratios = [r for r in (Comparison.from_json(row).ratio for row in rows) if r is not None]
    return {**summary([Comparison.from_json(row) for row in rows]), "min_ratio": min(ratios, default=None),
            "share_ratio_ge_0.95": sum(r >= 0.95 for r in ratios) / len(ratios) if ratios else None,
            "sources": sorted({row["source"] for row in rows})}  # fmt: skip


def merge_dbs(out: Path, count: int) -> Path | None:
    from kptune.perfdb import PerfDB

    parts = [out / f"compare-{i}.db" for i in range(count) if (out / f"compare-{i}.db").exists()]
    if not parts:
        return None
    merged = out / "compare.db"
    merged.unlink(missing_ok=True)
    with PerfDB(merged) as db:
        for part in parts:
            with PerfDB(part) as other:
                db.merge_from(other)
    with open(merged, "rb") as src, gzip.open(out / "compare.db.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out / "compare.db.gz"


def drive(args: argparse.Namespace) -> int:
    t0 = time.time()
    gpus = args.gpus or _gpu_count()
    picked = pick(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in [*args.out.glob("rows-*.jsonl"), *args.out.glob("compare-*.db*")] if not args.resume else []:
        stale.unlink()
    doc: dict[str, Any] = {"benchmark": "compare_gpus", **provenance(), "split": args.split,
                           "corpus": str(args.corpus or "shipped"), "gpus": gpus,
                           "settings": {"k": args.k, "neighbours": args.neighbours, "cover": args.cover,
                                        "local": args.local, "target_ms": args.target_ms, "seed": args.seed,
                                        "no_model": args.no_model},
                           "problems": [p.key() for p, _ in picked], "resumed": args.resume}  # fmt: skip
    if args.pre_limit > 0:
        doc["compile_pass"] = _precompile_with_limit(args)
        print(f"compile pass: {doc['compile_pass']}", flush=True)
    deadline = t0 + args.time_limit
    procs = []
    for i in range(gpus):
        argv = [sys.executable, __file__, *_common_argv(args), "--worker", f"{i}/{gpus}", "--deadline", str(deadline)]
        procs.append(subprocess.Popen(argv, env={**os.environ, **_visible(i, args)}, start_new_session=True))
    hard_stop = deadline + args.grace
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, hard_stop - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the problem in flight is left out of the rows
            proc.wait()
    rows = [json.loads(line) for i in range(gpus) if (args.out / f"rows-{i}.jsonl").exists()
            for line in (args.out / f"rows-{i}.jsonl").read_text().splitlines() if line.strip()]  # fmt: skip
    done = {r["problem"] for r in rows}
    doc["rows"] = rows
    doc["not_reached"] = [p.key() for p, _ in picked if p.key() not in done]
    doc["summary"] = summarize(rows)
    nets = sorted({n for r in rows for n in r["networks"]})
    doc["per_network"] = {n: summarize([r for r in rows if n in r["networks"]]) for n in nets}
    doc["db"] = str(merge_dbs(args.out, gpus))
    doc["wall_s"] = round(time.time() - t0, 1)
    write_json(args.out / "compare_gpus.json", doc)
    _plot(rows, args.out / "compare_gpus.png")
    sm = doc["summary"]
    print(f"{sm['problems']} problems ({len(doc['not_reached'])} not reached) on {gpus} GPU(s): median speed-up "
          f"{_fmt(sm['median_speedup'], '.1f')}x, geomean ratio {_fmt(sm['geomean_ratio'], '.3f')} (winners "
          f"retimed alike: {_fmt(sm['geomean_ratio_retimed'], '.3f')}), ratio >= 0.99: "
          f"{_fmt(sm['share_ratio_ge_0.99'], '.2f')}, paths {sm['sources']}")  # fmt: skip
    for net, s in doc["per_network"].items():
        print(f"  {net}: {s['problems']} problems, median speed-up {_fmt(s['median_speedup'], '.1f')}x, "
              f"geomean ratio {_fmt(s['geomean_ratio'], '.3f')}")  # fmt: skip
    return 0


def _precompile_with_limit(args: argparse.Namespace) -> dict[str, Any]:
    """The compile pass in its own process group, stopped after --pre-limit seconds (what it compiled stays cached)."""
    clock = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, *_common_argv(args), "--precompile-only"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **_visible(None, args)})  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=args.pre_limit)
        return {**json.loads(out.strip().splitlines()[-1]), "complete": proc.returncode == 0}
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"seconds": round(time.monotonic() - clock, 1), "complete": False}


def _gpu_count() -> int:
    from kptune.backends import campaign_devices

    return len(campaign_devices())


def _visible(index: int | None, args: argparse.Namespace) -> dict[str, str]:
    """One GPU per worker process (its device is then cupy:0); OpenCL workers share --device."""
    if args.device and not args.device.startswith("cupy"):
        return {}
    return {"CUDA_VISIBLE_DEVICES": str(index if index is not None else 0)}


def _common_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--shapes", str(args.shapes), "--split", args.split, "--dtype", *args.dtype, "--seed", str(args.seed),
            *(["--max-mflop", str(args.max_mflop)] if args.max_mflop is not None else []),
            *(["--unseen", str(args.unseen)] if args.unseen is not None else []),
            *(["--corpus", str(args.corpus)] if args.corpus is not None else []),
            "--k", str(args.k), "--neighbours", str(args.neighbours), "--cover", str(args.cover),
            "--local", str(args.local), "--target-ms", str(args.target_ms), "--out", str(args.out),
            *(["--no-model"] if args.no_model else []), *(["--resume"] if args.resume else [])]  # fmt: skip
    device = args.device or "cupy:0"
    return [*argv, "--device", "cupy:0" if device.startswith("cupy") else device]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    from kptune.compare import Comparison, plot

    plot([Comparison.from_json(row) for row in rows], path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", type=int, default=48, help="corpus rows of the split, evenly spaced")
    ap.add_argument("--split", default="test")
    ap.add_argument("--corpus", type=Path, default=None, help="shapes in the corpus's CSV format (default: the corpus)")
    ap.add_argument("--dtype", nargs="+", default=["fp32"])
    ap.add_argument("--max-mflop", type=float, default=None, help="only problems up to this size (e.g. on PoCL)")
    ap.add_argument("--seed", type=int, default=0, help="order in which the problems are compared")
    ap.add_argument(
        "--unseen",
        type=Path,
        default=None,
        help="leave out the problems this dataset holds (new shapes; their data can extend it)",
    )
    ap.add_argument("--k", type=int, default=5, help="model candidates measured")
    ap.add_argument("--neighbours", type=int, default=NEIGHBOURS, help="and the nearest tuned shape's fastest")
    ap.add_argument("--cover", type=int, default=COVER, help="and configs covering the nearest tuned shapes")
    ap.add_argument("--local", type=int, default=LOCAL, help="then configs of a local search around the fastest")
    ap.add_argument("--no-model", action="store_true", help="autotune's fallback (half random, half a local search)")
    ap.add_argument("--target-ms", type=float, default=2.0, help="timed device time per config (both paths)")
    ap.add_argument("--gpus", type=int, default=None, help="worker processes (default: every GPU)")
    ap.add_argument("--device", default=None, help="cupy:N (default, one per GPU) or opencl:P:D (shared)")
    ap.add_argument("--time-limit", type=float, default=420.0, help="seconds; no problem starts after it")
    ap.add_argument("--grace", type=float, default=90.0, help="seconds after the limit before stopping a worker")
    ap.add_argument("--pre-limit", type=float, default=180.0, help="seconds for the compile pass (0: none)")
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--resume", action="store_true", help="keep --out's rows and dbs; compare only the rest")
    ap.add_argument("--worker", type=lambda s: tuple(map(int, s.split("/"))), help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--precompile-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        if args.precompile_only:
            problems = [p for p, _ in pick(args)]
            print(json.dumps(precompile_all(problems, args.device)))
            return 0
        return work(args) if args.worker else drive(args)
    except KptuneError as exc:
        print(f"compare_gpus: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
