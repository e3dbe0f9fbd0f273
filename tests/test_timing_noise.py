"""benchmarks/timing_repeatability.py's noise bound, and benchmarks/batch_inversions.py on PoCL (a real run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from timing_repeatability import noise_bound  # noqa: E402

from kptune.device import DeviceInfo  # noqa: E402


def test_without_noise_the_true_order_always_hits() -> None:
    got = noise_bound([[1.0, 1.001, 1.002, 2.0], [0.5, 0.6]], sigma=1e-9)
    assert got["top5_hit"] == 1.0 and got["top1_ratio"] == 1.0


def test_noise_among_near_ties_costs_the_top_5_hit_and_little_ratio() -> None:
    tied = [[1.0 + 1e-4 * i for i in range(40)]]  # 40 configs within 0.4%: the winner is a draw
    spread = [[1.0 + 0.2 * i for i in range(40)]]  # 20% apart: 2% of noise never reorders them
    noisy = noise_bound(tied, sigma=0.02, draws=400)
    assert 0.05 < noisy["top5_hit"] < 0.3 and noisy["top1_ratio"] > 0.99
    assert noise_bound(spread, sigma=0.02, draws=400) == {"sigma": 0.02, "top5_hit": 1.0, "top1_ratio": 1.0}


def test_batch_inversions_are_timed_at_both_batches(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "batch_inversions.py"), "--dataset",
         str(ROOT / "kptune" / "data" / "dataset-pocl-cpu.db.gz"), "--device", cpu_device.spec, "--problems", "1",
         "--per-problem", "2", "--target-ms", "0.2", "--max-runs", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "batch_inversions.json").read_text())
    (row,) = doc["problems"]
    assert row["timed"] == 2 and row["inverted_recorded"] >= 1 and row["median_n_over_2n_recorded"] > 1.25
    assert doc["same_device"] is (doc["device"] == doc["recorded_on"])


def test_two_sessions_of_the_h200_are_compared_on_the_configs_both_timed(tmp_path: Path) -> None:
    results = ROOT / "benchmarks" / "results"
    script = [sys.executable, str(ROOT / "benchmarks" / "session_noise.py"), "--out", str(tmp_path), "--db"]
    run = subprocess.run([*script, str(results / "2026-11-22-h200x4-compare-test-12.db.xz")], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "session_noise.json").read_text())
    assert doc["device"] == "cupy:NVIDIA H200" and doc["all"]["pairs"] > 1000 and doc["top8"]["pairs"] > 0
    assert sum(p["pairs"] for p in doc["problems"]) == doc["all"]["pairs"]
    for part in (doc["all"], doc["top8"]):  # spikes widen the sd, not the robust spread
        assert 0 < part["sigma_robust"] < part["sigma_sd"] and 0 < part["noise_bound"]["top5_hit"] <= 1
    h100 = subprocess.run([*script, str(results / "2026-12-06-h100-borrowed-compare-test.db.xz")], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)  # fmt: skip  # another card: nothing to pair
    assert h100.returncode == 2 and h100.stderr.startswith("session_noise: ") and "Traceback" not in h100.stderr
