"""kptune.predict.costmodel and benchmarks/rerank_offline.py on a slice of the shipped H200 dataset:
the cost model's picks are valid pool configs, and every candidate set is scored as the benchmark
reports it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import rerank_offline

from kptune import dataset as ds
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.neighbours import cover_ranker
from kptune.predict.costmodel import FORMAT, FORMAT_VERSION, CostModel, CostModelError, fit_for_dataset, save_trees
from kptune.predict.evaluation import nearest_shape
from kptune.problem import problem_from_key
from kptune.space import Config

DATASET = Path(__file__).resolve().parents[1] / "kptune" / "data" / "dataset-h200.db.gz"


def test_the_reranker_ranks_valid_pool_configs_and_every_set_is_scored() -> None:
    data = ds.load(DATASET)
    space, device = get_family(data.meta["family"]).space, DeviceInfo(**data.meta["device_limits"])
    lent = [p for p in data.split("train") if "dtype=fp32," in p.key][:40]
    scored = [p for p in data.split("test") if "dtype=fp32," in p.key][:3]
    rerank = CostModel(lent, space, device, near=10, pool=50)
    for p in scored:
        pool, x = rerank.pool_of(p.key)
        assert len(pool) == len(x) <= 50 and len(set(pool)) == len(pool)
        ranked = rerank.rank(p, 5)
        assert len(ranked) == min(5, len(pool)) and set(ranked) <= set(pool)
        assert all(space.valid(problem_from_key(p.key), device, Config.parse(c)) for c in ranked)  # type: ignore[arg-type]
        sets = rerank_offline.lend_sets(nearest_shape(lent, space, device), cover_ranker(lent, space, device),
                                        rerank.rank, p)  # fmt: skip
        assert set(sets) == set(rerank_offline.SETS)
        for name, candidates in sets.items():
            assert len(candidates) <= sum(rerank_offline.SETS[name]) and len(set(candidates)) == len(candidates)
            got = rerank_offline.ratio(p, candidates, complete=True)
            assert 0.0 <= got <= 1.0 and (got > 0) == (not candidates or any(c in dict(p.times) for c in candidates))
    with pytest.raises(KptuneError, match="nothing to learn"):
        CostModel([], space, device)
    best = scored[0].times[0][0]
    assert rerank_offline.ratio(scored[0], [best], complete=True) == 1.0
    assert rerank_offline.ratio(scored[0], ["not a stored config"], complete=True) == 0.0  # failed there
    slowest = scored[0].times[0][1] / scored[0].times[-1][1]
    assert rerank_offline.ratio(scored[0], ["not a stored config"], complete=False) == slowest  # an upper bound
    assert rerank_offline.ratio(scored[0], [], complete=True) == slowest  # nothing lent: the slowest


def _slice() -> tuple[ds.Dataset, list[ds.DatasetProblem], list[ds.DatasetProblem]]:
    data = ds.load(DATASET)
    lent = [p for p in data.split("train") if "dtype=fp32," in p.key][:40]
    scored = [p for p in data.split("test") if "dtype=fp32," in p.key][:4]
    return data, lent, scored


def test_the_tree_walk_predicts_what_scikit_learn_predicts() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    from kptune.predict.costmodel import Trees

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 7))
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + (x[:, 3] > 0.5)
    model = HistGradientBoostingRegressor(max_iter=60, max_leaf_nodes=31, random_state=0).fit(x, y)
    trees = Trees.from_sklearn(model)
    probe = np.vstack([rng.normal(size=(200, 7)), x[:50]])
    np.testing.assert_allclose(trees.predict(probe), model.predict(probe), rtol=0, atol=1e-9)
    again = Trees.from_arrays(trees.arrays(), trees.baseline, trees.depth)
    np.testing.assert_array_equal(again.predict(probe), trees.predict(probe))
    with pytest.raises(CostModelError, match="NaN"):
        trees.predict(np.full((1, 7), np.nan))
    broken = trees.arrays() | {"left": trees.left + len(trees.left)}
    with pytest.raises(CostModelError, match="outside"):
        Trees.from_arrays(broken, trees.baseline, trees.depth)


def test_a_saved_cost_model_ranks_as_the_fitted_one_and_refuses_other_data(tmp_path: Path) -> None:
    data, lent, scored = _slice()
    space, device = get_family(data.meta["family"]).space, DeviceInfo(**data.meta["device_limits"])
    fitted = CostModel(lent, space, device, near=10, pool=50)
    path = tmp_path / "costmodel-x.safetensors"
    fitted.save(path, {"dataset_hash": ds.content_hash(lent)})
    loaded = CostModel.load(path, lent, space, device, ds.content_hash(lent))
    assert (loaded.near, loaded.pool) == (10, 50)
    for p in scored:
        assert loaded.rank(p, 5) == fitted.rank(p, 5)
    with pytest.raises(CostModelError, match="fit on dataset"):
        CostModel.load(path, lent[1:], space, device, ds.content_hash(lent[1:]))
    # the same problems in another order (a retrain's cut lists its db's before its base's): the same fit
    reversed_fit = CostModel(lent[::-1], space, device, near=10, pool=50)
    np.testing.assert_array_equal(reversed_fit.trees.value, fitted.trees.value)
    assert ds.content_hash(lent[::-1]) == ds.content_hash(lent)
    again = CostModel.load(path, lent[::-1], space, device, ds.content_hash(lent[::-1]))
    assert again.rank(scored[0], 5) == fitted.rank(scored[0], 5)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CostModelError, match="not a readable cost model"):
        CostModel.load(bad, lent, space, device)
    bad.write_bytes(b"not a file at all")
    with pytest.raises(CostModelError):
        CostModel.load(bad, lent, space, device)
    # a file fit on other neighbourhoods (an older format): refused, saying how to fit it again
    save_trees(bad, fitted.trees, {"format": FORMAT, "format_version": FORMAT_VERSION - 1, "near": 10, "pool": 50})
    with pytest.raises(CostModelError, match="fit it again: kptune dataset costmodel DATASET"):
        CostModel.load(bad, lent, space, device)


def test_the_lender_lends_the_shipped_cost_models_picks_and_says_which(tmp_path: Path) -> None:
    from kptune.neighbours import cost_model_path, lender_for

    data, _, scored = _slice()
    family, device = get_family(data.meta["family"]), DeviceInfo(**data.meta["device_limits"])
    path = tmp_path / "dataset-x.db.gz"
    path.write_bytes(DATASET.read_bytes())
    lender = lender_for(device, family, (path,))
    assert lender is not None and lender.cost is None and "no cost model" in lender.cost_note
    cost_model_path(path).write_bytes(b"garbage")
    os.utime(path)  # a new file version: the lender is loaded again
    lender = lender_for(device, family, (path,))
    assert lender is not None and lender.cost is None and "not used" in lender.cost_note
    fit_for_dataset(ds.load(path), cost_model_path(path))
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    lender = lender_for(device, family, (path,))
    assert lender is not None and lender.cost is not None and lender.cost_note == "cost model costmodel-x.safetensors"
    problem = problem_from_key(scored[0].key)
    probe = ds.DatasetProblem(scored[0].key, "", (), 0, 0, ())
    picks = [Config.parse(c) for c in lender.cost(probe, 2)]
    assert lender.complete(problem, [], 2, 0) == picks  # type: ignore[arg-type]
