"""The runner: measures configs in a worker process that the driver can kill.

The driver (this process) never touches the device. A worker process
(`kptune.worker`) owns the backend; a config that hangs is killed by the
watchdog (outcome timeout), one that crashes the worker or poisons its device
context costs that config only (outcome launch_error) and the worker is
restarted. Compilation runs ahead in several workers that fill the persistent
compile cache.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from kptune.backends import made_on_device
from kptune.compiled import CompiledIndex, define_key
from kptune.device import DeviceInfo
from kptune.errors import DeviceError
from kptune.kernel import KernelFamily
from kptune.measurement import Measurement, Outcome, TimingSettings, lowest
from kptune.problem import Problem
from kptune.space import Config

_START_TIMEOUT_S = 300.0


class Worker:
    """One `kptune.worker` process and its connection."""

    def __init__(self, device: DeviceInfo, family: KernelFamily, settings: TimingSettings) -> None:
        ours, theirs = socket.socketpair()
        fd = theirs.detach()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kptune.worker", str(fd)], pass_fds=(fd,), stdin=subprocess.DEVNULL
        )
        os.close(fd)
        self.conn = Connection(ours.detach())
        try:
            self.conn.send(sys.path)
            self.conn.send(("init", device, family, settings))
            reply = self.recv(_START_TIMEOUT_S)
        except (EOFError, OSError, TimeoutError):
            self.kill()
            raise DeviceError(f"measuring worker for {device.spec} failed to start") from None
        if reply[0] == "fatal":
            self.kill()
            raise DeviceError(str(reply[1]))

    def send(self, *msg: Any) -> None:
        self.conn.send(msg)

    def recv(self, timeout: float) -> Any:
        """The next message; TimeoutError after `timeout` s, EOFError if the worker died."""
        if not self.conn.poll(timeout):
            raise TimeoutError
        return self.conn.recv()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.send("stop")
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


# exit codes of a worker killed by a signal its kernel cannot raise (a crashing kernel gets SIGSEGV,
# SIGBUS or SIGABRT; a hung one is killed by the watchdog, which records a timeout itself)
_KILLED_FROM_OUTSIDE = frozenset({-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP})


# the problem, its seeded inputs and float64 reference (both None: the worker makes them on the device)
Payload = tuple[Problem, dict[str, np.ndarray] | None, np.ndarray | None]


class ProblemData:
    """Seeded inputs and float64 references, made once per problem and shared by runners in threads.

    Several workers of one campaign measure chunks of the same problem: one reference, not one each.
    Keeps the `keep` most recently asked problems.
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[tuple[str, Problem, int], list[Any]] = collections.OrderedDict()

    def get(self, family: KernelFamily, problem: Problem, seed: int) -> Payload:
        key = (family.name, problem, seed)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = [threading.Lock(), None]
                while len(self._entries) > self.keep:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
        with entry[0]:
            if entry[1] is None:
                entry[1] = make_payload(family, problem, seed)
            return entry[1]  # type: ignore[no-any-return]


def make_payload(family: KernelFamily, problem: Problem, seed: int) -> Payload:
    """The host's seeded inputs and float64 reference (the worker's device makes its own where it can)."""
    inputs = family.make_inputs(problem, np.random.default_rng(seed))
    return problem, inputs, np.asarray(family.reference(problem, inputs), dtype=np.float64)


