"""kptune.predict.rerank on a slice of the shipped H200 dataset: fit out of fold (each problem ranked by
a seq2seq that never saw its network, reading tuned shapes of the other networks), saved and loaded
without pickle, and the beam reordered, never changed."""

from __future__ import annotations

import collections
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from kptune import dataset as ds
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.neighbours import TunedShapes, lender_for, lent_problems
from kptune.predict import rerank
from kptune.predict.api import search
from kptune.predict.costmodel import CostModel, CostModelError, save_trees
from kptune.predict.models import ModelConfig
from kptune.problem import Conv2dProblem, problem_from_key
from kptune.space import Config

DATA = Path(__file__).resolve().parents[1] / "kptune" / "data"


@pytest.fixture(scope="module")
def fitted() -> tuple[ds.Dataset, rerank.Rows, rerank.Reranker]:
    """Three networks' fp32 train problems and a few fp16, two folds, a small seq2seq per fold."""
    data = ds.load(DATA / "dataset-h200.db.gz")
    nets = collections.defaultdict(list)
    for p in data.split("train"):
        nets[p.networks[0]].append(p)
    picked = [p for net in sorted(nets)[:3] for p in nets[net] if "dtype=fp32," in p.key][:45]
    fp16 = [p for p in data.split("train") if "dtype=fp16," in p.key][:3]
    part = ds.Dataset(data.meta, tuple(picked + fp16))
    cfg = ModelConfig(embed=16, hidden=32, epochs=2, early_stop=False, seed=0)
    rows = rerank.out_of_fold_rows(part, cfg, folds=2)
    with pytest.raises(KptuneError, match="nothing to learn"):
        rerank.fit_rows([], {})
    return part, rows, rerank.fit_rows(rows, {"dataset_hash": ds.content_hash(lent_problems(part)), "folds": 2})


def test_every_lent_fp32_problem_is_ranked_out_of_fold_and_the_folds_split_networks(fitted) -> None:  # type: ignore[no-untyped-def]
    part, rows, _ = fitted
    lent = lent_problems(part)
    folds = rerank.network_folds(lent, 2)
    assert set(folds) == {p.networks[0] for p in lent} and set(folds.values()) == {0, 1}
    fp32 = {p.key for p in lent if "dtype=fp32," in p.key}
    assert {key for key, _, _ in rows} == fp32  # the trees are fit on fp32 pools alone
    times = {p.key: p for p in lent}
    for key, x, y in rows:
        assert len(x) == len(y) <= rerank.WIDTH + rerank.LENDERS and np.isfinite(x).all()
        assert list(x[:, 0]) == list(range(len(x)))  # the pool's places
        lent = x[:, -1] == 1  # the lent flag: the beam's first, then the nearest shapes' winners
        assert not lent[0] and list(lent) == sorted(lent)
        assert (y <= 0).all() and (y >= np.log(times[key].times[0][1] / times[key].times[-1][1]) - 1e-12).all()


