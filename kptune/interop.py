"""Other tools' formats: Kernel Tuner's T4 results (export and import), Kernel Tuner's cache
JSON (what its simulation mode replays), and MIOpen's text perf db (export).

- T4 (`kernel_tuner/schema/T4/1.0.0/results-schema.json`): {"schema_version": "1.0.0",
  "results": [{"configuration", "times", "invalidity", "correctness", "objectives",
  "measurements"}]}; one file per (problem, device, kernel). Outcomes map to `invalidity`
  as in `T4_INVALIDITY`. kptune stores the median and minimum of the timed runs, not each run,
  so `times.runtimes` is empty and the median is the "time" measurement (ms).
- Kernel Tuner cache (schema 1.1.0): the file `tune_kernel(..., cache=FILE,
  simulation_mode=True)` reads; failed configs carry the error strings Kernel Tuner uses.
  Only configs kptune measured are in it (its validity rules are not Kernel Tuner restrictions).
- MIOpen perf db (`*.udb.txt`): one line per problem, `KEY=kptune_<family>:v1,v2,...`, the
  key serialised as MIOpen's `ProblemDescription::Serialize` does
  (C-H-W-RxS-K-Ho-Wo-N-PhxPw-ShxSw-DhxDw-bias-LAYOUT-PREC-DIR[_gG]) and the values being the
  best config's parameters in the family's order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import KernelFamily
from kptune.measurement import Measurement, Outcome
from kptune.perfdb import PerfDB
from kptune.problem import Conv2dProblem, Problem, problem_from_key
from kptune.space import Config

T4_VERSION = "1.0.0"
T4_INVALIDITY = {
    Outcome.OK: "correct",
    Outcome.COMPILE_ERROR: "compile",
    Outcome.LAUNCH_ERROR: "runtime",
    Outcome.WRONG_RESULT: "correctness",
    Outcome.TIMEOUT: "timeout",
    Outcome.INVALID: "constraints",
}
KT_CACHE_ERRORS = {
    Outcome.COMPILE_ERROR: "CompilationFailedConfig",
    Outcome.INVALID: "InvalidConfig",
    Outcome.LAUNCH_ERROR: "RuntimeFailedConfig",
    Outcome.WRONG_RESULT: "RuntimeFailedConfig",
    Outcome.TIMEOUT: "RuntimeFailedConfig",
}


class InteropError(KptuneError):
    """A file in another tool's format is malformed or does not fit the kernel family."""


def _latest(db: PerfDB, problem: Problem, device_key: str, family: KernelFamily) -> list[Measurement]:
    tuned = [t for t in db.tuned_problems(device_key, family.name) if t.problem_key == problem.key()]
    tuned = [t for t in tuned if t.source_hash == family.source_hash] or tuned
    if not tuned:
        raise KptuneError(f"the db has no ok measurement of {family.name} for {problem.key()} on {device_key}")
    t = tuned[0]
    return db.measurements(t.problem_id, t.device_id, t.kernel_id)


def to_t4(db: PerfDB, problem: Problem, device_key: str, family: KernelFamily) -> dict[str, Any]:
    """Every config measured for one (problem, device, kernel) as a T4 results document."""
    results: list[dict[str, Any]] = []
    for m in _latest(db, problem, device_key, family):
        measurements = []
        if m.ok:
            measurements = [{"name": "time", "value": m.time_ms, "unit": "ms"},
                            {"name": "min_time", "value": m.min_ms, "unit": "ms"},
                            {"name": "runs", "value": m.runs, "unit": ""}]  # fmt: skip
        results.append({
            "configuration": m.config.as_dict(), "objectives": ["time"], "times": {"runtimes": []},
            "invalidity": T4_INVALIDITY[m.outcome], "correctness": 1 if m.ok else 0, "measurements": measurements,
        })  # fmt: skip
    return {
        "schema_version": T4_VERSION,
        "results": results,
        "metadata": {
            "kptune": {
                "problem": problem.key(),
                "device": device_key,
                "kernel": family.name,
                "source_hash": family.source_hash,
                "parameters": list(family.space.names),
            }
        },
    }


