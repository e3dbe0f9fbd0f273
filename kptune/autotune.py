"""`autotune()`: the fastest measured config for a shape, in seconds instead of minutes.

1. A verified winner already in the perf db for this (problem, device, kernel) is returned at
   once (`force` re-tunes).
2. Else the device's model (a checkpoint made for this device key and kernel source: given,
   or found among the user's models and the shipped ones; else one made for a device this one may
   borrow from, `DeviceInfo.may_borrow`: an H100 SXM takes the H200's) predicts the top-k configs with the
   constrained beam, and the tuned shapes of the device's shipped dataset lend more
   (`kptune.neighbours`): `neighbours` configs of the nearest tuned shapes (the first picks of
   the cost model shipped beside the dataset, else the nearest shape's fastest), then `cover`
   configs that best complete the lot over the nearest tuned shapes (`candidates`); each is
   compiled, verified and timed on the device, every measurement stored with source=model; then
   `local` more in rounds of a local search around the fastest so far (`kptune.local_search`), and the
   fastest returned.
3. With no model for the device, a budgeted search, and the result says so: half the budget (rounded up) random
   valid configs, the other half by the same local search around the fastest (`local_search.unguided`: with no
   model to rank a config's neighbours, in an order shuffled by the timing seed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kptune.backends import resolve_device
from kptune.device import DeviceInfo, check_fits, newest_made_for
from kptune.errors import KptuneError
from kptune.kernel import KernelFamily, get_family
from kptune.local_search import LOCAL, guided, times_of, unguided
from kptune.measurement import Measurement, TimingSettings, fastest
from kptune.neighbours import COVER, FAR_NEIGHBOURS, NEIGHBOURS, Lender, lender_for
from kptune.perfdb import PerfDB
from kptune.problem import Conv2dProblem
from kptune.runner import Runner
from kptune.space import Config
from kptune.strategies import get_strategy
from kptune.tune import tune

#: configs autotune measures with no model for the device: half random, half by a local search (`fallback_split`)
FALLBACK_BUDGET = 24


def fallback_split(budget: int) -> tuple[int, int]:
    """(random configs, local search configs) of the fallback's `budget`: on 227 random layers outside the corpus
    timed exhaustively on an H100, 12 + 12 found 0.909 of the optimum where 24 random found 0.864
    (`benchmarks/fallback_offline.py`, RESULTS.md)."""
    return budget - budget // 2, budget // 2


@dataclasses.dataclass
class AutotuneResult:
    problem: Conv2dProblem
    device: DeviceInfo
    kernel: str
    source: str  # "db" (an earlier verified winner), "model" or "random" (no model for this device)
    measured: list[Measurement]  # this run's candidates, fastest first (empty when from the db)
    best: Measurement | None
    model: str | None
    note: str
    predict_ms: float
    wall_s: float
    db_path: Path
    setup_s: float = 0.0  # loading the problem into the worker (inputs, reference), beside the prediction

    @property
    def best_tflops(self) -> float | None:
        return self.problem.tflops(self.best.time_ms) if self.best is not None else None

    def to_json(self) -> dict[str, Any]:
        best = self.best

        def row(m: Measurement) -> dict[str, Any]:
            ratio = best.time_ms / m.time_ms if best and best.time_ms and m.ok and m.time_ms else None
            tflops = self.problem.tflops(m.time_ms) if m.ok else None
            return {"config": m.config.as_dict(), "key": m.config.key(), "outcome": str(m.outcome),
                    "time_ms": m.time_ms, "tflops": tflops, "ratio_to_winner": ratio}  # fmt: skip

        return {
            "problem": self.problem.key(), "device": self.device.spec, "device_name": self.device.name,
            "kernel": self.kernel, "source": self.source, "model": self.model, "note": self.note,
            "best": row(best) if best else None, "candidates": [row(m) for m in self.measured],
            "predict_ms": round(self.predict_ms, 3), "setup_s": round(self.setup_s, 3),
            "wall_s": round(self.wall_s, 3), "db": str(self.db_path),
        }  # fmt: skip


def model_for(device: DeviceInfo, family: KernelFamily, search: list[Path] | None = None) -> Path | None:
    """The registry's current model for this device and kernel source; else the newest checkpoint made for
    them among `search` dirs/files (default: the shipped ones); else the newest made for a device it may
    borrow from (`DeviceInfo.may_borrow`: for a CPU, another CPU of the same backend; for a GPU, one of the
    same architecture and SM count). The beam search keeps to this device's own limits, so every config
    it proposes is valid here."""
    from kptune.predict.checkpoint import read_meta
    from kptune.registry import Registry

    if search is None:
        current = Registry().current_model(device.key, family.name, family.source_hash)
        if current is not None:
            return current
    paths: list[Path] = []
    for place in search if search is not None else default_model_places():
        if place.is_dir():
            paths += sorted(place.glob("*.safetensors"))
        elif place.is_file():
            paths.append(place)
    metas = ((path, read_meta(path)) for path in paths)
    return newest_made_for(device, ((p, m) for p, m in metas if m and m.get("source_hash") == family.source_hash))


def served_by(device: DeviceInfo, family: KernelFamily) -> tuple[Path | None, str]:
    """The model autotune would use for `device` (`model_for`), and a line saying whose it is."""
    from kptune.predict.checkpoint import read_meta

    path = model_for(device, family)
    if path is None:
        sampled, searched = fallback_split(FALLBACK_BUDGET)
        return None, f"no model: autotune measures {sampled} random configs and {searched} by a local search"
    meta = read_meta(path) or {}
    if meta.get("device") == device.key:
        return path, f"{path.name}, its own"
    return path, f"{path.name}, made for {meta['device']}, {_kin(DeviceInfo(**meta['device_limits']))}"  # borrowed


def default_model_places() -> list[Path]:
    """Where checkpoints are looked for when the registry has no current model: those shipped with kptune."""
    return [Path(__file__).resolve().parent / "data"]


class _Background:
    """Runs `fn` in a thread; `join()` waits and raises what it raised, `wait()` only waits."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self._error: BaseException | None = None
        self.seconds = 0.0  # how long `fn` ran

        def run() -> None:
            t0 = time.perf_counter()
            try:
                fn()
            except BaseException as exc:  # handed to join()
                self._error = exc
            finally:
                self.seconds = time.perf_counter() - t0

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def join(self) -> None:
        self.wait()
        if self._error is not None:
            raise self._error


