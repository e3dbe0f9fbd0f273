"""What the tuned shapes lend a new problem: the nearest shape's fastest, and a cover of the nearest shapes."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from kptune import dataset as ds
from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.neighbours import (
    RACY_NS,
    UNSTORED,
    TunedShapes,
    cover_ranker,
    dataset_for,
    lender_for,
    lent_problems,
)
from kptune.predict.evaluation import point
from kptune.problem import Conv2dProblem, problem_from_key
from kptune.space import Config

FAMILY = get_family("conv2d_fwd")
GPU = DeviceInfo("cupy", "0", "NVIDIA H200", "nvidia", "gpu", "d", "c", 1024, 49152, 65536, 132, 32, 50 << 20, 1 << 37)
DATA = Path(__file__).resolve().parents[1] / "kptune" / "data"
A = Conv2dProblem.parse("n=8,c=64,h=28,w=28,k=64,r=3,s=3,pad=1")
B = Conv2dProblem.parse("n=8,c=64,h=14,w=14,k=128,r=3,s=3,pad=1")


def _valid_configs(problem: Conv2dProblem, count: int) -> list[str]:
    both = set(c.key() for c in FAMILY.space.configs(B, GPU))
    return [c.key() for c in FAMILY.space.configs(problem, GPU) if c.key() in both][:count]


def _shape(problem: Conv2dProblem, times: dict[str, float]) -> ds.DatasetProblem:
    ranked = tuple(sorted(times.items(), key=lambda kv: kv[1]))
    return ds.DatasetProblem(problem.key(), "train", ("net",), len(ranked), len(ranked), ranked)


def test_shapes_of_one_implicit_gemm_are_nearest_whatever_their_batch_or_image() -> None:
    # n=4 56x56 and n=16 28x28 are one GEMM (M = 12,544, N = 96, K = 16); n=4 28x28 is a quarter of its M,
    # and by the problem's own sizes the nearer of the two
    same_gemm = Conv2dProblem.parse("n=16,c=16,h=28,w=28,k=96,r=1,s=1")
    same_sizes = Conv2dProblem.parse("n=4,c=16,h=28,w=28,k=96,r=1,s=1")
    fp16 = Conv2dProblem.parse("n=4,c=16,h=56,w=56,k=96,r=1,s=1,dtype=fp16")
    tuned = TunedShapes([_shape(q, {"ALGO=0": 1.0}) for q in (same_gemm, same_sizes, fp16)])
    problem = Conv2dProblem.parse("n=4,c=16,h=56,w=56,k=96,r=1,s=1")
    assert [tuned.shapes[i].key for i in tuned.nearest(problem, 3)] == [q.key() for q in (same_gemm, same_sizes, fp16)]
    assert point(problem) == point(same_gemm) and point(problem) != point(fp16)


def test_the_cover_completes_the_chosen_over_the_nearest_shapes() -> None:
    x, y, z, slow = _valid_configs(A, 4)
    # x is the best on A and poor on B, y the reverse, z good on both
    shapes = [_shape(A, {x: 1.0, y: 4.0, z: 1.1, slow: 8.0}), _shape(B, {x: 4.0, y: 1.0, z: 1.1, slow: 8.0})]
    cover = cover_ranker(shapes, FAMILY.space, GPU)
    probe = _shape(A, {})
    assert cover(probe, [], 1) == [z]  # the best geomean over both shapes
    assert cover(probe, [x], 1) == [y]  # what x leaves uncovered: B
    assert sorted(cover(probe, [x, y], 2)) == sorted([z, slow])  # nothing gains now: the rest, none chosen twice
    assert cover(probe, [], 0) == [] and cover(probe, [x, y, z, slow], 3) == []
    assert 0 < UNSTORED < 1  # a config a shape did not store counts below its slowest stored one


def test_the_ratios_of_a_few_configs_are_their_rows_of_the_whole_union() -> None:
    tuned = TunedShapes(lent_problems(ds.load(DATA / "dataset-h200.db.gz"))[:300])
    near = tuned.nearest(B, 40)
    cols, ratio, stored = tuned.log_ratios(near)
    rng = np.random.default_rng(0)
    picked = [int(j) for j in rng.choice(len(cols), 20, replace=False)]
    keys = [tuned.keys[cols[j]] for j in picked]
    unknown = "BM=1,BN=1"  # no tuned shape stored it: the unstored ratio on every shape
    few, few_stored = tuned.log_ratios_of(near, [*keys, unknown, keys[0]])
    assert np.array_equal(few[:20], ratio[picked]) and np.array_equal(few_stored[:20], stored[picked])
    assert np.array_equal(few[21], few[0]) and not few_stored[20].any()
    assert np.allclose(few[20], np.log([tuned.rows[i][2] for i in near]))


def test_the_ratios_read_by_config_are_the_whole_union_on_any_neighbourhood() -> None:
    tuned = TunedShapes(lent_problems(ds.load(DATA / "dataset-h200.db.gz"))[:300])
    stem = Conv2dProblem.parse("n=1,c=3,h=224,w=224,k=64,r=7,s=7,pad=3,stride=2")
    for problem, count, leave_out in ((A, 100, None), (B, 7, 0), (stem, 300, 5)):
        near = tuned.nearest(problem, count, leave_out)
        cols, ratio, stored = tuned.log_ratios(near)
        every = [tuned.keys[c] for c in cols[::-1]]  # every config the neighbours stored, in another order
        few, few_stored = tuned.log_ratios_of(near, every)
        assert np.array_equal(few, ratio[::-1]) and np.array_equal(few_stored, stored[::-1])
    assert [len(a) for a in tuned.log_ratios_of(near, [])] == [0, 0]


def test_the_cover_lends_only_configs_valid_for_the_problem() -> None:
    big = Conv2dProblem.parse("n=32,c=256,h=14,w=14,k=256,r=3,s=3,pad=1")
    tiny = Conv2dProblem.parse("n=1,c=3,h=8,w=8,k=4,r=3,s=3,pad=1")  # wide tiles do not fit it
    wide = [c.key() for c in FAMILY.space.configs(big, GPU) if not FAMILY.space.valid(tiny, GPU, c)][:20]
    fits = [c.key() for c in FAMILY.space.configs(tiny, GPU)][:3]
    times = {key: 1.0 + i / 100 for i, key in enumerate(wide)} | {key: 5.0 + i for i, key in enumerate(fits)}
    cover = cover_ranker([_shape(big, times)], FAMILY.space, GPU)
    got = cover(_shape(tiny, {}), [], 5)
    assert got and set(got) <= set(fits)  # the fast wide ones are skipped, never lent


@pytest.mark.parametrize("name", ["dataset-h200.db.gz", "dataset-pocl-cpu.db.gz"])
def test_each_shipped_dataset_lends_valid_distinct_configs_for_unseen_shapes(name: str) -> None:
    shipped = DATA / name
    if not shipped.is_file():
        pytest.skip(f"no shipped {name}")
    data = ds.read_meta(shipped)
    device = DeviceInfo(**data["device_limits"])
    lender = lender_for(device, FAMILY, (shipped,))
    assert lender is not None
    assert lender.cost is not None, lender.cost_note  # the cost model beside it was fit on it
    for shape in ("n=3,c=40,h=50,w=30,k=24,r=3,s=3,pad=1", "n=64,c=512,h=7,w=7,k=2048,r=1,s=1",
                  "n=1,c=3,h=224,w=224,k=64,r=7,s=7,pad=3,stride=2,dtype=fp16"):  # fmt: skip
        problem = Conv2dProblem.parse(shape)
        chosen = FAMILY.space.configs(problem, device)[:3]
        lent = lender.complete(problem, chosen, 2, 8)
        assert len(lent) == 10 and len(set(lent)) == 10 and not set(lent) & set(chosen)
        assert all(FAMILY.space.valid(problem, device, c) for c in lent) and all(isinstance(c, Config) for c in lent)


def test_a_shape_is_far_only_beyond_where_the_tuned_shapes_lie_from_each_other() -> None:
    from kptune.predict.evaluation import distances

    tuned = TunedShapes(lent_problems(ds.load(DATA / "dataset-h200.db.gz")))
    nearest = np.array([np.partition(distances(tuned.points, row), 1)[1] for row in tuned.points])
    assert 0 < tuned.far_distance < nearest.max() and np.mean(nearest > tuned.far_distance) <= 0.01
    assert not any(tuned.far(problem_from_key(p.key)) for p in tuned.shapes[::25])  # each its own nearest
    assert tuned.far(Conv2dProblem.parse("n=18,c=4,h=206,w=206,k=136,r=1,s=1"))  # a reduction of 4, 763,848 pixels
    assert not tuned.far(Conv2dProblem.parse("n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1"))
    assert TunedShapes(tuned.shapes[:1]).far_distance == float("inf")


def test_a_shape_asked_again_is_not_ranked_again_and_gets_the_same_configs() -> None:
    import dataclasses

    from kptune import neighbours

    shipped = DATA / "dataset-h200.db.gz"
    lender = lender_for(DeviceInfo(**ds.read_meta(shipped)["device_limits"]), FAMILY, (shipped,))
    assert lender is not None and lender.cost is not None
    calls: list[int] = []

    def counted(problem: ds.DatasetProblem, count: int) -> list[str]:
        calls.append(count)
        return lender.nearest(problem, count)

    fresh = dataclasses.replace(lender, ranked={}, nearest=counted, cost_model=None)
    first = fresh.rank_neighbours(A, 12)
    assert fresh.rank_neighbours(A, 5) == first[:5] and fresh.rank_neighbours(A, 12) == first and calls == [12]
    assert fresh.rank_neighbours(A, 20)[:12] == first and calls == [12, 20]  # asked for more: ranked again
    for i in range(neighbours.RANKED_KEPT - 1):  # full: the first asked is let go for the next
        fresh.ranked[f"other {i}"] = (1, [])
    fresh.rank_neighbours(B, 3)
    assert A.key() not in fresh.ranked and len(fresh.ranked) == neighbours.RANKED_KEPT


def test_a_dataset_put_in_a_folder_is_found_at_once_even_within_the_folder_s_clock_tick(tmp_path: Path) -> None:
    shipped = DATA / "dataset-pocl-cpu.db.gz"
    device = DeviceInfo(**ds.read_meta(shipped)["device_limits"])
    folder = tmp_path / "data"
    folder.mkdir()
    past = time.time_ns() - 10 * RACY_NS
    os.utime(folder, ns=(past, past))
    assert dataset_for(device, FAMILY, (folder,)) is None  # listed, and kept for this version of the folder
    shutil.copy(shipped, folder / shipped.name)
    assert dataset_for(device, FAMILY, (folder,)) == folder / shipped.name  # the folder changed: listed again
    (folder / shipped.name).unlink()
    assert dataset_for(device, FAMILY, (folder,)) is None  # changed just now: listed afresh, not kept
    stamp = folder.stat().st_mtime_ns
    shutil.copy(shipped, folder / shipped.name)
    os.utime(folder, ns=(stamp, stamp))  # a second change within the same tick of the clock leaves the time alone
    assert dataset_for(device, FAMILY, (folder,)) == folder / shipped.name
