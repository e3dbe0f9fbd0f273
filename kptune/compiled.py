"""Which define sets the persistent compile cache already holds, so a compile pass skips them.

The binaries themselves are cached by each backend (CuPy's NVRTC cache, our OpenCL program
cache), but asking a backend means starting a worker that opens the device: on a 64-core GPU
host a compile pass over an already-compiled space started 64 workers and 64 device
contexts for nothing (~2 minutes per problem). This index is one small text file per kernel
source and device compiler, a line per define set that compiled; the driver reads it before
starting any worker. Lines are appended in one write each, so concurrent drivers do not
corrupt it; a torn or foreign line is ignored. If the backend's own cache is wiped, the
index only makes the pass skip work that measuring then does (compile in the measuring
worker): slower, never wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from kptune.backends import cache_dir
from kptune.device import DeviceInfo
from kptune.kernel import KernelFamily

_KEY_CHARS = 20
_KEY = re.compile(f"[0-9a-f]{{{_KEY_CHARS}}}")
_READ: dict[Path, tuple[int, int, frozenset[str]]] = {}  # index file -> (inode, bytes read, keys in them)


def define_key(defines: Mapping[str, int]) -> str:
    """A short stable key for one define set."""
    text = json.dumps(sorted(defines.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:_KEY_CHARS]


class CompiledIndex:
    """The define sets of `family` known to be in the compile cache of `device`'s compiler."""

    def __init__(self, family: KernelFamily, device: DeviceInfo, root: Path | None = None) -> None:
        compiler = json.dumps([device.backend, device.name, device.driver, device.compiler])
        digest = hashlib.sha256(compiler.encode()).hexdigest()[:12]
        self.path = (root or cache_dir()) / "compiled" / f"{family.name}-{family.source_hash}-{digest}.txt"

    def known(self) -> frozenset[str]:
        """The keys in the index. Read once per process, then only what was appended since: a
        tuner asking for every new shape does not re-read tens of thousands of lines each time."""
        try:
            with self.path.open("rb") as f:
                stat = os.fstat(f.fileno())
                inode, offset, keys = _READ.get(self.path, (stat.st_ino, 0, frozenset()))
                if inode != stat.st_ino or stat.st_size < offset:  # another file now (a wiped cache)
                    offset, keys = 0, frozenset()
                f.seek(offset)
                data = f.read(stat.st_size - offset)
        except OSError:
            return frozenset()
        complete = data.rfind(b"\n") + 1  # a line still being appended is read next time
        if complete:
            keys = keys | frozenset(filter(_KEY.fullmatch, data[:complete].decode("ascii", "replace").splitlines()))
        _READ[self.path] = (stat.st_ino, offset + complete, keys)
        return keys

    def add(self, keys: Iterable[str]) -> None:
        data = "".join(f"{k}\n" for k in keys).encode("ascii")
        if not data:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)  # one appending write: concurrent drivers' lines do not interleave
            finally:
                os.close(fd)
        except OSError:
            pass  # an unwritable cache only costs the next pass its shortcut
