"""benchmarks/diversity.py and PerfDB.tuned_problems on a small perf db built through the PerfDB API."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import diversity as D

from kptune.device import DeviceInfo
from kptune.measurement import Measurement, Outcome
from kptune.perfdb import PerfDB
from kptune.problem import Conv2dProblem
from kptune.space import Config

CPU = DeviceInfo("opencl", "0:0", "pocl-cpu", "v", "cpu", "d", "c", 256, 65536, 0, 2, 1, 1 << 20, 1 << 30)
GPU = DeviceInfo("cupy", "0", "NVIDIA H200", "nvidia", "gpu", "d", "c", 1024, 49152, 65536, 132, 32, 50 << 20, 1 << 37)
P1 = Conv2dProblem.parse("n=1,c=64,h=56,w=56,k=64,r=3,s=3,pad=1")
P2 = Conv2dProblem.parse("n=32,c=256,h=14,w=14,k=1024,r=1,s=1")
P3 = Conv2dProblem.parse("n=1,c=3,h=224,w=224,k=64,r=7,s=7,pad=3,stride=2")
A, B, C, E = (Config.of({"BM": bm, "BN": 64}) for bm in (16, 32, 64, 128))

# Made-up times (ms). P1's winner is A, P2's is E; E failed on P1, so only A, B, C are ok on both.
#   ratio t_best / t:  A: 1/1, 0.8/4   B: 1/2, 0.8/1   C: 1/1.25, 0.8/1.25
TIMES = {P1: {A: 1.0, B: 2.0, C: 1.25}, P2: {A: 4.0, B: 1.0, C: 1.25, E: 0.8}}


def _ok(config: Config, ms: float) -> Measurement:
    return Measurement(config, Outcome.OK, ms, ms * 0.98, 10, 1e-7)


def _build(path: Path) -> None:
    with PerfDB(path) as db:
        kid = db.kernel_id("conv2d_fwd", "a9f09a4d5584eaa7", ["BM", "BN"])
        cpu, gpu = db.device_id(CPU), db.device_id(GPU)
        p1, p2, p3 = db.problem_id(P1), db.problem_id(P2), db.problem_id(P3)
        db.add(p1, cpu, kid, _ok(B, 0.5), "random")  # superseded below: the latest measurement of B counts
        for problem, times in TIMES.items():
            for config, ms in times.items():
                db.add(db.problem_id(problem), cpu, kid, _ok(config, ms), "exhaustive")
        db.add(p1, cpu, kid, Measurement(E, Outcome.COMPILE_ERROR, error="too many registers"), "exhaustive")
        db.add(p2, cpu, kid, Measurement(Config.of({"BM": 8, "BN": 8}), Outcome.WRONG_RESULT, rel_error=1.0), "random")
        db.add(p3, cpu, kid, Measurement(A, Outcome.TIMEOUT), "exhaustive")  # nothing ok: not a tuned problem
        db.add(p1, gpu, kid, _ok(A, 0.1), "exhaustive")  # another device, not mixed in


def test_tuned_problems_lists_only_problems_with_ok_measurements(tmp_path: Path) -> None:
    _build(tmp_path / "perf.db")
    with PerfDB(tmp_path / "perf.db") as db:
        tuned = db.tuned_problems()
        assert [(t.device_key, t.problem_key) for t in tuned] == [
            (CPU.key, P1.key()), (CPU.key, P2.key()), (GPU.key, P1.key()),
        ]  # fmt: skip
        assert {(t.family, t.source_hash) for t in tuned} == {("conv2d_fwd", "a9f09a4d5584eaa7")}
        assert [t.problem_key for t in db.tuned_problems(GPU.key)] == [P1.key()]
        assert db.tuned_problems(family="other") == [] and db.tuned_problems("cupy:nope") == []
        t = tuned[0]
        assert {m.config for m in db.measurements(t.problem_id, t.device_id, t.kernel_id) if m.ok} == {A, B, C}


def test_analysis_by_hand(tmp_path: Path) -> None:
    _build(tmp_path / "perf.db")
    with PerfDB(tmp_path / "perf.db") as db:
        first, times, others = D.load(db, None, None)
    assert first.device_key == CPU.key and others == [f"{GPU.key} / conv2d_fwd (a9f09a4d5584)"]
    assert times == {p.key(): {c.key(): ms for c, ms in t.items()} for p, t in TIMES.items()}  # latest B, no E on P1
    report = D.analyze(times)
    assert report["problems"] == 2 and report["distinct_winners"] == 2
    assert D.winners(times) == {P1.key(): A.key(), P2.key(): E.key()}
    assert report["common_configs"] == 3 and report["configs_seen"] == 4
    best = report["best_fixed"]
    assert best["config"] == C.key()
    assert best["geomean_ratio"] == pytest.approx(math.sqrt((1 / 1.25) * (0.8 / 1.25)))  # 0.716
    assert (best["worst_problem"], best["worst_ratio"]) == (P2.key(), pytest.approx(0.64))
    assert best["problems_within"] == 0
    ranking = dict(D.fixed_config_ranking(times))
    assert ranking[A.key()] == pytest.approx(math.sqrt(1.0 * 0.2)) and ranking[B.key()] == pytest.approx(math.sqrt(0.4))
    assert [t["config"] for t in report["top_fixed"]] == [C.key(), B.key(), A.key()]
    mfw = report["most_frequent_winner"]  # A and E win one each: A came first; E is not ok everywhere
    assert (mfw["config"], mfw["wins"], mfw["geomean_ratio"]) == (A.key(), 1, pytest.approx(math.sqrt(0.2)))


def test_one_config_everywhere_scores_1_and_no_common_config_is_reported() -> None:
    same = {"p1": {"x": 1.0, "y": 3.0}, "p2": {"x": 2.0, "y": 2.5}}
    report = D.analyze(same)
    assert report["distinct_winners"] == 1 and report["best_fixed"]["geomean_ratio"] == 1.0
    assert report["best_fixed"]["problems_within"] == 2
    disjoint = D.analyze({"p1": {"x": 1.0}, "p2": {"y": 2.0}})
    assert disjoint["best_fixed"] is None and disjoint["common_configs"] == 0 and disjoint["distinct_winners"] == 2
    assert disjoint["most_frequent_winner"]["geomean_ratio"] is None
    assert "none: no config was measured ok on every problem" in D.table(disjoint)


def test_cli_prints_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _build(tmp_path / "perf.db")
    assert D.main(["--db", str(tmp_path / "perf.db"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| distinct winning configs | 2 |" in out and f"| best fixed config | {C.key()} |" in out
    assert "| its worst problem | n=32,c=256,h=14,w=14,k=1024,r=1,s=1 (0.640) |" in out
    doc = json.loads((tmp_path / "out" / "diversity.json").read_text())
    assert doc["device"] == CPU.key and doc["problems"] == 2 and doc["commit"] and doc["command"]
    assert {r["problem"]: r["ratio"] for r in doc["best_fixed"]["per_problem"]} == {
        P1.key(): pytest.approx(0.8), P2.key(): pytest.approx(0.64)
    }  # fmt: skip
    assert D.main(["--db", str(tmp_path / "perf.db"), "--device", "h200", "--out", str(tmp_path / "gpu")]) == 0
    gpu = json.loads((tmp_path / "gpu" / "diversity.json").read_text())
    assert gpu["device"] == GPU.key and gpu["problems"] == 1 and gpu["best_fixed"]["config"] == A.key()


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    assert D.main(["--db", str(missing), "--out", str(tmp_path)]) == 2
    assert not missing.exists()  # a read-only report never creates a db
    _build(tmp_path / "perf.db")
    assert D.main(["--db", str(tmp_path / "perf.db"), "--device", "c", "--out", str(tmp_path)]) == 2  # ambiguous
    assert D.main(["--db", str(tmp_path / "perf.db"), "--family", "gemm", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("diversity: ") for line in err)
    assert "matches 2 of the db's devices" in err[1] and "there are: conv2d_fwd" in err[2]


def test_one_fixed_config_per_algorithm_when_none_is_valid_everywhere() -> None:
    # p1, p2 are won by ALGO=1 configs, p3 by ALGO=0; no config is measured on all three.
    times = {
        "p1": {"ALGO=1,BM=16": 1.0, "ALGO=1,BM=32": 2.0},
        "p2": {"ALGO=1,BM=16": 4.0, "ALGO=1,BM=32": 2.0},
        "p3": {"ALGO=0,BM=16": 1.0, "ALGO=0,BM=32": 1.6, "ALGO=1,BM=16": 0.5},  # ALGO=1 wins p3
        "p4": {"ALGO=0,BM=16": 3.0, "ALGO=0,BM=32": 1.5},
    }
    report = D.analyze(times)
    assert report["best_fixed"] is None
    per = report["fixed_per_algorithm"]
    # ALGO=1 serves p1, p2, p3: BM=16 scores (1 * 0.5 * 1)^(1/3), BM=32 is not ok on p3.
    # ALGO=0 serves p4 alone: BM=32 is its winner.
    assert [(g["algorithm"], g["problems"], g["config"]) for g in per["groups"]] == [
        ("ALGO=0", 1, "ALGO=0,BM=32"), ("ALGO=1", 3, "ALGO=1,BM=16"),
    ]  # fmt: skip
    assert per["geomean_ratio"] == pytest.approx(0.5 ** (1 / 4))
    assert (per["worst_problem"], per["worst_ratio"], per["problems_within"]) == ("p2", 0.5, 3)
    assert "one fixed config per algorithm" in D.table(report)
    assert D.fixed_per_first_token({"p1": {"A=1,B=1": 1.0}, "p2": {"A=1,B=2": 1.0, "A=1,B=3": 2.0},
                                    "p3": {"A=1,B=3": 1.5}}) is None  # fmt: skip
