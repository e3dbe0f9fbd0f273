"""A sample of benchmarks/fuzz_inputs.py in CI: no parser or loader may crash, and the bugs it found stay fixed."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fuzz_inputs

from kptune import dataset
from kptune.errors import KptuneError
from kptune.problem import parse_problem


def test_a_sample_of_fuzzed_inputs_never_crashes() -> None:
    results = fuzz_inputs.run_cases(cases=600, seed=1)
    crashes = {name: r["crash_examples"] for name, r in results.items() if r.get("crash")}
    assert not crashes
    assert all(r.get("refused", 0) > 0 for r in results.values())


def test_bugs_found_by_fuzzing(tmp_path: Path) -> None:
    # int() does not strip every character str.strip() does
    assert parse_problem(miopen="conv -n 1 -c 3 -H 8 -W 8 -k \x1d4 -y 3 -x 3").k == 4
    for blob in (b"", gzip.compress(b"")[:-3] + b"\x00\x00\x00", gzip.compress(b"x" * 999)[:30] + b"\x01" * 30):
        (tmp_path / "d.gz").write_bytes(blob)
        with pytest.raises(KptuneError):
            dataset.load(tmp_path / "d.gz")


def test_errors_echoing_input_stay_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the CLI fuzzing: a newline inside an echoed key broke the one-line rule."""
    from kptune.cli import main

    assert main(["predict", "--shape", "n=1,c=3,h=8,w=8,k=16,r=3,s=3,p\nd=1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "p\\nd" in err


def test_the_cli_answers_fuzzed_inputs_with_one_line_and_exit_2() -> None:
    """Each input kind through the command that reads it (predict, campaign --dry-run, db import/show,
    dataset show, predict --model): exit 0, or exit 2 with one line "kptune: error: ..."."""
    results = fuzz_inputs.run_cli_cases(cases=420, seed=1)
    crashes = {name: r["crash_examples"] for name, r in results.items() if r.get("crash")}
    assert not crashes
    assert all(r.get("refused", 0) > 0 for r in results.values())
