from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kptune.device import DeviceInfo
from kptune.errors import DatabaseError
from kptune.measurement import Measurement, Outcome
from kptune.perfdb import SCHEMA_VERSION, PerfDB
from kptune.problem import Conv2dProblem
from kptune.space import Config

DEV = DeviceInfo("opencl", "0:0", "cpu", "v", "cpu", "d", "c", 256, 65536, 0, 2, 1, 1 << 20, 1 << 30)
PROBLEM = Conv2dProblem.parse("n=1,c=3,h=5,w=5,k=4,r=3,s=3,pad=1")


def _fill(db: PerfDB) -> tuple[int, int, int]:
    ids = db.problem_id(PROBLEM), db.device_id(DEV), db.kernel_id("conv", "abc", ["A", "B"])
    db.add(*ids, Measurement(Config.of({"A": 1, "B": 2}), Outcome.OK, 2.0, 1.9, 10, 1e-7), "exhaustive")
    db.add(*ids, Measurement(Config.of({"A": 2, "B": 2}), Outcome.OK, 1.0, 0.9, 10, 1e-7), "exhaustive")
    db.add(*ids, Measurement(Config.of({"A": 4, "B": 2}), Outcome.COMPILE_ERROR, error="boom"), "random")
    return ids


def test_round_trip_and_best(db_path: Path) -> None:
    with PerfDB(db_path) as db:
        ids = _fill(db)
    with PerfDB(db_path) as db:
        assert db.schema_version == SCHEMA_VERSION
        assert db.integrity_ok()
        ms = db.measurements(*ids)
        assert len(ms) == 3
        failed = next(m for m in ms if m.outcome is Outcome.COMPILE_ERROR)
        assert failed.error == "boom" and failed.time_ms is None
        best = db.best(*ids)
        assert best is not None and best.config == Config.of({"A": 2, "B": 2}) and best.time_ms == 1.0
        summary = db.summary()
        assert summary["outcomes"] == {"ok": 2, "compile_error": 1}
        assert summary["best"][0]["time_ms"] == 1.0
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_latest_measurement_of_a_config_wins(db_path: Path) -> None:
    with PerfDB(db_path) as db:
        ids = _fill(db)
        db.add(*ids, Measurement(Config.of({"A": 2, "B": 2}), Outcome.OK, 3.0, 2.9, 10), "model")
        assert db.best(*ids).time_ms == 2.0  # type: ignore[union-attr]


def test_measurements_narrowed_to_some_configs_are_their_latest(db_path: Path) -> None:
    with PerfDB(db_path) as db:
        ids = _fill(db)
        db.add(*ids, Measurement(Config.of({"A": 2, "B": 2}), Outcome.OK, 3.0, 2.9, 10), "recheck")
        wanted = ["A=2,B=2", "A=4,B=2", "A=8,B=8"]  # the last never measured
        got = {m.config.key(): m for m in db.measurements(*ids, wanted)}
        assert set(got) == {"A=2,B=2", "A=4,B=2"}
        assert got["A=2,B=2"].time_ms == 3.0 and got["A=4,B=2"].outcome is Outcome.COMPILE_ERROR
        assert db.measurements(*ids, []) == []
        many = [f"A={i},B=0" for i in range(1200)] + ["A=1,B=2"]  # past one query's bound parameters
        assert [m.config.key() for m in db.measurements(*ids, many)] == ["A=1,B=2"]


def test_newer_schema_is_refused_with_what_to_do(db_path: Path) -> None:
    PerfDB(db_path).close()
    with sqlite3.connect(db_path) as c:
        c.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(DatabaseError, match=r"newer than this kptune.*upgrade"):
        PerfDB(db_path)


