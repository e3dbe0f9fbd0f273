"""The perf db: every measurement, in SQLite (WAL, versioned schema, one writer).

Tables: devices, kernels (family + source hash), problems, configs and
measurements (outcome, median/min time, source: exhaustive | random | model | manual | import |
recheck).
Each measurement is committed on its own, so a killed run loses at most the
config in flight, and a rerun skips what is already measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kptune.device import DeviceInfo
from kptune.errors import DatabaseError
from kptune.measurement import Measurement, Outcome, fastest
from kptune.problem import Problem
from kptune.space import Config

SCHEMA_VERSION = 2
RECHECK_SOURCE = "recheck"  # a suspected timing spike timed again (kptune.recheck)
SOURCES = ("exhaustive", "random", "model", "manual", "import", RECHECK_SOURCE)

_SCHEMA_V1 = """
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,          -- backend:name
    backend TEXT NOT NULL,
    name TEXT NOT NULL,
    driver TEXT NOT NULL,
    limits TEXT NOT NULL               -- JSON of DeviceInfo at first sight
);
CREATE TABLE kernels (
    id INTEGER PRIMARY KEY,
    family TEXT NOT NULL,
    source_hash TEXT NOT NULL,
    params TEXT NOT NULL,              -- JSON list of parameter names, in order
    UNIQUE (family, source_hash)
);
CREATE TABLE problems (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    flops REAL NOT NULL
);
CREATE TABLE configs (
    id INTEGER PRIMARY KEY,
    kernel_id INTEGER NOT NULL REFERENCES kernels(id),
    key TEXT NOT NULL,
    UNIQUE (kernel_id, key)
);
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY,
    problem_id INTEGER NOT NULL REFERENCES problems(id),
    device_id INTEGER NOT NULL REFERENCES devices(id),
    config_id INTEGER NOT NULL REFERENCES configs(id),
    outcome TEXT NOT NULL,
    time_ms REAL,                      -- median of `runs` timed launches
    min_ms REAL,
    runs INTEGER NOT NULL,
    rel_error REAL,
    error TEXT,
    source TEXT NOT NULL,
    created REAL NOT NULL              -- unix time
);
CREATE INDEX measurements_lookup ON measurements (problem_id, device_id, config_id);
"""


def _v1_to_v2(c: sqlite3.Connection) -> None:
    """v2: audits, the model's best against the exhaustive optimum on a served problem."""
    c.execute(
        "CREATE TABLE audits (id INTEGER PRIMARY KEY, problem_id INTEGER NOT NULL REFERENCES problems(id),"
        " device_id INTEGER NOT NULL REFERENCES devices(id), kernel_id INTEGER NOT NULL REFERENCES kernels(id),"
        " model_ms REAL, optimum_ms REAL, created REAL NOT NULL)"
    )


# Migrations: MIGRATIONS[v] takes a db at schema v to v + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2}

