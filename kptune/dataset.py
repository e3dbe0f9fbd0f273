"""The recorded dataset: what the predictor trains and is judged on, cut from a perf db.

    kptune dataset build --db perf.db --out kptune/data/dataset-h200.db.gz
    kptune dataset show kptune/data/dataset-h200.db.gz

One gzipped SQLite file per (device, kernel family). Only problems tuned exhaustively (every
valid config measured) go in; each carries its corpus split and networks (fp16 problems take
their fp32 shape's split; a problem outside the corpus is split "extra"). Train and validation
problems keep their `top` fastest configs with times; test problems keep every config that ran
correctly, so any prediction can be scored offline. Failed configs are left out (the space's
rules already exclude what cannot run; a config absent from a test problem failed there).

Tables: meta (device, limits, family, source hash, parameter order, top, created),
problems (key, split, networks, valid configs, ok configs), configs (key), times
(problem, config, rank, median ms).
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import hashlib
import json
import sqlite3
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kptune.corpus import CorpusEntry, load_corpus
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.perfdb import RECHECK_SOURCE, PerfDB
from kptune.problem import Conv2dProblem, problem_from_key

FORMAT_VERSION = 1
TOP = 32

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE problems (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, split TEXT NOT NULL,
                       networks TEXT NOT NULL, valid_configs INTEGER NOT NULL, ok_configs INTEGER NOT NULL);
CREATE TABLE configs (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
CREATE TABLE times (problem_id INTEGER NOT NULL, config_id INTEGER NOT NULL, rank INTEGER NOT NULL,
                    time_ms REAL NOT NULL, PRIMARY KEY (problem_id, rank)) WITHOUT ROWID;
"""


class DatasetError(KptuneError):
    """A dataset file is missing, corrupted or of another format version."""


@dataclasses.dataclass(frozen=True)
class DatasetProblem:
    key: str
    split: str
    networks: tuple[str, ...]
    valid_configs: int
    ok_configs: int
    times: tuple[tuple[str, float], ...]  # (config key, median ms), fastest first

    @property
    def winner(self) -> str:
        return self.times[0][0]


@dataclasses.dataclass(frozen=True)
class Dataset:
    meta: dict[str, Any]
    problems: tuple[DatasetProblem, ...]

    def split(self, name: str) -> list[DatasetProblem]:
        return [p for p in self.problems if p.split == name]


def _corpus_index(entries: Sequence[CorpusEntry]) -> dict[str, CorpusEntry]:
    """fp32 problem key -> corpus entry."""
    return {e.problem.key(): e for e in entries}


