"""The CLI as a user runs it: a real subprocess, a real device (PoCL), a real SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kptune.device import DeviceInfo

TINY = "n=1,c=3,h=5,w=5,k=4,r=3,s=3,pad=1"  # 56 configs on PoCL
SMALLEST = "n=1,c=1,h=3,w=3,k=1,r=1,s=1"  # 28 configs on PoCL: the exhaustive end-to-end run


def kptune(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kptune", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["tune", "--shape", "n=0,c=3,h=5,w=5,k=2,r=3,s=3"],
        ["tune", "--shape", "n=-1,c=3,h=5,w=5,k=2,r=3,s=3"],
        ["tune", "--shape", "n=1,c=3,h=2,w=2,k=2,r=3,s=3"],
        ["tune", "--shape", "n=1,c=3,h=5,w=5,k=2,r=3,s=3,bogus=4"],
        ["tune", "--shape", "n=one,c=3,h=5,w=5,k=2,r=3,s=3"],
        ["tune", "--shape", "n=1,c=3,h=5,w=5,k=2,r=3,s=3,groups=2"],
        ["tune", "--shape", ",,,"],
        ["tune", "--miopen", "conv -n 1 -c 3 -H 5 -W 5 -k 2 -y 3 -x 3 --bogus 1"],
        ["tune", "--shape", TINY, "--strategy", "annealing"],
        ["tune", "--shape", TINY, "--device", "nosuch:3"],
        ["tune", "--shape", TINY, "--budget", "many"],
        ["tune"],
        ["frobnicate"],
        ["db", "show", "--db", "/nonexistent/perf.db"],
        ["dataset", "costmodel", "/nonexistent/dataset-x.db.gz"],
        ["dataset", "costmodel", "README.md"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str]) -> None:
    proc = kptune(*args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kptune: error:"), proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--epochs", "1", "--out", "{missing}/m.safetensors"],
        ["report", "--db", "{db}", "--out", "{missing}/report.html"],
        ["dataset", "build", "--db", "{db}", "--out", "{missing}/d.db.gz"],
        ["dataset", "costmodel", "kptune/data/dataset-pocl-cpu.db.gz", "--out", "{missing}/c.safetensors"],
        ["dataset", "reranker", "kptune/data/dataset-pocl-cpu.db.gz", "--out", "{tmp}"],
        ["db", "export", "--format", "miopen", "--db", "{db}", "--out", "{missing}/perf.txt"],
        ["compare", "--shape", TINY, "--db", "{db}", "--plot", "{missing}/p.png"],
    ],
)
def test_an_output_nowhere_to_go_is_refused_before_the_work(args: list[str], tmp_path: Path) -> None:
    """Minutes of training or fitting are not lost to a mistyped --out: it is checked first (one line, exit 2)."""
    db = tmp_path / "perf.db"
    sqlite3.connect(db).close()  # exists; the commands must refuse before reading it
    names = {"missing": str(tmp_path / "no" / "such"), "db": str(db), "tmp": str(tmp_path)}
    proc = kptune(*(a.format(**names) for a in args), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("kptune: error: cannot write"), proc.stderr
    assert "epoch" not in proc.stderr  # no training began


def test_reading_commands_create_no_perf_db(tmp_path: Path) -> None:
    missing = tmp_path / "perf.db"
    for args in (["audit"], ["report"], ["db", "show"], ["dataset", "build", "--out", str(tmp_path / "d.db.gz")]):
        proc = kptune(*args, "--db", str(missing), timeout=60)
        assert proc.returncode == 2 and "no perf db at" in proc.stderr, (args, proc.stderr)
        assert not missing.exists(), args


def test_not_a_db_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("hello" * 1000)
    proc = kptune("db", "show", "--db", str(junk))
    assert proc.returncode == 2 and "corrupted" in proc.stderr and "Traceback" not in proc.stderr


def test_devices_lists_the_cpu_device(cpu_device: DeviceInfo) -> None:
    proc = kptune("devices", "--json")
    assert proc.returncode == 0, proc.stderr
    found = {d["spec"]: d for d in json.loads(proc.stdout)}
    assert found[cpu_device.spec]["max_work_group_size"] == cpu_device.max_work_group_size
    assert found[cpu_device.spec]["model"].endswith(".safetensors")  # the shipped PoCL model, its own or borrowed
    assert found[cpu_device.spec]["model_note"].startswith(Path(found[cpu_device.spec]["model"]).name)
    table = kptune("devices")
    assert table.returncode == 0 and f"{cpu_device.spec} model: " in table.stdout


def test_exhaustive_tune_end_to_end_into_sqlite(cpu_device: DeviceInfo, db_path: Path) -> None:
    args = ["tune", "--shape", SMALLEST, "--device", cpu_device.spec, "--db", str(db_path), "--json"]
    first = kptune(*args)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["strategy"] == "exhaustive" and result["measured"] == result["candidates"] >= 8
    assert result["outcomes"] == {"ok": result["candidates"]}
    assert result["best"]["time_ms"] > 0

    with sqlite3.connect(db_path) as c:
        rows = c.execute("SELECT COUNT(*), COUNT(DISTINCT config_id) FROM measurements").fetchone()
        assert rows == (result["candidates"], result["candidates"])
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    again = json.loads(kptune(*args).stdout)  # resumes: nothing re-measured
    assert again["measured"] == 0 and again["resumed"] == result["candidates"]
    assert again["best"]["key"] == result["best"]["key"]

    shown = kptune("db", "show", "--db", str(db_path), "--json")
    summary = json.loads(shown.stdout)
    assert summary["counts"]["measurements"] == result["candidates"]
    assert summary["best"][0]["config"] == result["best"]["key"]

    same = "conv -n 1 -c 1 -H 3 -W 3 -k 1 -y 1 -x 1"
    miopen = kptune("tune", "--miopen", same, "--device", cpu_device.spec, "--db", str(db_path), "--json")
    assert json.loads(miopen.stdout)["measured"] == 0  # the same problem, by its canonical key


def test_random_strategy_respects_the_budget(cpu_device: DeviceInfo, db_path: Path) -> None:
    proc = kptune("tune", "--shape", "n=1,c=4,h=6,w=6,k=8,r=3,s=3,pad=1", "--strategy", "random", "--budget", "4",
                  "--device", cpu_device.spec, "--db", str(db_path), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["candidates"] == result["measured"] == 4
