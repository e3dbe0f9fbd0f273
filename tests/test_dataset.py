"""The dataset cut from a perf db: exhaustive problems only, top-k for train, every ok config for test."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from kptune import dataset
from kptune.corpus import load_corpus
from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.measurement import Measurement, Outcome
from kptune.perfdb import PerfDB
from kptune.space import Config

GPU = DeviceInfo("cupy", "0", "NVIDIA H200", "nvidia", "gpu", "d", "c", 1024, 49152, 65536, 132, 32, 50 << 20, 1 << 37)
FAMILY = get_family("conv2d_fwd")
CORPUS = load_corpus()
TEST = next(e.problem for e in CORPUS if e.split == "test" and e.problem.c >= 64 and e.problem.n == 1)
TRAIN = next(e.problem for e in CORPUS if e.split == "train" and e.problem.c >= 64 and e.problem.n == 1)


def _build(path: Path) -> None:
    with PerfDB(path) as db:
        did, kid = db.device_id(GPU), db.kernel_id(FAMILY.name, FAMILY.source_hash, FAMILY.space.names)
        for problem, complete in ((TEST, True), (TRAIN, True), (dataclasses.replace(TRAIN, dtype="fp16"), False)):
            configs = FAMILY.space.configs(problem, GPU)
            if not complete:
                configs = configs[:-1]
            rows = []
            for i, c in enumerate(configs):
                m = (Measurement(c, Outcome.WRONG_RESULT) if i % 10 == 3 else
                     Measurement(c, Outcome.OK, 1.0 + (i * 7919 % 1000) / 100, 1.0, 5))  # fmt: skip
                rows.append((db.problem_id(problem), did, kid, m, "exhaustive"))
            db.add_many(rows)


def test_build_and_load(tmp_path: Path) -> None:
    _build(tmp_path / "perf.db")
    with PerfDB(tmp_path / "perf.db") as db:
        data, counts = dataset.build(db, GPU.key, top=32, corpus=CORPUS)
    assert counts == {"test": 1, "train": 1}  # the incomplete fp16 problem is left out
    (tmp_path / "d.db.gz").write_bytes(data)
    d = dataset.load(tmp_path / "d.db.gz")
    assert d.meta["device"] == GPU.key and d.meta["parameters"] == list(FAMILY.space.names)
    assert dataset.read_meta(tmp_path / "d.db.gz") == d.meta
    assert dataset.problem_keys(tmp_path / "d.db.gz") == {p.key for p in d.problems}
    test, train = d.split("test")[0], d.split("train")[0]
    n_test = len(FAMILY.space.configs(TEST, GPU))
    assert test.valid_configs == n_test and len(test.times) == test.ok_configs == n_test - len(range(3, n_test, 10))
    assert len(train.times) == 32 and train.ok_configs > 32
    assert [t for _, t in train.times] == sorted(t for _, t in train.times) and train.winner == train.times[0][0]
    assert "resnet34" in test.networks or test.networks


def test_a_sampled_dataset_takes_problems_measured_in_part_and_says_so(tmp_path: Path) -> None:
    _build(tmp_path / "perf.db")
    with PerfDB(tmp_path / "perf.db") as db:
        data, counts = dataset.build(db, GPU.key, top=32, corpus=CORPUS, sampled=100)
    assert counts == {"test": 1, "train": 2}  # now with the fp16 problem, one config short of exhaustive
    (tmp_path / "d.db.gz").write_bytes(data)
    d = dataset.load(tmp_path / "d.db.gz")
    assert d.meta["labels"] == "best of >= 100 sampled configs" and "labels: best of" in dataset.summary(d)[-3]
    assert dataset.summary(d)[-1].startswith("batch inversions: 0 in 0 problems")
    with PerfDB(tmp_path / "perf.db") as db:
        _, counts = dataset.build(db, GPU.key, top=32, corpus=CORPUS, sampled=10**6)
    assert counts == {"test": 1, "train": 1}


def test_an_installment_carries_over_the_base_problems_its_db_lacks(tmp_path: Path) -> None:
    _build(tmp_path / "perf.db")
    with PerfDB(tmp_path / "perf.db") as db:
        (tmp_path / "d1.db.gz").write_bytes(dataset.build(db, GPU.key, top=32, corpus=CORPUS)[0])
    first = dataset.load(tmp_path / "d1.db.gz")
    fp16 = dataclasses.replace(TEST, dtype="fp16")  # a later session's db: one new problem, and TRAIN again in part
    with PerfDB(tmp_path / "later.db") as db:
        did, kid = db.device_id(GPU), db.kernel_id(FAMILY.name, FAMILY.source_hash, FAMILY.space.names)
        db.add_many([(db.problem_id(problem), did, kid, Measurement(c, Outcome.OK, 2.0 + i % 7, 2.0, 5), "exhaustive")
                     for problem, configs in ((fp16, FAMILY.space.configs(fp16, GPU)),
                                              (TRAIN, FAMILY.space.configs(TRAIN, GPU)[:5]))
                     for i, c in enumerate(configs)])  # fmt: skip
        data, counts = dataset.build(db, GPU.key, top=16, corpus=CORPUS, base=first)
        assert counts == {"test": 2, "train": 1}
        with pytest.raises(dataset.DatasetError, match="base dataset's labels"):
            dataset.build(db, GPU.key, corpus=CORPUS, sampled=5, base=first)
    (tmp_path / "d2.db.gz").write_bytes(data)
    second = {p.key: p for p in dataset.load(tmp_path / "d2.db.gz").problems}
    old = {p.key: p for p in first.problems}
    assert second[TEST.key()] == old[TEST.key()] and second[fp16.key()].split == "test"
    assert second[TRAIN.key()].times == old[TRAIN.key()].times[:16]  # the base's, cut to this build's top


def test_a_base_problem_takes_the_times_its_configs_were_rechecked_at(tmp_path: Path) -> None:
    _build(tmp_path / "perf.db")
    with PerfDB(tmp_path / "perf.db") as db:
        (tmp_path / "d1.db.gz").write_bytes(dataset.build(db, GPU.key, top=32, corpus=CORPUS)[0])
    first = dataset.load(tmp_path / "d1.db.gz")
    old = {p.key: p for p in first.problems}[TEST.key()]
    (spike, _), (gone, _), (kept, kept_ms) = old.times[-1], old.times[-2], old.times[-3]
    with PerfDB(tmp_path / "later.db") as db:  # a later session re-timed three of the test problem's configs
        did, kid = db.device_id(GPU), db.kernel_id(FAMILY.name, FAMILY.source_hash, FAMILY.space.names)
        pid = db.problem_id(TEST)
        db.add_many([(pid, did, kid, Measurement(Config.parse(spike), Outcome.OK, 0.5, 0.5, 5), "recheck"),
                     (pid, did, kid, Measurement(Config.parse(gone), Outcome.TIMEOUT), "recheck"),
                     (pid, did, kid, Measurement(Config.parse(kept), Outcome.OK, 0.1, 0.1, 5), "model")])  # fmt: skip
        (tmp_path / "d2.db.gz").write_bytes(dataset.build(db, GPU.key, top=32, corpus=CORPUS, base=first)[0])
    second = dataset.load(tmp_path / "d2.db.gz")
    new = {p.key: p for p in second.problems}[TEST.key()]
    assert new.times[0] == (spike, 0.5) and gone not in dict(new.times)  # re-timed: the winner; failed: left out
    assert dict(new.times)[kept] == kept_ms  # only re-timings replace a base's times
    assert new.ok_configs == old.ok_configs - 1 and len(new.times) == len(old.times) - 1


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "x.gz").write_bytes(b"not gzip")
    with pytest.raises(dataset.DatasetError, match=r"not a gzipped kptune dataset|cannot read"):
        dataset.load(tmp_path / "x.gz")
    import gzip

    (tmp_path / "y.gz").write_bytes(gzip.compress(b"SQLite format 3\x00 but not really"))
    with pytest.raises(dataset.DatasetError, match="corrupted"):
        dataset.load(tmp_path / "y.gz")
    run = subprocess.run([sys.executable, "-m", "kptune", "dataset", "show", str(tmp_path / "missing.gz")],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and run.stderr.startswith("kptune: error: cannot read dataset")