def test_the_reranker_reorders_the_beam_and_survives_a_save_and_load(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    part, _, model = fitted
    family, device = get_family(part.meta["family"]), DeviceInfo(**part.meta["device_limits"])
    lent = lent_problems(part)
    tuned = TunedShapes(lent)
    from kptune.predict.api import load_predictor

    pred = load_predictor(DATA / "model-h200.safetensors")
    problem = problem_from_key(lent[0].key)
    assert isinstance(problem, Conv2dProblem)
    found = search(pred.model, pred.vocab, family, problem, device, rerank.WIDTH, rerank.WIDTH)
    order = model.order(problem, found, tuned, device, family.space)
    pool, x = rerank.pooled(problem, found, tuned, device, family.space)
    assert pool[: len(found)] == found and sorted(c.config.key() for c in order) == sorted(c.config.key() for c in pool)
    borrowed = pool[len(found) :]
    won = rerank.winners(tuned, tuned.nearest(problem, rerank.LENDERS))
    assert {c.config.key() for c in borrowed} <= set(won)
    assert all(c.log_prob == rerank.LENT_LOG_PROB for c in borrowed)
    assert all(family.space.valid(problem, device, c.config) for c in pool)  # lent configs too: valid here
    predicted = model.trees.predict(x)
    assert [c.config.key() for c in order] == [pool[j].config.key() for j in np.argsort(-predicted, kind="stable")]
    half = dataclasses.replace(problem, dtype="fp16")  # fit on fp32, it orders fp16 pools too
    half_pool, half_x = rerank.pooled(half, found, tuned, device, family.space)
    assert [c.config.key() for c in model.order(half, found, tuned, device, family.space)] == [
        half_pool[j].config.key() for j in np.argsort(-model.trees.predict(half_x), kind="stable")]  # fmt: skip
    path = tmp_path / "reranker-x.safetensors"
    model.save(path)
    loaded = rerank.Reranker.load(path, ds.content_hash(lent))
    assert loaded.order(problem, found, tuned, device, family.space) == order and loaded.meta["folds"] == 2
    with pytest.raises(CostModelError, match="fit on dataset"):
        rerank.Reranker.load(path, ds.content_hash(lent[1:]))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file at all")
    with pytest.raises(CostModelError, match="reranker"):
        rerank.Reranker.load(bad)
    CostModel(lent, family.space, device).save(bad, {})  # a cost model is not a reranker
    with pytest.raises(CostModelError, match="not a kptune reranker"):
        rerank.Reranker.load(bad)
    old = rerank.FORMAT_VERSION - 1
    save_trees(bad, model.trees, {**model.meta, "format": rerank.FORMAT, "format_version": old})
    says = f"reranker format {old}, this kptune reads {rerank.FORMAT_VERSION}; fit it again: kptune dataset reranker"
    with pytest.raises(CostModelError, match=says):
        rerank.Reranker.load(bad)


def test_the_ranker_is_the_reordered_beam(fitted) -> None:  # type: ignore[no-untyped-def]
    from kptune.predict.api import load_predictor

    part, _, model = fitted
    family, device = get_family(part.meta["family"]), DeviceInfo(**part.meta["device_limits"])
    tuned = TunedShapes(lent_problems(part))
    pred = load_predictor(DATA / "model-h200.safetensors")
    rank = rerank.ranker(pred.model, pred.vocab, family, device, tuned, model)
    p = part.problems[0]
    problem = problem_from_key(p.key)
    assert isinstance(problem, Conv2dProblem)
    found = search(pred.model, pred.vocab, family, problem, device, rerank.WIDTH, rerank.WIDTH)
    assert rank(p, 3) == [c.config.key() for c in model.order(problem, found, tuned, device, family.space)[:3]]


def test_predict_rerank_cli() -> None:
    cli = [sys.executable, "-m", "kptune", "predict", "--shape", "n=2,c=96,h=28,w=28,k=128,r=3,s=3,pad=1"]
    run = subprocess.run([*cli, "--rerank", "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    problem = Conv2dProblem.parse("n=2,c=96,h=28,w=28,k=128,r=3,s=3,pad=1")
    family = get_family("conv2d_fwd")
    device = DeviceInfo(**ds.read_meta(DATA / "dataset-h200.db.gz")["device_limits"])
    keys = [c["key"] for c in doc["candidates"]]
    assert len(set(keys)) == 5 and all(family.space.valid(problem, device, Config.parse(k)) for k in keys)
    plain = json.loads(subprocess.run([*cli, "-k", str(rerank.WIDTH), "--json"], capture_output=True, text=True).stdout)
    lender = lender_for(device, family)
    assert lender is not None and lender.tuned is not None
    won = rerank.winners(lender.tuned, lender.tuned.nearest(problem, rerank.LENDERS))
    assert set(keys) <= {c["key"] for c in plain["candidates"]} | set(won)  # the beam's WIDTH and the lent, reordered
    assert all(c["log_prob"] > rerank.LENT_LOG_PROB for c in doc["candidates"])  # each scored by the seq2seq
    pocl = str(DATA / "model-pocl-cpu.safetensors")
    for args, says in ((["--rerank", "--blend"], "choose one"), (["--rerank", "--model", pocl], "no reranker beside")):
        run = subprocess.run([*cli, *args], capture_output=True, text=True)
        assert run.returncode == 2 and run.stderr.startswith("kptune: error: ") and says in run.stderr, run.stderr


def test_predict_rerank_orders_fp16_with_the_trees_fit_on_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    from kptune.predict import api

    problem = Conv2dProblem.parse("n=1,c=256,h=56,w=56,k=256,r=1,s=1,dtype=fp16")
    assert rerank.reranked(problem) and not rerank.fitted(problem)
    searched, search = [], api.search
    monkeypatch.setattr(api, "search", lambda *a, **kw: searched.append(a[5:7]) or search(*a, **kw))
    reranked, pred = api.predict(problem, 5, rerank=True)
    assert searched == [(rerank.WIDTH, rerank.WIDTH)]  # the wider beam, as for fp32
    family = get_family("conv2d_fwd")
    lender = lender_for(pred.device, family)
    assert lender is not None and lender.reranker is not None and lender.tuned is not None
    found = search(pred.model, pred.vocab, family, problem, pred.device, rerank.WIDTH, rerank.WIDTH)
    ordered = lender.reranker.order(problem, found, lender.tuned, pred.device, family.space)
    assert [c.config.key() for c in reranked] == [c.config.key() for c in ordered[:5]]
    assert all(family.space.valid(problem, pred.device, c.config) for c in reranked)


def test_predict_rerank_scores_the_lent_configs_it_picks_by_the_seq2seq() -> None:
    from kptune.predict.api import _scored_lent, load_predictor
    from kptune.predict.blend import sequence_log_probs

    pred = load_predictor(DATA / "model-h200.safetensors")
    family, device = get_family("conv2d_fwd"), pred.device
    problem = Conv2dProblem.parse("n=2,c=256,h=14,w=14,k=512,r=1,s=1,stride=2")
    beam = search(pred.model, pred.vocab, family, problem, device, rerank.WIDTH, rerank.WIDTH)
    lender = lender_for(device, family)
    assert lender is not None and lender.tuned is not None
    pool, _ = rerank.pooled(problem, beam, lender.tuned, device, family.space)
    assert len(pool) > len(beam)  # this shape's neighbours won with configs its beam lacks
    picked = [pool[-1], beam[3], pool[len(beam)]]
    scored = _scored_lent(pred, problem, device, beam, picked)
    assert [c.config for c in scored] == [c.config for c in picked] and scored[1] == beam[3]
    want = sequence_log_probs(pred.model, pred.vocab, problem, [pool[-1].config.key()], device)[0]
    assert scored[0].log_prob == pytest.approx(want) and scored[0].log_prob > rerank.LENT_LOG_PROB
    assert _scored_lent(pred, problem, device, beam, beam[:5]) == beam[:5]  # nothing lent: no decode, as it was


def test_predict_rerank_gives_a_far_shape_s_first_and_last_places_to_the_cost_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kptune.predict import api

    family = get_family("conv2d_fwd")
    far = Conv2dProblem.parse("n=18,c=4,h=206,w=206,k=136,r=1,s=1")  # a reduction of 4 over 763,848 pixels
    near = Conv2dProblem.parse("n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1")
    picks, pred = {p: api.predict(p, 5, rerank=True)[0] for p in (far, near)}, api.load_predictor(None)
    lender = lender_for(pred.device, family)
    assert lender is not None and lender.tuned is not None and lender.tuned.far(far) and not lender.tuned.far(near)
    monkeypatch.setattr(TunedShapes, "far", lambda self, problem: False)
    plain = {p: api.predict(p, 8, rerank=True)[0] for p in (far, near)}
    assert picks[near] == plain[near][:5]  # near the tuned shapes: the reranker's five
    keys, cost = [c.config.key() for c in picks[far]], lender.rank_neighbours(far, 6)
    assert keys[0] == cost[0] and keys[0] != plain[far][0].config.key()  # the cost model's first pick first
    assert keys[1:4] == [c.config.key() for c in plain[far] if c.config.key() != keys[0]][:3]  # then the reranker's
    assert keys[4] == next(k for k in cost if k not in keys[:4]) and len(set(keys)) == 5  # and the cost model's next
    assert all(family.space.valid(far, pred.device, c.config) for c in picks[far])
    assert all(c.log_prob > rerank.LENT_LOG_PROB for c in picks[far])  # each scored by the seq2seq
    monkeypatch.undo()
    assert [c.config.key() for c in api.predict(far, 1, rerank=True)[0]] == keys[:1]  # k = 1: the first alone
    assert [c.config.key() for c in api.predict(far, 2, rerank=True)[0]] == [keys[0], cost[1]]


def test_eval_s_served_order_is_what_predict_rerank_serves_far_shapes_too() -> None:
    from kptune.predict import api

    shipped = DATA / "dataset-h200.db.gz"
    pred, family = api.load_predictor(None), get_family("conv2d_fwd")
    lent = lent_problems(ds.load(shipped))
    model = rerank.Reranker.load(DATA / "reranker-h200.safetensors", ds.content_hash(lent))
    lender = lender_for(pred.device, family, (shipped,))
    assert lender is not None and lender.cost is not None
    rank = rerank.ranker(pred.model, pred.vocab, family, pred.device, TunedShapes(lent), model, lender)
    far = Conv2dProblem.parse("n=18,c=4,h=206,w=206,k=136,r=1,s=1")
    near = Conv2dProblem.parse("n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1")
    assert lender.far(far) and not lender.far(near)
    for problem in (far, near):
        served = [c.config.key() for c in api.predict(problem, 5, rerank=True)[0]]
        assert rank(ds.DatasetProblem(problem.key(), "", (), 0, 0, ()), 5) == served
