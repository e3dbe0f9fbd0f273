"""Rich progress bars: one tuning run (configs done, configs/s, best so far) and a campaign (shapes, configs, ETA)."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kptune.measurement import Measurement
from kptune.problem import Problem


class TuneProgress:
    """Use as `progress=` of `kptune.tune.tune` inside a `with` block."""

    def __init__(self, problem: Problem, console: Console | None = None, label: str = "tuning") -> None:
        self.problem = problem
        self._start = time.perf_counter()
        self._measured = 0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} configs/s"),
            TextColumn("best {task.fields[best]}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(label, total=None, rate="-", best="-")

    def __enter__(self) -> TuneProgress:
        return self  # the bar starts with the first measurement: errors before it stay one line

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def __call__(self, done: int, total: int, m: Measurement, best: Measurement | None) -> None:
        if self._measured == 0:
            self._start = time.perf_counter()
            self._progress.start()
        self._measured += 1
        rate = self._measured / max(time.perf_counter() - self._start, 1e-9)
        best_text = "-"
        if best is not None and best.time_ms:
            tflops = self.problem.tflops(best.time_ms) or 0.0
            best_text = f"{best.time_ms:.4g} ms ({tflops:.3g} TFLOP/s)"
        self._progress.update(self._task, completed=done, total=total, rate=f"{rate:.1f}", best=best_text)


class CampaignDisplay:
    """Use as `progress=` of `kptune.campaign.campaign` inside a `with` block: shapes done, configs/s, ETA."""

    def __init__(self, console: Console | None = None, label: str = "campaign") -> None:
        self._label = label
        self._start = time.perf_counter()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._shapes = self._progress.add_task("shapes", total=None, extra="", visible=False)
        self._configs = self._progress.add_task("configs", total=None, extra="", visible=False)

    def __enter__(self) -> CampaignDisplay:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def start(self, problems: int, configs: int) -> None:
        self._start = time.perf_counter()
        self._progress.update(self._shapes, total=problems, visible=True, description=f"{self._label}: shapes")
        self._progress.update(self._configs, total=configs, visible=True, description=f"{self._label}: configs")
        self._progress.start()

    def advance(self, configs_done: int, problems_done: int) -> None:
        rate = configs_done / max(time.perf_counter() - self._start, 1e-9)
        self._progress.update(self._shapes, completed=problems_done)
        self._progress.update(self._configs, completed=configs_done, extra=f"{rate:.1f} configs/s")
