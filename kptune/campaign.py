"""Campaigns: tune many problems into one perf db, on every local device or on a Ray cluster.

    kptune campaign --shapes kptune/data/corpus.csv --split test --dtype fp32 fp16

The driver (this process) plans what each problem still lacks (so a rerun resumes
where a killed one stopped), compiles the union of those configs once per device
model on all CPU cores, then hands whole problems, largest first, to measuring
workers: one `kptune.worker` process per local device slot (through `Runner`), or
one Ray actor per GPU of a cluster (`ray_address`). Workers only measure, and send
each measurement back as it comes; the driver alone writes the perf db, in short
transactions, so killing a campaign at any point loses at most the configs in flight.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import queue
import random
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from kptune.compiled import define_key
from kptune.device import DeviceInfo, check_fits
from kptune.errors import DeviceError, KptuneError
from kptune.kernel import KernelFamily
from kptune.measurement import Measurement, TimingSettings, fastest, lowest
from kptune.perfdb import PerfDB
from kptune.problem import Problem
from kptune.runner import ProblemData, Runner, precompile
from kptune.space import Config
from kptune.strategies import get_strategy

_WRITE_BATCH = 256  # measurements per db transaction at most
_RAY_ADDRESS = re.compile(r"local|auto|(ray://)?[A-Za-z0-9.\-]+:\d{1,5}")


@dataclasses.dataclass(frozen=True)
class Task:
    """One problem and the configs it still lacks; `best_ms` is its best before this run (early stop)."""

    index: int
    problem: Problem
    configs: tuple[Config, ...]
    best_ms: float | None


@dataclasses.dataclass
class ProblemReport:
    """How one problem went: configs measured now, worker seconds, its best over all runs."""

    problem: str
    candidates: int
    measured: int = 0
    seconds: float = 0.0
    worker: str = ""
    best_ms: float | None = None
    best_config: str | None = None
    complete: bool = False
    refused: str = ""  # why it is not tuned at all (e.g. it does not fit in device memory)
    # where the worker seconds went (summed over configs): loading or compiling the kernel, the
    # verifying launch and comparison, the timed launches (host wall), and the device time of those
    compile_s: float = 0.0
    verify_s: float = 0.0
    bench_s: float = 0.0
    kernel_s: float = 0.0

    def add(self, m: Measurement) -> None:
        self.measured += 1
        self.compile_s += m.compile_s
        self.verify_s += m.verify_s
        self.bench_s += m.bench_s
        if m.ok and m.time_ms is not None:
            self.kernel_s += m.time_ms * m.runs / 1e3


@dataclasses.dataclass
class CampaignResult:
    """What a campaign did; rates count only configs measured in this run."""

    device: str
    workers: int
    engine: str  # "local" or "ray"
    db_path: Path
    problems: list[ProblemReport]
    measured: int
    resumed: int
    outcomes: dict[str, int]
    compiled: int
    compile_s: float
    measure_s: float
    wall_s: float
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> int:
        return sum(p.complete for p in self.problems)

    @property
    def configs_per_s(self) -> float:
        return self.measured / self.measure_s if self.measure_s > 0 else 0.0

    @property
    def shapes_per_gpu_minute(self) -> float:
        tuned = [p for p in self.problems if p.measured]
        return len(tuned) / (self.workers * self.measure_s / 60) if self.measure_s > 0 and tuned else 0.0

    @property
    def phases_s(self) -> dict[str, float]:
        """Worker seconds over every problem: compile (cache loads), verify, bench (of which kernel: timed
        device time), and other (the rest of the worker seconds: IPC, inputs, the measuring loop)."""
        total = {k: sum(getattr(p, f"{k}_s") for p in self.problems) for k in ("compile", "verify", "bench", "kernel")}
        seconds = sum(p.seconds for p in self.problems)
        total["other"] = seconds - total["compile"] - total["verify"] - total["bench"]
        return {k: round(v, 3) for k, v in total.items()}

    @property
    def median_problem_s(self) -> float | None:
        times = [p.seconds for p in self.problems if p.measured and p.complete]
        return statistics.median(times) if times else None

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device, "workers": self.workers, "engine": self.engine, "db": str(self.db_path),
            "problems": len(self.problems), "complete": self.complete, "measured": self.measured,
            "resumed": self.resumed, "outcomes": self.outcomes, "compiled": self.compiled,
            "compile_s": round(self.compile_s, 3), "measure_s": round(self.measure_s, 3),
            "wall_s": round(self.wall_s, 3), "configs_per_s": round(self.configs_per_s, 2),
            "shapes_per_gpu_minute": round(self.shapes_per_gpu_minute, 3), "phases_s": self.phases_s,
            "median_problem_s": None if self.median_problem_s is None else round(self.median_problem_s, 3),
            "failures": self.failures, "per_problem": [dataclasses.asdict(p) for p in self.problems],
        }  # fmt: skip


class CampaignProgress(Protocol):
    def start(self, problems: int, configs: int) -> None: ...

    def advance(self, configs_done: int, problems_done: int) -> None: ...


# --------------------------------------------------------------------------- measurers


class Measurer(Protocol):
    """A worker slot: measures a task's configs in order, yielding each measurement as it comes.

    `shared_best()` is the problem's best time so far over every slot (other chunks of it included),
    for early stopping; a slot that cannot ask mid-task (a remote actor) uses the task's `best_ms`.
    """

    name: str

    def run(self, task: Task, shared_best: Callable[[], float | None]) -> Iterator[Measurement]: ...

    def close(self) -> None: ...


def _measure_task(
    runner: Runner, task: Task, shared_best: Callable[[], float | None] = lambda: None
) -> Iterator[Measurement]:
    runner.set_problem(task.problem)

    # two configs queued per worker: the driver's threads share one GIL
    return runner.measure_each(task.configs, lambda: lowest(shared_best(), task.best_ms), ahead=2)


class LocalMeasurer:
    """A `kptune.worker` process on a local device (the Runner restarts it after a crash)."""

    def __init__(self, family: KernelFamily, device: DeviceInfo, settings: TimingSettings, slot: int,
                 data: ProblemData | None = None) -> None:  # fmt: skip
        self.name = f"{device.spec}#{slot}"
        self.runner = Runner(family, device, settings, data)

    def run(self, task: Task, shared_best: Callable[[], float | None]) -> Iterator[Measurement]:
        return _measure_task(self.runner, task, shared_best)

    def close(self) -> None:
        self.runner.close()


class RayMeasurer:
    """One Ray actor holding a Runner on its node's device; measurements stream back one by one."""

    def __init__(self, ray: Any, actor: Any, name: str) -> None:
        self.ray, self.actor, self.name = ray, actor, name

    def run(self, task: Task, shared_best: Callable[[], float | None]) -> Iterator[Measurement]:
        for ref in self.actor.run.options(num_returns="streaming").remote(task):
            yield self.ray.get(ref)

    def close(self) -> None:
        self.ray.kill(self.actor)


