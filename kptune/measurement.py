"""What measuring one config yields: an outcome, and times when it ran correctly."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import NamedTuple

from kptune.space import Config


class Outcome(enum.StrEnum):
    OK = "ok"
    COMPILE_ERROR = "compile_error"
    LAUNCH_ERROR = "launch_error"
    WRONG_RESULT = "wrong_result"
    TIMEOUT = "timeout"
    INVALID = "invalid"


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One config on one problem and device. Times in milliseconds (device events).

    `time_ms` is the median of `runs` timed launches (None unless outcome is ok);
    an early-stopped config has few runs and a time far above the best.
    """

    config: Config
    outcome: Outcome
    time_ms: float | None = None
    min_ms: float | None = None
    runs: int = 0
    rel_error: float | None = None
    compile_s: float = 0.0  # host seconds in the worker: compiling or loading from the cache,
    verify_s: float = 0.0  # launching once and comparing with the reference,
    bench_s: float = 0.0  # and the timed launches (warm-up included)
    error: str = ""
    fatal: bool = False  # the device context may be poisoned: restart the worker

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def lowest(*times: float | None) -> float | None:
    """The smallest of the times known (None where none is)."""
    known = [t for t in times if t is not None]
    return min(known) if known else None


def fastest(measurements: Iterable[Measurement]) -> Measurement | None:
    """The correct measurement with the lowest median time, if any."""
    ok = [m for m in measurements if m.ok and m.time_ms is not None]
    return min(ok, key=lambda m: m.time_ms or 0.0) if ok else None


@dataclasses.dataclass(frozen=True)
class TimingSettings:
    """How a config is timed (see DESIGN.md, "Measuring")."""

    warmup: int = 0  # untimed launches first (the verifying launch has already run the kernel once)
    first_batch: int = 3  # runs before the early-stop check (their minimum: one launch is too noisy on a CPU)
    min_runs: int = 5
    max_runs: int = 100
    target_ms: float = 10.0  # aim for this much timed device time per config
    # Early stopping: a config stops once min(first batch) > early_stop_factor * best + stop_slack_ms,
    # or at once when its verifying launch took verify_stop_factor * best + verify_slack_ms.
    # None: by how noisy one launch is on the device (`stop_rule`).
    early_stop_factor: float | None = None
    verify_stop_factor: float | None = None
    stop_slack_ms: float | None = None
    verify_slack_ms: float | None = None
    rotate_cache_factor: float = 2.0  # rotate input copies totalling this many L2 sizes
    max_input_sets: int = 8
    timeout_s: float = 60.0  # watchdog per config, compile included
    seed: int = 0

    def stop_rule(self, device_kind: str) -> StopRule:
        """When to stop timing a config on a device of this kind (fields left None).

        A GPU's launches repeat to within a few per cent above ~0.1 ms (2026-11-22 H200 campaign: median
        over min of 5+ runs, p99 1.05 at 0.1-1 ms, 1.04 above 1 ms); shorter kernels carry the host's
        launch jitter, hence an absolute slack; the verifying launch (the first of a freshly loaded
        kernel, zeroing included) ran up to ~0.035 ms long on an H200 (a 0.0155 ms winner timed
        0.051 ms), hence its larger slack. A CPU device (PoCL) moved up to 2x between runs.
        """
        gpu = device_kind == "gpu"

        def pick(value: float | None, on_gpu: float, on_cpu: float) -> float:
            return value if value is not None else (on_gpu if gpu else on_cpu)

        return StopRule(
            verify_factor=pick(self.verify_stop_factor, 1.5, 4.0),
            verify_slack_ms=pick(self.verify_slack_ms, 0.05, 0.0),
            early_factor=pick(self.early_stop_factor, 1.2, 2.0),
            early_slack_ms=pick(self.stop_slack_ms, 0.01, 0.0),
        )


class StopRule(NamedTuple):
    verify_factor: float
    verify_slack_ms: float
    early_factor: float
    early_slack_ms: float

    def stops_after_verify(self, first_ms: float, best_ms: float | None) -> bool:
        return best_ms is not None and first_ms > self.verify_factor * best_ms + self.verify_slack_ms

    def stops_after_first_batch(self, times: list[float], best_ms: float | None) -> bool:
        return best_ms is not None and min(times) > self.early_factor * best_ms + self.early_slack_ms
