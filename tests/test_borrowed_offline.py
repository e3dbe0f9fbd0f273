"""benchmarks/borrowed_offline.py on a real `kptune compare` run on PoCL."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from kptune.device import DeviceInfo
from kptune.local_search import LOCAL
from kptune.problem import Conv2dProblem

ROOT = Path(__file__).resolve().parents[1]


def test_random_search_the_models_top_k_and_autotune_are_scored_on_the_exhaustive_times(
    cpu_device: DeviceInfo, tmp_path: Path
) -> None:
    from kptune.compare import compare

    tiny = Conv2dProblem.parse("n=1,c=1,h=3,w=3,k=1,r=1,s=1")  # 28 valid configs on PoCL
    (row,) = compare([tiny], device=cpu_device, db=tmp_path / "compare.db")  # the shipped model, autotune's default
    (tmp_path / "compare_gpus.json").write_text(json.dumps({"rows": [row.to_json()]}))
    with open(tmp_path / "compare.db", "rb") as src, gzip.open(tmp_path / "compare.db.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    recorded = tmp_path / "recorded.db.gz"  # the compare run's own times, cut as a dataset
    cut = subprocess.run([sys.executable, "-m", "kptune", "dataset", "build", "--db", str(tmp_path / "compare.db"),
                          "--out", str(recorded)], capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert cut.returncode == 0, cut.stderr
    script = str(ROOT / "benchmarks" / "borrowed_offline.py")
    run = subprocess.run([sys.executable, script, "--compare", str(tmp_path), "--recorded", str(recorded)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "borrowed_offline.json").read_text())
    (scored,) = doc["rows"]
    assert scored["problem"] == tiny.key() and scored["configs"] == row.configs
    assert scored["sizes"]["random"] == 24 and scored["sizes"]["model top k"] == 5
    assert scored["sizes"]["model top 1"] == 1
    assert doc["summary"]["reranked top 1"]["n"] == 0 and "reranked top 1" not in scored  # PoCL's has no reranker
    sets = ("random", "model top 1", "model top k", "autotune's candidates", "autotune")
    for name in sets:  # against the same exhaustive times' fastest
        assert 0 < scored[name] <= 1.0
    assert scored["autotune"] >= scored["autotune's candidates"] >= scored["model top k"] >= scored["model top 1"]
    assert set(scored["recorded"]) == {"model top 1", "model top k"}  # scored on the dataset's copy of the times too
    assert all(0 < r <= 1.0 for r in scored["recorded"].values())
    held = doc["on_recorded"]["model top k"]
    assert held["compared"]["n"] == held["recorded"]["n"] == 1
    assert doc["on_recorded"]["reranked top 1"]["recorded"]["n"] == 0  # PoCL's has no reranker
    hits = doc["summary"]["model top k"]["hit"]  # a set holding the fastest config scores 1: issue 5's top-k hit
    assert hits == (scored["model top k"] >= 1.0)
    with sqlite3.connect(tmp_path / "compare.db") as c:  # the candidates scored are those the run measured
        measured = c.execute("SELECT COUNT(DISTINCT config_id) FROM measurements WHERE source = 'model'").fetchone()
    assert scored["sizes"]["autotune's candidates"] <= scored["sizes"]["autotune"] <= measured[0]  # (local search)
    assert scored["sizes"]["autotune"] <= min(row.configs, scored["sizes"]["autotune's candidates"] + LOCAL)
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "borrowed_offline.py"), "--compare",
                          str(tmp_path / "none")], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("borrowed_offline: ") and "Traceback" not in bad.stderr
    no_k = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "borrowed_offline.py"), "--compare",
                           str(tmp_path), "-k", "0"], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert no_k.returncode == 2 and "-k: must be at least 1, not 0" in no_k.stderr and "Traceback" not in no_k.stderr
