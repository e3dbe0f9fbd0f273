"""benchmarks/predict_latency.py --against: two trees' cold predictions timed side by side, on the shipped model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "predict_latency.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_two_trees_are_timed_on_the_same_shapes_alternately(tmp_path: Path) -> None:
    run = _run("--against", str(ROOT), "--rerank", "--shapes", "5", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "predict_latency.json").read_text())
    assert doc["mode"] == "paired" and doc["rerank"] and doc["shapes"] == 4  # the first shape loads, untimed
    assert set(doc["cold"]) == {"this", "against"}
    assert all(run["p50_ms"] > 0 and run["p99_ms"] >= run["p50_ms"] for run in doc["cold"].values())
    assert doc["ratio_median"] > 0


def test_a_folder_without_the_package_is_refused_in_one_line(tmp_path: Path) -> None:
    run = _run("--against", str(tmp_path), "--shapes", "3", "--out", str(tmp_path))
    assert run.returncode == 2 and "holds no kptune package" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
