"""LambdaMART: boosted regression trees that learn to order the candidates within each group (a beam).

Burges, "From RankNet to LambdaRank to LambdaMART: An Overview" (MSR-TR-2010-82). Each round scores
every group's candidates with the trees so far; for each pair (i, j) of one group with i faster, the
"lambda" pushes i up and j down by how much swapping their places would change the group's NDCG
(`PAIR_WEIGHT`), times how likely the current scores are to order them wrongly (the logistic of
s_j - s_i); a regression tree (scikit-learn) is fit to the summed lambdas, and each leaf takes a Newton
step (its lambdas over their curvature), shrunk by the learning rate. A candidate's gain is
(t_best / t) ** `Params.sharpness`: a few percent slower is worth far less, so the first places, where
the best of 5 and the top 1 are decided, weigh most. Saved as `costmodel.Trees` (no pickle).

Why not regress each candidate's place (the reranker's format 2 target): a regressor spends its fit on
every place alike, while a pair matters as much as it changes the top of the order. In network-fold CV
(`benchmarks/rerank_cv.py`, and on an earlier session's out-of-fold rows) LambdaMART as shipped was ahead
on best of 5 (+0.0011 to +0.0021) and the top-5 hit (+2.1 to +4.7 points), with top 1 within the noise
(-0.0004 to +0.0012): `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from kptune.predict.costmodel import Trees

#: each row's summed lambda (the gradient that raises it) and curvature, [group, place] each
Lambdas = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Params:
    """The fit's settings, chosen in CV (`benchmarks/RESULTS.md`): 600 rounds gained <= 0.001 top 1 at twice
    the prediction time; trees at most 8 deep (not 20) lost nothing and walk 8 steps."""

    rounds: int = 300
    learning_rate: float = 0.1
    leaves: int = 31
    #: the deepest a tree grows: a prediction walks this many steps
    depth: int = 8
    min_leaf: int = 20
    #: a candidate's gain is (t_best / t) ** sharpness
    sharpness: float = 20.0


def fit(groups: Sequence[tuple[np.ndarray, np.ndarray]], params: Params = Params(), seed: int = 0) -> Trees:
    """Trees whose sum orders each group's rows fastest first: `groups` holds (feature rows, log(t_best / t)
    of each row: 0 the fastest, below 0 slower)."""
    from sklearn.tree import DecisionTreeRegressor

    x, logs, member = _packed(groups)
    flat = x[member]
    scores = np.zeros(logs.shape)
    fitted: list[tuple[DecisionTreeRegressor, np.ndarray]] = []
    for _ in range(params.rounds):
        grad, curvature = _lambdas(scores, logs, member, params.sharpness)
        g, h = grad[member], curvature[member]
        tree = DecisionTreeRegressor(max_leaf_nodes=params.leaves, max_depth=params.depth,
                                     min_samples_leaf=params.min_leaf, random_state=seed)  # fmt: skip
        tree.fit(flat, g)
        leaf = tree.apply(flat)
        nodes = tree.tree_.node_count
        step = np.bincount(leaf, g, nodes) / (np.bincount(leaf, h, nodes) + 1e-9) * params.learning_rate
        scores[member] += step[leaf]
        fitted.append((tree, step))
    return _as_trees(fitted)


def _packed(groups: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The groups as [group, place, feature] rows, [group, place] log ratios and a mask of real places."""
    size = max(len(y) for _, y in groups)
    x = np.zeros((len(groups), size, groups[0][0].shape[1]), dtype=np.float32)
    logs = np.zeros((len(groups), size))
    member = np.zeros((len(groups), size), dtype=bool)
    for g, (rows, y) in enumerate(groups):
        x[g, : len(y)], logs[g, : len(y)], member[g, : len(y)] = rows, y, True
    return x, logs, member


def _lambdas(scores: np.ndarray, logs: np.ndarray, member: np.ndarray, sharpness: float) -> Lambdas:
    """`Lambdas` for every group at once, at the current `scores`."""
    groups, size = scores.shape
    order = np.argsort(-np.where(member, scores, -np.inf), axis=1, kind="stable")
    place = np.empty_like(order)
    np.put_along_axis(place, order, np.broadcast_to(np.arange(size), (groups, size)), axis=1)
    discount = 1.0 / np.log2(2.0 + place)
    gain = np.where(member, np.exp(sharpness * logs), 0.0)
    ideal = (np.sort(gain, axis=1)[:, ::-1] / np.log2(2.0 + np.arange(size))).sum(axis=1)
    faster = (logs[:, :, None] > logs[:, None, :] + 1e-12) & member[:, :, None] & member[:, None, :]
    weight = np.abs(gain[:, :, None] - gain[:, None, :]) * np.abs(discount[:, :, None] - discount[:, None, :])
    weight /= ideal[:, None, None] + 1e-12
    wrong = 1.0 / (1.0 + np.exp(np.clip(scores[:, :, None] - scores[:, None, :], -50.0, 50.0)))
    lam = np.where(faster, weight * wrong, 0.0)
    hess = lam * (1.0 - wrong)
    return lam.sum(axis=2) - lam.sum(axis=1), hess.sum(axis=2) + hess.sum(axis=1)


def _as_trees(fitted: Sequence[tuple[object, np.ndarray]]) -> Trees:
    """scikit-learn's trees, each leaf holding its step, as one `Trees` (a leaf steps to itself)."""
    features, thresholds, lefts, rights, values, roots, depth, offset = [], [], [], [], [], [], 0, 0
    for tree, step in fitted:
        t = tree.tree_  # type: ignore[attr-defined]
        here = np.arange(t.node_count)
        leaf = t.children_left < 0
        features.append(np.where(leaf, 0, t.feature))
        thresholds.append(np.where(leaf, np.inf, t.threshold))
        lefts.append(np.where(leaf, here, t.children_left) + offset)
        rights.append(np.where(leaf, here, t.children_right) + offset)
        values.append(np.where(leaf, step, 0.0))
        roots.append(offset)
        depth = max(depth, int(t.max_depth))
        offset += t.node_count
    return Trees(feature=np.concatenate(features).astype(np.int32), threshold=np.concatenate(thresholds),
                 left=np.concatenate(lefts).astype(np.int32), right=np.concatenate(rights).astype(np.int32),
                 value=np.concatenate(values), roots=np.array(roots, dtype=np.int32), baseline=0.0,
                 depth=depth)  # fmt: skip