class Runner:
    """Measures configs of one kernel family on one device; use as a context manager."""

    def __init__(self, family: KernelFamily, device: DeviceInfo, settings: TimingSettings | None = None,
                 data: ProblemData | None = None) -> None:  # fmt: skip
        self.family = family
        self.device = device
        self.settings = settings or TimingSettings()
        self._data = data
        self._worker: Worker | None = None
        self._payload: Payload | None = None
        self._worker_has_problem = False
        self.restarts = 0

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _drop_worker(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker = None
            self.restarts += 1

    def set_problem(self, problem: Problem) -> None:
        """Make inputs (seeded) and the float64 reference once (the worker makes them on its device
        where the backend can); every config is checked against the reference."""
        if not self.family.accepts(problem):
            raise DeviceError(f"kernel {self.family.name} does not take {problem.kind} problems")
        if self._payload is not None and self._payload[0] == problem:
            return  # the same problem again (a campaign's next chunk of it): same seeded inputs and reference
        seed = self.settings.seed
        if made_on_device(self.device, self.family):
            self._payload = (problem, None, None)
        elif self._data is not None:
            self._payload = self._data.get(self.family, problem, seed)
        else:
            self._payload = make_payload(self.family, problem, seed)
        self._worker_has_problem = False

    def start(self) -> None:
        """Start the worker and hand it the problem now (e.g. in a thread, while a model predicts)."""
        self._ready_worker()

    def _ready_worker(self) -> Worker:
        if self._worker is None:
            self._worker = Worker(self.device, self.family, self.settings)
            self._worker_has_problem = False
        if not self._worker_has_problem:
            assert self._payload is not None
            self._worker.send("problem", *self._payload)
            self._worker.recv(_START_TIMEOUT_S)
            self._worker_has_problem = True
        return self._worker

    def measure(self, config: Config, best_ms: float | None = None) -> Measurement:
        """Measure one config; every failure is an outcome, never an exception."""
        return next(self.measure_each([config], lambda: best_ms))

    def measure_each(
        self, configs: Sequence[Config], best_ms: Callable[[], float | None] = lambda: None, ahead: int = 1
    ) -> Iterator[Measurement]:
        """Measure configs in order, yielding each measurement; every failure is an outcome.

        `best_ms()` is asked as each config is sent (the best so far, for early stopping; this
        run's own results are folded in). `ahead` more configs are queued in the worker while it
        measures one, so it never waits for the driver; results still come one config at a time,
        so a hang or crash is charged to the config at the head and the queued ones go again.
        """
        if self._payload is None:
            raise RuntimeError("set_problem() first")
        problem = self._payload[0]
        todo = collections.deque(configs)
        sent: collections.deque[Config] = collections.deque()
        again: set[Config] = set()
        own_best: float | None = None

        def best() -> float | None:
            return lowest(best_ms(), own_best)

        def requeue() -> None:
            todo.extendleft(reversed(sent))
            sent.clear()

        try:
            while todo or sent:
                while todo and len(sent) <= ahead:
                    bad = self.family.space.violations(problem, self.device, todo[0])
                    if bad and sent:
                        break  # answered in order: after the configs already sent
                    config = todo.popleft()
                    if bad:
                        yield Measurement(config, Outcome.INVALID, error=bad[0])
                        continue
                    try:
                        worker = self._ready_worker()
                    except (EOFError, OSError, TimeoutError) as exc:
                        self._drop_worker()
                        error = f"worker failed to load the problem: {exc!r}"
                        yield Measurement(config, Outcome.LAUNCH_ERROR, error=error)
                        continue
                    try:
                        worker.send("measure", config, best())
                    except OSError:  # the worker is gone: charged to the config it was measuring, if any
                        todo.appendleft(config)
                        if not sent:
                            self._drop_worker()
                            if config in again:
                                todo.popleft()
                                yield Measurement(config, Outcome.LAUNCH_ERROR, error="worker gone before the config")
                            again.add(config)
                        break
                    sent.append(config)
                if not sent:
                    continue
                assert self._worker is not None
                result = self._receive(self._worker, sent[0])
                if result is None:  # killed from outside, not the kernel's doing: measure it once more
                    config = sent.popleft()
                    requeue()
                    if config not in again:
                        again.add(config)
                        todo.appendleft(config)
                        continue
                    result = Measurement(config, Outcome.LAUNCH_ERROR, error="worker killed from outside twice")
                else:
                    sent.popleft()
                    if self._worker is None:  # the worker is gone: the queued configs go to a fresh one
                        requeue()
                if result.ok:
                    own_best = lowest(own_best, result.time_ms)
                yield result
        finally:
            if sent:  # abandoned with configs in flight: their results must not reach a later caller
                self._drop_worker()

    def _receive(self, worker: Worker, config: Config) -> Measurement | None:
        """The result for `config` (the oldest sent); a hang or crash is its outcome and drops the worker.

        None: the worker was killed by a signal its kernel cannot raise (see _KILLED_FROM_OUTSIDE).
        """
        try:
            _, result = worker.recv(self.settings.timeout_s)
        except TimeoutError:
            self._drop_worker()
            return Measurement(config, Outcome.TIMEOUT, error=f"no result within {self.settings.timeout_s:g} s")
        except (EOFError, OSError):
            try:
                code = worker.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            self._drop_worker()
            if code in _KILLED_FROM_OUTSIDE:
                return None
            return Measurement(config, Outcome.LAUNCH_ERROR, error=f"worker died (exit code {code})")
        if result.fatal:
            self._drop_worker()
        return result  # type: ignore[no-any-return]

    def precompile(self, configs: Sequence[Config], jobs: int | None = None, chunk: int = 4) -> dict[Config, str]:
        """Compile this problem's configs in parallel workers into the persistent cache.

        Returns the compile errors; see `precompile`.
        """
        if self._payload is None:
            return {}
        problem = self._payload[0]
        defines = [self.family.defines(problem, c) for c in configs]
        errors = precompile(self.family, self.device, defines, self.settings, jobs, chunk)
        return {c: errors[i] for i, c in enumerate(configs) if i in errors}


def precompile(
    family: KernelFamily,
    device: DeviceInfo,
    defines: Sequence[dict[str, int]],
    settings: TimingSettings | None = None,
    jobs: int | None = None,
    chunk: int = 4,
    on_compiled: Callable[[Sequence[int]], None] | None = None,
) -> dict[int, str]:
    """Compile each define set of `family` in parallel workers into the persistent cache.

    Compilation depends on the config (and what the problem compiles in, e.g. the dtype),
    never on sizes, so one call can fill the cache for many problems at once. Returns
    {index in `defines`: error} for those that did not compile. A worker that dies or
    hangs while compiling is dropped; its configs compile (or fail) again when measured.
    Define sets the compile cache already holds (`CompiledIndex`) start no worker at all.
    `on_compiled(indices)` hears of define sets as they are done (cached ones first; failures too),
    so measuring can start on them while the rest compile.
    """
    settings = settings or TimingSettings()
    index = CompiledIndex(family, device)
    keys = [define_key(d) for d in defines]
    known = index.known()
    todo = [i for i, key in enumerate(keys) if key not in known]
    if on_compiled is not None:
        on_compiled([i for i, key in enumerate(keys) if key in known])
    jobs = max(0, min(jobs if jobs is not None else (os.cpu_count() or 1), len(todo) // chunk))
    if jobs < 2:
        return {}
    # popped from the end, so the first define sets compile first (a caller cut short keeps those)
    chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)][::-1]
    errors: dict[int, str] = {}
    workers: dict[Connection, tuple[Worker, list[int]]] = {}

    def give(w: Worker) -> None:
        part = chunks.pop()
        w.send("compile", [defines[i] for i in part])
        workers[w.conn] = (w, part)

    try:
        for _ in range(jobs):
            if not chunks:
                break
            give(Worker(device, family, settings))
        while workers:
            ready = wait(list(workers), timeout=settings.timeout_s * chunk)
            if not ready:
                break
            for ready_conn in ready:
                w, part = workers.pop(ready_conn)  # type: ignore[call-overload]
                try:
                    errs: list[str | None] = w.recv(0)[1]
                except (EOFError, OSError, TimeoutError):
                    w.kill()
                    continue
                errors.update({i: e for i, e in zip(part, errs, strict=True) if e is not None})
                index.add(keys[i] for i, e in zip(part, errs, strict=True) if e is None)
                if on_compiled is not None:
                    on_compiled(part)
                if chunks:
                    give(w)
                else:
                    w.stop()
    finally:
        for w, _ in workers.values():
            w.kill()
    return errors
