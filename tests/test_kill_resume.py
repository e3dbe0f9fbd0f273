"""Kill -9 a real tuning process mid-run: the db stays intact and the rerun resumes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from kptune.device import DeviceInfo

SHAPE = "n=1,c=4,h=6,w=6,k=8,r=3,s=3,pad=1"
BUDGET = 40  # enough configs that the kill after the third lands mid-run


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return int(c.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _tune_args(device: DeviceInfo, db: Path) -> list[str]:
    return [sys.executable, "-m", "kptune", "tune", "--shape", SHAPE, "--strategy", "random", "--budget", str(BUDGET),
            "--device", device.spec, "--db", str(db), "--jobs", "0", "--json"]  # fmt: skip


def _start_tuning(args: list[str], db: Path) -> subprocess.Popen[str]:
    """The tuning process in a process group of its own, once `db` holds 3 measurements (or it ended)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while _count(db) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    return proc


def test_killed_tune_loses_nothing_and_resumes(cpu_device: DeviceInfo, db_path: Path) -> None:
    args = _tune_args(cpu_device, db_path)
    proc = _start_tuning(args, db_path)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its measuring worker, mid-run
    proc.wait()
    before = _count(db_path)
    assert 3 <= before < BUDGET

    with sqlite3.connect(db_path) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        measured_before = {r[0] for r in c.execute("SELECT config_id FROM measurements")}

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout)
    assert result["resumed"] == before and result["measured"] == BUDGET - before
    with sqlite3.connect(db_path) as c:
        rows = c.execute("SELECT config_id FROM measurements").fetchall()
    assert len(rows) == len({r[0] for r in rows}) == BUDGET  # nothing measured twice
    assert measured_before <= {r[0] for r in rows}


def test_ctrl_c_stops_tuning_with_one_line_and_keeps_what_was_measured(cpu_device: DeviceInfo, db_path: Path) -> None:
    """Ctrl-C in a terminal reaches the driver and its measuring worker (one process group): the
    driver says so in one line and exits 130; the worker prints no traceback of its own."""
    proc = _start_tuning(_tune_args(cpu_device, db_path), db_path)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted" in stderr.strip().splitlines()[-1]
    assert 3 <= _count(db_path) < BUDGET
