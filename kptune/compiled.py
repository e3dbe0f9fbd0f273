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
from collections.abc import Iterable, Mapping
from pathlib import Path

from kptune.backends import cache_dir
from kptune.device import DeviceInfo
from kptune.kernel import KernelFamily

_KEY_CHARS = 20


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

    def known(self) -> set[str]:
        try:
            lines = self.path.read_text(encoding="ascii", errors="replace").splitlines()
        except OSError:
            return set()
        return {ln for ln in lines if len(ln) == _KEY_CHARS and all(c in "0123456789abcdef" for c in ln)}

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
