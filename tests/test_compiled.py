"""The compiled-config index: a compile pass over configs already in the cache starts no worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import kptune.families  # noqa: F401 - registers conv2d_fwd
from kptune import runner
from kptune.compiled import CompiledIndex, define_key
from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.problem import Conv2dProblem


def test_define_keys_are_stable_and_distinct() -> None:
    assert define_key({"BM": 32, "BN": 64}) == define_key({"BN": 64, "BM": 32})
    assert define_key({"BM": 32, "BN": 64}) != define_key({"BM": 64, "BN": 32})


def test_torn_and_foreign_lines_are_ignored(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    index = CompiledIndex(get_family("conv2d_fwd"), cpu_device, root=tmp_path)
    good = define_key({"BM": 32})
    index.add([good])
    with open(index.path, "a") as f:
        f.write("0123abc\nnot a key at all!!!\n" + good[:7])  # a torn write, garbage, no newline
    assert index.known() == {good}


def test_a_second_pass_over_compiled_configs_starts_no_worker(
    cpu_device: DeviceInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KPTUNE_CACHE_DIR", str(tmp_path))  # an empty compile cache and index
    family = get_family("conv2d_fwd")
    problem = Conv2dProblem(n=1, c=4, h=6, w=6, k=4, r=3, s=3, pad_h=1, pad_w=1)
    defines = [family.defines(problem, c) for c in family.space.configs(problem, cpu_device)[:8]]
    started: list[int] = []

    class CountingWorker(runner.Worker):
        def __init__(self, *args: Any) -> None:
            started.append(1)
            super().__init__(*args)

    monkeypatch.setattr(runner, "Worker", CountingWorker)
    assert runner.precompile(family, cpu_device, defines, jobs=2) == {}
    assert len(started) == 2
    assert CompiledIndex(family, cpu_device).known() == {define_key(d) for d in defines}
    started.clear()
    assert runner.precompile(family, cpu_device, defines, jobs=2) == {}
    assert started == []
    # a define set not yet compiled still gets its workers
    other = family.space.configs(problem, cpu_device)[8:16]
    runner.precompile(family, cpu_device, defines + [family.defines(problem, c) for c in other], jobs=2)
    assert len(started) == 2


def test_the_index_is_read_once_then_only_what_was_appended(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    family = get_family("conv2d_fwd")
    first, second, third = (define_key({"BM": n}) for n in (16, 32, 64))
    index = CompiledIndex(family, cpu_device, root=tmp_path)
    index.add([first])
    assert index.known() == {first}
    CompiledIndex(family, cpu_device, root=tmp_path).add([second])  # another pass (or driver) appends
    with open(index.path, "a") as f:
        f.write(third[:9])  # being appended right now: read once the line is whole
    assert index.known() == {first, second}
    with open(index.path, "a") as f:
        f.write(third[9:] + "\n")
    assert index.known() == {first, second, third}
    index.path.write_text(second + "\n")  # rewritten smaller (a wiped cache): read from the start
    assert index.known() == {second}
