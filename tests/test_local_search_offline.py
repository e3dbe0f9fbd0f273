"""benchmarks/local_search_offline.py: a run on the shipped PoCL dataset (the search itself: test_local_search)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kptune import dataset as ds

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_on_the_shipped_cpu_dataset_scores_every_set(tmp_path: Path) -> None:
    dataset = ROOT / "kptune" / "data" / "dataset-pocl-cpu.db.gz"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "local_search_offline.py"), "--dataset",
                          str(dataset), "--more", "5", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "local_search_offline.json").read_text())
    test = [p for p in ds.load(dataset).split("test") if ",dtype=fp32," in p.key]
    assert [r["problem"] for r in doc["rows"]] == [p.key for p in test]
    for row in doc["rows"]:  # more measured never loses the fastest found; none beats the table's fastest
        assert 0 <= row["autotune"] <= row["local 5"] <= 1.0 and row["autotune"] <= row["lent 5"] <= 1.0
    assert any(row["autotune"] > 0 for row in doc["rows"])  # PoCL's test problems keep 24 sampled configs: some hit
    assert doc["summary"]["autotune"]["n"] == len(test)
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "local_search_offline.py"), "--compare",
                          str(tmp_path / "none.db")], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("local_search_offline: ") and "Traceback" not in bad.stderr
