"""Verify and time one compiled config on a live backend (runs in the worker process)."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from kptune.backends import Backend, CompileError, LaunchError
from kptune.kernel import KernelFamily
from kptune.measurement import Measurement, Outcome, TimingSettings
from kptune.problem import Problem
from kptune.space import Config


@dataclasses.dataclass
class ProblemState:
    """Device buffers and the reference for one problem, reused by every config."""

    problem: Problem
    reference: Any  # the backend's handle to the float64 reference
    output: Any
    output_shape: tuple[int, ...]
    output_dtype: np.dtype[Any]
    arg_sets: list[list[Any]]  # rotating copies of the inputs, same output buffer


def prepare(
    backend: Backend,
    family: KernelFamily,
    problem: Problem,
    inputs: Mapping[str, np.ndarray] | None,
    reference: np.ndarray | None,
    settings: TimingSettings,
) -> ProblemState:
    """Copies of the inputs and the reference on the device: the host's, or (both None) made there."""
    name, shape, dtype = family.output(problem)
    if inputs is None:
        made, ref = backend.make_on_device(family, problem, settings.seed)
        input_bytes = sum(a.nbytes for a in made.values())
    else:
        assert reference is not None, "host inputs come with the host's reference"
        ref = backend.upload_reference(reference)
        input_bytes = sum(a.nbytes for a in inputs.values())
    want = math.ceil(settings.rotate_cache_factor * backend.device.l2_bytes / max(input_bytes, 1))
    budget = max(1, int(0.25 * backend.device.global_mem_bytes // max(input_bytes, 1)))
    copies = max(1, min(want, settings.max_input_sets, budget))
    out = backend.empty(shape, dtype)
    scalars = [backend.scalar(v) for v in family.scalars(problem)]
    if inputs is None:
        uploaded = [made] + [{k: v.copy() for k, v in made.items()} for _ in range(copies - 1)]
    else:
        uploaded = [{k: backend.upload(v) for k, v in inputs.items()} for _ in range(copies)]
    arg_sets = [[out if b == name else bufs[b] for b in family.buffers] + scalars for bufs in uploaded]
    return ProblemState(problem, ref, out, shape, dtype, arg_sets)


def measure_config(
    backend: Backend,
    family: KernelFamily,
    state: ProblemState,
    config: Config,
    best_ms: float | None,
    settings: TimingSettings,
) -> Measurement:
    """Compile, verify against the reference, then time. Never raises on a bad config."""
    t0 = time.perf_counter()
    try:
        kernel = backend.compile(family.full_source, family.entry, family.defines(state.problem, config))
    except CompileError as exc:
        return Measurement(config, Outcome.COMPILE_ERROR, error=str(exc))
    compile_s = time.perf_counter() - t0
    groups, local = family.geometry(state.problem, config)
    zeroed = state.output if family.needs_zeroed_output(config) else None
    try:
        backend.check_launch(kernel, local)
        if zeroed is None:
            backend.fill_nan(state.output, state.output_dtype)  # outputs it never writes stay NaN and fail
        # the verifying launch is timed too (zeroing included, as in every timed launch of an
        # accumulating config), so a config far slower than the best needs no second launch
        first_ms = backend.time_launches(kernel, groups, local, [state.arg_sets[0]], zeroed)[0]
        err = backend.relative_error(state.output, state.reference, state.output_shape, state.output_dtype)
    except LaunchError as exc:
        return Measurement(config, Outcome.LAUNCH_ERROR, compile_s=compile_s, error=str(exc), fatal=exc.fatal)
    t1 = time.perf_counter()
    verify_s = t1 - t0 - compile_s
    tolerance = family.tolerance_for(state.problem)
    if not err <= tolerance:
        return Measurement(
            config, Outcome.WRONG_RESULT, rel_error=err, compile_s=compile_s, verify_s=verify_s,
            error=f"relative error {err:.3g} above {tolerance:g}",
        )  # fmt: skip
    # one launch is a noisy sample (a CPU device, or the host's launch latency on a tiny kernel):
    # alone it stops only a config far off the best; the first batch's minimum decides the rest
    stop = settings.stop_rule(backend.device.kind)
    if stop.stops_after_verify(first_ms, best_ms):
        return Measurement(
            config, Outcome.OK, time_ms=first_ms, min_ms=first_ms, runs=1, rel_error=err,
            compile_s=compile_s, verify_s=verify_s,
        )  # fmt: skip
    sets = state.arg_sets
    try:
        if settings.warmup:
            warm = [sets[i % len(sets)] for i in range(settings.warmup)]
            backend.time_launches(kernel, groups, local, warm, zeroed, first_ms)
        times = backend.time_launches(
            kernel, groups, local, [sets[i % len(sets)] for i in range(settings.first_batch)], zeroed, first_ms
        )
        if not stop.stops_after_first_batch(times, best_ms):
            typical = max(statistics.median(times), 1e-4)
            more = int(settings.target_ms / typical) - len(times)
            more = max(settings.min_runs - len(times), min(more, settings.max_runs - len(times)))
            if more > 0:
                start = len(times)
                times += backend.time_launches(
                    kernel, groups, local, [sets[(start + i) % len(sets)] for i in range(more)], zeroed, typical
                )
    except LaunchError as exc:
        return Measurement(config, Outcome.LAUNCH_ERROR, compile_s=compile_s, error=str(exc), fatal=exc.fatal)
    return Measurement(
        config, Outcome.OK, time_ms=statistics.median(times), min_ms=min(times), runs=len(times),
        rel_error=err, compile_s=compile_s, verify_s=verify_s, bench_s=time.perf_counter() - t1,
    )  # fmt: skip
