"""How much does the best config differ between problems? Read from a perf db, for one device and kernel.

    python benchmarks/diversity.py --db results/vs_cudnn.db --out results/
    python benchmarks/diversity.py --db perf.db --device "cupy:NVIDIA H200" --family conv2d_fwd

Reports the number of tuned problems, how many distinct configs win them, and the
best single fixed config: among the configs measured ok on every problem, the one
with the highest geometric mean over problems of t_best / t_config (the DESIGN.md
performance ratio of using that one config everywhere; 1.0 would mean one config
is best for all), with its worst problem; and, since no config is valid for every
problem once the algorithm is a parameter, one fixed config per algorithm (see
`fixed_per_first_token`). A low ratio is what makes a per-shape predictor worth having.
Prints a short table and writes diversity.json under --out.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common import geomean, provenance, write_json

from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.perfdb import PerfDB, TunedProblem
from kptune.problem import problem_from_key

#: problem key -> config key -> median ms of that config's latest ok measurement.
Times = Mapping[str, Mapping[str, float]]

WITHIN = 0.95  # a problem is "served" by a config reaching this share of its best speed
TOP = 10


def winners(times: Times) -> dict[str, str]:
    """The fastest config of each problem (ties: the smaller config key, for a stable answer)."""
    return {p: min(cfgs, key=lambda c: (cfgs[c], c)) for p, cfgs in times.items() if cfgs}


def common_configs(times: Times) -> list[str]:
    """Configs measured ok on every problem, sorted."""
    sets = [set(cfgs) for cfgs in times.values()]
    return sorted(set.intersection(*sets)) if sets else []


def best_times(times: Times) -> dict[str, float]:
    """t_best of each problem: its fastest ok config's time."""
    return {p: min(cfgs.values()) for p, cfgs in times.items()}


def ratios(times: Times, config: str, best: Mapping[str, float] | None = None) -> dict[str, float]:
    """t_best / t_config per problem: 1.0 where `config` is the winner, smaller where it is slower."""
    best = best if best is not None else best_times(times)
    return {p: best[p] / cfgs[config] for p, cfgs in times.items()}


def fixed_config_ranking(times: Times) -> list[tuple[str, float]]:
    """Every common config with its geomean ratio, best first (ties: smaller config key)."""
    best = best_times(times)
    scored = [(c, geomean(ratios(times, c, best).values()) or 0.0) for c in common_configs(times)]
    return sorted(scored, key=lambda x: (-x[1], x[0]))


def first_token(config: str) -> str:
    """The first parameter of a config key ("ALGO=1" of "ALGO=1,BM=64,..."): the kernel family's algorithm."""
    return config.split(",", 1)[0]


def fixed_per_first_token(times: Times) -> dict[str, Any] | None:
    """One fixed config per value of the first parameter (the algorithm), each problem served by its winner's.

    Where no single config is valid for every problem (a 1x1 GEMM config on a 3x3 conv), the
    fair fixed baseline is what a library ships: one default config per algorithm. Each problem
    uses the default of the algorithm its winner uses, an oracle choice of algorithm, so the loss
    reported is a lower bound. A group's default is its best fixed config among that algorithm's
    configs measured ok on all the group's problems. None if some group has no such config.
    """
    wins = winners(times)
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for problem, config in wins.items():
        groups[first_token(config)].append(problem)
    best = best_times(times)
    out_groups, per = [], {}
    for token, problems in sorted(groups.items()):
        sub = {p: {c: t for c, t in times[p].items() if first_token(c) == token} for p in problems}
        ranking = fixed_config_ranking(sub)
        if not ranking:
            return None
        config, _ = ranking[0]
        group_ratios = {p: best[p] / times[p][config] for p in problems}
        per.update(group_ratios)
        out_groups.append({"algorithm": token, "problems": len(problems), "config": config,
                           "geomean_ratio": geomean(group_ratios.values())})  # fmt: skip
    worst = min(per, key=lambda p: (per[p], p))
    return {"groups": out_groups, "geomean_ratio": geomean(per.values()), "worst_problem": worst,
            "worst_ratio": per[worst], "problems_within": sum(r >= WITHIN for r in per.values())}  # fmt: skip


