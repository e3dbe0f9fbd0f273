"""Timing spikes: configs recorded far slower than every config one parameter away, timed again.

A config that a campaign stops on its verifying launch (`measurement.StopRule`) is recorded with
that one launch's time, and one stalled launch (the times alone do not say what stalled it) makes
a fast config look many times slower: in the H200 dataset's sixteenth installment 712 of 1,325,970
config times (in 91 of 1,185 problems) were more than SPIKE_FACTOR times the slowest of the configs
one parameter away, e.g. 0.121 ms where its 13 neighbours took 0.0088 to 0.023 ms (one stall
would hardly move a median of several launches so: most likely single launches). A prediction
that picks such a config is scored as a miss it is not, and a fast config recorded so is hidden
from the winners. `spikes()` finds them from the times alone; `recheck()` times each one again
in full (every launch counted, no early stop) and stores the result as a new measurement of
source "recheck". That is the latest of its config, so the perf db's view and a dataset cut from
it (`dataset.build`, also for a base installment's problems) take the new time. The spike
stays in the db's history.

Batch inversions, the second kind of suspect: a config recorded more than INVERSION_FACTOR times
slower on a problem than on the same problem at twice the batch. Every algorithm of conv2d_fwd
tiles the batch into thread blocks of the same work, so half the batch runs at most as many blocks
and cannot take longer but by noise. In the eighteenth H200 installment 8,290 config times (in 99 of
1,429 problems) were such, 7,409 of them in three ResNet layers at batch 1 (e.g. n=1 c=64 56x56 k=64
3x3: a quarter of its configs 1.25 to 2.8x slower than at n=2) that are test problems, where the model's
picks score 0.38 and 0.42. `batch_inversions()` finds them; `recheck()` times them again too. Timed again
on an H200 (2026-12-07, the nineteenth installment), 8,286 of the 8,290 were faults: recording errors, not
slow configs.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kptune.backends import resolve_device
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.measurement import TimingSettings
from kptune.perfdb import RECHECK_SOURCE, PerfDB
from kptune.problem import problem_from_key
from kptune.runner import Runner
from kptune.space import Config
from kptune.tune import tune

#: a time more than this many times the slowest one-parameter neighbour's is a spike
SPIKE_FACTOR = 3.0
#: fewest one-parameter neighbours with a time for a config to be judged
MIN_NEIGHBOURS = 2
#: a time more than this many times the same config's on the problem at twice the batch is an inversion...
INVERSION_FACTOR = 1.25
#: ... and more than this many ms above it (below, launch jitter of the tiniest kernels)
INVERSION_SLACK_MS = 0.005
_VALUE = re.compile(r"=(-?\d+)")
_BATCH = re.compile(r":n=(\d+),")


def spikes(times: Sequence[tuple[str, float]], factor: float = SPIKE_FACTOR) -> list[str]:
    """The config keys of `times` ((config key, ms) of one problem) slower than `factor` times every
    config that differs from them in one parameter (at least MIN_NEIGHBOURS such configs), slowest first."""
    if len(times) <= MIN_NEIGHBOURS:
        return []
    keys = [k for k, _ in times]
    # Config.key()s ("A=1,B=2,..."), every one with the same parameters: their values in one pass
    values = np.fromiter(map(int, _VALUE.findall(",".join(keys))), dtype=np.int64).reshape(len(keys), -1)
    ms = np.array([t for _, t in times], dtype=np.float64)
    n, width = values.shape
    # each config as one integer: its parameters' value indices in mixed radix
    digits = np.stack([np.unique(values[:, i], return_inverse=True)[1].ravel() for i in range(width)], axis=1)
    radix = np.cumprod([1, *(digits.max(axis=0) + 1)[:-1]])
    code = digits @ radix
    slowest = np.zeros(n)  # the slowest one-parameter neighbour's time
    count = np.zeros(n, dtype=np.int64)
    for i in range(width):
        # configs equal everywhere but in parameter i form one group: each is the others' neighbour
        _, group = np.unique(code - digits[:, i] * radix[i], return_inverse=True)
        group = group.ravel()
        size = np.bincount(group)
        order = np.lexsort((-ms, group))  # by group, slowest first within each
        first = np.searchsorted(group[order], np.arange(len(size)))
        top = ms[order[first]]  # each group's slowest time
        second = np.where(size > 1, ms[order[np.minimum(first + 1, n - 1)]], 0.0)
        is_top = np.zeros(n, dtype=bool)
        is_top[order[first]] = True
        other = np.where(is_top, second[group], top[group])  # the slowest of the group without itself
        slowest = np.maximum(slowest, np.where(size[group] > 1, other, 0.0))
        count += size[group] - 1
    found = np.flatnonzero((count >= MIN_NEIGHBOURS) & (ms > factor * slowest))
    return [keys[j] for j in found[np.argsort(-ms[found], kind="stable")]]


def batch_inversions(problems: Iterable[tuple[str, Sequence[tuple[str, float]]]],
                     factor: float = INVERSION_FACTOR) -> dict[str, dict[str, float]]:  # fmt: skip
    """For each problem of `problems` ((key, (config key, ms) pairs)) whose twice-the-batch twin is among
    them: its configs recorded more than `factor` times (and INVERSION_SLACK_MS) slower than on that
    twin, each with the twin's time. Problems with none are left out."""
    times = {key: dict(t) for key, t in problems}
    found: dict[str, dict[str, float]] = {}
    for key, mine in times.items():
        batch = _BATCH.search(key)
        twin = times.get(key.replace(batch.group(0), f":n={2 * int(batch.group(1))},", 1)) if batch else None
        if not twin:
            continue
        bad = {
            c: twin[c]
            for c, ms in mine.items()
            if c in twin and ms > max(factor * twin[c], twin[c] + INVERSION_SLACK_MS)
        }
        if bad:
            found[key] = bad
    return found


