"""benchmarks/decoder_step.py: the NumPy and torch steps agree, and both are timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

ROOT = Path(__file__).resolve().parents[1]


def test_both_steps_are_timed_at_3_and_12_beams(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "decoder_step.py"), "--repeats", "5", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "decoder_step.json").read_text())
    assert set(doc["beams"]) == {"3", "12"}
    assert all(value > 0 for row in doc["beams"].values() for value in row.values())
    assert doc["numpy_blas"] and doc["cpu"]
