"""`tune()`: measure a strategy's configs for one problem on one device into the perf db."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kptune.backends import resolve_device
from kptune.device import DeviceInfo, check_fits
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.measurement import Measurement, Outcome, TimingSettings, fastest
from kptune.perfdb import PerfDB
from kptune.problem import Problem
from kptune.runner import Runner
from kptune.space import Config
from kptune.strategies import get_strategy

#: Called after each measurement: (done, total, measurement, best so far).
ProgressFn = Callable[[int, int, Measurement, Measurement | None], None]


@dataclasses.dataclass
class TuneResult:
    """What one tuning run found; `best` covers earlier runs' measurements too."""

    problem: Problem
    device: DeviceInfo
    kernel: str
    strategy: str
    db_path: Path
    candidates: int
    measured: int
    resumed: int
    outcomes: dict[str, int]
    best: Measurement | None
    wall_s: float
    #: where the wall time went, in seconds: setup (inputs, float64 reference), precompile,
    #: compile/verify/bench (inside the worker), db writes, and other (IPC, worker starts)
    phases: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def configs_per_s(self) -> float:
        return self.measured / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def best_tflops(self) -> float | None:
        return self.problem.tflops(self.best.time_ms) if self.best is not None else None

    def to_json(self) -> dict[str, Any]:
        best = None
        if self.best is not None:
            best = {"config": self.best.config.as_dict(), "key": self.best.config.key(),
                    "time_ms": self.best.time_ms, "min_ms": self.best.min_ms, "tflops": self.best_tflops}  # fmt: skip
        return {
            "problem": self.problem.key(), "device": self.device.spec, "device_name": self.device.name,
            "kernel": self.kernel, "strategy": self.strategy, "db": str(self.db_path),
            "candidates": self.candidates, "measured": self.measured, "resumed": self.resumed,
            "outcomes": self.outcomes, "best": best, "wall_s": round(self.wall_s, 3),
            "configs_per_s": round(self.configs_per_s, 3),
            "phases_s": {k: round(v, 3) for k, v in self.phases.items()},
        }  # fmt: skip


def tune(
    problem: Problem,
    *,
    kernel: str = "conv2d_fwd",
    device: DeviceInfo | str | None = None,
    strategy: str = "exhaustive",
    budget: int | None = None,
    db: PerfDB | str | Path | None = None,
    settings: TimingSettings | None = None,
    jobs: int | None = None,
    progress: ProgressFn | None = None,
    configs: Sequence[Config] | None = None,
    source: str | None = None,
    resume: bool = True,
    runner: Runner | None = None,
) -> TuneResult:
    """Measure the configs `strategy` picks, skipping those already in the db (resume).

    Every measurement is committed as it comes, so an interrupted run loses at most
    the config in flight. Returns the best over all measurements of these configs.
    With `configs`, exactly those are measured (a model's candidates), stored as `source`;
    `resume=False` measures them again even if the db has them. `runner`: an open Runner of this
    family and device to measure with (left open; e.g. one started while a model predicted).
    """
    t0 = time.perf_counter()
    family = get_family(kernel)
    if not family.accepts(problem):
        raise KptuneError(f"kernel {kernel} does not take {problem.kind} problems")
    dev = device if isinstance(device, DeviceInfo) else resolve_device(device)
    check_fits(problem, dev)
    settings = settings or TimingSettings()
    own_db = not isinstance(db, PerfDB)
    perfdb = db if isinstance(db, PerfDB) else PerfDB(db)
    try:
        if configs is not None:
            candidates = list(dict.fromkeys(configs))
        else:
            valid = family.space.configs(problem, dev)
            if not valid:
                raise KptuneError(f"kernel {kernel} has no valid config for {problem.key()} on {dev.spec}")
            candidates = get_strategy(strategy)(valid, budget, settings.seed)
        pid, did = perfdb.problem_id(problem), perfdb.device_id(dev)
        kid = perfdb.kernel_id(family.name, family.source_hash, family.space.names)
        previous = {m.config: m for m in perfdb.measurements(pid, did, kid)}
        if not resume:
            previous = {}
        todo = [c for c in candidates if c not in previous]
        latest = {c: previous[c] for c in candidates if c in previous}
        best = fastest(latest.values())
        source = source or (strategy if strategy in ("exhaustive", "random") else "manual")
        done = len(latest)
        phases = dict.fromkeys(("setup", "precompile", "compile", "verify", "bench", "db", "other"), 0.0)
        if todo:
            with contextlib.nullcontext(runner) if runner is not None else Runner(family, dev, settings) as runner:
                clock = time.perf_counter()
                runner.set_problem(problem)
                phases["setup"] = time.perf_counter() - clock
                clock = time.perf_counter()
                compile_errors = runner.precompile(todo, jobs)
                phases["precompile"] = time.perf_counter() - clock
                failed = [Measurement(c, Outcome.COMPILE_ERROR, error=compile_errors[c]) for c in compile_errors]
                measured = runner.measure_each(
                    [c for c in todo if c not in compile_errors], lambda: best.time_ms if best else None
                )
                clock = time.perf_counter()
                for m in itertools.chain(failed, measured):
                    config = m.config
                    worker_s = m.compile_s + m.verify_s + m.bench_s
                    phases["compile"] += m.compile_s
                    phases["verify"] += m.verify_s
                    phases["bench"] += m.bench_s
                    phases["other"] += time.perf_counter() - clock - worker_s
                    clock = time.perf_counter()
                    perfdb.add(pid, did, kid, m, source)
                    phases["db"] += time.perf_counter() - clock
                    latest[config] = m
                    if m.ok and (best is None or (m.time_ms or 0) < (best.time_ms or 0)):
                        best = m
                    done += 1
                    if progress is not None:
                        progress(done, len(candidates), m, best)
                    clock = time.perf_counter()
        outcomes = collections.Counter(str(m.outcome) for m in latest.values())
        return TuneResult(
            problem=problem, device=dev, kernel=family.name, strategy=strategy, db_path=perfdb.path,
            candidates=len(candidates), measured=len(todo), resumed=len(candidates) - len(todo),
            outcomes=dict(sorted(outcomes.items())), best=best, wall_s=time.perf_counter() - t0, phases=phases,
        )  # fmt: skip
    finally:
        if own_db:
            perfdb.close()
