"""`compare()`: the model path against exhaustive search, same device, same run: the yardstick.

For each problem: `autotune(force=True)` (the model's top-k and the nearest tuned shapes'
configs, measured), then exhaustive search of every valid config into a scratch db (so it
re-measures what the model path measured and its time is the whole search's, plus the
problem's setup (inputs, reference), which it finds done by the model path), merged into the
perf db afterwards. Both paths measure
through one worker kept warm for the whole run, as a long-running tuner would: after the first
problem neither pays a process start or a device context. Reported per problem: the seconds
each took, the tuning-time speedup T_exhaustive / T_model, and the performance ratio
t_optimum / t_model's winner (1.0: the model found the optimum).

That ratio sets one timing of the model's winner against the fastest of thousands of timings, each
a little noisy, so the optimum's is biased low (the winner's curse) and a near-tie reads as a miss.
Where the two winners differ, both are timed again, alternately, `RETIME_ROUNDS` times each, outside
both paths' time; `ratio_retimed` is the ratio of their medians: how far the model's winner is from
the exhaustive one, timed alike (1.0 where they are the same config).
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kptune.autotune import autotune
from kptune.backends import resolve_device
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.local_search import LOCAL
from kptune.measurement import TimingSettings
from kptune.neighbours import COVER, NEIGHBOURS
from kptune.perfdb import PerfDB
from kptune.problem import Conv2dProblem
from kptune.runner import Runner
from kptune.space import Config
from kptune.tune import tune

#: timings of each winner, alternating, when the model's and the exhaustive one differ
RETIME_ROUNDS = 3


@dataclasses.dataclass(frozen=True)
class Comparison:
    problem: str
    source: str  # the autotune path: "model" or "random" (no model for the device)
    model_s: float
    exhaustive_s: float
    configs: int
    model_ms: float | None
    optimum_ms: float | None
    model_config: str | None
    optimum_config: str | None
    predict_ms: float = 0.0  # of model_s: the prediction
    setup_s: float = 0.0  # of model_s, and added to exhaustive_s: loading the problem (inputs, reference)
    ratio_retimed: float | None = None  # the two winners timed again alike (see the module docstring)

    @property
    def speedup(self) -> float | None:
        return self.exhaustive_s / self.model_s if self.model_s > 0 else None

    @property
    def ratio(self) -> float | None:
        if self.model_ms is None or self.optimum_ms is None:
            return None
        return self.optimum_ms / self.model_ms

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "speedup": self.speedup, "ratio": self.ratio}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Comparison:
        """The row `to_json` wrote (its derived and extra keys ignored; rows of older runs lack the last fields)."""
        return cls(**{f.name: doc[f.name] for f in dataclasses.fields(cls) if f.name in doc})


def summary(rows: Sequence[Comparison]) -> dict[str, Any]:
    speedups = [r.speedup for r in rows if r.speedup is not None]
    ratios = [r.ratio for r in rows if r.ratio is not None]
    geo = statistics.geometric_mean(ratios) if ratios else None
    share = sum(r >= 0.99 for r in ratios) / len(ratios) if ratios else None
    retimed = [r.ratio_retimed for r in rows if r.ratio_retimed is not None]
    return {"problems": len(rows), "median_speedup": statistics.median(speedups) if speedups else None,
            "geomean_ratio": geo, "share_ratio_ge_0.99": share, "model_s": sum(r.model_s for r in rows),
            "exhaustive_s": sum(r.exhaustive_s for r in rows),
            "geomean_ratio_retimed": statistics.geometric_mean(retimed) if retimed else None,
            "retimed": len(retimed)}  # fmt: skip


def compare(problems: Sequence[Conv2dProblem], **options: Any) -> list[Comparison]:
    """Every problem's comparison (options as `compare_each`)."""
    return list(compare_each(problems, **options))


def compare_each(
    problems: Sequence[Conv2dProblem],
    *,
    device: DeviceInfo | str | None = None,
    k: int = 5,
    model: Path | None = None,
    db: str | Path | None = None,
    settings: TimingSettings | None = None,
    jobs: int | None = None,
    neighbours: int = NEIGHBOURS,
    cover: int = COVER,
    local: int = LOCAL,
    use_model: bool = True,
) -> Iterator[Comparison]:
    """`compare()` one problem at a time: each row as soon as its problem is done (stop any time). `use_model=False`:
    autotune's fallback (`autotune.fallback_split`) against exhaustive search, even where a model serves the
    device."""
    if not problems:
        raise KptuneError("nothing to compare: no shapes")
    dev = device if isinstance(device, DeviceInfo) else resolve_device(device)
    with (
        PerfDB(db) as perfdb,
        tempfile.TemporaryDirectory(prefix="kptune-compare-") as tmp,
        Runner(get_family("conv2d_fwd"), dev, settings or TimingSettings()) as runner,
    ):
        for i, problem in enumerate(problems):
            # both paths measure through one warm worker, as a long-running tuner would
            fast = autotune(problem, device=dev, k=k, db=perfdb, model=model, force=True, settings=settings, jobs=jobs,
                            runner=runner, neighbours=neighbours, cover=cover, local=local,
                            use_model=use_model)  # fmt: skip
            scratch = Path(tmp) / f"exhaustive-{i}.db"
            with PerfDB(scratch) as yard:
                full = tune(problem, device=dev, strategy="exhaustive", db=yard, settings=settings, jobs=jobs,
                            runner=runner)  # fmt: skip
                perfdb.merge_from(yard)
            retimed = None
            if fast.best is not None and full.best is not None:
                if fast.best.config == full.best.config:
                    retimed = 1.0  # the same config is its own optimum
                else:
                    model_ms, optimum_ms = retime(runner, fast.best.config, full.best.config)
                    retimed = optimum_ms / model_ms if model_ms and optimum_ms else None
            # the exhaustive search found the problem loaded by the model path: charge it that setup too
            yield Comparison(
                problem.key(), fast.source, fast.wall_s, full.wall_s + fast.setup_s, full.candidates,
                fast.best.time_ms if fast.best else None, full.best.time_ms if full.best else None,
                fast.best.config.key() if fast.best else None, full.best.config.key() if full.best else None,
                fast.predict_ms, fast.setup_s, retimed,
            )  # fmt: skip


def retime(runner: Runner, a: Config, b: Config, rounds: int = RETIME_ROUNDS) -> tuple[float | None, float | None]:
    """The median of `rounds` timings of each of two configs of the runner's problem, alternating (a b,
    b a, ...); each timed alone, so neither is stopped early for the other. None: no ok timing."""
    times: dict[Config, list[float]] = {a: [], b: []}
    for i in range(rounds):
        for config in (a, b) if i % 2 == 0 else (b, a):
            for m in runner.measure_each([config]):
                if m.ok and m.time_ms:
                    times[config].append(m.time_ms)
    ta, tb = ((statistics.median(times[c]) if times[c] else None) for c in (a, b))
    return ta, tb


def plot(rows: Sequence[Comparison], path: Path) -> None:
    """Model winner's time against the optimum's, one point per problem, with the y = x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r.optimum_ms, r.model_ms) for r in rows if r.optimum_ms and r.model_ms]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    if pts:
        xs, ys = zip(*pts, strict=True)
        ax.scatter(xs, ys, s=12)
        lo, hi = min(min(xs), min(ys)), max(max(xs), max(ys))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("optimum (exhaustive), ms")
    ax.set_ylabel("autotune winner, ms")
    ax.set_title(f"{len(pts)} problems")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
