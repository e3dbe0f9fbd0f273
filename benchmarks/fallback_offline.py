"""Autotune with no model for the device: its random configs alone, or a local search after them?

    cd benchmarks; PYTHONPATH=.. python fallback_offline.py --compare results/RUN.db.xz [...] --out results/
    cd benchmarks; PYTHONPATH=.. python fallback_offline.py --dataset ../kptune/data/dataset-h200.db.gz --out results/

A GPU that no shipped model serves (`DeviceInfo.may_borrow`: another architecture or SM count than the
H200's) gets autotune's fallback, `FALLBACK_BUDGET` configs. They were all random; they are now half random,
half by Kernel Tuner's greedy local search from the fastest (`autotune.fallback_split`, chosen and tested by this
script: RESULTS.md). This scores the two, and other splits, on full tables of recorded times (the exhaustive
passes of `kptune compare` runs, or a dataset's test problems, which keep every config that ran). The search is
`kptune.local_search.search`: rounds of ROUND around the fastest so far, a config's neighbours in `--order`
order, with no model to rank them (shuffled by the draw's seed is `local_search.unguided`, what autotune runs).
Each problem is drawn `--draws` times (sampling seeds 0..N-1), since one draw of 24 is noisy; a config that never
ran counts as no time. A set is named by what it measures: `random R` or `random R + local L`.

Prints, per set, the geomean over problems of each problem's geomean ratio t_best / best measured over the
draws, the share of problems whose mean ratio is >= 0.99, and the worst; writes fallback_offline.json under
--out.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from common import exhaustive_times, open_db, provenance, ratio_summary, write_json

#: (random configs, local search configs) of each set scored
SETS = ((24, 0), (34, 0), (24, 10), (14, 10), (12, 12), (10, 24))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", type=Path, nargs="*", default=[], help="compare runs' perf dbs: exhaustive times")
    ap.add_argument("--dataset", type=Path, nargs="*", default=[], help="datasets: their test problems' tables")
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default=None, help="only problems of this dtype")
    ap.add_argument("--draws", type=int, default=20, help="random draws per problem (sampling seeds 0..N-1)")
    ap.add_argument("--order", choices=["space", "shuffled"], default="shuffled",
                    help="a config's neighbours in the space's order, or shuffled by the draw's seed")  # fmt: skip
    ap.add_argument("--sets", type=_sets, default=SETS, help="R+L,...: random R then a local search of L (default: "
                    + ",".join(f"{r}+{n}" for r, n in SETS) + ")")  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    from kptune import dataset as ds
    from kptune.device import DeviceInfo
    from kptune.errors import KptuneError
    from kptune.kernel import get_family
    from kptune.local_search import ROUND

    if not args.compare and not args.dataset:
        print("fallback_offline: give --compare and/or --dataset", file=sys.stderr)
        return 2
    family = get_family("conv2d_fwd")
    tables: list[tuple[str, dict[str, float], DeviceInfo]] = []
    try:
        for path in args.compare:
            with open_db(path) as db:
                device = db.device_info(db.find_device(None)[0])
                tables += [(key, times, device) for key, times in exhaustive_times(db).items()]
        for path in args.dataset:
            data = ds.load(path)
            device = DeviceInfo(**data.meta["device_limits"])
            tables += [(p.key, dict(p.times), device) for p in data.split("test")]
    except (KptuneError, OSError, ValueError) as exc:
        print(f"fallback_offline: {exc}", file=sys.stderr)
        return 2
    if args.dtype:
        tables = [t for t in tables if f",dtype={args.dtype}," in t[0]]
    names = [f"random {r}" + (f" + local {n}" if n else "") for r, n in args.sets]
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for key, times, device in tables:
        for name, rs in zip(names, scored(family, key, times, device, args.sets, args.draws, args.order), strict=True):
            ratios[name].append(rs)
    summary = {name: ratio_summary(rs) for name, rs in ratios.items()}
    for name, s in summary.items():
        print(f"{name}: geomean {s['geomean']:.4f}, >= 0.99 {s['ge_0.99']}/{s['n']}, min {s['min']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "fallback_offline.json", {
        "benchmark": "fallback_offline", **provenance(), "sources": [str(p) for p in args.compare + args.dataset],
        "dtype": args.dtype, "draws": args.draws, "order": args.order, "round": ROUND, "summary": summary,
        "rows": [{"problem": key, **{name: rs[i] for name, rs in ratios.items()}}
                 for i, (key, _, _) in enumerate(tables)]})  # fmt: skip
    return 0


def scored(family: object, key: str, times: dict[str, float], device: object, sets: Sequence[tuple[int, int]],
           draws: int, order: str) -> list[float]:  # fmt: skip
    """Each of `sets`' geomean ratio over `draws` draws for one problem."""
    from kptune.local_search import neighbours, recorded, search, shuffled
    from kptune.problem import problem_from_key
    from kptune.strategies import get_strategy

    space = family.space  # type: ignore[attr-defined]
    problem = problem_from_key(key)
    configs = space.configs(problem, device)
    best = min(times.values())
    measure = recorded(times)
    expand = functools.lru_cache(maxsize=None)(lambda c: neighbours(space, problem, device, c))
    out = []
    for sampled, more in sets:
        logs = []
        for seed in range(draws):
            start = measure(get_strategy("random")(configs, sampled, seed))
            arrange = shuffled(seed) if order == "shuffled" else None
            found = search(start, more, measure, expand, arrange)
            fastest = min(found.values())
            logs.append(math.log(best / fastest) if fastest < math.inf else math.log(1e-3))
        out.append(math.exp(sum(logs) / len(logs)))
    return out


def _sets(text: str) -> tuple[tuple[int, int], ...]:
    """--sets: "24+0,14+10" -> ((24, 0), (14, 10)); argparse's one-line error otherwise."""
    try:
        out = tuple((int(r), int(n)) for r, n in (part.split("+") for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not R+L,...: {text!r}") from None
    if any(r < 1 or n < 0 for r, n in out):
        raise argparse.ArgumentTypeError(f"each set needs R >= 1 and L >= 0: {text!r}")
    return out


if __name__ == "__main__":
    sys.exit(main())
