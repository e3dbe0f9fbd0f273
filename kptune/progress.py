"""A rich progress bar for tuning runs: configs done, configs/s and the best so far."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
            tflops = self.problem.flops() / (best.time_ms * 1e-3) / 1e12
            best_text = f"{best.time_ms:.4g} ms ({tflops:.3g} TFLOP/s)"
        self._progress.update(self._task, completed=done, total=total, rate=f"{rate:.1f}", best=best_text)
