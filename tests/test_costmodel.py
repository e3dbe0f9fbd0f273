"""kptune.predict.costmodel and benchmarks/rerank_offline.py on a slice of the shipped H200 dataset:
the cost model's picks are valid pool configs, and every candidate set is scored as the benchmark
reports it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import rerank_offline

from kptune import dataset as ds
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.neighbours import cover_ranker
from kptune.predict.costmodel import CostModel
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
