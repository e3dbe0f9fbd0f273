"""LambdaMART (kptune/predict/lambdarank.py): it learns to order groups, and its exported trees score as fit."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from kptune.predict import lambdarank


def _groups(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Groups of 12 rows whose speed (log t_best / t) falls with feature 0 and rises with feature 1 times
    feature 2's sign, beside two features of noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=(12, 5)).astype(np.float32)
        cost = x[:, 0] - x[:, 1] * np.sign(x[:, 2])
        out.append((x, -(cost - cost.min()) / 4))
    return out


def test_the_trees_put_the_fastest_first_on_groups_they_never_saw() -> None:
    trees = lambdarank.fit(_groups(300, 0), lambdarank.Params(rounds=60))
    held = _groups(200, 1)
    first = [y[np.argmax(trees.predict(x))] for x, y in held]
    by_noise = [y[np.argmax(x[:, 3])] for x, y in held]
    assert np.mean([f == 0 for f in first]) > 0.6 > np.mean([f == 0 for f in by_noise])
    assert np.mean(first) > 0.9 * np.mean([max(y) for _, y in held]) + 0.1 * np.mean(by_noise)


def test_each_pair_pushes_the_faster_up_and_the_gradients_cancel() -> None:
    logs = np.array([[0.0, -0.1, -0.5, 0.0], [-0.2, 0.0, -0.3, -1.0]])
    member = np.array([[True, True, True, False], [True, True, True, True]])
    grad, curvature = lambdarank._lambdas(np.zeros(logs.shape), logs, member, 20.0)
    assert grad[0, 3] == 0 == curvature[0, 3]  # padding takes no part
    assert np.allclose(grad.sum(axis=1), 0) and (curvature >= 0).all()
    assert grad[0, 0] > 0 > grad[0, 2] and grad[1, 1] > 0 > grad[1, 3]


def test_exported_trees_score_as_scikit_learns() -> None:
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    fitted = []
    for seed in range(3):
        tree = DecisionTreeRegressor(max_leaf_nodes=15, random_state=seed).fit(x, x[:, seed] * x[:, 5] + seed)
        fitted.append((tree, tree.tree_.value[:, 0, 0].copy()))
    trees = lambdarank._as_trees(fitted)
    probe = rng.normal(size=(200, 6)).astype(np.float32)
    assert trees.predict(probe) == pytest.approx(sum(t.predict(probe) for t, _ in fitted))
