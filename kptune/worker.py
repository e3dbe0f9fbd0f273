"""The measuring worker: a separate process (`python -m kptune.worker FD`) that owns the device.

It is started with subprocess, not multiprocessing, so that the user's main
module is never re-imported. Messages are pickled tuples over a socket:
("init", device, family, settings) -> ("ready",) | ("fatal", msg);
("problem", problem, inputs, reference) -> ("prepared",);
("measure", config, best_ms) -> ("result", Measurement);
("compile", [defines, ...]) -> ("compiled", [error or None, ...]); ("stop",).

It ignores SIGINT: a Ctrl-C in the terminal reaches the whole process group, and the driver
alone decides what happens then (it stores what was measured and stops or kills its workers), so
the worker neither dies mid-message nor prints a traceback of its own. A worker whose driver is
gone (stopped at a time limit, killed) has no one to answer: it exits quietly, without the
EOFError or BrokenPipeError tracebacks that would otherwise bury a campaign's log.
"""

from __future__ import annotations

import signal
import sys
from multiprocessing.connection import Connection

from kptune.backends import Backend, CompileError, open_backend
from kptune.measure import ProblemState, measure_config, prepare


def serve(conn: Connection) -> None:
    sys.path[:] = conn.recv()  # the driver's path, so user-registered families unpickle
    _, device, family, settings = conn.recv()
    try:
        backend: Backend = open_backend(device)
    except Exception as exc:
        conn.send(("fatal", f"cannot open {device.spec}: {exc}"))
        return
    conn.send(("ready",))
    state: ProblemState | None = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        kind = msg[0]
        if kind == "stop":
            return
        if kind == "problem":
            _, problem, inputs, reference = msg
            state = prepare(backend, family, problem, inputs, reference, settings)
            conn.send(("prepared",))
        elif kind == "measure":
            _, config, best_ms = msg
            if state is None:
                raise RuntimeError("measure before problem")
            result = measure_config(backend, family, state, config, best_ms, settings)
            conn.send(("result", result))
            if result.fatal:
                return  # the context may be poisoned: the driver starts a fresh worker
        elif kind == "compile":
            errors: list[str | None] = []
            for defines in msg[1]:
                try:
                    backend.compile(family.full_source, family.entry, defines)
                    errors.append(None)
                except CompileError as exc:
                    errors.append(str(exc))
            conn.send(("compiled", errors))


def main(fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(Connection(fd))
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the driver is gone: nobody to answer
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