def analyze(times: Times) -> dict[str, Any]:
    """The diversity report of one (device, kernel) as a JSON-ready dict."""
    wins = winners(times)
    win_counts = collections.Counter(wins.values()).most_common()
    ranking = fixed_config_ranking(times)
    out: dict[str, Any] = {
        "problems": len(times), "distinct_winners": len(win_counts),
        "configs_seen": len({c for cfgs in times.values() for c in cfgs}), "common_configs": len(ranking),
        "winner_counts": [{"config": c, "wins": n} for c, n in win_counts],
        "best_fixed": None, "top_fixed": [{"config": c, "geomean_ratio": g} for c, g in ranking[:TOP]],
        "most_frequent_winner": None, "fixed_per_algorithm": fixed_per_first_token(times),
    }  # fmt: skip
    if win_counts:
        config, n = win_counts[0]
        common = all(config in cfgs for cfgs in times.values())
        score = geomean(ratios(times, config).values()) if common else None
        out["most_frequent_winner"] = {"config": config, "wins": n, "geomean_ratio": score}
    if ranking:
        config, score = ranking[0]
        per = ratios(times, config)
        worst = min(per, key=lambda p: (per[p], p))
        out["best_fixed"] = {
            "config": config, "geomean_ratio": score, "worst_problem": worst, "worst_ratio": per[worst],
            "within": WITHIN, "problems_within": sum(r >= WITHIN for r in per.values()),
            "per_problem": [{"problem": p, "winner": wins[p], "best_ms": min(times[p].values()),
                             "fixed_ms": times[p][config], "ratio": per[p]} for p in times],
        }  # fmt: skip
    return out


