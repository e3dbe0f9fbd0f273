"""The measuring worker process: it exits quietly when its driver is gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _worker() -> tuple[subprocess.Popen[bytes], socket.socket]:
    ours, theirs = socket.socketpair()
    fd = theirs.detach()
    proc = subprocess.Popen([sys.executable, "-m", "kptune.worker", str(fd)], pass_fds=(fd,),
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    os.close(fd)
    return proc, ours


@pytest.mark.parametrize("sent", [0, 1])
def test_a_worker_whose_driver_is_gone_exits_without_a_traceback(sent: int) -> None:
    from multiprocessing.connection import Connection

    proc, ours = _worker()
    conn = Connection(ours.detach())
    if sent:
        conn.send(sys.path)  # then gone before the init message
    conn.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode()[-2000:]
