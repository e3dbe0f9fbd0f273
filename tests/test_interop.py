"""Kernel Tuner T4 / cache and MIOpen perf-db formats, on a perf db built through the PerfDB API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kptune import interop
from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.measurement import Measurement, Outcome
from kptune.perfdb import PerfDB
from kptune.problem import Conv2dProblem

GPU = DeviceInfo("cupy", "0", "NVIDIA H200", "nvidia", "gpu", "d", "c", 1024, 49152, 65536, 132, 32, 50 << 20, 1 << 37)
FAMILY = get_family("conv2d_fwd")
PROBLEM = Conv2dProblem.parse("n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1")
SHAPE = "n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1"


def _build(path: Path) -> list[Measurement]:
    configs = FAMILY.space.configs(PROBLEM, GPU)[:4]
    ms = [
        Measurement(configs[0], Outcome.OK, 1.5, 1.4, 7, 1e-7),
        Measurement(configs[1], Outcome.OK, 0.9, 0.88, 9),
        Measurement(configs[2], Outcome.COMPILE_ERROR, error="x"),
        Measurement(configs[3], Outcome.WRONG_RESULT),
    ]
    with PerfDB(path) as db:
        pid, did = db.problem_id(PROBLEM), db.device_id(GPU)
        kid = db.kernel_id(FAMILY.name, FAMILY.source_hash, FAMILY.space.names)
        db.add_many((pid, did, kid, m, "exhaustive") for m in ms)
    return ms


def test_t4_round_trip(tmp_path: Path) -> None:
    ms = _build(tmp_path / "perf.db")
    with PerfDB(tmp_path / "perf.db") as db:
        doc = interop.to_t4(db, PROBLEM, GPU.key, FAMILY)
    assert doc["schema_version"] == "1.0.0" and len(doc["results"]) == 4
    assert [r["invalidity"] for r in doc["results"]] == ["correct", "correct", "compile", "correctness"]
    assert all(set(r) >= {"configuration", "times", "invalidity", "correctness"} for r in doc["results"])
    back = interop.from_t4(json.loads(json.dumps(doc)), FAMILY)
    assert [(m.config, m.outcome, m.time_ms, m.min_ms, m.runs) for m in back[:2]] == [
        (m.config, m.outcome, m.time_ms, m.min_ms, m.runs) for m in ms[:2]
    ]  # fmt: skip
    assert [m.outcome for m in back[2:]] == [Outcome.COMPILE_ERROR, Outcome.WRONG_RESULT]


def test_t4_import_rejects_what_does_not_fit() -> None:
    with pytest.raises(interop.InteropError, match="no 'results' list"):
        interop.from_t4({"schema_version": "1.0.0"}, FAMILY)
    with pytest.raises(interop.InteropError, match=r"results\[0\]: configuration must set exactly ALGO"):
        interop.from_t4({"results": [{"configuration": {"block_size_x": 16}, "invalidity": "correct"}]}, FAMILY)
    good = dict.fromkeys(FAMILY.space.names, 1)
    with pytest.raises(interop.InteropError, match="invalidity 'fine'"):
        interop.from_t4({"results": [{"configuration": good, "invalidity": "fine"}]}, FAMILY)
    with pytest.raises(interop.InteropError, match="positive 'time'"):
        interop.from_t4({"results": [{"configuration": good, "invalidity": "correct", "measurements": []}]}, FAMILY)


def test_kernel_tuner_cache_and_miopen_lines(tmp_path: Path) -> None:
    ms = _build(tmp_path / "perf.db")
    with PerfDB(tmp_path / "perf.db") as db:
        cache = interop.to_kernel_tuner_cache(db, PROBLEM, GPU, FAMILY)
        lines = interop.to_miopen_perfdb(db, GPU.key, FAMILY)
    assert cache["tune_params_keys"] == list(FAMILY.space.names) and len(cache["cache"]) == 4
    entry = cache["cache"][",".join(str(v) for v in ms[2].config.values())]
    assert entry["time"] == "CompilationFailedConfig" and entry["benchmark_time"] == 0
    best = ",".join(str(v) for v in ms[1].config.values())
    assert lines == [f"64-56-56-3x3-64-56-56-32-1x1-1x1-1x1-0-NCHW-FP32-F=kptune_conv2d_fwd:{best}"]
    # MIOpen's own example record: C=3, 64x32 input, 1x1 filter, K=32, N=100, FP32, forward
    example = Conv2dProblem.parse("n=100,c=3,h=64,w=32,k=32,r=1,s=1")
    assert interop.miopen_key(example) == "3-64-32-1x1-32-64-32-100-0x0-1x1-1x1-0-NCHW-FP32-F"


def test_cli_export_import(tmp_path: Path) -> None:
    _build(tmp_path / "perf.db")
    cli = [sys.executable, "-m", "kptune", "db"]
    run = subprocess.run([*cli, "export", "--format", "t4", "--shape", SHAPE, "--out", str(tmp_path / "t4.json"),
                          "--db", str(tmp_path / "perf.db")], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    run = subprocess.run([*cli, "import", str(tmp_path / "t4.json"), "--shape", SHAPE, "--device", GPU.key,
                          "--db", str(tmp_path / "perf.db")], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    with PerfDB(tmp_path / "perf.db") as db:
        sources = dict(db.conn.execute("SELECT source, COUNT(*) FROM measurements GROUP BY source").fetchall())
    assert sources == {"exhaustive": 4, "import": 4}
    (tmp_path / "bad.json").write_text("{not json")
    for args in (["export", "--format", "csv", "--out", "x"], ["export", "--format", "t4", "--out", "x"],
                 ["import", str(tmp_path / "bad.json"), "--shape", SHAPE, "--device", GPU.key]):  # fmt: skip
        run = subprocess.run([*cli, *args, "--db", str(tmp_path / "perf.db")], capture_output=True, text=True)
        assert run.returncode == 2 and run.stderr.startswith("kptune: error: ") and "Traceback" not in run.stderr