def compact_problem(key: str) -> str:
    """A problem key without the fields left at their defaults (n=32,c=64,h=56,...,pad_h=1,pad_w=1)."""
    try:
        problem = problem_from_key(key)
    except KptuneError:
        return key
    defaults = {f.name: f.default for f in dataclasses.fields(problem)}
    return ",".join(f"{k}={v}" for k, v in problem.fields().items() if v != defaults[k])


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(report: Mapping[str, Any]) -> str:
    """The short markdown summary: counts, the best fixed config, the most frequent winners."""
    best, mfw = report["best_fixed"], report["most_frequent_winner"]
    rows = [
        ("problems", str(report["problems"])),
        ("distinct winning configs", str(report["distinct_winners"])),
        ("configs ok on every problem", f"{report['common_configs']} of {report['configs_seen']} seen"),
    ]
    if best:
        rows += [
            ("best fixed config", best["config"]),
            ("its geomean t_best / t_config", _f(best["geomean_ratio"])),
            ("its worst problem", f"{compact_problem(best['worst_problem'])} ({_f(best['worst_ratio'])})"),
            (f"problems within {100 * (1 - best['within']):.0f}% of their best",
             f"{best['problems_within']} / {report['problems']}"),
        ]  # fmt: skip
    else:
        rows.append(("best fixed config", "none: no config was measured ok on every problem"))
    per_algo = report.get("fixed_per_algorithm")
    if per_algo:
        rows += [
            ("one fixed config per algorithm", "; ".join(f"{g['algorithm']} ({g['problems']} problems): {g['config']}"
                                                        for g in per_algo["groups"])),
            ("its geomean t_best / t_config", _f(per_algo["geomean_ratio"])),
            ("its worst problem", f"{compact_problem(per_algo['worst_problem'])} ({_f(per_algo['worst_ratio'])})"),
            (f"problems within {100 * (1 - WITHIN):.0f}% of their best",
             f"{per_algo['problems_within']} / {report['problems']}"),
        ]  # fmt: skip
    if mfw:
        rows.append(
            ("most frequent winner", f"{mfw['config']} (wins {mfw['wins']}, geomean {_f(mfw['geomean_ratio'])})")
        )
    lines = ["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    lines += ["", "| winning config | problems won |", "|---|---|"]
    lines += [f"| {w['config']} | {w['wins']} |" for w in report["winner_counts"][:TOP]]
    return "\n".join(lines)


def pick_device(keys: Sequence[str], wanted: str) -> str:
    """The device key `wanted` names: itself, else the one key containing it (case-insensitive)."""
    if wanted in keys:
        return wanted
    matches = [k for k in keys if wanted.lower() in k.lower()]
    if len(matches) != 1:
        raise KptuneError(f"device {wanted!r} matches {len(matches)} of the db's devices: {', '.join(keys)}")
    return matches[0]


def load(db: PerfDB, device: str | None, family: str | None,
         exhaustive_only: bool = True) -> tuple[TunedProblem, Times, list[str]]:  # fmt: skip
    """The ok times of every problem of one (device, kernel): the first such pair left by --device and --family.

    With `exhaustive_only`, problems with fewer measured configs than the family has valid ones
    (when the family is registered here with the same source) are left out.

    Also returns the other (device, kernel) pairs the db holds, so the user can ask for them.
    """
    tuned = db.tuned_problems()
    if not tuned:
        raise KptuneError(f"{db.path} has no ok measurements")
    device_key = None if device is None else pick_device(list(dict.fromkeys(t.device_key for t in tuned)), device)
    chosen = db.tuned_problems(device_key, family)
    if not chosen:
        families = sorted({t.family for t in tuned if device_key in (None, t.device_key)})
        raise KptuneError(f"no ok measurements of kernel {family!r} on {device_key or 'any device'}; "
                          f"there are: {', '.join(families)}")  # fmt: skip
    first = chosen[0]
    group = [t for t in chosen if (t.device_id, t.kernel_id) == (first.device_id, first.kernel_id)]
    others = sorted({f"{t.device_key} / {t.family} ({t.source_hash[:12]})" for t in tuned
                     if (t.device_id, t.kernel_id) != (first.device_id, first.kernel_id)})  # fmt: skip
    times = {}
    for t in group:
        measured = db.measurements(t.problem_id, t.device_id, t.kernel_id)
        if exhaustive_only and len(measured) < _valid_count(t, db):
            continue  # a problem whose tuning was cut short has no trustworthy winner
        times[t.problem_key] = {m.config.key(): m.time_ms for m in measured if m.ok and m.time_ms}
    return first, times, others


def _valid_count(t: TunedProblem, db: PerfDB) -> int:
    """How many configs the kernel family (if registered here, same source) has for the problem; 0 if unknown."""
    try:
        family = get_family(t.family)
    except KptuneError:
        return 0
    if family.source_hash != t.source_hash:
        return 0
    return len(family.space.configs(problem_from_key(t.problem_key), db.device_info(t.device_id)))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, required=True, help="perf db to read (never written)")
    ap.add_argument("--device", default=None, help="device key as stored (e.g. 'cupy:NVIDIA H200') or a unique part")
    ap.add_argument("--family", default=None, help="kernel family (default: the db's first)")
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--partial", action="store_true", help="also count problems not tuned exhaustively")
    args = ap.parse_args(argv)
    try:
        if not args.db.is_file():
            raise KptuneError(f"no perf db at {args.db}")
        with PerfDB(args.db) as db:
            first, times, others = load(db, args.device, args.family, not args.partial)
    except KptuneError as exc:
        print(f"diversity: {exc}", file=sys.stderr)
        return 2
    report = analyze(times)
    doc = {"benchmark": "diversity", **provenance(), "db": str(args.db), "device": first.device_key,
           "family": first.family, "source_hash": first.source_hash, "other_pairs_in_db": others, **report}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "diversity.json", doc)
    print(f"{first.device_key}, kernel {first.family} (source {first.source_hash[:12]}), db {args.db}\n")
    print(table(report))
    if others:
        print(f"\nalso in the db (pick with --device/--family): {'; '.join(others)}")
    print(f"\nwrote {args.out / 'diversity.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
