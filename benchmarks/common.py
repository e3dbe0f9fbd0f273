"""What every benchmark script shares: the geometric mean, provenance (commit, date, command), JSON output,
perf dbs read (gzipped, xz-compressed or plain)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import json
import lzma
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


def geomean(values: Iterable[float | None]) -> float | None:
    """Geometric mean of the values given, skipping None; None when there are none."""
    xs = [v for v in values if v is not None]
    if any(v <= 0 for v in xs):
        raise ValueError(f"geometric mean of non-positive values {xs}")
    return math.exp(statistics.fmean(math.log(v) for v in xs)) if xs else None


def ratio_summary(ratios: Sequence[float]) -> dict[str, Any]:
    """n, geomean, how many >= 0.99 and >= 0.95, how many hit the best (ratio 1: a set that holds the fastest
    config, as issue 5's top-k hit counts it), and the worst of per-problem ratios t_best / t (NaN where none)."""
    if not ratios:
        return {"n": 0, "geomean": math.nan, "ge_0.99": 0, "ge_0.95": 0, "hit": 0, "min": math.nan}
    return {"n": len(ratios), "geomean": math.exp(sum(math.log(max(r, 1e-12)) for r in ratios) / len(ratios)),
            "ge_0.99": sum(r >= 0.99 for r in ratios), "ge_0.95": sum(r >= 0.95 for r in ratios),
            "hit": sum(r >= 1.0 for r in ratios), "min": min(ratios)}  # fmt: skip


def best_of_table(ratios: Mapping[str, Sequence[float]], counts: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Per candidate set (name -> its problems' best-of ratios): configs measured, the geometric mean
    and the share >= 0.99, each printed on a line; the table for the JSON."""
    table = {name: {"candidates": counts[name], "geomean_ratio": round(geomean(r) or 0.0, 4),
                    "share_ge_0.99": round(sum(x >= 0.99 for x in r) / len(r), 3) if r else None}
             for name, r in ratios.items()}  # fmt: skip
    width = max(map(len, table), default=0)
    for name, row in table.items():
        print(f"{name:{width}s} {row['candidates']:2d} candidates: best-of ratio {row['geomean_ratio']:.4f}, "
              f">= 0.99 {row['share_ge_0.99']}")  # fmt: skip
    return table


def git_commit(run: Callable[..., Any] = subprocess.run) -> str:
    """$KPTUNE_COMMIT when set (a copied tree may carry a stale .git); else this checkout's; else "unknown"."""
    if os.environ.get("KPTUNE_COMMIT"):
        return os.environ["KPTUNE_COMMIT"]
    try:
        proc = run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                   cwd=Path(__file__).resolve().parent, timeout=30)  # fmt: skip
        if proc.returncode == 0 and proc.stdout.strip():
            return str(proc.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def provenance() -> dict[str, str]:
    """Date (UTC), commit and the exact command line, for the JSON every benchmark writes."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": shlex.join(sys.orig_argv),
    }


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically, so a run killed mid-write leaves the previous complete file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


def spread(entries: Sequence[Any], n: int) -> list[Any]:
    """`n` items evenly spaced over `entries` (all of them if there are fewer)."""
    if n >= len(entries):
        return list(entries)
    return [entries[(i * len(entries)) // n] for i in range(n)]


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (e.g. -k), else argparse's one-line error and exit 2."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_full_timing_options(ap: Any) -> None:
    """--target-ms and --max-runs of a script that times configs again in full (as `kptune db recheck` does)."""
    ap.add_argument("--target-ms", type=float, default=0.5, help="as the campaigns recorded (default 0.5)")
    ap.add_argument("--max-runs", type=int, default=20, help="as the campaigns recorded (default 20)")


def time_again(problem: Any, configs: Sequence[str], device: Any, db: Any, target_ms: float, max_runs: int,
               kernel: str = "conv2d_fwd") -> dict[str, float]:  # fmt: skip
    """Each of `configs` (keys) timed again on `device` in full, no early stop, stored in the open PerfDB `db`
    as a recheck: its new time by key, for those that ran correctly."""
    from kptune.kernel import get_family
    from kptune.measurement import TimingSettings
    from kptune.perfdb import RECHECK_SOURCE
    from kptune.recheck import recheck_settings
    from kptune.space import Config
    from kptune.tune import tune

    family = get_family(kernel)
    settings = recheck_settings(TimingSettings(target_ms=target_ms, max_runs=max_runs))
    tune(problem, kernel=kernel, device=device, db=db, settings=settings, configs=[Config.parse(c) for c in configs],
         source=RECHECK_SOURCE, resume=False)  # fmt: skip
    kid = db.kernel_id(family.name, family.source_hash, family.space.names)
    measured = db.measurements(db.problem_id(problem), db.device_id(device), kid, list(configs))
    return {m.config.key(): m.time_ms for m in measured if m.ok and m.time_ms}


@contextlib.contextmanager
def open_db(path: Path) -> Iterator[Any]:
    """The perf db at `path` (a `kptune.perfdb.PerfDB`), decompressed to a temporary copy first if it ends in .gz
    or .xz (the archived results in `benchmarks/results/` are .xz, the smaller)."""
    from kptune.perfdb import PerfDB

    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix)
    with tempfile.TemporaryDirectory() as tmp:
        if opener is not None:
            plain = Path(tmp) / path.stem
            with opener(path) as src, plain.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            path = plain
        with PerfDB(path) as db:
            yield db


def exhaustive_times(db: Any, device: str | None = None, family: str | None = None,
                     source_hash: str | None = None) -> dict[str, dict[str, float]]:  # fmt: skip
    """problem key -> config key -> ms: the latest ok time of each config timed by an exhaustive search in the
    perf db `db` (only those on the device key `device`, of the kernel `family` and `source_hash`, where given)."""
    sql = ("SELECT p.key, c.key, m.time_ms FROM measurements m JOIN problems p ON p.id = m.problem_id"
           " JOIN configs c ON c.id = m.config_id JOIN kernels k ON k.id = c.kernel_id"
           " JOIN devices d ON d.id = m.device_id WHERE m.source = 'exhaustive' AND m.outcome = 'ok'"
           " AND m.time_ms > 0")  # fmt: skip
    params = []
    for column, value in (("d.key", device), ("k.family", family), ("k.source_hash", source_hash)):
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    out: dict[str, dict[str, float]] = {}
    for problem, config, ms in db.conn.execute(sql + " ORDER BY m.id", params).fetchall():
        out.setdefault(problem, {})[config] = ms
    return out