def test_corrupted_or_foreign_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match="not a kptune perf db or is corrupted"):
        PerfDB(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE t (x)")
    with pytest.raises(DatabaseError, match="not a kptune perf db"):
        PerfDB(other)


def test_dbs_damaged_inside_are_refused_in_one_line(db_path: Path) -> None:
    """Found by fuzzing (benchmarks/fuzz_inputs.py): a perf db whose schema or text was damaged."""
    with PerfDB(db_path) as db:
        _fill(db)
    with sqlite3.connect(db_path) as c:  # a column renamed, as a flipped byte in sqlite_master would
        c.execute("ALTER TABLE measurements RENAME COLUMN min_ms TO mim_ms")
    with pytest.raises(DatabaseError, match=r"corrupted .*unexpected columns in measurements"):
        PerfDB(db_path)
    db_path.unlink()
    with PerfDB(db_path) as db:
        _fill(db)
    with sqlite3.connect(db_path) as c:
        c.execute("DELETE FROM meta")
    with pytest.raises(DatabaseError, match=r"corrupted .*no schema version"):
        PerfDB(db_path)
    db_path.unlink()
    with PerfDB(db_path) as db:
        ids = _fill(db)
    with sqlite3.connect(db_path) as c:  # text that is not UTF-8, read back mid-query
        c.execute("UPDATE configs SET key = CAST(x'41d5' AS TEXT) WHERE id = 1")
    with PerfDB(db_path) as db, pytest.raises(DatabaseError, match="corrupted"):
        db.measurements(*ids)


def test_merge_copies_what_is_missing_once(tmp_path: Path) -> None:
    other_problem = Conv2dProblem.parse("n=2,c=3,h=5,w=5,k=4,r=1,s=1")
    with PerfDB(tmp_path / "a.db") as a:
        _fill(a)
    with PerfDB(tmp_path / "b.db") as b:  # another problem first, so its ids differ from a's
        b.add(b.problem_id(other_problem), b.device_id(DEV), b.kernel_id("conv", "abc", ["A", "B"]),
              Measurement(Config.of({"A": 1, "B": 1}), Outcome.OK, 3.0, 3.0, 5), "random")  # fmt: skip
        with PerfDB(tmp_path / "a.db") as a:
            assert b.merge_from(a) == 3
            assert b.merge_from(a) == 0  # a rerun adds nothing
        ids = b.problem_id(PROBLEM), b.device_id(DEV), b.kernel_id("conv", "abc", ["A", "B"])
        best = b.best(*ids)
        assert best is not None and best.config == Config.of({"A": 2, "B": 2}) and best.time_ms == 1.0
        assert len(b.measurements(*ids)) == 3 and b.conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == 4


def test_a_v1_db_is_migrated_to_v2_keeping_its_measurements(db_path: Path) -> None:
    with PerfDB(db_path) as db:
        _fill(db)
        db.conn.execute("DROP TABLE audits")
        db.conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")  # as session 1/2 wrote them
    with PerfDB(db_path) as db:
        assert db.schema_version == SCHEMA_VERSION == 2
        assert db.conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == 3
        assert db.conn.execute("SELECT COUNT(*) FROM audits").fetchone()[0] == 0


class _InterruptAfter:
    """A connection that raises KeyboardInterrupt right after running `sql` (a SIGINT landing there)."""

    def __init__(self, conn: sqlite3.Connection, sql: str) -> None:
        self._conn, self._sql = conn, sql

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    def execute(self, sql: str, params: object = ()) -> object:
        cursor = self._conn.execute(sql, params)
        if sql == self._sql:
            raise KeyboardInterrupt
        return cursor


@pytest.mark.parametrize("where", ["COMMIT", "INSERT"])
def test_an_interrupt_stays_an_interrupt_and_keeps_what_was_committed(db_path: Path, where: str) -> None:
    with PerfDB(db_path) as db:
        ids = _fill(db)
        real, sql = db.conn, "COMMIT"
        row = (*ids, Measurement(Config.of({"A": 8, "B": 2}), Outcome.OK, 0.5, 0.4, 10), "exhaustive")
        if where == "INSERT":  # mid-transaction: rolled back, nothing half-written
            sql = ("INSERT INTO measurements (problem_id, device_id, config_id, outcome, time_ms, min_ms, runs,"
                   " rel_error, error, source, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)")  # fmt: skip
        db.conn = _InterruptAfter(real, sql)  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):  # not "cannot rollback - no transaction is active" as corruption
            db.add_many([row])
        db.conn = real
        assert not real.in_transaction
        assert len(db.measurements(*ids)) == (4 if where == "COMMIT" else 3)
