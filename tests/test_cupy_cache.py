"""Cross-compiled CuPy cache: the target description, packing, and (on a GPU) names and bytes
identical to what the backend compiles there itself."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from conftest import gpu_devices

from kptune.backends.cupy_cache import CupyTarget, Manifest, pack, register, unpack
from kptune.cli import main
from kptune.compiled import CompiledIndex, define_key
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import get_family

TARGET = CupyTarget("90", ("-Ia", "--std=c++14"), "14.2.0", "k" * 40, "n" * 64, "release 13.0", "h" * 64)


def test_target_round_trips_and_bad_descriptions_are_refused() -> None:
    assert CupyTarget.from_json(TARGET.to_json()) == TARGET
    for text in ("[]", "{}", TARGET.to_json().replace('"arch"', '"arc"'), "not json"):
        with pytest.raises(KptuneError, match="not a CuPy target description"):
            CupyTarget.from_json(text)


def test_pack_and_unpack_round_trip(tmp_path: Path) -> None:
    cache, target = tmp_path / "here", tmp_path / "there"
    cache.mkdir()
    names = [f"{i:040x}.cubin" for i in range(3)]
    for i, name in enumerate(names):
        (cache / name).write_bytes(bytes([i]) * 100)
    assert pack(cache, names[:2], tmp_path / "a.tar.xz") > 0
    assert unpack(tmp_path / "a.tar.xz", target) == (2, None)
    assert sorted(os.listdir(target)) == names[:2]
    assert (target / names[1]).read_bytes() == bytes([1]) * 100


def test_unpack_takes_only_plain_cache_files(tmp_path: Path) -> None:
    archive = tmp_path / "odd.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for name in ("ok.cubin", "sub/deep.cubin", "notes.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("link.cubin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    assert unpack(archive, tmp_path / "c") == (1, None)
    assert os.listdir(tmp_path / "c") == ["ok.cubin"]


def _device(driver: str, compiler: str = "nvrtc 13.0; cupy 14.2.0") -> DeviceInfo:
    return DeviceInfo(backend="cupy", index="0", name="GPU", vendor="NVIDIA", kind="gpu", driver=driver,
                      compiler=compiler, max_work_group_size=1024, max_local_mem_bytes=49152,
                      max_registers_per_group=65536, compute_units=132, simd_width=32, l2_bytes=0,
                      global_mem_bytes=1 << 30)  # fmt: skip


def test_manifest_marks_the_define_sets_compiled_only_for_the_device_built_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KPTUNE_CACHE_DIR", str(tmp_path / "kp"))
    family = get_family("conv2d_fwd")
    keys = (define_key({"ALGO": 1, "BM": 64}), define_key({"ALGO": 1, "BM": 128}))
    manifest = Manifest(family.name, family.source_hash, "90", "14.2.0", keys)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.cubin").write_bytes(b"x")
    pack(tmp_path / "c", ["a.cubin"], tmp_path / "a.tar.xz", manifest)
    count, read = unpack(tmp_path / "a.tar.xz", tmp_path / "cupy")
    assert (count, read) == (1, manifest)
    h200, a100 = _device("cuda driver 13000; sm_90"), _device("cuda driver 13000; sm_80")
    other_cupy = _device("cuda driver 13000; sm_90", "nvrtc 13.0; cupy 13.6.0")
    assert register(manifest, [h200, a100, other_cupy]) == [h200]
    assert CompiledIndex(family, h200).known() == frozenset(keys)
    assert not CompiledIndex(family, a100).known()
    stale = dataclasses.replace(manifest, source_hash="0" * 16)  # an older kernel source
    assert register(stale, [h200]) == []


def test_cache_load_of_a_bad_archive_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.tar.xz").write_bytes(b"not an archive")
    assert main(["cache", "load", str(tmp_path / "bad.tar.xz")]) == 2
    assert capsys.readouterr().err.strip().startswith("kptune: error: ")


CUDA = [d for d in gpu_devices() if d.backend == "cupy"]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
def test_cross_compiled_files_are_those_the_backend_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled the cross way (here, on the GPU host, but through the GPU-less path) and by the
    backend into a fresh cache: the same file names, byte for byte."""
    from kptune.backends import cupy_backend
    from kptune.backends.cupy_cache import cross_compile, describe_target
    from kptune.kernel import get_family

    family = get_family("conv2d_fwd")
    device = CUDA[0]
    problem = family.problem_type.parse("n=1 c=8 h=8 w=8 k=8 r=3 s=3 pad=1")  # type: ignore[attr-defined]
    defines = [family.defines(problem, c) for c in family.space.configs(problem, device)[:4]]
    crossed = cross_compile([cupy_backend.kernel_text(family.full_source, d) for d in defines],
                            describe_target(int(device.index)), tmp_path / "cross", jobs=2)  # fmt: skip
    assert all(c.name for c in crossed), crossed

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.cubin")}

    fresh = tmp_path / "fresh"
    from cupy.cuda import compiler
    from cupy.cuda._compiler_cache import DiskKernelCacheBackend

    monkeypatch.setattr(compiler, "_kernel_cache_backend", DiskKernelCacheBackend(str(fresh)))
    backend = cupy_backend.open_device(device)
    for d in defines:
        backend.compile(family.full_source, family.entry, d)
    assert {c.name for c in crossed} <= set(digests(fresh))
    assert all(digests(fresh)[name] == digest for name, digest in digests(tmp_path / "cross").items())