class _RayWorker:
    """The Ray actor: opens the device named by `device_spec` on its node (None: the default device)."""

    def __init__(self, family: KernelFamily, device_spec: str | None, settings: TimingSettings) -> None:
        from kptune.backends import resolve_device

        self.device = resolve_device(device_spec)
        self.runner = Runner(family, self.device, settings)

    def device_info(self) -> DeviceInfo:
        return self.device

    def run(self, task: Task) -> Iterator[Measurement]:
        yield from _measure_task(self.runner, task)


def _ray_precompile(family: KernelFamily, device_spec: str | None, defines: list[dict[str, int]],
                    settings: TimingSettings) -> int:  # fmt: skip
    from kptune.backends import resolve_device

    return len(precompile(family, resolve_device(device_spec), defines, settings))


# --------------------------------------------------------------------------- planning

ORDERS = ("largest", "given", "shuffled")


def check_order(order: str) -> None:
    """KptuneError unless `order` is one of ORDERS (the CLI asks before any device opens)."""
    if order not in ORDERS:
        raise KptuneError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")


def plan(
    problems: Sequence[Problem],
    family: KernelFamily,
    device: DeviceInfo,
    db: PerfDB,
    strategy: str = "exhaustive",
    budget: int | None = None,
    seed: int = 0,
    order: str = "largest",
) -> tuple[list[Task], list[ProblemReport], int]:
    """Tasks for the configs each problem lacks in `db`, in `order`; reports for all; configs already there.

    Orders (ORDERS): largest first (FLOP x configs: the long ones start early, so the workers finish
    together), as given, or shuffled by `seed` (a campaign cut short by a time limit is then an
    unbiased sample of the shapes).
    """
    check_order(order)
    pick = get_strategy(strategy)
    did, kid = db.device_id(device), db.kernel_id(family.name, family.source_hash, family.space.names)
    tasks, reports, resumed = [], [], 0
    for problem in problems:
        try:
            check_fits(problem, device)
        except KptuneError as exc:
            reports.append(ProblemReport(problem.key(), 0, refused=str(exc)))
            continue
        valid = family.space.configs(problem, device)
        candidates = pick(valid, budget, seed) if valid else []
        previous = {m.config: m for m in db.measurements(db.problem_id(problem), did, kid)}
        todo = tuple(c for c in candidates if c not in previous)
        best = fastest(previous[c] for c in candidates if c in previous)
        report = ProblemReport(problem.key(), len(candidates), complete=not todo)
        if best is not None:
            report.best_ms, report.best_config = best.time_ms, best.config.key()
        reports.append(report)
        resumed += len(candidates) - len(todo)
        if todo:
            tasks.append(Task(len(reports) - 1, problem, todo, best.time_ms if best else None))
    if order == "largest":
        tasks.sort(key=lambda t: -t.problem.flops() * len(t.configs))
    elif order == "shuffled":
        random.Random(seed).shuffle(tasks)
    return tasks, reports, resumed


