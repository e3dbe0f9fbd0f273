"""The runner: measures configs in a worker process that the driver can kill.

The driver (this process) never touches the device. A worker process
(`kptune.worker`) owns the backend; a config that hangs is killed by the
watchdog (outcome timeout), one that crashes the worker or poisons its device
context costs that config only (outcome launch_error) and the worker is
restarted. Compilation runs ahead in several workers that fill the persistent
compile cache.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from kptune.compiled import CompiledIndex, define_key
from kptune.device import DeviceInfo
from kptune.errors import DeviceError
from kptune.kernel import KernelFamily
from kptune.measurement import Measurement, Outcome, TimingSettings
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


class Runner:
    """Measures configs of one kernel family on one device; use as a context manager."""

    def __init__(self, family: KernelFamily, device: DeviceInfo, settings: TimingSettings | None = None) -> None:
        self.family = family
        self.device = device
        self.settings = settings or TimingSettings()
        self._worker: Worker | None = None
        self._payload: tuple[Problem, dict[str, np.ndarray], np.ndarray] | None = None
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
        """Make inputs (seeded) and the float64 reference once; every config is checked against it."""
        if not self.family.accepts(problem):
            raise DeviceError(f"kernel {self.family.name} does not take {problem.kind} problems")
        if self._payload is not None and self._payload[0] == problem:
            return  # the same problem again (a campaign's next chunk of it): same seeded inputs and reference
        rng = np.random.default_rng(self.settings.seed)
        inputs = self.family.make_inputs(problem, rng)
        reference = np.asarray(self.family.reference(problem, inputs), dtype=np.float64)
        self._payload = (problem, inputs, reference)
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

    def measure(self, config: Config, best_ms: float | None = None, *, _again: bool = False) -> Measurement:
        """Measure one config; every failure is an outcome, never an exception."""
        if self._payload is None:
            raise RuntimeError("set_problem() first")
        bad = self.family.space.violations(self._payload[0], self.device, config)
        if bad:
            return Measurement(config, Outcome.INVALID, error=bad[0])
        try:
            worker = self._ready_worker()
        except (EOFError, OSError, TimeoutError) as exc:
            self._drop_worker()
            return Measurement(config, Outcome.LAUNCH_ERROR, error=f"worker failed to load the problem: {exc!r}")
        try:
            worker.send("measure", config, best_ms)
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
            if code in _KILLED_FROM_OUTSIDE and not _again:
                # a signal from outside (someone stopping the run, the OOM killer), not the kernel's doing:
                # recording a fault would keep a good config out of every later run; measure it once more
                return self.measure(config, best_ms, _again=True)
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
) -> dict[int, str]:
    """Compile each define set of `family` in parallel workers into the persistent cache.

    Compilation depends on the config (and what the problem compiles in, e.g. the dtype),
    never on sizes, so one call can fill the cache for many problems at once. Returns
    {index in `defines`: error} for those that did not compile. A worker that dies or
    hangs while compiling is dropped; its configs compile (or fail) again when measured.
    Define sets the compile cache already holds (`CompiledIndex`) start no worker at all.
    """
    settings = settings or TimingSettings()
    index = CompiledIndex(family, device)
    keys = [define_key(d) for d in defines]
    known = index.known()
    todo = [i for i, key in enumerate(keys) if key not in known]
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
                if chunks:
                    give(w)
                else:
                    w.stop()
    finally:
        for w, _ in workers.values():
            w.kill()
    return errors
