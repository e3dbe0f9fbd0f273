"""The closed loop on PoCL: campaign, retrain (promoted), autotune with the model, audit, retrain
again (promoted or refused by the gate), autotune again (the db answers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from kptune.audit import audit
from kptune.autotune import autotune
from kptune.campaign import campaign
from kptune.corpus import parse_corpus
from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.local_search import LOCAL
from kptune.measurement import TimingSettings
from kptune.neighbours import COVER, NEIGHBOURS, cost_model_path, lent_dataset
from kptune.predict.models import ModelConfig
from kptune.registry import Registry
from kptune.retrain import retrain

FAMILY = get_family("conv2d_fwd")
HEAD = "n,c,h,w,k,r,s,pad_h,pad_w,stride_h,stride_w,dil_h,dil_w,groups,dtype,networks,count,split"
#: five tiny layers of two made-up networks (28 valid configs each on PoCL), split by network
CORPUS = [HEAD] + [f"{shape},1,1,0,0,1,1,1,1,1,fp32,{net},1,{split}" for shape, net, split in [
    ("1,1,3,3,1", "tiny_a", "train"), ("2,1,3,3,1", "tiny_a", "train"), ("1,2,3,3,2", "tiny_a", "train"),
    ("1,1,4,4,2", "tiny_b", "test"), ("1,2,2,2,1", "tiny_b", "test"),
]]  # fmt: skip
FAST = TimingSettings(warmup=0, first_batch=1, min_runs=1, max_runs=3, max_input_sets=1)
SMALL = ModelConfig(embed=16, hidden=32, epochs=30, patience=10)


def test_the_whole_loop(cpu_device: DeviceInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPTUNE_MODELS", str(tmp_path / "models"))
    corpus = parse_corpus(CORPUS)
    problems = [e.problem for e in corpus]
    db = tmp_path / "perf.db"
    tuned = campaign(problems, FAMILY, devices=[cpu_device], workers=2, db=db, settings=FAST)
    assert tuned.complete == 5 and tuned.outcomes == {"ok": 5 * 28}

    first = retrain(db, registry=Registry(), cfg=SMALL, corpus=corpus, shipped=())  # a registry of its own
    assert first.promoted and first.version == 1 and first.data == {"train": 3, "test": 2}

    served = [autotune(p, device=cpu_device, db=db, k=3, force=True, settings=FAST) for p in problems[3:]]
    assert all(r.source == "model" and r.model and r.model.endswith("-v1.safetensors") for r in served)
    # autotune lends the rest of its candidates from v1's own data (here its tiny train shapes' configs
    # are none of them valid for the test shapes: nothing is lent), with the cost model fit on it
    kept = lent_dataset(cpu_device, FAMILY)
    assert kept is not None and kept.name.endswith("-v1.db.gz") and cost_model_path(kept).is_file()
    assert all(FAMILY.space.valid(r.problem, cpu_device, m.config) for r in served for m in r.measured)

    gaps = audit(db, device=cpu_device, sample=2)
    assert len(gaps) == 2 and all(g.ratio is not None and g.configs == 28 for g in gaps)

    second = retrain(db, registry=Registry(), cfg=SMALL, corpus=corpus)
    assert second.version == 2 and second.current_version == 1
    assert second.exit_code == (0 if second.promoted else 10) and second.reason
    current = Registry().current(cpu_device.key, FAMILY.name)
    assert current is not None and current[0]["version"] == (2 if second.promoted else 1)

    again = autotune(problems[3], device=cpu_device, db=db)
    assert again.source == "db" and again.best is not None and again.best.ok

    from kptune.perfdb import PerfDB
    from kptune.report import served_vs_optimal, write_report

    with PerfDB(db) as perfdb:
        points = served_vs_optimal(perfdb)
    assert len(points) == 2 and all(0 < p["ratio"] <= 1 for p in points)
    page = write_report(db, tmp_path / "report.html", Registry()).read_text()
    assert page.count("data:image/png;base64,") == 3 and page.count("<tr><td>") == 2  # two model versions


def test_report_is_one_html_page(cpu_device: DeviceInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    monkeypatch.setattr(sys.modules["kptune.autotune"], "default_model_places", lambda: [])  # (no shipped CPU model)

    from kptune.perfdb import PerfDB
    from kptune.report import served_vs_optimal

    db = tmp_path / "perf.db"
    tiny = parse_corpus(CORPUS)[0].problem
    autotune(tiny, device=cpu_device, db=db, budget=2, settings=FAST)  # random: not served by a model
    with PerfDB(db) as perfdb:
        assert served_vs_optimal(perfdb) == []
    run = subprocess.run([sys.executable, "-m", "kptune", "report", "--db", str(db), "--out", str(tmp_path / "r.html"),
                          "--registry", str(tmp_path / "models")], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == 3


def test_two_autotunes_and_a_retrain_on_one_db_at_once(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    import os
    import sqlite3
    import subprocess
    import sys

    corpus_csv = tmp_path / "corpus.csv"
    corpus_csv.write_text("\n".join(CORPUS) + "\n")
    corpus = parse_corpus(CORPUS)
    db = tmp_path / "perf.db"
    campaign([e.problem for e in corpus], FAMILY, devices=[cpu_device], workers=2, db=db, settings=FAST)
    with sqlite3.connect(db) as c:
        before = c.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    env = {**os.environ, "KPTUNE_MODELS": str(tmp_path / "models")}
    cli = [sys.executable, "-m", "kptune"]
    shapes = ["n=1,c=1,h=3,w=3,k=1,r=1,s=1", "n=1,c=2,h=2,w=2,k=1,r=1,s=1"]
    procs = [subprocess.Popen([*cli, "autotune", "--shape", s, "--force", "--budget", "6", "--device", cpu_device.spec,
                               "--db", str(db), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for s in shapes]  # fmt: skip
    procs.append(subprocess.Popen([*cli, "retrain", "--db", str(db), "--epochs", "3", "--restarts", "1",
                                   "--corpus", str(corpus_csv)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))  # fmt: skip
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    assert [rc for rc, _, _ in results[:2]] == [0, 0], [e[-500:] for _, _, e in results]
    assert results[2][0] in (0, 10), results[2][2][-500:]
    assert not any("locked" in err.lower() for _, _, err in results)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        after = c.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    served = [len(json.loads(out)["candidates"]) for _, out, _ in results[:2]]  # the model's k (+ lent), or the budget
    assert after == before + sum(served) and all(5 <= n <= 5 + NEIGHBOURS + COVER + LOCAL for n in served)  # all stored