def _start(runner: Runner, problem: Conv2dProblem) -> None:
    """Load the problem into the runner and start its worker; a worker that fails to start now is
    started again by the first measurement, which records the failure as its outcome."""
    runner.set_problem(problem)
    with contextlib.suppress(EOFError, OSError, TimeoutError):
        runner.start()


def _lend(device: DeviceInfo, family: KernelFamily, problem: Conv2dProblem, k: int, neighbours: int,
          far_neighbours: int, cover: int) -> tuple[Lender, list[str], int] | None:  # fmt: skip
    """The device's lender, its neighbours' first k + n configs for the problem and n: `far_neighbours` where
    the problem lies far from every tuned shape (`TunedShapes.far`), else `neighbours` (None when nothing is
    lent); run beside the model's prediction."""
    lender = lender_for(device, family) if neighbours or cover else None
    if lender is None:
        return None
    n = max(neighbours, far_neighbours) if neighbours and lender.far(problem) else neighbours
    return lender, lender.rank_neighbours(problem, k + n) if n else [], n


def candidates(problem: Conv2dProblem, device: DeviceInfo, family: KernelFamily, model: Path, k: int = 5,
               neighbours: int = NEIGHBOURS, cover: int = COVER,
               far_neighbours: int = FAR_NEIGHBOURS) -> tuple[list[Config], str]:  # fmt: skip
    """What autotune measures for a new shape, and a note saying where they came from: the model's top
    `k` by the constrained beam, then `neighbours` (`far_neighbours` for a shape far from every tuned one)
    and `cover` configs lent by the device's tuned shapes (ranked in a thread meanwhile; the shipped
    dataset is read once per process)."""
    from kptune.predict.api import predict

    lenders: list[tuple[Lender, list[str], int] | None] = []
    lend = functools.partial(_lend, device, family, problem, k, neighbours, far_neighbours, cover)
    lending = _Background(lambda: lenders.append(lend()))
    try:
        predicted, predictor = predict(problem, k, model, device=device, kernel=family.name)
    finally:
        lending.wait()
    lending.join()
    configs = [c.config for c in predicted]
    note = f"top {len(configs)} of the model {model.name}"
    if predictor.device.key != device.key:
        note += f" (made for {predictor.device.key}, {_kin(predictor.device)})"
    if lenders[0] is not None:
        lender, ranked, n = lenders[0]
        lent = lender.complete(problem, configs, n, cover, ranked)
        if lent:
            configs += lent
            how = (
                lender.cost_note
                + ("; cover" if cover else "")
                + ("; far from every tuned shape" if n > neighbours else "")
            )
            note += f", and {len(lent)} lent by the tuned shapes ({how})"
    return configs, note


def _kin(made_for: DeviceInfo) -> str:
    """What a borrowed model's device is to this one (`DeviceInfo.may_borrow`)."""
    if made_for.kind == "cpu":
        return "another CPU device"
    return f"another GPU of the same architecture, {made_for.arch}, and {made_for.compute_units} SMs"