_CORRUPTED = "{path} is not a kptune perf db or is corrupted ({why}); move it away or pass another --db"


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception while it is still open: an interrupt
    (Ctrl-C, a campaign's SIGINT at its time limit) that lands just after the COMMIT keeps what was
    committed and stays an interrupt, instead of failing on a ROLLBACK with no transaction open."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class _GuardedCursor(sqlite3.Cursor):
    """A cursor whose SQLite errors (a page found corrupted mid-query, say) become one DatabaseError line."""

    path: Path

    def _guard(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # (text that is not UTF-8: corrupted too)
            raise DatabaseError(_CORRUPTED.format(path=self.path, why=exc)) from None

    def execute(self, sql: str, params: Any = ()) -> _GuardedCursor:  # type: ignore[override]
        return self._guard(super().execute, sql, params)  # type: ignore[no-any-return]

    def executemany(self, sql: str, params: Any) -> _GuardedCursor:  # type: ignore[override]
        return self._guard(super().executemany, sql, params)  # type: ignore[no-any-return]

    def fetchone(self) -> Any:
        return self._guard(super().fetchone)

    def fetchall(self) -> list[Any]:
        return self._guard(super().fetchall)  # type: ignore[no-any-return]

    def __next__(self) -> Any:
        return self._guard(super().__next__)


class _GuardedConnection(sqlite3.Connection):
    path: Path

    def _guarded(self) -> _GuardedCursor:
        cursor = self.cursor(_GuardedCursor)
        cursor.path = self.path
        return cursor

    def execute(self, sql: str, params: Any = ()) -> _GuardedCursor:  # type: ignore[override]
        return self._guarded().execute(sql, params)

    def executemany(self, sql: str, params: Any) -> _GuardedCursor:  # type: ignore[override]
        return self._guarded().executemany(sql, params)


def _create_v1(c: sqlite3.Connection) -> None:
    """The v1 tables and the meta table, statement by statement (inside the caller's transaction)."""
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            c.execute(statement)
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@functools.cache
def _expected_columns() -> dict[str, list[str]]:
    """Each table's columns at SCHEMA_VERSION, from a fresh in-memory db built and migrated as a file would be."""
    c = sqlite3.connect(":memory:")
    _create_v1(c)
    for version in range(1, SCHEMA_VERSION):
        MIGRATIONS[version](c)
    return _columns(c)


def _columns(c: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: [r[1] for r in c.execute(f"PRAGMA table_info('{t}')")] for t in tables}


@dataclasses.dataclass(frozen=True)
class TunedProblem:
    """A (problem, device, kernel) with at least one ok measurement: the ids to pass to `measurements`."""

    problem_id: int
    problem_key: str
    device_id: int
    device_key: str
    kernel_id: int
    family: str
    source_hash: str


def default_db_path() -> Path:
    import os

    env = os.environ.get("KPTUNE_DB")
    if env:
        return Path(env)
    import platformdirs

    return platformdirs.user_data_path("kptune") / "perf.db"


class PerfDB:
    """Open (creating or migrating) a perf db. The tuning driver is its only writer."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        if self.path.exists() and self.path.is_dir():
            raise DatabaseError(f"{self.path} is a directory, not a perf db file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, factory=_GuardedConnection)
            self.conn.path = self.path
            self.conn.execute("PRAGMA busy_timeout = 60000")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(_CORRUPTED.format(path=self.path, why=exc)) from None
        except OSError as exc:
            raise DatabaseError(f"cannot open perf db {self.path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PerfDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ----------------------------------------------------------------------
    def _migrate(self) -> None:
        c = self.conn
        with _transaction(c):
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                _create_v1(c)
                c.execute("INSERT INTO meta VALUES ('schema_version', '1')")  # the migrations take it on from v1
            elif "meta" not in tables:
                raise DatabaseError(f"{self.path} is an SQLite file but not a kptune perf db")
            row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None or not str(row[0]).isdigit():
                raise DatabaseError(_CORRUPTED.format(path=self.path, why="no schema version"))
            version = int(row[0])
            if version > SCHEMA_VERSION:
                raise DatabaseError(
                    f"{self.path} has schema v{version}, newer than this kptune (v{SCHEMA_VERSION}): "
                    "upgrade kptune (pip install -U kptune) or use another --db"
                )
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](c)
                version += 1
                c.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
            found, expected = _columns(c), _expected_columns()
            wrong = sorted(t for t, cols in expected.items() if found.get(t) != cols)
            if wrong:
                raise DatabaseError(_CORRUPTED.format(path=self.path, why=f"unexpected columns in {', '.join(wrong)}"))

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    # -- ids ---------------------------------------------------------------------------
    def _id(self, table: str, where: dict[str, Any], insert: dict[str, Any] | None = None) -> int:
        cond = " AND ".join(f"{k}=?" for k in where)
        row = self.conn.execute(f"SELECT id FROM {table} WHERE {cond}", tuple(where.values())).fetchone()
        if row:
            return int(row[0])
        values = {**where, **(insert or {})}
        cur = self.conn.execute(
            f"INSERT OR IGNORE INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            tuple(values.values()),
        )
        if cur.lastrowid and cur.rowcount:
            return int(cur.lastrowid)
        return self._id(table, where)

    def device_id(self, device: DeviceInfo) -> int:
        return self._id(
            "devices", {"key": device.key},
            {"backend": device.backend, "name": device.name, "driver": device.driver,
             "limits": json.dumps(device.limits())},
        )  # fmt: skip

    def device_info(self, device_id: int) -> DeviceInfo:
        """The device as it was first stored (its limits decide which configs are valid)."""
        (limits,) = self.conn.execute("SELECT limits FROM devices WHERE id = ?", (device_id,)).fetchone()
        return DeviceInfo(**json.loads(limits))

    def find_device(self, wanted: str | None) -> tuple[int, str]:
        """(id, key) of the device `wanted` names (its key, or a unique part of it); the only one if None."""
        rows = self.conn.execute("SELECT id, key FROM devices ORDER BY id").fetchall()
        matches = [r for r in rows if wanted is None or r[1] == wanted or wanted.lower() in r[1].lower()]
        exact = [r for r in rows if r[1] == wanted]
        if len(exact) == 1:
            matches = exact
        if len(matches) != 1:
            known = ", ".join(r[1] for r in rows) or "none"
            raise DatabaseError(f"device {wanted!r} matches {len(matches)} devices of {self.path} (it has: {known})")
        return int(matches[0][0]), str(matches[0][1])

    def kernel_id(self, family: str, source_hash: str, params: Iterable[str]) -> int:
        return self._id("kernels", {"family": family, "source_hash": source_hash}, {"params": json.dumps(list(params))})

    def problem_id(self, problem: Problem) -> int:
        return self._id("problems", {"key": problem.key()}, {"kind": problem.kind, "flops": problem.flops()})

    def config_id(self, kernel_id: int, config: Config) -> int:
        return self._id("configs", {"kernel_id": kernel_id, "key": config.key()})

    # -- writing -----------------------------------------------------------------------
    def add(self, problem_id: int, device_id: int, kernel_id: int, m: Measurement, source: str) -> None:
        """Store one measurement, committed at once."""
        self.add_many([(problem_id, device_id, kernel_id, m, source)])

    def add_many(self, rows: Iterable[tuple[int, int, int, Measurement, str]]) -> None:
        """Store (problem_id, device_id, kernel_id, measurement, source) rows in one transaction."""
        rows = list(rows)
        if bad := {r[4] for r in rows} - set(SOURCES):
            raise ValueError(f"source must be one of {SOURCES}, not {sorted(bad)}")
        with _transaction(self.conn):
            for problem_id, device_id, kernel_id, m, source in rows:
                config_id = self.config_id(kernel_id, m.config)
                rel = m.rel_error if m.rel_error is not None and math.isfinite(m.rel_error) else None
                self.conn.execute(
                    "INSERT INTO measurements (problem_id, device_id, config_id, outcome, time_ms, min_ms,"
                    " runs, rel_error, error, source, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (problem_id, device_id, config_id, str(m.outcome), m.time_ms, m.min_ms, m.runs, rel,
                     m.error[:300] or None, source, time.time()),
                )  # fmt: skip

    def merge_from(self, other: PerfDB) -> int:
        """Copy every measurement of `other` that this db lacks (same problem, device, config, time and
        creation time), mapping its ids onto this db's; one transaction. Returns how many were added."""
        devices = {i: self.device_id(other.device_info(i)) for (i,) in other.conn.execute("SELECT id FROM devices")}
        kernels = {i: self.kernel_id(f, h, json.loads(ps)) for i, f, h, ps in
                   other.conn.execute("SELECT id, family, source_hash, params FROM kernels")}  # fmt: skip
        problems = {i: self._id("problems", {"key": k}, {"kind": kind, "flops": fl}) for i, k, kind, fl in
                    other.conn.execute("SELECT id, key, kind, flops FROM problems")}  # fmt: skip
        configs = {i: self.config_id(kernels[k], Config.parse(key)) for i, k, key in
                   other.conn.execute("SELECT id, kernel_id, key FROM configs")}  # fmt: skip
        seen = set(self.conn.execute("SELECT problem_id, device_id, config_id, created FROM measurements"))
        added = 0
        with _transaction(self.conn):
            for row in other.conn.execute(
                "SELECT problem_id, device_id, config_id, outcome, time_ms, min_ms, runs, rel_error, error, source,"
                " created FROM measurements ORDER BY id"
            ):
                mapped = (problems[row[0]], devices[row[1]], configs[row[2]], *row[3:])
                if (mapped[0], mapped[1], mapped[2], mapped[10]) in seen:
                    continue
                self.conn.execute(
                    "INSERT INTO measurements (problem_id, device_id, config_id, outcome, time_ms, min_ms, runs,"
                    " rel_error, error, source, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)", mapped,
                )  # fmt: skip
                added += 1
        return added

    def add_audit(self, problem_id: int, device_id: int, kernel_id: int, model_ms: float | None,
                  optimum_ms: float | None) -> None:  # fmt: skip
        self.conn.execute(
            "INSERT INTO audits (problem_id, device_id, kernel_id, model_ms, optimum_ms, created) VALUES (?,?,?,?,?,?)",
            (problem_id, device_id, kernel_id, model_ms, optimum_ms, time.time()),
        )

    def audits(self, device_id: int, kernel_id: int) -> list[tuple[str, float | None, float | None]]:
        """(problem key, model's best ms, optimum ms) of every audit of this device and kernel, oldest first."""
        return self.conn.execute(
            "SELECT p.key, a.model_ms, a.optimum_ms FROM audits a JOIN problems p ON p.id = a.problem_id"
            " WHERE a.device_id = ? AND a.kernel_id = ? ORDER BY a.id",
            (device_id, kernel_id),
        ).fetchall()

    def best_ms_of_source(self, problem_id: int, device_id: int, kernel_id: int, source: str) -> float | None:
        """The fastest ok time among measurements of one source (e.g. the configs the model chose)."""
        (ms,) = self.conn.execute(
            "SELECT MIN(m.time_ms) FROM measurements m JOIN configs c ON c.id = m.config_id WHERE m.problem_id = ?"
            " AND m.device_id = ? AND c.kernel_id = ? AND m.source = ? AND m.outcome = 'ok'",
            (problem_id, device_id, kernel_id, source),
        ).fetchone()
        return float(ms) if ms is not None else None

    def configs_of_source(self, problem_id: int, device_id: int, kernel_id: int, source: str) -> set[str]:
        """The keys of the configs with a measurement of this source for this problem, device and kernel."""
        rows = self.conn.execute(
            "SELECT DISTINCT c.key FROM measurements m JOIN configs c ON c.id = m.config_id WHERE m.problem_id = ?"
            " AND m.device_id = ? AND c.kernel_id = ? AND m.source = ?",
            (problem_id, device_id, kernel_id, source),
        ).fetchall()
        return {key for (key,) in rows}

    def latest_of_source(self, device_key: str, family: str, source: str) -> dict[str, dict[str, float | None]]:
        """problem key -> config key -> ms (None: not ok) of each config whose latest measurement on this
        device, of this kernel family, is of `source` (e.g. the re-timed spikes, `kptune.recheck`)."""
        rows = self.conn.execute(
            "SELECT p.key, c.key, m.outcome, m.time_ms FROM measurements m JOIN problems p ON p.id = m.problem_id"
            " JOIN configs c ON c.id = m.config_id JOIN kernels k ON k.id = c.kernel_id"
            " JOIN devices d ON d.id = m.device_id WHERE d.key = ? AND k.family = ? AND m.source = ?"
            " AND m.id = (SELECT MAX(m2.id) FROM measurements m2 WHERE m2.problem_id = m.problem_id"
            "   AND m2.device_id = m.device_id AND m2.config_id = m.config_id)",
            (device_key, family, source),
        ).fetchall()
        found: dict[str, dict[str, float | None]] = {}
        for problem, config, outcome, ms in rows:
            found.setdefault(problem, {})[config] = ms if outcome == Outcome.OK and ms else None
        return found

    def served_problems(self, device_id: int, kernel_id: int) -> list[tuple[int, str]]:
        """(id, key) of the problems with measurements the model chose (source=model), first served first."""
        return self.conn.execute(
            "SELECT DISTINCT p.id, p.key FROM measurements m JOIN problems p ON p.id = m.problem_id"
            " JOIN configs c ON c.id = m.config_id WHERE m.source = 'model' AND m.device_id = ? AND c.kernel_id = ?"
            " ORDER BY p.id",
            (device_id, kernel_id),
        ).fetchall()

    # -- reading -----------------------------------------------------------------------
    def measurements(self, problem_id: int, device_id: int, kernel_id: int,
                     configs: Sequence[str] | None = None) -> list[Measurement]:  # fmt: skip
        """The latest measurement of each config for this problem, device and kernel (with `configs`: of
        those config keys only)."""
        rows = self._latest("c.key, m.outcome, m.time_ms, m.min_ms, m.runs, m.rel_error, m.error",
                            problem_id, device_id, kernel_id, configs)  # fmt: skip
        return [
            Measurement(Config.parse(k), Outcome(o), t, mn, runs, rel, error=err or "")
            for k, o, t, mn, runs, rel, err in rows
        ]

    def latest_times(self, problem_id: int, device_id: int, kernel_id: int) -> tuple[int, list[tuple[str, float]]]:
        """How many configs were measured for this problem, device and kernel, and (config key, median ms) of
        those whose latest measurement is ok: `measurements()` without parsing every config (datasets)."""
        rows = self._latest("c.key, m.outcome, m.time_ms", problem_id, device_id, kernel_id)
        return len(rows), [(k, t) for k, o, t in rows if o == Outcome.OK and t]

    def _latest(self, columns: str, problem_id: int, device_id: int, kernel_id: int,
                configs: Sequence[str] | None = None) -> list[Any]:  # fmt: skip
        """`columns` (of measurements m and configs c) of the latest measurement of each config (with
        `configs`: of those config keys only, in chunks under SQLite's bound-parameter limit)."""
        if configs is None:
            return self._latest_among(columns, problem_id, device_id, kernel_id, None)
        rows = []
        for i in range(0, len(configs), 500):
            rows += self._latest_among(columns, problem_id, device_id, kernel_id, configs[i : i + 500])
        return rows

    def _latest_among(self, columns: str, problem_id: int, device_id: int, kernel_id: int,
                      configs: Sequence[str] | None) -> list[Any]:  # fmt: skip
        among = "" if configs is None else f" AND c.key IN ({','.join('?' * len(configs))})"
        return self.conn.execute(
            f"SELECT {columns} FROM measurements m JOIN configs c ON c.id = m.config_id"
            f" WHERE m.problem_id=? AND m.device_id=? AND c.kernel_id=?{among}"
            " AND m.id = (SELECT MAX(m2.id) FROM measurements m2 WHERE m2.problem_id=m.problem_id"
            "   AND m2.device_id=m.device_id AND m2.config_id=m.config_id)",
            (problem_id, device_id, kernel_id, *(configs or ())),
        ).fetchall()

    def best(self, problem_id: int, device_id: int, kernel_id: int) -> Measurement | None:
        return fastest(self.measurements(problem_id, device_id, kernel_id))

    def summary(self) -> dict[str, Any]:
        """Counts and the best config of every tuned (problem, device, kernel)."""
        c = self.conn
        counts = {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                  for t in ("devices", "kernels", "problems", "configs", "measurements")}  # fmt: skip
        outcomes = dict(c.execute("SELECT outcome, COUNT(*) FROM measurements GROUP BY outcome").fetchall())
        best_rows = c.execute(
            "SELECT p.key, d.key, k.family, c.key, MIN(m.time_ms), p.flops, COUNT(DISTINCT m.config_id)"
            " FROM measurements m JOIN problems p ON p.id=m.problem_id JOIN devices d ON d.id=m.device_id"
            " JOIN configs c ON c.id=m.config_id JOIN kernels k ON k.id=c.kernel_id"
            " WHERE m.outcome='ok' GROUP BY m.problem_id, m.device_id, c.kernel_id ORDER BY p.key"
        ).fetchall()
        best = [
            {"problem": p, "device": d, "kernel": k, "config": cfg, "time_ms": t,
             "tflops": flops / (t * 1e-3) / 1e12 if t else None, "configs_ok": n}
            for p, d, k, cfg, t, flops, n in best_rows
        ]  # fmt: skip
        return {"path": str(self.path), "schema_version": self.schema_version, "counts": counts,
                "outcomes": outcomes, "best": best}  # fmt: skip

    def tuned_problems(self, device_key: str | None = None, family: str | None = None) -> list[TunedProblem]:
        """Every (problem, device, kernel) with an ok measurement, optionally of one device key and kernel family.

        Ordered by device, kernel, problem (ids: first stored first), so analyses that
        compare configs across problems can group by (device_id, kernel_id).
        """
        where, params = ["m.outcome = 'ok'"], []
        if device_key is not None:
            where.append("d.key = ?")
            params.append(device_key)
        if family is not None:
            where.append("k.family = ?")
            params.append(family)
        rows = self.conn.execute(
            "SELECT DISTINCT p.id, p.key, d.id, d.key, k.id, k.family, k.source_hash"
            " FROM measurements m JOIN problems p ON p.id = m.problem_id JOIN devices d ON d.id = m.device_id"
            " JOIN configs c ON c.id = m.config_id JOIN kernels k ON k.id = c.kernel_id"
            f" WHERE {' AND '.join(where)} ORDER BY d.id, k.id, p.id",
            params,
        ).fetchall()
        return [TunedProblem(*row) for row in rows]

    def integrity_ok(self) -> bool:
        return bool(self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
