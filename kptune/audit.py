"""Audits and active learning: how far the model's picks are from the optimum, and what to tune next.

`audit(sample=N)` takes N problems the model served (measurements with source=model) that were
never audited, runs exhaustive search on each (into the same db, source=exhaustive, resuming),
and records the model's best time beside the optimum. `audit_queue()` turns the misses (ratio
optimum / model's best below 0.95, worst first) into the next campaign's first shapes: the
same layer at the corpus's other batch sizes and in both dtypes, where the model is likely
wrong too (`kptune campaign --from-audit`).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

from kptune.backends import resolve_device
from kptune.corpus import load_corpus
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.measurement import TimingSettings
from kptune.perfdb import PerfDB
from kptune.problem import Conv2dProblem, problem_from_key
from kptune.tune import tune

MISS = 0.95


@dataclasses.dataclass(frozen=True)
class AuditRow:
    problem: str
    model_ms: float | None
    optimum_ms: float | None
    configs: int

    @property
    def ratio(self) -> float | None:
        return self.optimum_ms / self.model_ms if self.model_ms and self.optimum_ms else None

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ratio": self.ratio}


def audit(
    db: str | Path | None = None,
    *,
    device: DeviceInfo | str | None = None,
    sample: int = 5,
    seed: int = 0,
    kernel: str = "conv2d_fwd",
    settings: TimingSettings | None = None,
    jobs: int | None = None,
) -> list[AuditRow]:
    if sample < 1:
        raise KptuneError(f"--sample must be at least 1, not {sample}")
    family = get_family(kernel)
    dev = device if isinstance(device, DeviceInfo) else resolve_device(device)
    rows = []
    with PerfDB(db) as perfdb:
        did, kid = perfdb.device_id(dev), perfdb.kernel_id(family.name, family.source_hash, family.space.names)
        audited = {key for key, _, _ in perfdb.audits(did, kid)}
        served = [(pid, key) for pid, key in perfdb.served_problems(did, kid) if key not in audited]
        if not served:
            raise KptuneError(f"no unaudited problem served by the model on {dev.key} in {perfdb.path}")
        for pid, key in random.Random(seed).sample(served, min(sample, len(served))):
            problem = problem_from_key(key)
            model_ms = perfdb.best_ms_of_source(pid, did, kid, "model")
            full = tune(problem, kernel=family.name, device=dev, strategy="exhaustive", db=perfdb, settings=settings,
                        jobs=jobs)  # fmt: skip
            optimum = full.best.time_ms if full.best else None
            perfdb.add_audit(pid, did, kid, model_ms, optimum)
            rows.append(AuditRow(key, model_ms, optimum, full.candidates))
    return rows


def audit_queue(db: str | Path | None, device_key: str, kernel: str = "conv2d_fwd") -> list[Conv2dProblem]:
    """Corpus neighbours of the audited misses (same layer, other batch sizes, both dtypes), worst miss first."""
    family = get_family(kernel)
    with PerfDB(db) as perfdb:
        rows = perfdb.conn.execute("SELECT id FROM devices WHERE key = ?", (device_key,)).fetchone()
        if rows is None:
            raise KptuneError(f"no device {device_key!r} in {perfdb.path}")
        kid = perfdb.kernel_id(family.name, family.source_hash, family.space.names)
        audits = perfdb.audits(int(rows[0]), kid)
    misses = sorted(((m_ms and o_ms and o_ms / m_ms) or 0.0, key) for key, m_ms, o_ms in audits)
    corpus = load_corpus()
    queue: list[Conv2dProblem] = []
    for ratio, key in misses:
        if ratio >= MISS:
            continue
        missed = problem_from_key(key)
        if not isinstance(missed, Conv2dProblem):
            continue  # the corpus holds conv layers only
        layer = dataclasses.replace(missed, n=1, dtype="fp32")
        for entry in corpus:
            if dataclasses.replace(entry.problem, n=1) == layer:
                queue += [dataclasses.replace(entry.problem, dtype=d) for d in ("fp32", "fp16")]
    return [p for p in dict.fromkeys(queue) if p.key() not in {k for _, k in misses}]