def from_t4(doc: Mapping[str, Any], family: KernelFamily, where: str = "<T4>") -> list[Measurement]:
    """The measurements of a T4 results document whose configurations use exactly the family's parameters."""
    results = doc.get("results") if isinstance(doc, Mapping) else None
    if not isinstance(results, list):
        raise InteropError(f"{where}: not a T4 results document (no 'results' list)")
    by_name = {v: k for k, v in T4_INVALIDITY.items()}
    names = set(family.space.names)
    out = []
    for i, result in enumerate(results):
        at = f"{where}: results[{i}]"
        config = result.get("configuration") if isinstance(result, Mapping) else None
        if not isinstance(config, Mapping) or set(config) != names:
            raise InteropError(f"{at}: configuration must set exactly {', '.join(family.space.names)}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in config.values()):
            raise InteropError(f"{at}: configuration values must be integers")
        invalidity = result.get("invalidity")
        if invalidity not in by_name:
            raise InteropError(f"{at}: invalidity {invalidity!r} is not one of {', '.join(by_name)}")
        outcome = by_name[invalidity]
        values = {mm.get("name"): mm.get("value") for mm in result.get("measurements") or [] if isinstance(mm, Mapping)}
        time_ms = values.get("time")
        cfg = Config(tuple((name, int(config[name])) for name in family.space.names))
        if outcome is Outcome.OK:
            if not (isinstance(time_ms, int | float) and time_ms > 0):
                raise InteropError(f"{at}: a correct result needs a positive 'time' measurement (ms)")
            low = values.get("min_time")
            out.append(Measurement(cfg, outcome, float(time_ms), float(low) if isinstance(low, int | float) else None,
                                   int(values.get("runs") or 1)))  # fmt: skip
        else:
            out.append(Measurement(cfg, outcome, error=f"imported from T4 ({invalidity})"))
    return out


def to_kernel_tuner_cache(db: PerfDB, problem: Problem, device: DeviceInfo, family: KernelFamily) -> dict[str, Any]:
    """Kernel Tuner's cache JSON (schema 1.1.0) for one problem, for `simulation_mode=True` replays."""
    cache: dict[str, Any] = {}
    for m in _latest(db, problem, device.key, family):
        entry: dict[str, Any] = dict(m.config.as_dict())
        entry["time"] = m.time_ms if m.ok else KT_CACHE_ERRORS[m.outcome]
        entry["times"] = [m.time_ms] if m.ok else []
        entry.update(compile_time=0, verification_time=0, benchmark_time=0, strategy_time=0, framework_time=0,
                     timestamp="")  # fmt: skip
        cache[",".join(str(v) for v in m.config.values())] = entry
    return {
        "schema_version": "1.1.0", "device_name": device.name, "kernel_name": family.entry,
        "problem_size": [problem.key()], "tune_params_keys": list(family.space.names),
        "tune_params": {p.name: list(p.values) for p in family.space.params}, "objective": "time", "cache": cache,
    }  # fmt: skip


def miopen_key(problem: Conv2dProblem) -> str:
    """The problem as MIOpen's ProblemDescription::Serialize writes it (2-D, NCHW, forward, no bias)."""
    p = problem
    if p.direction != "fwd":
        raise KptuneError(f"MIOpen keys of {p.direction} problems are not written yet")
    parts = [
        p.c,
        p.h,
        p.w,
        f"{p.r}x{p.s}",
        p.k,
        p.out_h,
        p.out_w,
        p.n,
        f"{p.pad_h}x{p.pad_w}",
        f"{p.stride_h}x{p.stride_w}",
        f"{p.dil_h}x{p.dil_w}",
        0,
        p.layout.upper(),
        p.dtype.upper(),
        "F",
    ]
    key = "-".join(str(x) for x in parts)
    return key + (f"_g{p.groups}" if p.groups != 1 else "")


def to_miopen_perfdb(db: PerfDB, device_key: str, family: KernelFamily) -> list[str]:
    """One `KEY=kptune_<family>:values` line per conv problem tuned on `device_key`: its fastest config."""
    lines = []
    for t in db.tuned_problems(device_key, family.name):
        problem = problem_from_key(t.problem_key)
        best = db.best(t.problem_id, t.device_id, t.kernel_id)
        if not isinstance(problem, Conv2dProblem) or best is None:
            continue
        lines.append(f"{miopen_key(problem)}=kptune_{family.name}:{','.join(str(v) for v in best.config.values())}")
    return sorted(lines)


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    try:
        path.write_text(json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        raise KptuneError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KptuneError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InteropError(f"{path}: not JSON ({exc})") from None
