"""A kernel family registered from Python gets the whole pipeline (space, runner, db)."""

from __future__ import annotations

from pathlib import Path

from families_for_tests import AXPY, AxpyProblem

from kptune import PerfDB, TimingSettings, tune
from kptune.device import DeviceInfo
from kptune.problem import problem_from_key


def test_user_family_tunes_end_to_end(cpu_device: DeviceInfo, db_path: Path) -> None:
    problem = AxpyProblem(n=1000, a=3)
    result = tune(problem, kernel="axpy", device=cpu_device, db=db_path,
                  settings=TimingSettings(target_ms=1.0, max_runs=10), jobs=0)  # fmt: skip
    assert result.candidates == len(AXPY.space.configs(problem, cpu_device)) == 12
    assert result.outcomes == {"ok": 12}
    assert result.best is not None and result.best.time_ms is not None and result.best.time_ms > 0
    assert problem_from_key(problem.key()) == problem
    with PerfDB(db_path) as db:
        summary = db.summary()
    assert summary["counts"]["measurements"] == 12
    assert summary["best"][0]["kernel"] == "axpy"