def build(db: PerfDB, device_key: str, family_name: str = "conv2d_fwd", top: int = TOP,
          corpus: Sequence[CorpusEntry] | None = None, sampled: int | None = None,
          base: Dataset | None = None) -> tuple[bytes, dict[str, int]]:  # fmt: skip
    """The dataset as gzipped SQLite bytes, and counts per split. Exhaustively tuned problems only, unless
    `sampled`: then also problems with at least that many correct configs measured (a random sample),
    labelled by the best of the sample, which is not the optimum (meta "labels" says which).

    `base`: an earlier installment of this dataset (same device, kernel source and labels); its
    problems that `db` does not hold complete are carried over (train and validation cut to `top`),
    so an installment needs only the perf db of the sessions since the last one. A carried config
    whose latest measurement in `db` is a re-timing (`kptune.recheck`: a suspected spike timed again)
    takes that time."""
    family = get_family(family_name)
    index = _corpus_index(corpus if corpus is not None else load_corpus())
    tuned = [t for t in db.tuned_problems(device_key, family.name) if t.source_hash == family.source_hash]
    if not tuned:
        raise KptuneError(f"no ok measurements of {family.name} (source {family.source_hash}) on {device_key}")
    device = db.device_info(tuned[0].device_id)
    out = sqlite3.connect(":memory:")
    out.executescript(_SCHEMA)
    meta = {"format_version": FORMAT_VERSION, "device": device_key, "device_limits": device.limits(),
            "family": family.name, "source_hash": family.source_hash, "parameters": list(family.space.names),
            "top": top, "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "labels": "exhaustive" if sampled is None else f"best of >= {sampled} sampled configs"}  # fmt: skip
    out.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
    if base is not None:
        _check_base(base, meta)
    config_ids: dict[str, int] = {}
    counts: dict[str, int] = {}

    def insert(key: str, split: str, networks: str, valid: int, ok: int, times: Sequence[tuple[str, float]]) -> None:
        cur = out.execute("INSERT INTO problems (key, split, networks, valid_configs, ok_configs) VALUES (?,?,?,?,?)",
                          (key, split, networks, valid, ok))  # fmt: skip
        rows = []
        for rank, (config, ms) in enumerate(times if split == "test" else times[:top]):
            if config not in config_ids:
                config_ids[config] = len(config_ids) + 1
                out.execute("INSERT INTO configs VALUES (?, ?)", (config_ids[config], config))
            rows.append((cur.lastrowid, config_ids[config], rank, ms))
        out.executemany("INSERT INTO times VALUES (?,?,?,?)", rows)
        counts[split] = counts.get(split, 0) + 1

    done: set[str] = set()
    for t in tuned:
        problem = problem_from_key(t.problem_key)
        valid = len(family.space.configs(problem, device))
        measured, ok = db.latest_times(t.problem_id, t.device_id, t.kernel_id)
        if measured < valid and (sampled is None or len(ok) < sampled):
            continue  # not exhaustive (nor sampled enough, when asked for): its winner is not known
        fp32 = dataclasses.replace(problem, dtype="fp32") if isinstance(problem, Conv2dProblem) else None
        entry = index.get(fp32.key()) if fp32 else None
        split = entry.split if entry else "extra"
        insert(t.problem_key, split, ";".join(entry.networks) if entry else "", valid, len(ok),
               sorted(ok, key=lambda kt: (kt[1], kt[0])))  # fmt: skip
        done.add(t.problem_key)
    rechecked = db.latest_of_source(device_key, family.name, RECHECK_SOURCE) if base is not None else {}
    for p in base.problems if base is not None else ():
        if p.key not in done:
            times, ok_count = _retimed(p, rechecked.get(p.key, {}))
            insert(p.key, p.split, ";".join(p.networks), p.valid_configs, ok_count, times)
    out.commit()
    data = gzip.compress(out.serialize(), compresslevel=9, mtime=0)
    out.close()
    return data, counts


def _retimed(problem: DatasetProblem, retimed: dict[str, float | None]) -> tuple[list[tuple[str, float]], int]:
    """A base problem's times, fastest first, and its ok count, with the configs the db timed again
    (`kptune.recheck`: ms, or None where the config failed this time) at their new times."""
    if not retimed:
        return list(problem.times), problem.ok_configs
    recorded = dict(problem.times)
    failed = {c for c, t in retimed.items() if t is None and c in recorded}
    times = {c: t for c, t in recorded.items() if c not in failed} | {c: t for c, t in retimed.items() if t is not None}
    return sorted(times.items(), key=lambda kt: (kt[1], kt[0])), problem.ok_configs - len(failed)


def content_hash(problems: Sequence[DatasetProblem]) -> str:
    """A short hash of problems' keys and fastest 32 times: which data a model was fit on, whatever the
    order the problems come in (a cut lists a perf db's problems before its base's)."""
    h = hashlib.sha256()
    for p in sorted(problems, key=lambda p: p.key):
        h.update(p.key.encode())
        for c, t in p.times[:32]:
            h.update(f"{c}={t:.6g}".encode())
    return h.hexdigest()[:16]


def _check_base(base: Dataset, meta: dict[str, Any]) -> None:
    """A base installment must describe the same device, kernel code, parameters and kind of labels."""
    for key in ("device", "family", "source_hash", "parameters", "labels"):
        if base.meta.get(key) != meta[key]:
            raise DatasetError(f"the base dataset's {key} is {base.meta.get(key)!r}, this build's {meta[key]!r}")


def load(path: Path) -> Dataset:
    """Read a dataset file written by `build` (gzipped SQLite); DatasetError if it is not one."""
    return _read(path, meta_only=False)


def read_meta(path: Path) -> dict[str, Any]:
    """Only a dataset file's meta (device, family, source hash, ...): no problem is parsed."""
    return _read(path, meta_only=True).meta


def problem_keys(path: Path) -> set[str]:
    """The keys of a dataset file's problems (what `--unseen` leaves out): no time is parsed."""
    return {p.key for p in _read(path, meta_only=False, times=False).problems}


def _read(path: Path, meta_only: bool, times: bool = True) -> Dataset:
    try:
        raw = gzip.decompress(Path(path).read_bytes())
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # zlib.error: a corrupted stream (found by fuzzing)
        raise DatasetError(f"{path}: not a gzipped kptune dataset ({exc})") from None
    if not raw:
        raise DatasetError(f"{path}: empty, not a kptune dataset")
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(raw)
        meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"{path}: dataset format {meta.get('format_version')}, this kptune reads {FORMAT_VERSION}"
            )
        if meta_only:
            return Dataset(meta, ())
        by_problem: dict[int, list[tuple[str, float]]] = {}
        if times:
            configs = dict(conn.execute("SELECT id, key FROM configs"))
            for pid, cid, _, ms in conn.execute(
                "SELECT problem_id, config_id, rank, time_ms FROM times ORDER BY problem_id, rank"
            ):
                by_problem.setdefault(pid, []).append((configs[cid], ms))
        problems = tuple(
            DatasetProblem(key, split, tuple(n for n in nets.split(";") if n), valid, ok,
                           tuple(by_problem.get(pid, ())))
            for pid, key, split, nets, valid, ok in conn.execute(
                "SELECT id, key, split, networks, valid_configs, ok_configs FROM problems ORDER BY id")
        )  # fmt: skip
    except (sqlite3.DatabaseError, json.JSONDecodeError, KeyError, ValueError, MemoryError) as exc:
        raise DatasetError(f"{path}: corrupted dataset ({exc})") from None
    finally:
        conn.close()
    return Dataset(meta, problems)


