"""benchmarks/random_shapes.py: conv layers drawn outside the corpus, reproducibly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from random_shapes import main, sample  # noqa: E402

from kptune.corpus import load_corpus  # noqa: E402


def test_a_seed_draws_the_committed_layers_again_none_of_them_in_the_corpus() -> None:
    corpus = {e.problem for e in load_corpus()}
    committed = [e.problem for e in load_corpus(ROOT / "benchmarks" / "random_shapes-s0.csv")]
    drawn = sample(len(committed), 0, 1.0, corpus)
    assert drawn == committed  # the measured draws stay reproducible
    assert not set(drawn) & corpus
    assert all(p.flops() <= 1e9 for p in drawn)
    assert sample(len(committed), 1, 1.0, corpus) != drawn


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "0"], "must be positive"),
        (["--max-gflop", "nan"], "must be positive"),
        (["--max-gflop", "1e-12"], "no layer of at most"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "layers.csv"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()