def split_tasks(tasks: Sequence[Task], chunk: int | None) -> list[Task]:
    """Each task cut into runs of at most `chunk` configs (order kept), so several workers can share a problem."""
    if not chunk:
        return list(tasks)
    return [dataclasses.replace(t, configs=t.configs[i : i + chunk]) for t in tasks
            for i in range(0, len(t.configs), chunk)]  # fmt: skip


def union_defines(tasks: Sequence[Task], family: KernelFamily) -> list[dict[str, int]]:
    """The distinct compile-time define sets of every task's configs: what one compile pass builds."""
    wanted: dict[tuple[tuple[str, int], ...], dict[str, int]] = {}
    for task in tasks:
        for config in task.configs:
            defines = family.defines(task.problem, config)
            wanted.setdefault(tuple(sorted(defines.items())), defines)
    return list(wanted.values())


# --------------------------------------------------------------------------- engines


class _LocalEngine:
    name = "local"

    def __init__(self, family: KernelFamily, devices: Sequence[DeviceInfo], workers: int | None,
                 settings: TimingSettings) -> None:  # fmt: skip
        if not devices:
            raise DeviceError("no device for the campaign")
        if len({d.key for d in devices}) > 1:
            raise KptuneError(
                "campaign devices must be one model (one perf-db device); "
                f"got {', '.join(sorted({d.key for d in devices}))}: run one campaign per model"
            )
        self.family, self.settings = family, settings
        slots = workers if workers is not None else len(devices)
        if slots < 1:
            raise KptuneError(f"--workers must be at least 1, not {slots}")
        self.slot_devices = [devices[i % len(devices)] for i in range(slots)]
        self.device = devices[0]

    def precompile(self, defines: list[dict[str, int]], jobs: int | None,
                   on_compiled: Callable[[Sequence[int]], None] | None = None) -> None:  # fmt: skip
        precompile(self.family, self.device, defines, self.settings, jobs, on_compiled=on_compiled)

    def measurers(self) -> list[Measurer]:
        data = ProblemData(keep=2 * len(self.slot_devices))  # one reference per problem, whichever slots share it
        return [LocalMeasurer(self.family, d, self.settings, i, data) for i, d in enumerate(self.slot_devices)]

    def close(self) -> None:
        pass