@dataclasses.dataclass(frozen=True)
class Rechecked:
    problem: str
    config: str
    recorded_ms: float
    retimed_ms: float | None  # None: the config did not run correctly this time
    outcome: str
    kind: str  # "spike", or "inversion": slower than at twice the batch (`batch_inversions`)
    fault_below_ms: float  # re-timed under this, the recorded time was a fault

    @property
    def confirmed(self) -> bool:
        """Timed again at or above `fault_below_ms` (a spike: within 2x of the recorded time; an inversion:
        still over INVERSION_FACTOR times the twice-the-batch time): a real slow config, not a fault."""
        return self.retimed_ms is not None and self.retimed_ms >= self.fault_below_ms

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "confirmed": self.confirmed}


Suspects = tuple[str, Sequence[tuple[str, float]], list[str], dict[str, float]]


def suspects(problems: Iterable[tuple[str, Sequence[tuple[str, float]]]],
             factor: float = SPIKE_FACTOR) -> list[Suspects]:  # fmt: skip
    """What `recheck()` times again, in its order: (key, times, spike config keys, inversions that are not
    also spikes, each with its twin's ms) of every problem of `problems` with any, the most suspects first
    (ties keep the problems' order), so that a run cut short has fixed the worst."""
    problems = list(problems)
    inverted = batch_inversions(problems)
    found: list[Suspects] = []
    for key, times in problems:
        spiked = spikes(times, factor)
        twin = {c: ms for c, ms in inverted.get(key, {}).items() if c not in spiked}
        if spiked or twin:
            found.append((key, times, spiked, twin))
    found.sort(key=lambda s: -(len(s[2]) + len(s[3])))  # stable
    return found


def recheck_settings(settings: TimingSettings | None = None) -> TimingSettings:
    """`settings` with early stopping off: every launch of a re-timed config counts."""
    return dataclasses.replace(settings or TimingSettings(), early_stop_factor=math.inf, verify_stop_factor=math.inf)


def problems_of(
    db: PerfDB, device_key: str, kernel: str, dataset: Path | None = None
) -> list[tuple[str, list[tuple[str, float]]]]:
    """(problem key, (config, ms) of its latest ok times) of every problem the db holds for this device and
    kernel, then those of `dataset` (an installment of the same device and kernel source) the db lacks."""
    from kptune import dataset as ds

    family = get_family(kernel)
    held = []
    for t in db.tuned_problems(device_key, family.name):
        if t.source_hash == family.source_hash:
            held.append((t.problem_key, db.latest_times(t.problem_id, t.device_id, t.kernel_id)[1]))
    if dataset is None:
        return held
    data = ds.load(dataset)
    for field, want in (("device", device_key), ("family", family.name), ("source_hash", family.source_hash)):
        if data.meta.get(field) != want:
            raise KptuneError(f"{dataset}: its {field} is {data.meta.get(field)!r}, not {want!r}")
    keys = {k for k, _ in held}
    return held + [(p.key, list(p.times)) for p in data.problems if p.key not in keys]


def recheck(problems: Iterable[tuple[str, Sequence[tuple[str, float]]]], db: PerfDB, *,
            device: DeviceInfo | str | None = None, kernel: str = "conv2d_fwd", factor: float = SPIKE_FACTOR,
            settings: TimingSettings | None = None, jobs: int | None = None) -> list[Rechecked]:  # fmt: skip
    """Time every spike and batch inversion of `problems` ((key, times) pairs, e.g. `problems_of`) again on
    `device`, into `db`: the problems with the most suspects first, so that a run cut short has fixed
    the worst.

    Resumable: a config with a recheck measurement in the db already is not timed again, and each
    measurement is committed as it comes."""
    family = get_family(kernel)
    dev = device if isinstance(device, DeviceInfo) else resolve_device(device)
    kid = db.kernel_id(family.name, family.source_hash, family.space.names)
    did = db.device_id(dev)
    timing = recheck_settings(settings)
    rows: list[Rechecked] = []
    with Runner(family, dev, timing) as runner:  # one measuring process for every problem
        for key, times, spiked, twin in suspects(problems, factor):
            found = [*spiked, *twin]
            problem = problem_from_key(key)
            pid = db.problem_id(problem)
            done = db.configs_of_source(pid, did, kid, RECHECK_SOURCE)
            todo = [Config.parse(c) for c in found if c not in done]
            if todo:
                tune(problem, kernel=family.name, device=dev, db=db, settings=timing, jobs=jobs, configs=todo,
                     source=RECHECK_SOURCE, resume=False, runner=runner)  # fmt: skip
            latest = {m.config.key(): m for m in db.measurements(pid, did, kid, found)}
            recorded = dict(times)
            for c in found:
                m = latest[c]
                kind, bound = ("inversion", INVERSION_FACTOR * twin[c]) if c in twin else ("spike", recorded[c] / 2)
                rows.append(Rechecked(key, c, recorded[c], m.time_ms if m.ok else None, str(m.outcome), kind, bound))
    return rows
