"""`retrain()`, for a nightly job: learn from everything in the perf db, promote only if not worse.

1. Cut the dataset from the db (`kptune.dataset.build`: every exhaustively tuned problem,
   model-sourced and audit measurements included, with the corpus's fixed split).
2. Train a candidate checkpoint.
3. Score the candidate and the current model on the same, fixed test split of that data
   (constrained beam, top-5 performance ratio geomean, then top-1 as the tie-break).
4. Add the candidate to the registry; promote it only if it is not worse; else keep the
   current one and say why.

Exit codes (CLI): 0 promoted, 10 kept the current model (candidate worse), 2 error.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kptune import dataset as ds
from kptune.corpus import CorpusEntry
from kptune.errors import KptuneError
from kptune.perfdb import PerfDB
from kptune.predict.models import ModelConfig
from kptune.registry import Registry

EXIT_PROMOTED, EXIT_KEPT = 0, 10
GATE = ("ratio_top5_geomean", "ratio_top1_geomean")
METHOD = "seq2seq constrained beam"


@dataclasses.dataclass
class RetrainResult:
    promoted: bool
    reason: str
    version: int
    current_version: int | None
    candidate: dict[str, Any]
    current: dict[str, Any] | None
    data: dict[str, int]

    @property
    def exit_code(self) -> int:
        return EXIT_PROMOTED if self.promoted else EXIT_KEPT

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "exit_code": self.exit_code}


def decide(candidate: dict[str, Any], current: dict[str, Any] | None) -> tuple[bool, str]:
    """Promote when there is no current model, or the candidate is not worse on the gate metrics."""
    if current is None:
        return True, "no current model for this device"
    for key in GATE:
        c, o = candidate.get(key), current.get(key)
        if c is None or o is None:
            continue
        if c > o + 1e-9:
            return True, f"{key} {c:.4f} > current {o:.4f}"
        if c < o - 1e-9:
            return False, f"{key} {c:.4f} < current {o:.4f}"
    return True, "as good as the current model on " + " and ".join(GATE)


def retrain(db: Path, device: str | None = None, family: str = "conv2d_fwd", registry: Registry | None = None,
            cfg: ModelConfig | None = None, log: Callable[[str], None] = lambda s: None,
            corpus: Sequence[CorpusEntry] | None = None) -> RetrainResult:  # fmt: skip
    """See the module docstring; `corpus` (default: the shipped one) decides each problem's split."""
    from kptune.predict.api import evaluate, train_checkpoint
    from kptune.predict.checkpoint import read_meta

    registry = registry or Registry()
    cfg = cfg or ModelConfig()
    if not Path(db).is_file():
        raise KptuneError(f"no perf db at {db}")
    with PerfDB(db) as perfdb:
        _, device_key = perfdb.find_device(device)
        data, counts = ds.build(perfdb, device_key, family, corpus=corpus)
    if not counts.get("test"):
        raise KptuneError("the db has no exhaustively tuned problem of the test networks to gate on")
    with tempfile.TemporaryDirectory(prefix="kptune-retrain-") as tmp:
        data_path, candidate_path = Path(tmp) / "dataset.db.gz", Path(tmp) / "candidate.safetensors"
        data_path.write_bytes(data)
        log(f"dataset: {', '.join(f'{k} {v}' for k, v in counts.items())}")
        train_checkpoint(data_path, candidate_path, cfg, log)
        scored = evaluate(candidate_path, data_path, k=5, dtype=None, baselines=False)["results"][METHOD]
        current = registry.current(device_key, family)
        current_scored = None
        if current is not None:
            current_scored = evaluate(current[1], data_path, k=5, dtype=None, baselines=False)["results"][METHOD]
        promoted, reason = decide(scored, current_scored)
        meta = read_meta(candidate_path) or {}
        entry = registry.add(candidate_path, meta, scored)
    if promoted:
        registry.promote(entry["version"])
    else:
        reason += f": kept v{current[0]['version'] if current else '?'}"
    return RetrainResult(promoted, reason, entry["version"], current[0]["version"] if current else None,
                         scored, current_scored, counts)  # fmt: skip