def autotune(
    problem: Conv2dProblem,
    *,
    device: DeviceInfo | str | None = None,
    kernel: str = "conv2d_fwd",
    k: int = 5,
    db: PerfDB | str | Path | None = None,
    model: Path | None = None,
    force: bool = False,
    budget: int = FALLBACK_BUDGET,
    settings: TimingSettings | None = None,
    jobs: int | None = None,
    runner: Runner | None = None,
    neighbours: int = NEIGHBOURS,
    cover: int = COVER,
    far_neighbours: int = FAR_NEIGHBOURS,
    local: int = LOCAL,
    use_model: bool = True,
) -> AutotuneResult:
    """See the module docstring. Every measurement goes into the perf db. `runner`: an open Runner
    of this kernel and device to measure with (a long-running caller keeps its worker warm).
    `neighbours`: configs of the nearest tuned shapes measured beside the model's k (the cost model's
    picks, else the nearest shape's fastest; 0: none);
    `cover`: configs that complete them over the nearest tuned shapes (0: none);
    `far_neighbours`: how many in place of `neighbours` for a shape far from every tuned one
    (`TunedShapes.far`; at most `neighbours` has no effect);
    `local`: configs measured after those by a local search around the fastest, guided by the model
    (`kptune.local_search`; 0: none); with no model, `budget` configs: half random, half by that search unguided
    (`fallback_split`). `use_model=False`: that fallback even where a model serves the device."""
    t0 = time.perf_counter()
    if k < 1:
        raise KptuneError(f"k must be at least 1, not {k}")
    if neighbours < 0:
        raise KptuneError(f"neighbours must be 0 or more, not {neighbours}")
    if cover < 0:
        raise KptuneError(f"cover must be 0 or more, not {cover}")
    if far_neighbours < 0:
        raise KptuneError(f"far neighbours must be 0 or more, not {far_neighbours}")
    if local < 0:
        raise KptuneError(f"local must be 0 or more, not {local}")
    if model is not None and not use_model:
        raise KptuneError("a model given and no model asked for: give one or the other")
    family = get_family(kernel)
    dev = device if isinstance(device, DeviceInfo) else resolve_device(device)
    with contextlib.ExitStack() as stack:
        perfdb = db if isinstance(db, PerfDB) else stack.enter_context(PerfDB(db))
        pid, did = perfdb.problem_id(problem), perfdb.device_id(dev)
        kid = perfdb.kernel_id(family.name, family.source_hash, family.space.names)
        known = perfdb.best(pid, did, kid)
        if known is not None and not force:
            return AutotuneResult(problem, dev, family.name, "db", [], known, None,
                                  "a verified winner was already in the db", 0.0, time.perf_counter() - t0,
                                  perfdb.path)  # fmt: skip
        path = (model if model is not None else model_for(dev, family)) if use_model else None
        check_fits(problem, dev)
        if runner is None:
            runner = stack.enter_context(Runner(family, dev, settings or TimingSettings()))
        # the measuring worker starts, opens the device and computes the reference while the model predicts
        starting = _Background(functools.partial(_start, runner, problem))
        stack.callback(starting.wait)  # on any error below: the thread is done before the runner closes
        clock = time.perf_counter()
        if path is not None:
            configs, note = candidates(problem, dev, family, path, k, neighbours, cover, far_neighbours)
            source = "model"
        else:
            seed = (settings or TimingSettings()).seed
            sampled, more = fallback_split(budget)
            configs = get_strategy("random")(family.space.configs(problem, dev), sampled, seed)
            source = "random"
            why = f"for {dev.key} and kernel source {family.source_hash}" if use_model else "asked for"
            note = f"no model {why}: {len(configs)} random configs"
        predict_ms = (time.perf_counter() - clock) * 1e3
        if not configs:
            raise KptuneError(f"kernel {family.name} has no valid config for {problem.key()} on {dev.spec}")
        starting.join()

        def measure(batch: list[Config]) -> dict[Config, float]:
            """Each config of `batch` measured (stored) and its time, math.inf where it failed."""
            tune(problem, kernel=family.name, device=dev, db=perfdb, settings=settings, jobs=jobs, configs=batch,
                 source=source, resume=not force, runner=runner)  # fmt: skip
            wanted = set(batch)
            return times_of(m for m in perfdb.measurements(pid, did, kid) if m.config in wanted)

        timed = measure(configs)
        if path is not None and local:
            from kptune.predict.api import load_predictor

            predictor = load_predictor(path, family.name)
            searched = guided(timed, local, measure, family.space, problem, dev, predictor.model, predictor.vocab)
        elif path is None:
            searched = unguided(timed, more, measure, family.space, problem, dev, seed)
        else:
            searched = timed
        if len(searched) > len(timed):
            note += f", and {len(searched) - len(timed)} by a local search around the fastest"
        chosen = set(configs) | set(searched)
        measured = sorted((m for m in perfdb.measurements(pid, did, kid) if m.config in chosen),
                          key=lambda m: (not m.ok, m.time_ms or 0.0))  # fmt: skip
        return AutotuneResult(problem, dev, family.name, source, measured, fastest(measured),
                              str(path) if path else None, note, predict_ms, time.perf_counter() - t0,
                              perfdb.path, starting.seconds)  # fmt: skip
