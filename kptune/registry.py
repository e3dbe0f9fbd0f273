"""The model registry: versions of the predictor per (device, kernel family), one of them current.

A directory (default: the user data dir's `models/`, or $KPTUNE_MODELS) holding the checkpoints
and `registry.json`: every version with its device, kernel source, dataset hash, metrics and
dates, and which version is current for each (device, family). `kptune models list | promote |
rollback`; `kptune retrain` adds versions and promotes them through its gate.

A version made by `kptune retrain` also keeps the dataset it was trained on and the cost model fit
on that dataset (`dataset-<name>.db.gz`, `costmodel-<name>.safetensors` beside it, as shipped):
autotune lends the rest of its candidates from the current version's tuned shapes
(`kptune.neighbours`), so what is promoted or rolled back is the whole candidate set it measures.
That is ~8 MB a version, so a nightly job prunes (`kptune models prune --keep N`): per device and
family the current version, the last N promoted (what rollback returns to) and the N newest keep
their files; the others lose them but stay listed with their metrics (the report's history).
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from kptune.errors import KptuneError


def default_root() -> Path:
    env = os.environ.get("KPTUNE_MODELS")
    if env:
        return Path(env)
    return _user_root(os.environ.get("XDG_DATA_HOME"), os.environ.get("HOME"))


@functools.lru_cache(maxsize=4)
def _user_root(xdg_data_home: str | None, home: str | None) -> Path:
    """platformdirs' answer for what the environment says (it reads both): asked at every prediction
    (`kptune predict` and autotune serve the current version), it cost ~0.1 ms a call."""
    import platformdirs

    return platformdirs.user_data_path("kptune") / "models"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60]


def _empty() -> dict[str, Any]:
    return {"versions": [], "current": {}, "history": {}}


def _parse(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KptuneError(f"model registry {path} is unreadable ({exc}); move it away") from None
    return data if isinstance(data, dict) else _empty()


@functools.lru_cache(maxsize=4)
def _parsed(path: str, inode: int, mtime_ns: int, size: int) -> dict[str, Any]:
    """The index at `path` as of that version of the file (shared: not to be changed)."""
    return _parse(Path(path))


class Registry:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.index_path = self.root / "registry.json"

    def _read(self) -> dict[str, Any]:
        """The index, parsed now: for a change to write back."""
        if not self.index_path.exists():
            return _empty()
        return _parse(self.index_path)

    def _snapshot(self) -> dict[str, Any]:
        """The index, parsed once per version of the file (its inode, modification time and size): for
        questions, never to change. `current` is asked at every `kptune predict` and autotune, and
        the index grows by a version a night; parsing a year's (~0.3 MB) cost a prediction ~3 ms."""
        try:
            stat = self.index_path.stat()
        except FileNotFoundError:
            return _empty()
        return _parsed(str(self.index_path), stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _write(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.index_path)  # atomic: a killed job leaves the old index
        _parsed.cache_clear()  # (a rewrite within the file system's timestamp granularity keeps its stamp)

    @staticmethod
    def slot(device: str, family: str) -> str:
        return f"{device}|{family}"

    def versions(self) -> list[dict[str, Any]]:
        return [dict(v) for v in self._snapshot()["versions"]]

    def add(self, checkpoint: Path, meta: dict[str, Any], metrics: dict[str, Any], dataset: Path | None = None,
            cost_model: Path | None = None, reranker: Path | None = None) -> dict[str, Any]:  # fmt: skip
        """Copy a checkpoint in as the next version (not current yet), with the dataset whose tuned shapes
        lend autotune's other candidates and the cost model and the reranker fit on it, if given."""
        data = self._read()
        number = 1 + max((v["version"] for v in data["versions"]), default=0)
        stem = f"{_slug(meta['device'])}-{meta['family']}-v{number}"
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, self.root / f"{stem}.safetensors")
        lent = None
        if dataset is not None:  # named as shipped: where `neighbours.cost_model_path` and `reranker_path` look
            lent = f"dataset-{stem}.db.gz"
            shutil.copyfile(dataset, self.root / lent)
            for kind, fitted in (("costmodel", cost_model), ("reranker", reranker)):
                if fitted is not None:
                    shutil.copyfile(fitted, self.root / f"{kind}-{stem}.safetensors")
        entry = {"version": number, "file": f"{stem}.safetensors", "device": meta["device"], "family": meta["family"],
                 "source_hash": meta["source_hash"], "dataset_hash": meta.get("dataset_hash"), "lent_dataset": lent,
                 "metrics": metrics,
                 "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}  # fmt: skip
        data["versions"].append(entry)
        self._write(data)
        return entry

    def _entry(self, data: dict[str, Any], version: int) -> dict[str, Any]:
        for v in data["versions"]:
            if v["version"] == version:
                return dict(v)
        raise KptuneError(f"no model version {version} in {self.root} (see `kptune models list`)")

    def promote(self, version: int) -> dict[str, Any]:
        data = self._read()
        entry = self._entry(data, version)
        if entry.get("pruned"):
            raise KptuneError(f"model version {version} was pruned on {entry['pruned']}: its files are gone")
        slot = self.slot(entry["device"], entry["family"])
        history = data.setdefault("history", {}).setdefault(slot, [])
        if data["current"].get(slot) != version:
            history.append(version)
        data["current"][slot] = version
        self._write(data)
        return entry

    def rollback(self, device: str, family: str) -> dict[str, Any]:
        """Make the previously promoted version current again."""
        data = self._read()
        slot = self.slot(device, family)
        history = data.get("history", {}).get(slot, [])
        if len(history) < 2:
            raise KptuneError(f"nothing to roll back to for {device} / {family}: {len(history)} promotion(s) so far")
        history.pop()
        data["current"][slot] = history[-1]
        self._write(data)
        return self._entry(data, history[-1])

    def current(self, device: str, family: str) -> tuple[dict[str, Any], Path] | None:
        data = self._snapshot()
        version = data["current"].get(self.slot(device, family))
        if version is None:
            return None
        entry = self._entry(data, version)
        return entry, self.root / entry["file"]

    def current_model(self, device: str, family: str, source_hash: str) -> Path | None:
        """The current version's checkpoint for a device and kernel family, if it was trained for this kernel
        source and its file is there (a version made before the kernel changed is not served)."""
        current = self.current(device, family)
        if current is not None and current[0]["source_hash"] == source_hash and current[1].is_file():
            return current[1]
        return None

    def lent_dataset(self, entry: dict[str, Any]) -> Path | None:
        """The dataset a version keeps for autotune to lend from (None for a version without one)."""
        name = entry.get("lent_dataset")
        return self.root / name if name else None

    def prune(self, keep: int) -> list[dict[str, Any]]:
        """Delete the files of the versions no longer needed, per (device, family): all but the current
        one, the last `keep` promoted (rollback's targets, in its history) and the `keep` newest. They
        stay listed, marked pruned, with their metrics; their history entries go, so rollback never
        lands on one. The index is written before any file goes: a killed prune leaves stray files, never
        an entry without its files. Returns the versions pruned now."""
        if keep < 1:
            raise KptuneError(f"keep must be at least 1, not {keep}")
        data = self._read()
        history = data.setdefault("history", {})
        kept: set[int] = set()
        slots: dict[str, list[dict[str, Any]]] = {}
        for v in data["versions"]:
            slots.setdefault(self.slot(v["device"], v["family"]), []).append(v)
        for slot, versions in slots.items():
            promoted = list(dict.fromkeys(reversed(history.get(slot, []))))[:keep]
            newest = sorted((v["version"] for v in versions), reverse=True)[:keep]
            current = data["current"].get(slot)
            kept.update(promoted, newest, [current] if current is not None else [])
        today = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        pruned = [v for v in data["versions"] if v["version"] not in kept and not v.get("pruned")]
        for v in pruned:
            v["pruned"] = today
        for slot in history:
            history[slot] = [n for n in history[slot] if n in kept]
        self._write(data)
        for v in pruned:
            stem = v["file"].removesuffix(".safetensors")
            for name in (v["file"], v.get("lent_dataset"), f"costmodel-{stem}.safetensors"):
                if name:
                    (self.root / name).unlink(missing_ok=True)
        return pruned
