"""autotune on PoCL: the db's winner at once, else the device's model's top-k measured, else random configs and a
local search."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kptune.autotune import autotune, candidates, model_for  # noqa: E402
from kptune.device import DeviceInfo  # noqa: E402
from kptune.errors import KptuneError  # noqa: E402
from kptune.kernel import get_family  # noqa: E402
from kptune.local_search import neighbours  # noqa: E402
from kptune.measurement import TimingSettings  # noqa: E402
from kptune.predict import checkpoint  # noqa: E402
from kptune.predict.models import ModelConfig, build_model  # noqa: E402
from kptune.predict.tokenizer import TargetVocab  # noqa: E402
from kptune.problem import Conv2dProblem  # noqa: E402
from kptune.strategies import get_strategy  # noqa: E402

FAMILY = get_family("conv2d_fwd")
PROBLEM = Conv2dProblem.parse("n=1,c=8,h=12,w=12,k=16,r=3,s=3,pad=1")


def _sources(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT source, COUNT(*) FROM measurements GROUP BY source").fetchall())


def _model_for(device: DeviceInfo, path: Path) -> Path:
    torch.manual_seed(0)
    vocab = TargetVocab.of(FAMILY.space)
    cfg = ModelConfig(embed=16, hidden=32)
    meta = {"family": FAMILY.name, "source_hash": FAMILY.source_hash, "device": device.key,
            "device_limits": device.limits(), "dataset_hash": "untrained", "training": {}}  # fmt: skip
    checkpoint.save(path, build_model(cfg, vocab.size).eval(), cfg, vocab, meta)
    return path


def test_no_model_falls_back_to_random_configs_and_a_local_search_then_the_db_answers(
    cpu_device: DeviceInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules["kptune.autotune"], "default_model_places", lambda: [])  # (a CPU model ships)
    db = tmp_path / "perf.db"
    first = autotune(PROBLEM, device=cpu_device, db=db, budget=4, model=None)
    if first.source == "model":
        pytest.skip("a model for this CPU is installed in the user's registry")
    assert first.source == "random" and "no model for" in first.note and len(first.measured) == 4
    assert "2 random configs, and 2 by a local search around the fastest" in first.note  # budget 4: half and half
    sampled = get_strategy("random")(FAMILY.space.configs(PROBLEM, cpu_device), 2, TimingSettings().seed)
    searched = [m.config for m in first.measured if m.config not in sampled]
    assert len(searched) == 2 and all(  # each one step from a config measured before it
        any(c in neighbours(FAMILY.space, PROBLEM, cpu_device, m.config) for m in first.measured) for c in searched
    )
    assert first.best is not None and first.best.time_ms == min(m.time_ms for m in first.measured if m.ok)
    assert _sources(db) == {"random": 4}
    again = autotune(PROBLEM, device=cpu_device, db=db, budget=4)
    assert again.source == "db" and again.best == first.best and again.measured == []
    forced = autotune(PROBLEM, device=cpu_device, db=db, budget=6, force=True)
    assert forced.source == "random" and len(forced.measured) == 6 and _sources(db) == {"random": 10}  # re-measured


def test_the_devices_model_predicts_and_its_candidates_are_measured(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    path = _model_for(cpu_device, tmp_path / "models" / "cpu.safetensors")
    assert model_for(cpu_device, FAMILY, [tmp_path / "models"]) == path
    other_cpu = DeviceInfo(**{**cpu_device.limits(), "name": "another cpu"})
    assert model_for(other_cpu, FAMILY, [tmp_path / "models"]) == path  # a CPU may use another CPU's model
    gpu = DeviceInfo(**{**cpu_device.limits(), "name": "a gpu", "kind": "gpu"})
    assert model_for(gpu, FAMILY, [tmp_path / "models"]) is None  # a GPU only its own
    own = _model_for(other_cpu, tmp_path / "models" / "other.safetensors")
    assert model_for(other_cpu, FAMILY, [tmp_path / "models"]) == own  # its own first
    result = autotune(PROBLEM, device=cpu_device, db=tmp_path / "perf.db", model=path, k=3, neighbours=0, cover=0,
                      local=0)  # fmt: skip
    assert result.source == "model" and result.model == str(path) and len(result.measured) == 3
    assert all(FAMILY.space.valid(PROBLEM, cpu_device, m.config) for m in result.measured)
    assert _sources(tmp_path / "perf.db") == {"model": 3}
    assert result.best is not None and result.best.ok
    kin = autotune(PROBLEM, device=other_cpu, db=tmp_path / "perf.db", model=path, k=2)
    assert kin.source == "model" and "another CPU device" in kin.note
    bare = autotune(PROBLEM, device=cpu_device, db=tmp_path / "bare.db", budget=3, use_model=False)  # --no-model
    assert bare.source == "random" and bare.model is None and bare.note.startswith("no model asked for: 2 random")
    with pytest.raises(KptuneError, match="give one or the other"):
        autotune(PROBLEM, device=cpu_device, db=tmp_path / "bare.db", model=path, use_model=False)


def test_a_gpu_borrows_the_model_and_tuned_shapes_of_a_gpu_of_its_architecture_and_sm_count() -> None:
    from kptune.autotune import default_model_places, served_by
    from kptune.neighbours import default_dataset_places, lender_for

    shipped = default_model_places()[0] / "model-h200.safetensors"
    h200 = checkpoint.read_meta(shipped)["device_limits"]
    assert DeviceInfo(**h200).arch == "sm_90"
    # an H100 SXM as CuPy reports it: another name, memory and L2, the same architecture and 132 SMs
    h100 = DeviceInfo(**{**h200, "name": "NVIDIA H100 80GB HBM3", "global_mem_bytes": 85_045_510_144,
                         "l2_bytes": 52_428_800, "driver": "cuda driver 12080; sm_90"})  # fmt: skip
    assert model_for(h100, FAMILY, default_model_places()) == shipped
    if model_for(h100, FAMILY) == shipped:  # (unless the user's registry holds a model for such a GPU)
        assert served_by(h100, FAMILY) == (shipped, "model-h200.safetensors, made for cupy:NVIDIA H200, another "
                                           "GPU of the same architecture, sm_90, and 132 SMs")  # fmt: skip
    lender = lender_for(h100, FAMILY, default_dataset_places())
    assert lender is not None and lender.tuned is not None and lender.tuned.shapes
    unlike = {"another SM count": {"compute_units": 114}, "another vendor": {"vendor": "AMD"},
              "another architecture": {"driver": "cuda driver 12080; sm_80"},
              "no architecture reported": {"driver": "cuda driver 12080"},
              "another backend": {"backend": "opencl", "index": "0:0"}}  # fmt: skip
    for why, fields in unlike.items():
        other = DeviceInfo(**{**h100.limits(), **fields})
        assert model_for(other, FAMILY, default_model_places()) is None, why
        assert lender_for(other, FAMILY, default_dataset_places()) is None, why
        if model_for(other, FAMILY) is None:
            assert served_by(other, FAMILY) == (
                None,
                "no model: autotune measures 12 random configs and 12 by a local search",
            ), why


def test_the_nearest_tuned_shapes_lend_configs_measured_beside_the_models(cpu_device: DeviceInfo,
                                                                           tmp_path: Path) -> None:  # fmt: skip
    from kptune.neighbours import neighbour_configs

    lent = neighbour_configs(PROBLEM, cpu_device, FAMILY, 2)  # from the shipped PoCL dataset (another CPU's, if so)
    assert len(lent) == 2 and all(FAMILY.space.valid(PROBLEM, cpu_device, c) for c in lent)
    path = _model_for(cpu_device, tmp_path / "cpu.safetensors")
    plain = autotune(PROBLEM, device=cpu_device, db=tmp_path / "a.db", model=path, k=3, neighbours=0, cover=0, local=0)
    both = autotune(PROBLEM, device=cpu_device, db=tmp_path / "b.db", model=path, k=3, neighbours=2, cover=0, local=0)
    mine = [m.config for m in plain.measured]
    extra = [c for c in neighbour_configs(PROBLEM, cpu_device, FAMILY, 5) if c not in mine][:2]  # 2 not among them
    assert {m.config for m in both.measured} == set(mine) | set(extra)
    assert ("lent by the tuned shapes" in both.note) == bool(extra) and "lent" not in plain.note
    configs, note = candidates(PROBLEM, cpu_device, FAMILY, path, 3, 2, 0)  # what it measured, without measuring
    assert len(configs) == len(set(configs)) and set(configs) == {m.config for m in both.measured}
    assert note == both.note
    covered = autotune(PROBLEM, device=cpu_device, db=tmp_path / "c.db", model=path, k=3, neighbours=2, cover=3,
                       local=0)  # fmt: skip
    more = {m.config for m in covered.measured} - {m.config for m in both.measured}
    assert len(more) == 3 and all(FAMILY.space.valid(PROBLEM, cpu_device, c) for c in more)
    for bad in ("neighbours", "cover"):
        with pytest.raises(KptuneError, match=f"{bad} must be 0 or more"):
            autotune(PROBLEM, device=cpu_device, db=tmp_path / "b.db", model=path, **{bad: -1})


def test_a_shape_far_from_every_tuned_one_is_lent_more_configs(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    from kptune.neighbours import lender_for

    path = _model_for(cpu_device, tmp_path / "cpu.safetensors")
    lender = lender_for(cpu_device, FAMILY)
    assert lender is not None and lender.tuned is not None
    far = Conv2dProblem.parse("n=2,c=4,h=64,w=64,k=64,r=1,s=1")  # a reduction of 4 over 8,192 pixels
    assert lender.tuned.far(far) and not lender.tuned.far(PROBLEM)
    configs, note = candidates(far, cpu_device, FAMILY, path, 3, 1, 0, far_neighbours=4)
    assert len(configs) == len(set(configs)) == 3 + 4 and "far from every tuned shape" in note
    assert all(FAMILY.space.valid(far, cpu_device, c) for c in configs)
    configs, note = candidates(far, cpu_device, FAMILY, path, 3, 1, 0, far_neighbours=0)  # 0: no more than --neighbours
    assert len(configs) == 3 + 1 and "far" not in note
    configs, note = candidates(PROBLEM, cpu_device, FAMILY, path, 3, 1, 0, far_neighbours=4)
    assert len(configs) == 3 + 1 and "far" not in note
    configs, note = candidates(far, cpu_device, FAMILY, path, 3, 0, 0, far_neighbours=4)  # 0 neighbours: none lent
    assert len(configs) == 3 and "lent" not in note
    with pytest.raises(KptuneError, match="far neighbours must be 0 or more"):
        autotune(far, device=cpu_device, db=tmp_path / "a.db", model=path, far_neighbours=-1)


def test_cli_json(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    path = _model_for(cpu_device, tmp_path / "cpu.safetensors")
    args = [sys.executable, "-m", "kptune", "autotune", "--shape", "n=1,c=4,h=6,w=6,k=8,r=3,s=3,pad=1", "-k", "2",
            "--device", cpu_device.spec, "--model", str(path), "--db", str(tmp_path / "perf.db"), "--neighbours", "0",
            "--cover", "0", "--local", "0", "--json"]  # fmt: skip
    run = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(run.stdout)
    assert doc["source"] == "model" and len(doc["candidates"]) == 2 and doc["best"]["ratio_to_winner"] == 1.0
    bad = subprocess.run([*args[:5], "n=1,c=4", "--db", str(tmp_path / "perf.db")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("kptune: error: ")


def test_compare_against_exhaustive_on_a_tiny_shape(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    from kptune.compare import Comparison, compare, plot, summary

    path = _model_for(cpu_device, tmp_path / "cpu.safetensors")
    tiny = Conv2dProblem.parse("n=1,c=1,h=3,w=3,k=1,r=1,s=1")  # 28 valid configs on PoCL
    rows = compare([tiny], device=cpu_device, k=2, model=path, db=tmp_path / "perf.db", neighbours=0, cover=0,
                   local=0)  # fmt: skip
    (row,) = rows
    assert row.source == "model" and row.configs == len(FAMILY.space.configs(tiny, cpu_device))
    assert row.ratio is not None and row.ratio > 0  # above 1 only by timing noise between the two runs
    with sqlite3.connect(tmp_path / "perf.db") as c:  # the optimum is the fastest of the exhaustive run
        times = dict(c.execute("SELECT g.key, m.time_ms FROM measurements m JOIN configs g ON g.id = m.config_id "
                               "WHERE m.source = 'exhaustive' AND m.outcome = 'ok'").fetchall())  # fmt: skip
    assert row.optimum_ms == min(times.values()) <= times[row.model_config]
    assert row.speedup is not None and row.speedup > 0
    # the problem's setup (inputs, reference, the worker's start) is charged to both paths
    assert 0 < row.setup_s < row.model_s and row.exhaustive_s > row.setup_s and 0 < row.predict_ms < 1e3 * row.model_s
    assert Comparison.from_json(row.to_json()) == row
    old = {k: v for k, v in row.to_json().items() if k not in ("predict_ms", "setup_s")}  # a row of an earlier run
    assert Comparison.from_json(old).setup_s == 0.0
    assert _sources(tmp_path / "perf.db") == {"model": 2, "exhaustive": row.configs}  # re-timings not stored
    # the two winners timed again alike; the same config is its own optimum
    assert row.ratio_retimed is not None and row.ratio_retimed > 0
    assert row.ratio_retimed == 1.0 or row.model_config != row.optimum_config
    s = summary(rows)
    assert s["problems"] == 1 and s["median_speedup"] == row.speedup
    assert s["retimed"] == 1 and s["geomean_ratio_retimed"] == pytest.approx(row.ratio_retimed)
    plot(rows, tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").stat().st_size > 1000


def test_retime_times_two_configs_alike(cpu_device: DeviceInfo) -> None:
    from kptune.compare import retime
    from kptune.measurement import TimingSettings
    from kptune.runner import Runner

    tiny = Conv2dProblem.parse("n=1,c=1,h=3,w=3,k=1,r=1,s=1")
    a, b = FAMILY.space.configs(tiny, cpu_device)[:2]
    with Runner(FAMILY, cpu_device, TimingSettings(target_ms=0.5)) as runner:
        runner.set_problem(tiny)
        ta, tb = retime(runner, a, b)
    assert ta is not None and tb is not None and ta > 0 and tb > 0


def test_audit_records_the_gap_and_queues_the_neighbours_of_misses(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    from kptune.audit import audit, audit_queue
    from kptune.corpus import load_corpus
    from kptune.perfdb import PerfDB

    path = _model_for(cpu_device, tmp_path / "cpu.safetensors")
    db = tmp_path / "perf.db"
    tiny = Conv2dProblem.parse("n=1,c=1,h=3,w=3,k=1,r=1,s=1")  # 28 valid configs on PoCL
    autotune(tiny, device=cpu_device, db=db, model=path, k=2, neighbours=0, cover=0, local=0)
    (row,) = audit(db, device=cpu_device, sample=3)
    assert row.problem == tiny.key() and row.configs == 28 and row.model_ms is not None and row.ratio is not None
    assert _sources(db) == {"model": 2, "exhaustive": 26}  # exhaustive resumed: the model's two were measured
    with pytest.raises(KptuneError, match="no unaudited problem"):
        audit(db, device=cpu_device)
    # a corpus layer the model missed by half: its other batch sizes, fp32 and fp16, are queued
    layer = next(e.problem for e in load_corpus() if e.problem.n == 8 and e.split == "train")
    with PerfDB(db) as perfdb:
        did = perfdb.device_id(cpu_device)
        kid = perfdb.kernel_id(FAMILY.name, FAMILY.source_hash, FAMILY.space.names)
        perfdb.add_audit(perfdb.problem_id(layer), did, kid, 2.0, 1.0)
    queue = audit_queue(db, cpu_device.key)
    assert queue and layer not in queue and {p.dtype for p in queue} == {"fp32", "fp16"}
    assert all((p.c, p.h, p.w, p.k, p.r) == (layer.c, layer.h, layer.w, layer.k, layer.r) for p in queue)
