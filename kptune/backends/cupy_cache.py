"""Fill CuPy's kernel cache for a GPU that this host does not have.

NVRTC needs no GPU. A CPU host with the target's CuPy and NVRTC builds compiles the binaries the
target would, and files them under the names the target's CuPy looks them up by; the files are
then shipped to the target's cache dir (MIOpen ships precompiled kernel databases the same way).
A campaign on a fresh GPU machine then measures from its first second instead of spending its
first minutes compiling.

The target describes itself once, on the GPU machine (`describe_target`, `kptune cache describe`):
its architecture, the options its CuPy gives NVRTC (include paths of its install), its cache key,
the NVRTC build and CuPy's header text, all of which go into a cache file's name. A host whose
CuPy, NVRTC or headers differ is refused. The names come from CuPy's own code: a file the target
would name differently is only never found there, and the kernel compiles there as usual; a wrong
binary is never loaded.

This leans on CuPy internals (`cupy.cuda.compiler`), checked against CuPy 14.2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import tarfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from kptune.backends.cupy_backend import NVRTC_OPTIONS, _cp
from kptune.device import DeviceInfo
from kptune.errors import KptuneError

_PROBE = 'extern "C" __global__ void kptune_probe(float* x) { x[0] = 1.0f; }'


@dataclasses.dataclass(frozen=True)
class CupyTarget:
    """What names and builds a kernel in one GPU machine's CuPy cache."""

    arch: str  # compute capability, e.g. "90"
    options: tuple[str, ...]  # what its CuPy gives NVRTC for kptune's kernels (before -ftz=true)
    cupy_version: str
    cupy_cache_key: str
    nvrtc_sha256: str  # of NVRTC's output for an empty program: its build, as CuPy keys on it
    nvrtc_release: str  # the same, readable
    headers_sha256: str  # CuPy's header text, part of every key

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, origin: str = "target") -> CupyTarget:
        try:
            data = json.loads(text)
            fields = {f.name for f in dataclasses.fields(cls)}
            if not isinstance(data, dict) or set(data) != fields:
                raise ValueError(f"fields {sorted(data) if isinstance(data, dict) else data!r}")
            options = tuple(str(o) for o in data.pop("options"))
            return cls(options=options, **{k: str(v) for k, v in data.items()})
        except (ValueError, TypeError) as exc:
            raise KptuneError(f"{origin} is not a CuPy target description ({exc})") from None


def _nvrtc_identity(compiler: Any, options: tuple[str, ...], arch: str) -> tuple[str, str]:
    base = compiler._preprocess("", (*options, "-ftz=true"), arch, "nvrtc")
    release = next((line.strip("/ ") for line in base.splitlines() if "release" in line), "?")
    return hashlib.sha256(base.encode()).hexdigest(), release


def _headers_sha256() -> str:
    from cupy._core import core

    return hashlib.sha256(core._get_header_source().encode()).hexdigest()


def describe_target(device_index: int = 0) -> CupyTarget:
    """This machine's CuPy cache, as seen by compiling a probe kernel the way the backend does."""
    cp = _cp()
    from cupy._core import core
    from cupy.cuda import compiler

    seen: list[tuple[tuple[str, ...], str | None]] = []
    original = compiler._compile_with_cache_cuda

    def spy(source: str, options: tuple[str, ...], arch: str | None, *args: Any, **kwargs: Any) -> Any:
        seen.append((tuple(options), arch))
        return original(source, options, arch, *args, **kwargs)

    compiler._compile_with_cache_cuda = spy
    try:
        with cp.cuda.Device(device_index):
            cp.RawModule(code=_PROBE, options=NVRTC_OPTIONS).get_function("kptune_probe")
            arch = compiler._get_arch()
    finally:
        compiler._compile_with_cache_cuda = original
    if not seen:
        raise KptuneError("CuPy compiled nothing for the probe kernel: is its cache in memory only?")
    options, called_arch = seen[0]
    arch = str(called_arch or arch)
    nvrtc_sha, release = _nvrtc_identity(compiler, options, arch)
    return CupyTarget(arch, options, cp.__version__, core.CUPY_CACHE_KEY, nvrtc_sha, release, _headers_sha256())


def check_host(target: CupyTarget) -> None:
    """Refuse a host whose CuPy or NVRTC would name or build the kernels differently."""
    cp = _cp()
    from cupy._core import core
    from cupy.cuda import compiler

    mine = {"CuPy": cp.__version__, "CuPy's cache key": core.CUPY_CACHE_KEY, "CuPy's headers": _headers_sha256()}
    theirs = {"CuPy": target.cupy_version, "CuPy's cache key": target.cupy_cache_key,
              "CuPy's headers": target.headers_sha256}  # fmt: skip
    for what, value in mine.items():
        if value != theirs[what]:
            raise KptuneError(
                f"{what} here is {value[:16]}, the target's is {theirs[what][:16]}: install the target's CuPy"
            )
    nvrtc_sha, release = _nvrtc_identity(compiler, target.options, target.arch)
    if nvrtc_sha != target.nvrtc_sha256:
        raise KptuneError(
            f"NVRTC here is {release}, the target's is {target.nvrtc_release}: install the target's NVRTC"
        )
    if compiler._use_ptx or int(target.arch) > int(compiler._get_max_compute_capability()):
        raise KptuneError(f"NVRTC here cannot build a cubin for sm_{target.arch}")


