"""Scoring predictions offline on the dataset's test problems, and the baselines to beat.

Definitions (DESIGN.md): for problem i with best time t*_i and ranked candidates c_1..c_k,
exact match 1[c_1 = c*], top-k hit 1[c* in c_1..c_k], ratio r_i(k) = t*_i / min_j<=k t(c_j)
(geomean over problems, and the share >= 0.95), TenSet score_k = sum t* / sum min t(c_j), and
per-parameter accuracy of c_1. A candidate with no time in the dataset (invalid for the problem,
or it failed there) counts as the problem's slowest correct config: a penalty, not a crash.

Baselines, each returning k candidates valid for the problem:
- most frequent winner: train winners by count, then by their geomean ratio over train problems;
- nearest tuned shape: the train problem nearest (`point`: its implicit GEMM's log2 M, N, K; same dtype
  first), its fastest configs, then the next nearest's;
- per-parameter tree: one scikit-learn decision tree per parameter on the problem's log2 sizes and
  geometry (`features`); every valid config scored by the sum of its parameters' log-probabilities.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kptune.dataset import DatasetProblem
from kptune.device import DeviceInfo
from kptune.problem import Conv2dProblem, problem_from_key
from kptune.space import Config, SearchSpace

#: (problem, k) -> ranked config keys
Ranker = Callable[[DatasetProblem, int], list[str]]


def features(problem: Conv2dProblem) -> list[float]:
    sizes = [math.log2(max(int(getattr(problem, f)), 1)) for f in ("n", "c", "h", "w", "k", "out_h", "out_w")]
    small = [problem.r, problem.s, problem.pad_h, problem.pad_w, problem.stride_h, problem.stride_w,
             problem.dil_h, problem.dil_w]  # fmt: skip
    return [*sizes, *map(float, small), 1.0 if problem.dtype == "fp16" else 0.0]


def point(problem: Conv2dProblem) -> list[float]:
    """Where a problem lies for nearness (`distances`): its implicit GEMM's log2 M (n x out_h x out_w),
    N (k) and K (c x r x s), and its dtype. What the kernel's configs are tiles of, so shapes of one GEMM
    share their fast configs whatever their batch, image or filter sizes. Chosen in network-fold CV over
    `features` (the sizes, each alone, and the geometry): the reranker's top 1 0.9557 -> 0.9635, best of
    5 0.9763 -> 0.9811, top-5 hit 64.0% -> 67.9%, and on a second seed's models likewise
    (`benchmarks/RESULTS.md`)."""
    gemm = problem.derived()  # the kernel's own view of the problem (`Conv2dProblem.derived`)
    m, n, k = gemm["GEMM_M"], gemm["GEMM_N"], gemm["GEMM_K"]
    return [math.log2(m), math.log2(n), math.log2(k), 1.0 if problem.dtype == "fp16" else 0.0]


def distances(feats: np.ndarray, f: Sequence[float]) -> np.ndarray:
    """L1 distance of each row of `feats` to `f` (`point`s), another dtype (the last feature) 100 farther."""
    row = np.asarray(f)
    return np.abs(feats - row).sum(axis=1) + 100.0 * (feats[:, -1] != row[-1])


def scores(problems: Sequence[DatasetProblem], ranker: Ranker, k: int) -> dict[str, Any]:
    """Every metric of `ranker` over `problems` (those must carry every ok config's time)."""
    exact = hits = within = 0
    ratios1, ratiosk, tstar, t1, tk = [], [], 0.0, 0.0, 0.0
    param_hits: collections.Counter[int] = collections.Counter()
    for p in problems:
        times = dict(p.times)
        worst = max(times.values())
        ranked = ranker(p, k)[:k]
        got = [times.get(c, worst) for c in ranked] or [worst]
        best = p.times[0][1]
        exact += bool(ranked) and ranked[0] == p.winner
        hits += p.winner in ranked
        ratios1.append(best / got[0])
        ratiosk.append(best / min(got))
        within += ratios1[-1] >= 0.95
        tstar, t1, tk = tstar + best, t1 + got[0], tk + min(got)
        if ranked:
            mine, theirs = Config.parse(ranked[0]).values(), Config.parse(p.winner).values()
            for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
                param_hits[i] += a == b
    n = max(len(problems), 1)
    names = Config.parse(problems[0].winner).as_dict().keys() if problems else []
    geo = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None  # noqa: E731
    return {"problems": len(problems), "exact_match": exact / n, f"top{k}_hit": hits / n,
            "ratio_top1_geomean": geo(ratios1), f"ratio_top{k}_geomean": geo(ratiosk),
            "share_top1_ge_0.95": within / n, "tenset_score_1": tstar / t1 if t1 else None,
            f"tenset_score_{k}": tstar / tk if tk else None,
            "param_accuracy": {name: param_hits[i] / n for i, name in enumerate(names)}}  # fmt: skip


def _valid(space: SearchSpace, device: DeviceInfo, problem: DatasetProblem) -> Callable[[str], bool]:
    conv = problem_from_key(problem.key)
    return lambda key: space.valid(conv, device, Config.parse(key))


def most_frequent_winner(train: Sequence[DatasetProblem], space: SearchSpace, device: DeviceInfo) -> Ranker:
    wins = collections.Counter(p.winner for p in train)
    quality: dict[str, list[float]] = collections.defaultdict(list)
    for p in train:
        best = p.times[0][1]
        for c, t in p.times:
            quality[c].append(best / t)
    order = sorted(quality, key=lambda c: (-wins[c], -sum(quality[c]) / len(train), c))

    def rank(problem: DatasetProblem, k: int) -> list[str]:
        ok = _valid(space, device, problem)
        return [c for c in order if ok(c)][:k]

    return rank


def nearest_shape(train: Sequence[DatasetProblem], space: SearchSpace, device: DeviceInfo) -> Ranker:
    points = np.array([point(problem_from_key(p.key)) for p in train])  # type: ignore[arg-type]

    def rank(problem: DatasetProblem, k: int) -> list[str]:
        dist = distances(points, point(problem_from_key(problem.key)))  # type: ignore[arg-type]
        ok, out = _valid(space, device, problem), []
        for i in np.argsort(dist, kind="stable"):
            out += [c for c, _ in train[i].times if c not in out and ok(c)]
            if len(out) >= k:
                break
        return out[:k]

    return rank


def tree_per_parameter(
    train: Sequence[DatasetProblem], space: SearchSpace, device: DeviceInfo, seed: int = 0
) -> Ranker:
    from sklearn.tree import DecisionTreeClassifier

    x = np.array([features(problem_from_key(p.key)) for p in train])  # type: ignore[arg-type]
    winners = [Config.parse(p.winner).values() for p in train]
    trees = []
    for i in range(len(space.names)):
        tree = DecisionTreeClassifier(random_state=seed, min_samples_leaf=2)
        tree.fit(x, [w[i] for w in winners])
        trees.append(tree)

    def rank(problem: DatasetProblem, k: int) -> list[str]:
        conv = problem_from_key(problem.key)
        f = np.array([features(conv)])  # type: ignore[arg-type]
        logp = []
        for tree in trees:
            probs = dict(zip(tree.classes_, tree.predict_proba(f)[0], strict=True))
            logp.append({v: math.log(probs.get(v, 0.0) + 1e-6) for v in set(probs) | set()})
        configs = space.configs(conv, device)
        scored = sorted(
            configs, key=lambda c: -sum(lp.get(v, math.log(1e-6)) for lp, v in zip(logp, c.values(), strict=True))
        )
        return [c.key() for c in scored[:k]]

    return rank


def model_ranker(model: Any, vocab: Any, space: SearchSpace, device: DeviceInfo, mode: str = "beam",
                 width: int | None = None, spread: int | None = None,
                 diverse: Sequence[int] = ()) -> Ranker:  # fmt: skip
    """The seq2seq model's ranking: constrained beam, greedy constrained (k=1), or unconstrained beam;
    `width` (default `beam.WIDTH`), `spread` and `diverse` as `beam_search`'s (beams only)."""
    from kptune.predict.beam import WIDTH, all_allowed, beam_search, constrained_allowed
    from kptune.predict.launch import launch_for
    from kptune.predict.models import source_of

    width = WIDTH if width is None else width

    def rank(problem: DatasetProblem, k: int) -> list[str]:
        conv = problem_from_key(problem.key)
        source = source_of(model, conv)  # type: ignore[arg-type]
        launch = launch_for(model, conv, device, space.names)
        if mode == "unconstrained":
            found = beam_search(model, vocab, source, all_allowed(vocab), width, k, spread, launch, diverse)
        else:
            allowed = constrained_allowed(space, conv, device)
            found = (beam_search(model, vocab, source, allowed, 1, 1, launch=launch) if mode == "greedy" else
                     beam_search(model, vocab, source, allowed, width, k, spread, launch, diverse))  # fmt: skip
        return [c.config.key() for c in found]

    return rank


def predict_ranker(model: Any, vocab: Any, family: Any, device: DeviceInfo, width: int | None = None) -> Ranker:
    """The model's ranking as `kptune predict` (so autotune) makes it: the constrained beam, hedged over
    the family's split factor, its top k spread over the family's tile (`beam.HEDGED`, `beam.DIVERSE`);
    `width` as `model_ranker`'s."""
    from kptune.predict.beam import hedges

    return model_ranker(model, vocab, family.space, device, "beam", width, *hedges(family.name, vocab))
