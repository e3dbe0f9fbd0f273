"""What measuring one config yields: an outcome, and times when it ran correctly."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

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
    early_stop_factor: float = 2.0  # stop once min(first batch) > factor * best so far
    verify_stop_factor: float = 4.0  # or at once, if the verifying launch alone took this many times the best
    rotate_cache_factor: float = 2.0  # rotate input copies totalling this many L2 sizes
    max_input_sets: int = 8
    timeout_s: float = 60.0  # watchdog per config, compile included
    seed: int = 0