class _RayEngine:
    name = "ray"

    def __init__(self, family: KernelFamily, address: str, device_spec: str | None, workers: int | None,
                 settings: TimingSettings) -> None:  # fmt: skip
        if not _RAY_ADDRESS.fullmatch(address):
            raise KptuneError(f"--ray takes 'local', 'auto', HOST:PORT or ray://HOST:PORT, not {address!r}")
        # Ray's C++ core logs every retry to stderr; keep its own errors only (ours say what failed).
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        try:
            import ray
        except ImportError:
            raise KptuneError("--ray needs Ray: pip install 'ray>=2.9' (or kptune[ray])") from None
        self.ray, self.family, self.settings, self.device_spec = ray, family, settings, device_spec
        # The driver's import path, so workers on this machine import kptune and user families as it does.
        env_vars = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        if os.environ.get("KPTUNE_CACHE_DIR"):
            env_vars["KPTUNE_CACHE_DIR"] = os.environ["KPTUNE_CACHE_DIR"]
        env = {"env_vars": env_vars}
        try:
            if address == "local":
                ray.init(runtime_env=env, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            else:
                ray.init(address=address, runtime_env=env, logging_level=logging.ERROR, log_to_driver=False)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all mean "no cluster there"
            raise KptuneError(f"cannot start or join Ray at {address!r}: {str(exc).splitlines()[0]}") from None
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        slots = workers if workers is not None else (self.gpus or 1)
        if slots < 1:
            raise KptuneError(f"--workers must be at least 1, not {slots}")
        if self.gpus and slots > self.gpus:
            raise KptuneError(f"--workers {slots} but the Ray cluster has {self.gpus} GPUs")
        # Ray's stubs type a decorated class as a function: the actor class is Any here
        actor_cls: Any = ray.remote(num_gpus=1)(_RayWorker) if self.gpus else ray.remote(num_cpus=0)(_RayWorker)
        spec = "cupy:0" if self.gpus and device_spec is None else device_spec  # Ray sets CUDA_VISIBLE_DEVICES
        self.actors = [actor_cls.remote(family, spec, settings) for _ in range(slots)]
        try:
            infos = ray.get([a.device_info.remote() for a in self.actors])
        except Exception as exc:
            raise DeviceError(f"a Ray worker could not open its device: {str(exc).splitlines()[-1]}") from None
        if len({d.key for d in infos}) > 1:
            raise KptuneError(f"Ray workers see different device models: {', '.join(sorted({d.key for d in infos}))}")
        self.device, self.infos, self.spec = infos[0], infos, spec

    def precompile(self, defines: list[dict[str, int]], jobs: int | None) -> None:
        """One compile pass per node (its compile cache is its own), on that node's CPUs."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self.ray
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and (not self.gpus or n["Resources"].get("GPU"))]
        task = ray.remote(num_cpus=0)(_ray_precompile)
        ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                 .remote(self.family, self.spec, defines, self.settings) for node in nodes])  # fmt: skip

    def measurers(self) -> list[Measurer]:
        return [RayMeasurer(self.ray, a, f"ray:{i}") for i, a in enumerate(self.actors)]

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.ray.shutdown()


# --------------------------------------------------------------------------- the driver


class _Chunks:
    """The chunks still to measure, largest problems first, handed out to slots with affinity.

    A slot keeps taking chunks of the problem it has loaded while any are left: loading a problem
    makes its inputs and float64 reference (on the device with CuPy; with OpenCL on the host, and
    hundreds of MB moved for a large layer), so slots that hop between problems spend their time
    loading, not measuring.
    """

    def __init__(self, tasks: Sequence[Task]) -> None:
        self._lock = threading.Lock()
        self._tasks = list(tasks)

    def take(self, problem_index: int | None) -> Task | None:
        with self._lock:
            for i, task in enumerate(self._tasks):
                if task.index == problem_index:
                    return self._tasks.pop(i)
            return self._tasks.pop(0) if self._tasks else None

    def give_back(self, task: Task) -> None:
        with self._lock:
            self._tasks.insert(0, task)


class _CompilePass:
    """The compile pass in a thread beside the measuring (local engine): a chunk is measured once
    its configs are compiled, or once the pass is over (what it could not build, workers compile).

    The pass builds define sets in task order, largest problem first, as chunks are handed out, so
    the first chunks are ready after a small part of the pass.
    """

    def __init__(self, engine: _LocalEngine, defines: list[dict[str, int]], jobs: int) -> None:
        self.keys = [define_key(d) for d in defines]
        self.seconds = 0.0
        self.error: str | None = None
        self._done: set[str] = set()
        self._over = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(engine, defines, jobs), daemon=True)
        self._thread.start()

    def _run(self, engine: _LocalEngine, defines: list[dict[str, int]], jobs: int) -> None:
        t0 = time.perf_counter()
        try:
            engine.precompile(defines, jobs, self._mark)
        except Exception as exc:  # the measuring workers compile what is left, slowly
            self.error = f"compile pass failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            self.seconds = time.perf_counter() - t0
            with self._cv:
                self._over = True
                self._cv.notify_all()

    def _mark(self, indices: Sequence[int]) -> None:
        with self._cv:
            self._done.update(self.keys[i] for i in indices)
            self._cv.notify_all()

    def ready_part(self, task: Task, family: KernelFamily, stop: threading.Event) -> tuple[Task, Task | None]:
        """Wait until the chunk's first config is compiled; then (its compiled prefix, the rest or None)."""

        def key(config: Config) -> str:
            return define_key(family.defines(task.problem, config))

        first = key(task.configs[0])
        with self._cv:
            while not (self._over or first in self._done or stop.is_set()):
                self._cv.wait(1.0)
            if self._over or stop.is_set():
                return task, None
            n = 1
            while n < len(task.configs) and key(task.configs[n]) in self._done:
                n += 1
        if n == len(task.configs):
            return task, None
        return dataclasses.replace(task, configs=task.configs[:n]), dataclasses.replace(task, configs=task.configs[n:])

    def join(self) -> None:
        self._thread.join()


def _work(measurer: Measurer, tasks: _Chunks, results: queue.Queue[tuple[Any, ...]],
          best_ms: dict[int, float], stop: threading.Event,
          ready: Callable[[Task], tuple[Task, Task | None]] | None = None) -> None:  # fmt: skip
    """A driver thread: feeds one worker slot chunks (its loaded problem's first) until none is left;
    `ready(task)` waits for the chunk's first config to be compiled and splits off the compiled
    part, the rest going back to the front of the queue."""
    loaded: int | None = None
    while not stop.is_set():
        task = tasks.take(loaded)
        if task is None:
            break
        loaded = task.index
        if ready is not None:
            task, rest = ready(task)
            if rest is not None:
                tasks.give_back(rest)
        # the best so far, other workers' chunks of this problem included (a Ray actor cannot ask mid-task)
        task = dataclasses.replace(task, best_ms=lowest(best_ms.get(task.index), task.best_ms))
        t0 = time.perf_counter()
        n = 0
        try:
            for m in measurer.run(task, functools.partial(best_ms.get, task.index)):
                results.put(("m", task.index, m))
                n += 1
                if stop.is_set():
                    return
        except Exception as exc:  # the slot is broken (device gone, actor died): give the rest back
            if n < len(task.configs):
                tasks.give_back(dataclasses.replace(task, configs=task.configs[n:]))
            reason = str(exc).splitlines()[0] if str(exc) else ""
            results.put(("failed", measurer.name, f"{type(exc).__name__}: {reason}"))
            break
        results.put(("done", task.index, time.perf_counter() - t0, measurer.name))
    results.put(("exit", measurer.name))


def campaign(
    problems: Sequence[Problem],
    family: KernelFamily,
    *,
    devices: Sequence[DeviceInfo] = (),
    db: PerfDB | str | Path | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    ray_device: str | None = None,
    strategy: str = "exhaustive",
    budget: int | None = None,
    settings: TimingSettings | None = None,
    jobs: int | None = None,
    chunk: int | None = None,
    progress: CampaignProgress | None = None,
    overlap: bool = True,
    order: str = "largest",
) -> CampaignResult:
    """Measure every config `strategy` picks for each problem (exhaustive: all valid ones), resuming from `db`.

    Locally: one worker per device in `devices` (or `workers` slots spread over them); with
    `overlap`, they start measuring while the compile pass (on the other cores) goes on, each
    chunk once its configs are compiled; without, the pass comes first and is timed apart.
    With `ray_address` ("local" starts a private Ray instance): one Ray actor per cluster
    GPU, or `workers` CPU actors on a cluster without GPUs, each opening `ray_device`.
    With `chunk`, a problem's configs go out in runs of that many, so that workers share
    large problems (each computes the problem's reference once); else whole problems.
    `order`: which problems go out first (`plan`).
    """
    t0 = time.perf_counter()
    settings = settings or TimingSettings()
    if not problems:
        raise KptuneError("the campaign has no problems")
    for problem in problems:
        if not family.accepts(problem):
            raise KptuneError(f"kernel {family.name} does not take {problem.kind} problems ({problem.key()})")
    engine: _LocalEngine | _RayEngine
    if ray_address is not None:
        engine = _RayEngine(family, ray_address, ray_device, workers, settings)
    else:
        engine = _LocalEngine(family, devices, workers, settings)
    own_db = not isinstance(db, PerfDB)
    perfdb = db if isinstance(db, PerfDB) else PerfDB(db)
    measurers: list[Measurer] = []
    stop = threading.Event()
    try:
        device = engine.device
        tasks, reports, resumed = plan(problems, family, device, perfdb, strategy, budget, settings.seed, order)
        did, kid = perfdb.device_id(device), perfdb.kernel_id(family.name, family.source_hash, family.space.names)
        pids = {t.index: perfdb.problem_id(t.problem) for t in tasks}
        lacking = {t.index: len(t.configs) for t in tasks}
        source = strategy if strategy in ("exhaustive", "random") else "manual"
        clock = time.perf_counter()
        defines = union_defines(tasks, family)
        compiling: _CompilePass | None = None
        if defines and overlap and isinstance(engine, _LocalEngine):
            cores = os.cpu_count() or 2
            compiling = _CompilePass(engine, defines, jobs or max(2, cores - len(engine.slot_devices) - 1))
        elif defines:
            engine.precompile(defines, jobs)
        compile_s = time.perf_counter() - clock
        total = sum(len(t.configs) for t in tasks)
        if progress is not None:
            progress.start(len(reports), total)
            progress.advance(0, sum(r.complete for r in reports))
        clock = time.perf_counter()
        outcomes: collections.Counter[str] = collections.Counter()
        failures: list[str] = [r.refused for r in reports if r.refused]
        measured = 0
        if tasks:
            measurers = engine.measurers()
            work = _Chunks(split_tasks(tasks, chunk))
            best_ms = {t.index: t.best_ms for t in tasks if t.best_ms is not None}
            results: queue.Queue[tuple[Any, ...]] = queue.Queue()
            ready = None if compiling is None else functools.partial(compiling.ready_part, family=family, stop=stop)

            threads = [
                threading.Thread(target=_work, args=(m, work, results, best_ms, stop, ready), daemon=True)
                for m in measurers
            ]
            for thread in threads:
                thread.start()
            running = len(threads)
            while running:
                events = [results.get()]
                while len(events) < _WRITE_BATCH:
                    try:
                        events.append(results.get_nowait())
                    except queue.Empty:
                        break
                rows = [(pids[e[1]], did, kid, e[2], source) for e in events if e[0] == "m"]
                if rows:
                    perfdb.add_many(rows)
                for event in events:
                    kind = event[0]
                    if kind == "m":
                        m: Measurement = event[2]
                        report = reports[event[1]]
                        report.add(m)
                        measured += 1
                        outcomes[str(m.outcome)] += 1
                        if m.ok and m.time_ms is not None and (report.best_ms is None or m.time_ms < report.best_ms):
                            report.best_ms, report.best_config = m.time_ms, m.config.key()
                            best_ms[event[1]] = m.time_ms
                    elif kind == "done":
                        report = reports[event[1]]
                        report.seconds += event[2]
                        report.worker = event[3]
                        report.complete = report.measured >= lacking[event[1]]
                    elif kind == "failed":
                        failures.append(f"{event[1]}: {event[2]}")
                    elif kind == "exit":
                        running -= 1
                if progress is not None:
                    progress.advance(measured, sum(r.complete for r in reports))
        measure_s = time.perf_counter() - clock
        if compiling is not None:
            compiling.join()
            compile_s = compiling.seconds
            if compiling.error:
                failures.append(compiling.error)
        return CampaignResult(
            device=device.key, workers=len(measurers) or (workers or 1), engine=engine.name, db_path=perfdb.path,
            problems=reports, measured=measured, resumed=resumed, outcomes=dict(sorted(outcomes.items())),
            compiled=len(defines), compile_s=compile_s, measure_s=measure_s, wall_s=time.perf_counter() - t0,
            failures=failures,
        )  # fmt: skip
    finally:
        stop.set()
        for measurer in measurers:
            try:
                measurer.close()
            except Exception:  # closing is best effort: the campaign's results are already stored
                pass
        engine.close()
        if own_db:
            perfdb.close()
