"""Reliability on the OpenCL CPU device: injected kernel faults and killed processes, rows lost.

    python benchmarks/reliability.py --rounds 3 --kills 6 --out results/

Kernel faults: the `axpy_faulty` family (tests/families_for_tests.py) whose MODE parameter
injects a compile error (1), a wrong result (2), an infinite loop (3, stopped by the watchdog)
and a wild write far out of bounds (4, kills the measuring process); MODE 0 is correct. Each
round measures every mode in a shuffled order in one `tune()`; survived = the run went on and
gave every config its outcome. Process faults: a 2-worker `kptune campaign` killed with SIGKILL
(driver and workers) at random points, then a measuring worker alone killed mid-config; after
each, the db's integrity and every row from before are checked, and a final rerun must complete
with every config measured exactly once. Writes reliability.json under --out.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import provenance, write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SHAPES = "n=1,c=4,h=6,w=6,k=8,r=3,s=3,pad=1\nn=2,c=8,h=5,w=7,k=4,r=1,s=1\n"
EXPECTED = {1: "compile_error", 2: "wrong_result", 3: "timeout", 4: "launch_error", 5: "launch_error"}


def _rows(db: Path) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=10) as c:
            return c.execute("SELECT problem_id, config_id, outcome FROM measurements").fetchall()
    except sqlite3.OperationalError:
        return []


def kernel_faults(device: Any, rounds: int, seed: int, tmp: Path) -> dict[str, Any]:
    from families_for_tests import AXPY_FAULTY, AxpyProblem, faulty

    from kptune.measurement import TimingSettings
    from kptune.tune import tune

    rng = random.Random(seed)
    outcomes: collections.Counter[str] = collections.Counter()
    survived = lost = wrong_kind = 0
    for r in range(rounds):
        modes = [0, 1, 2, 3, 4, 5]
        rng.shuffle(modes)
        configs = [faulty(m) for m in modes]
        db = tmp / f"faults-{r}.db"
        result = tune(AxpyProblem(n=1 << 12), kernel=AXPY_FAULTY.name, device=device, db=db, configs=configs,
                      settings=TimingSettings(timeout_s=5.0, max_runs=3), jobs=0)  # fmt: skip
        rows = {cfg: outcome for _, cfg, outcome in _rows(db)}
        survived += result.measured == len(configs) and result.best is not None
        lost += len(configs) - len(rows)
        by_mode = _outcome_by_mode(db)
        for mode, outcome in by_mode.items():
            outcomes[f"MODE {mode}: {outcome}"] += 1
            wrong_kind += (
                mode in EXPECTED and outcome != EXPECTED[mode] and not (mode == 4 and outcome == "wrong_result")
            )
    return {"rounds": rounds, "faults_injected": 5 * rounds, "survived_rounds": survived, "rows_lost": lost,
            "outcomes": dict(sorted(outcomes.items())), "unexpected_outcomes": wrong_kind}  # fmt: skip


def _outcome_by_mode(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT c.key, m.outcome FROM measurements m JOIN configs c ON c.id = m.config_id").fetchall()
    return {int(key.split(",")[0].split("=")[1]): outcome for key, outcome in rows}


def process_faults(device: Any, kills: int, seed: int, tmp: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    shapes = tmp / "shapes.txt"
    shapes.write_text(SHAPES)
    db = tmp / "kill.db"
    budget = 20
    args = [sys.executable, "-m", "kptune", "campaign", "--shapes", str(shapes), "--strategy", "random", "--budget",
            str(budget), "--workers", "2", "--device", device.spec, "--db", str(db), "--jobs", "0"]  # fmt: skip
    before: set[tuple[Any, ...]] = set()
    lost = integrity_failures = worker_kills = driver_kills = 0
    for i in range(kills):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        target = len(before) + rng.randint(1, 4)
        deadline = time.monotonic() + 120
        while len(_rows(db)) < target and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if i % 2 and proc.poll() is None:  # odd rounds: one measuring worker alone, then let the driver go on
            workers = subprocess.run(["pgrep", "-f", "kptune.worker", "-g", str(proc.pid)], capture_output=True,
                                     text=True).stdout.split()  # fmt: skip
            if workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(workers[0]), signal.SIGKILL)
                worker_kills += 1
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        driver_kills += 1
        proc.wait()
        with sqlite3.connect(db) as c:
            integrity_failures += c.execute("PRAGMA integrity_check").fetchone()[0] != "ok"
        now = set(_rows(db))
        lost += len(before - now)
        before = now
    final = subprocess.run(args, capture_output=True, text=True, timeout=900)
    rows = _rows(db)
    configs = {(p, c) for p, c, _ in rows}
    lost += len(before - set(rows))
    return {"driver_kills": driver_kills, "worker_kills": worker_kills, "integrity_failures": integrity_failures,
            "rows_lost": lost, "rerun_exit": final.returncode, "configs_expected": 2 * budget,
            "configs_measured": len(configs), "measured_twice": len(rows) - len(configs),
            "outcomes": dict(collections.Counter(o for _, _, o in rows))}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    from kptune.backends import list_devices

    cpus = [d for d in list_devices(("opencl",)) if d.kind == "cpu"]
    if not cpus:
        print("reliability: no OpenCL CPU device (apt-get install pocl-opencl-icd)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        doc = {"benchmark": "reliability", **provenance(), "device": cpus[0].name,
               "kernel_faults": kernel_faults(cpus[0], args.rounds, args.seed, Path(tmp)),
               "process_faults": process_faults(cpus[0], args.kills, args.seed, Path(tmp))}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "reliability.json", doc)
    k, p = doc["kernel_faults"], doc["process_faults"]
    print("| faults | kinds | injected | survived | rows lost |")
    print("|---|---|---|---|---|")
    print("| kernel | compile error, wrong result, infinite loop, wild write, too many resources | "
          f"{k['faults_injected']} | "
          f"{k['survived_rounds']} of {k['rounds']} runs went on | {k['rows_lost']} |")  # fmt: skip
    print(f"| process | kill -9 of driver + workers, of one worker | {p['driver_kills']} + {p['worker_kills']} | "
          f"rerun exit {p['rerun_exit']}, {p['configs_measured']} of {p['configs_expected']} configs, "
          f"{p['measured_twice']} twice, {p['integrity_failures']} integrity failures | "
          f"{p['rows_lost']} |")  # fmt: skip
    print(f"kernel fault outcomes: {k['outcomes']}; process-fault outcomes: {p['outcomes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