def summary(data: Dataset) -> list[str]:
    from kptune.recheck import batch_inversions, spikes

    by_split: dict[str, int] = {}
    for p in data.problems:
        by_split[p.split] = by_split.get(p.split, 0) + 1
    dtypes = {p.key.split("dtype=")[1].split(",")[0] for p in data.problems if "dtype=" in p.key}
    shapes = {p.key.replace("dtype=fp16", "dtype=fp32") for p in data.problems}
    times = sum(len(p.times) for p in data.problems)
    spiked = [len(spikes(p.times)) for p in data.problems]  # per problem
    inverted = batch_inversions((p.key, p.times) for p in data.problems)
    return [f"{data.meta['device']}, kernel {data.meta['family']} (source {data.meta['source_hash']}), "
            f"created {data.meta['created']}",
            f"{len(data.problems)} problems ({len(shapes)} distinct shapes; dtypes {', '.join(sorted(dtypes))}), "
            f"{times} config times (top {data.meta['top']}; every ok config for test)",
            "per split: " + ", ".join(f"{k} {v}" for k, v in sorted(by_split.items())),
            f"labels: {data.meta.get('labels', 'exhaustive')}",
            f"timing spikes: {sum(spiked)} in {sum(1 for n in spiked if n)} problems (kptune db recheck)",
            f"batch inversions: {sum(map(len, inverted.values()))} in {len(inverted)} problems (slower than at "
            "twice the batch; kptune db recheck)"]  # fmt: skip
