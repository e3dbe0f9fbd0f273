"""benchmarks/winner_coverage.py: its tally, and a real run on the shipped model, reranker and dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from winner_coverage import tally  # noqa: E402


def test_tally_splits_seen_and_new_winners() -> None:
    rows = [(True, "top_k", 0, (0.5, 1.0, 1.0)), (True, "outside_pool", 20, (0.5, 0.5, 0.5)),
            (False, "outside_pool", 0, (0.8, 0.8, 0.9)), (False, "pool", 0, (0.2, 0.8, 1.0))]  # fmt: skip
    got = tally(rows, 5)
    assert got["all"] == {"problems": 4, "top_k": 1, "pool": 1, "outside_pool": 2, "top5_hit": 0.25,
                          "outside_pool_in_plain_beam": 1, "top1_ratio": 0.4472, "top5_ratio": 0.7521,
                          "pool_ratio": 0.819}  # fmt: skip
    assert got["seen"]["top5_hit"] == 0.5 and got["seen"]["outside_pool_in_plain_beam"] == 1
    assert got["seen"]["top1_ratio"] == 0.5 and got["seen"]["top5_ratio"] == 0.7071
    assert got["new"] == {"problems": 2, "top_k": 0, "pool": 1, "outside_pool": 1, "top5_hit": 0.0,
                          "outside_pool_in_plain_beam": 0, "top1_ratio": 0.4, "top5_ratio": 0.8,
                          "pool_ratio": 0.9487}  # fmt: skip


def test_a_group_with_no_problem_has_no_ratio() -> None:
    got = tally([(True, "top_k", 0, (1.0, 1.0, 1.0))], 5)
    assert got["new"]["problems"] == 0 and got["new"]["top5_hit"] is None and got["new"]["top1_ratio"] is None


def test_tally_refuses_an_unknown_place() -> None:
    with pytest.raises(ValueError, match="unknown place"):
        tally([(True, "beam", 0, (1.0, 1.0, 1.0))], 5)


def test_a_run_on_the_shipped_predictor_places_every_problem(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "winner_coverage.py"), "--problems", "6",
                          "--width", "16", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "winner_coverage.json").read_text())
    groups = doc["groups"]
    assert groups["all"]["problems"] == 6 == groups["seen"]["problems"] + groups["new"]["problems"]
    assert sum(groups["all"][p] for p in ("top_k", "pool", "outside_pool")) == 6
    assert doc["configs_that_won"] <= doc["tuned_shapes"]
    for group in groups.values():  # the best of more configs is never slower
        if group["problems"]:
            assert 0 < group["top1_ratio"] <= group["top5_ratio"] <= group["pool_ratio"] <= 1


def test_a_missing_reranker_is_one_line_and_exit_2(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "winner_coverage.py"), "--reranker",
                          str(tmp_path / "none.safetensors"), "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)  # fmt: skip
    assert run.returncode == 2 and run.stderr.startswith("winner_coverage: ") and "Traceback" not in run.stderr
