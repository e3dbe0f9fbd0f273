"""The model registry's bookkeeping: promote, rollback, and pruning old versions' files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kptune.errors import KptuneError
from kptune.registry import Registry

META = {"device": "cupy:NVIDIA H200", "family": "conv2d_fwd", "source_hash": "s", "dataset_hash": "d"}


def _registry(tmp_path: Path, versions: int) -> Registry:
    files = tmp_path / "made"
    files.mkdir()
    (files / "m.safetensors").write_bytes(b"weights")
    (files / "d.db.gz").write_bytes(b"dataset")
    (files / "c.safetensors").write_bytes(b"trees")
    reg = Registry(tmp_path / "models")
    for i in range(versions):
        reg.add(files / "m.safetensors", META, {"ratio_top5_geomean": 0.9 + i / 100}, files / "d.db.gz",
                files / "c.safetensors")  # fmt: skip
    return reg


def _files(reg: Registry, version: int) -> list[bool]:
    stem = f"cupy-nvidia-h200-conv2d_fwd-v{version}"
    return [(reg.root / name).exists() for name in
            (f"{stem}.safetensors", f"dataset-{stem}.db.gz", f"costmodel-{stem}.safetensors")]  # fmt: skip


def test_prune_keeps_current_rollback_targets_and_newest(tmp_path: Path) -> None:
    reg = _registry(tmp_path, 6)
    for v in (1, 2, 4):
        reg.promote(v)
    pruned = reg.prune(keep=2)
    # current v4, last two promoted v4 and v2, two newest v6 and v5: v1 and v3 lose their files
    assert [v["version"] for v in pruned] == [1, 3]
    assert [all(_files(reg, v)) for v in range(1, 7)] == [False, True, False, True, True, True]
    assert not any(_files(reg, 1)) and not any(_files(reg, 3))
    listed = {v["version"]: v for v in reg.versions()}
    assert listed[1]["pruned"] and listed[1]["metrics"] == {"ratio_top5_geomean": 0.9}  # still listed
    assert reg.prune(keep=2) == []  # nothing more to do
    with pytest.raises(KptuneError, match="pruned"):
        reg.promote(3)
    assert reg.rollback(META["device"], META["family"])["version"] == 2  # not to the pruned v1
    with pytest.raises(KptuneError, match="nothing to roll back"):
        reg.rollback(META["device"], META["family"])
    with pytest.raises(KptuneError, match="at least 1"):
        reg.prune(keep=0)


def test_models_prune_command(tmp_path: Path) -> None:
    reg = _registry(tmp_path, 3)
    reg.promote(1)
    run = [sys.executable, "-m", "kptune", "models", "prune", "--registry", str(reg.root)]
    done = subprocess.run([*run, "--keep", "1", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {"pruned": [2]}
    bad = subprocess.run([*run, "--keep", "-1"], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "at least 1" in bad.stderr
    listed = subprocess.run([sys.executable, "-m", "kptune", "models", "list", "--registry", str(reg.root)],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert "pruned" in listed.stdout


def test_current_parses_the_index_once_per_version_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = _registry(tmp_path, 3)
    reg.promote(1)
    parsed = []
    loads = json.loads
    monkeypatch.setattr(json, "loads", lambda text: parsed.append(1) or loads(text))
    for _ in range(5):
        found = reg.current(META["device"], META["family"])
        assert found is not None and found[0]["version"] == 1
    assert len(parsed) <= 1  # asked at every prediction: not parsed again while the file is unchanged
    reg.promote(2)  # this process's write
    assert reg.current(META["device"], META["family"])[0]["version"] == 2  # type: ignore[index]
    run = [sys.executable, "-m", "kptune", "models", "promote", "3", "--registry", str(reg.root)]
    subprocess.run(run, capture_output=True, text=True, check=True)  # another process's write
    assert reg.current(META["device"], META["family"])[0]["version"] == 3  # type: ignore[index]
    assert Registry(reg.root).versions()[2]["version"] == 3
