"""retrain's promotion gate and the model registry (promote, rollback), on a synthetic perf db; what a
version keeps for autotune to lend from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from kptune import dataset as ds
from kptune.corpus import load_corpus
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.local_search import LOCAL
from kptune.measurement import Measurement, Outcome
from kptune.neighbours import NEIGHBOURS, lender_for, lent_dataset
from kptune.perfdb import PerfDB
from kptune.predict import checkpoint
from kptune.predict.models import ModelConfig
from kptune.registry import Registry
from kptune.retrain import AUTOTUNE, EXIT_KEPT, decide, retrain

GPU = DeviceInfo("cupy", "0", "NVIDIA H200", "nvidia", "gpu", "d", "c", 1024, 49152, 65536, 132, 32, 50 << 20, 1 << 37)
FAMILY = get_family("conv2d_fwd")
SMALL = ModelConfig(embed=16, hidden=32, epochs=4, patience=2)


def _ms(i: int) -> float:
    return 1.0 + (i * 7919 % 997) / 50  # made-up times, spread over 1 to 21 ms


def _db(path: Path) -> Path:
    corpus = load_corpus()
    picks = [e.problem for e in corpus if e.split == "test" and e.problem.n == 1][:2]
    picks += [e.problem for e in corpus if e.split == "train" and e.problem.n in (1, 8)][:4]
    with PerfDB(path) as db:
        did, kid = db.device_id(GPU), db.kernel_id(FAMILY.name, FAMILY.source_hash, FAMILY.space.names)
        for j, problem in enumerate(picks):
            pid = db.problem_id(problem)
            db.add_many((pid, did, kid, Measurement(c, Outcome.OK, _ms(i + j), 1.0, 5), "exhaustive")
                        for i, c in enumerate(FAMILY.space.configs(problem, GPU)))  # fmt: skip
    return path


def test_gate() -> None:
    assert decide({"ratio_top5_geomean": 0.9}, None)[0]
    assert decide({"ratio_top5_geomean": 0.9, "ratio_top1_geomean": 0.8}, {"ratio_top5_geomean": 0.9,
                  "ratio_top1_geomean": 0.8})[0]  # fmt: skip
    ok, why = decide({"ratio_top5_geomean": 0.8}, {"ratio_top5_geomean": 0.9})
    assert not ok and "0.8000 < current 0.9000" in why
    assert decide({"ratio_top5_geomean": 0.9, "ratio_top1_geomean": 0.9}, {"ratio_top5_geomean": 0.9,
                  "ratio_top1_geomean": 0.7})[0]  # fmt: skip
    # what autotune measures comes first: a better beam does not make up for worse candidates overall
    ok, why = decide({AUTOTUNE: 0.98, "ratio_top5_geomean": 0.95}, {AUTOTUNE: 0.99, "ratio_top5_geomean": 0.9}, "v2")
    assert not ok and why == f"{AUTOTUNE} 0.9800 < v2 0.9900"
    # a difference below TIE is a tie (a cost model's refit moves more): the beam's top 5 decides
    ok, why = decide(
        {AUTOTUNE: 0.99324, "ratio_top5_geomean": 0.9305}, {AUTOTUNE: 0.9932, "ratio_top5_geomean": 0.9376}
    )
    assert not ok and why == "ratio_top5_geomean 0.9305 < current 0.9376"


def test_retrain_promotes_then_registry_rolls_back(tmp_path: Path) -> None:
    db = _db(tmp_path / "perf.db")
    reg = Registry(tmp_path / "models")
    first = retrain(db, registry=reg, cfg=SMALL, shipped=())  # nothing shipped for the device: promoted
    assert first.promoted and first.version == 1 and first.reason == "no current model for this device"
    assert first.data == {"test": 2, "train": 4} and first.exit_code == 0
    entry, path = reg.current(GPU.key, FAMILY.name)  # type: ignore[misc]
    assert entry["version"] == 1 and path.is_file()
    second = retrain(db, registry=reg, cfg=SMALL, shipped=())  # same data and seed: the same scores, not worse
    assert second.promoted and second.version == 2 and second.current_version == 1
    assert {**second.candidate, "lender": ""} == {**second.current, "lender": ""}  # type: ignore[dict-item]
    assert second.current["lender"] == "cost model costmodel-cupy-nvidia-h200-conv2d_fwd-v1.safetensors"  # type: ignore[index]
    assert reg.rollback(GPU.key, FAMILY.name)["version"] == 1
    assert reg.current(GPU.key, FAMILY.name)[0]["version"] == 1  # type: ignore[index]
    with pytest.raises(KptuneError, match="nothing to roll back to"):
        reg.rollback(GPU.key, FAMILY.name)
    with pytest.raises(KptuneError, match="no model version 9"):
        reg.promote(9)


def test_cli_exit_codes(tmp_path: Path) -> None:
    db = _db(tmp_path / "perf.db")
    cli = [sys.executable, "-m", "kptune"]
    reg = ["--registry", str(tmp_path / "models")]
    run = subprocess.run([*cli, "retrain", "--db", str(db), "--epochs", "2", "--members", "2", *reg, "--json"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode in (0, EXIT_KEPT), run.stderr[-1500:]
    done = json.loads(run.stdout)
    # a first retrain is gated against what autotune serves without a version: the shipped H200 model and data
    assert done["current_label"] == "the shipped model-h200.safetensors" and done["current"][AUTOTUNE] > 0
    assert done["promoted"] is (run.returncode == 0) and done["exit_code"] == run.returncode
    # ... and the db's 6 problems extend the shipped H200 dataset, measured on the same device, not replace it
    assert "cut on top of dataset-h200.db.gz" in run.stderr and done["data"]["train"] > 400
    version = Registry(tmp_path / "models").versions()[0]
    stored = checkpoint.load(tmp_path / "models" / version["file"])  # an ensemble of two seeds, stored as one
    assert stored.cfg.members == 2 and len(stored.model.members) == 2  # type: ignore[union-attr]
    # the nightly default: no early stopping, the validation problems trained on too, for exactly --epochs
    assert not stored.cfg.early_stop
    assert stored.meta["training"]["validation"] == "none: fixed 2 epochs on train + validation"
    kept = version["lent_dataset"]
    assert ds.read_meta(tmp_path / "models" / kept)["top"] == 256  # the base's 256 fastest kept, not cut to 32
    listed = json.loads(subprocess.run([*cli, "models", "list", *reg, "--json"], capture_output=True, text=True).stdout)
    assert [v["version"] for v in listed["versions"]] == [1]
    assert EXIT_KEPT == 10
    missing = subprocess.run([*cli, "retrain", "--db", str(tmp_path / "none.db"), *reg], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("kptune: error: no perf db")
    restarts = subprocess.run([*cli, "retrain", "--db", str(db), "--restarts", "2", *reg],
                              capture_output=True, text=True)  # fmt: skip
    assert restarts.returncode == 2 and "--restarts chooses on the validation problems" in restarts.stderr


def test_a_version_keeps_the_data_autotune_lends_from(tmp_path: Path) -> None:
    db = _db(tmp_path / "perf.db")
    reg = Registry(tmp_path / "models")
    first = retrain(db, registry=reg, cfg=SMALL, shipped=())
    # scored on what autotune measures: the model's 5, NEIGHBOURS lent by the cut's train problems, LOCAL searched
    assert first.candidate["autotune_configs"] == 5 + NEIGHBOURS + LOCAL
    assert first.candidate[AUTOTUNE] >= first.candidate["ratio_top5_geomean"]
    entry, _ = reg.current(GPU.key, FAMILY.name)  # type: ignore[misc]
    kept = reg.lent_dataset(entry)
    assert kept is not None and kept.name == f"dataset-{entry['file'].removesuffix('.safetensors')}.db.gz"
    assert lent_dataset(GPU, FAMILY, reg) == kept  # autotune lends from the current version's data
    lender = lender_for(GPU, FAMILY, (kept,))
    assert lender is not None and lender.cost_note == f"cost model costmodel-{entry['file']}"
    assert first.candidate["lender"] == "cost model costmodel-candidate.safetensors"
    # a version without kept data (made before versions kept it) lends from the shipped dataset
    bare = reg.add(reg.root / entry["file"], {**entry, "source_hash": FAMILY.source_hash}, {})
    reg.promote(bare["version"])
    assert reg.lent_dataset(bare) is None
    assert lent_dataset(GPU, FAMILY, reg).parent.name == "data"  # type: ignore[union-attr]


def test_a_version_keeps_the_reranker_fit_on_its_data_and_says_when_none_could_be(tmp_path: Path) -> None:
    import dataclasses

    import numpy as np

    pytest.importorskip("sklearn")
    from kptune.neighbours import lent_problems
    from kptune.predict import rerank

    db = _db(tmp_path / "perf.db")
    reg = Registry(tmp_path / "models")
    said: list[str] = []
    retrain(db, registry=reg, cfg=SMALL, shipped=(), reranker=dataclasses.replace(SMALL, early_stop=False, epochs=1),
            log=said.append)  # fmt: skip
    # the db's train problems are all of one network: no fold has another to be ranked by
    assert any(s.startswith("reranker not fit (the reranker has nothing to learn from") for s in said), said
    entry = reg.versions()[0]
    kept = reg.lent_dataset(entry)
    assert kept is not None
    lender = lender_for(GPU, FAMILY, (kept,))
    assert lender is not None and lender.reranker is None and lender.rerank_note == f"no reranker beside {kept.name}"
    # a reranker fit on a version's data is kept beside it and lent with it (rows of noise: only the plumbing)
    lent = lent_problems(ds.load(kept))
    rng = np.random.default_rng(0)
    rows = [(p.key, rng.normal(size=(12, 30)), -np.abs(rng.normal(size=12))) for p in lent for _ in range(5)]
    rerank.fit_rows(rows, {"dataset_hash": ds.content_hash(lent)}).save(tmp_path / "r.safetensors")
    second = reg.add(reg.root / entry["file"], {**entry, "source_hash": FAMILY.source_hash}, {}, kept, None,
                     tmp_path / "r.safetensors")  # fmt: skip
    again = lender_for(GPU, FAMILY, (reg.lent_dataset(second),))  # type: ignore[arg-type]
    assert again is not None and again.reranker is not None
    assert again.rerank_note == f"reranker reranker-{second['file']}"


def test_a_sampled_bootstrap_dataset_of_this_very_device_is_no_base_for_the_cut() -> None:
    from kptune.retrain import _base

    shipped = Path(__file__).resolve().parents[1] / "kptune" / "data"
    pocl = shipped / "dataset-pocl-cpu.db.gz"  # labels: the best of sampled configs
    said: list[str] = []
    assert _base(pocl, ds.read_meta(pocl)["device"], said.append) is None  # (a machine with its very CPU)
    assert "its labels are 'best of" in said[-1]
    h200 = shipped / "dataset-h200.db.gz"
    assert _base(h200, ds.read_meta(h200)["device"], said.append) is not None and said[-1].startswith("cut on top")
