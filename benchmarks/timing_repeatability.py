"""How repeatable are the dataset's times? Its test problems' fastest configs timed again, twice.

    python benchmarks/timing_repeatability.py --problems 24 --top 8 --out results/

On the device the dataset was recorded on (elsewhere only with --any-device): `--problems` fp32 test problems, evenly
spaced over the split, each with its `--top` recorded fastest configs, timed again in two rounds as a
campaign times them (`--target-ms`, `--max-runs`) but in full (no early stop, as `kptune db recheck`
does), each round into its own perf db. Reports, over every (problem, config):
- sigma of one time's log, from round 1 against round 2 (the same session) and from the recorded time
  against the rounds' mean (another session, another day): std of the log ratio over sqrt(2);
- how often the recorded winner is still the fastest of its `--top` in each round;
- what that sigma allows (`noise_bound`): each test problem's recorded times taken as true, timed again
  with lognormal noise of that sigma, the share of problems whose measured winner is among the true 5
  fastest. A predictor that knew every true time would reach that top-5 hit and no more.
Writes timing_repeatability.json under --out.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import add_full_timing_options, provenance, spread, time_again, write_json


def noise_bound(times: Sequence[Sequence[float]], sigma: float, k: int = 5, draws: int = 200,
                seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Each problem's `times` taken as true, measured again with lognormal noise `sigma` `draws` times: the
    share of draws whose measured fastest is among the true `k` fastest (the top-k hit a predictor of the
    true order reaches), and the geomean ratio of the true best to the measured winner's true time."""
    rng = np.random.default_rng(seed)
    hits, logs = [], []
    for t in times:
        true = np.sort(np.asarray(t, dtype=float))
        noisy = true[None, :] * np.exp(rng.normal(0.0, sigma, (draws, len(true))))
        won = noisy.argmin(axis=1)
        hits.append(float(np.mean(won < k)))
        logs.append(float(np.mean(np.log(true[0] / true[won]))))
    return {"sigma": sigma, f"top{k}_hit": round(float(np.mean(hits)), 4),
            "top1_ratio": round(math.exp(float(np.mean(logs))), 4)}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--device", default=None, help="cupy:N or opencl:P:D (default: the first GPU, else OpenCL)")
    ap.add_argument("--any-device", action="store_true",
                    help="time on another device than the dataset's (sigma against the recorded times then "
                         "holds the devices' difference too)")  # fmt: skip
    ap.add_argument("--problems", type=int, default=24)
    ap.add_argument("--top", type=int, default=8)
    add_full_timing_options(ap)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)

    from kptune import dataset as ds
    from kptune.backends import resolve_device
    from kptune.errors import KptuneError
    from kptune.perfdb import PerfDB
    from kptune.problem import problem_from_key

    data = ds.load(args.dataset)
    device = resolve_device(args.device)
    if device.key != data.meta["device"] and not args.any_device:
        raise KptuneError(f"{args.dataset} was recorded on {data.meta['device']}, not {device.key}")
    test = sorted((p for p in data.split("test") if "dtype=fp32," in p.key), key=lambda p: p.key)
    chosen = spread(test, args.problems)
    rounds: list[dict[tuple[str, str], float]] = [{}, {}]
    with tempfile.TemporaryDirectory() as tmp:
        for r, got in enumerate(rounds):
            with PerfDB(Path(tmp) / f"round{r}.db") as db:
                for i, p in enumerate(chosen):
                    configs = [c for c, _ in p.times[: args.top]]
                    now = time_again(problem_from_key(p.key), configs, device, db, args.target_ms, args.max_runs)
                    got.update(((p.key, c), ms) for c, ms in now.items())
                    print(f"round {r + 1}: {i + 1}/{len(chosen)} problems", file=sys.stderr, flush=True)
    recorded = {(p.key, c): t for p in chosen for c, t in p.times[: args.top]}
    both = [key for key in recorded if key in rounds[0] and key in rounds[1]]
    if not both:
        raise KptuneError("no config ran correctly in both rounds")
    within = np.array([math.log(rounds[0][k] / rounds[1][k]) for k in both])
    across = np.array([math.log(recorded[k] / math.sqrt(rounds[0][k] * rounds[1][k])) for k in both])
    sigma_within = float(np.std(within) / math.sqrt(2))
    # the rounds' mean has variance sigma^2 / 2: recorded minus it has 3/2 sigma^2 (same sigma assumed)
    sigma_across = float(np.std(across) / math.sqrt(1.5))
    winners = {}
    for r, got in enumerate(rounds):
        kept = [p for p in chosen if all((p.key, c) in got for c, _ in p.times[: args.top])]
        same = sum(min(p.times[: args.top], key=lambda ct: got[(p.key, ct[0])])[0] == p.times[0][0] for p in kept)
        winners[f"round{r + 1}"] = {"problems": len(kept), "recorded_winner_still_fastest": same}
    all_test = [[t for _, t in p.times] for p in test]
    doc: dict[str, Any] = {
        "benchmark": "timing_repeatability", **provenance(), "dataset": str(args.dataset), "device": device.key,
        "recorded_on": data.meta["device"], "same_device": device.key == data.meta["device"],
        "settings": {"target_ms": args.target_ms, "max_runs": args.max_runs, "early_stop": False},
        "problems": len(chosen), "top": args.top, "pairs": len(both),
        "sigma_same_session": round(sigma_within, 5), "sigma_recorded_vs_now": round(sigma_across, 5),
        "median_abs_log_ratio_same_session": round(float(np.median(np.abs(within))), 5),
        "median_abs_log_ratio_recorded_vs_now": round(float(np.median(np.abs(across))), 5),
        "mean_log_ratio_recorded_vs_now": round(float(np.mean(across)), 5),
        "winners": winners,
        "noise_bound": [noise_bound(all_test, s) for s in (sigma_within, sigma_across)],
    }  # fmt: skip
    print({k: v for k, v in doc.items() if k not in ("settings", "command")})
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "timing_repeatability.json", doc)
    return 0


if __name__ == "__main__":
    from kptune.errors import KptuneError

    try:
        sys.exit(main())
    except KptuneError as exc:
        print(f"timing_repeatability.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