@dataclasses.dataclass(frozen=True)
class Compiled:
    name: str | None  # the cache file's name, None where it did not compile
    error: str | None = None


def _compile_part(cache: str, target_json: str, texts: Sequence[str]) -> list[Compiled]:
    """In a worker process: compile `texts` for the target into CuPy's cache dir `cache`."""
    target = CupyTarget.from_json(target_json)
    from cupy._core import core
    from cupy.cuda import compiler
    from cupy.cuda._compiler_cache import DiskKernelCacheBackend

    # memoized per device (so it asks for one); its answer for a cubin target is fixed
    compiler._get_arch_for_options_for_nvrtc = lambda arch=None: (f"-arch=sm_{arch}", "cubin")
    disk = DiskKernelCacheBackend(cache)
    names: list[str] = []

    class Recording:  # the name CuPy files the binary under, whether it finds or writes it
        def load(self, name: str) -> Any:
            names.append(name)
            return disk.load(name)

        def save(self, name: str, payload: Any, source: str) -> None:
            disk.save(name, payload, source)

    compiler._kernel_cache_backend = Recording()
    headers = core._get_header_source()
    out = []
    for text in texts:
        names.clear()
        try:
            compiler._compile_with_cache_cuda(text, target.options, target.arch, headers, "nvrtc")
        except compiler.CompileException as exc:
            out.append(Compiled(None, str(exc).splitlines()[0] if str(exc) else "compile error"))
            continue
        except Exception:  # loading the module needs the GPU: the binary is filed by then
            pass
        name = names[0] if names else None
        filed = name is not None and (Path(cache) / name).is_file()
        out.append(Compiled(name if filed else None, None if filed else "no cache file was written"))
    return out


def cross_compile(texts: Sequence[str], target: CupyTarget, cache: Path, jobs: int | None = None,
                  part: int = 32) -> list[Compiled]:  # fmt: skip
    """Compile every text (kernel_text(source, defines)) into `cache` as the target's CuPy would
    file it, in `jobs` processes. Already filed ones cost a lookup. Results in the order given."""
    check_host(target)
    cache.mkdir(parents=True, exist_ok=True)
    parts = [texts[i : i + part] for i in range(0, len(texts), part)]
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold a CUDA context
    with ProcessPoolExecutor(jobs or os.cpu_count() or 1, mp_context=spawn) as pool:
        done = pool.map(_compile_part, [str(cache)] * len(parts), [target.to_json()] * len(parts), parts)
        return [c for chunk in done for c in chunk]


MANIFEST = "kptune-kernels.json"  # in an archive: which define sets of which kernel source it holds


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a pack() archive's binaries are: define keys (kptune.compiled.define_key) of one
    kernel family's source, built for one target."""

    family: str
    source_hash: str
    arch: str
    cupy_version: str
    keys: tuple[str, ...]


def pack(cache: Path, names: Sequence[str], out: Path, manifest: Manifest | None = None) -> int:
    """The named cache files (and the manifest of their define sets) as one .tar.xz, to be
    unpacked into the target's CuPy cache dir; returns its size in bytes."""
    with tarfile.open(out, "w:xz", preset=9) as tar:
        if manifest is not None:
            data = json.dumps(dataclasses.asdict(manifest)).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in names:
            tar.add(cache / name, arcname=name)
    return out.stat().st_size


def unpack(archive: Path, cache: Path) -> tuple[int, Manifest | None]:
    """Unpack a pack() archive into CuPy's cache dir `cache`: (how many binaries, its manifest).
    Only plain files with CuPy's names are taken."""
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            every = tar.getmembers()
            members = [m for m in every if m.isfile() and "/" not in m.name and m.name.endswith(".cubin")]
            tar.extractall(cache, members=members, filter="data")
            listed = next((m for m in every if m.name == MANIFEST and m.isfile()), None)
            raw = tar.extractfile(listed).read() if listed is not None else None  # type: ignore[union-attr]
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise KptuneError(f"{archive} is not a kernel cache archive ({exc})") from None
    if raw is None:
        return len(members), None
    try:
        data = json.loads(raw)
        data["keys"] = tuple(str(k) for k in data["keys"])
        return len(members), Manifest(**data)
    except (ValueError, TypeError, KeyError) as exc:
        raise KptuneError(f"{archive}'s manifest is damaged ({exc})") from None


def register(manifest: Manifest, devices: Sequence[DeviceInfo]) -> list[DeviceInfo]:
    """Mark the manifest's define sets compiled (kptune.compiled.CompiledIndex) for each device
    its binaries were built for: a campaign's compile pass then skips them, and its measuring
    workers load them from CuPy's cache (a pass that asks workers to load ~30,000 cached kernels
    went through ~45 a second on the H200 machine). A device of another family source, CuPy or
    architecture is left alone. Returns the devices marked."""
    from kptune.compiled import CompiledIndex
    from kptune.kernel import get_family

    family = get_family(manifest.family)
    if family.source_hash != manifest.source_hash:
        return []
    marked = []
    for device in devices:
        if device.backend == "cupy" and device.driver.endswith(f"sm_{manifest.arch}") and \
                device.compiler.endswith(f"cupy {manifest.cupy_version}"):  # fmt: skip
            CompiledIndex(family, device).add(manifest.keys)
            marked.append(device)
    return marked
