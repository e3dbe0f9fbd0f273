"""The seq2seq and the cost model together: both score the cost model's pool, their scores averaged.

The cost model (`kptune.predict.costmodel`) ranks the configs stored for a problem's nearest tuned
shapes from what they did there; the seq2seq gives every config a probability from the problem's
descriptor alone (`sequence_log_probs`: the sum of its tokens' log-probabilities, each position's
softmax over that position's tokens; the beam's unconstrained scores). They err in different
places, so `blended_ranker` ranks the pool by the mean of the two scores, each standardized over
the pool (z-scores: a log-probability and a predicted log ratio have different scales), with
weight WEIGHT on the seq2seq's: equal weights, fixed beforehand, not fitted. Every config it returns
is a pool config, so valid for the problem and device (the pool is filtered so). A product of two
experts, as neural translation reranks its n-best lists with a second model: `kptune eval` scores it
beside the seq2seq alone and the cost model alone (`benchmarks/RESULTS.md`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from kptune.predict import beam
from kptune.predict.launch import launch_for
from kptune.predict.models import source_of
from kptune.predict.tokenizer import TargetVocab
from kptune.problem import Conv2dProblem, problem_from_key
from kptune.space import Config

if TYPE_CHECKING:
    from kptune.dataset import DatasetProblem
    from kptune.device import DeviceInfo
    from kptune.predict.costmodel import CostModel
    from kptune.predict.evaluation import Ranker

#: the seq2seq's share of the blended score (the cost model has the rest)
WEIGHT = 0.5


def sequence_log_probs(model: nn.Module, vocab: TargetVocab, problem: Conv2dProblem, configs: Sequence[str],
                       device: DeviceInfo) -> np.ndarray:  # fmt: skip
    """log P(config | problem) under the seq2seq, for each config key: its tokens' log-probabilities
    summed, each over its position's tokens alone (`beam.sequence_log_probs`, over a prefix tree);
    `device`: the one the configs run on (a lookahead model scores their launches there)."""
    rows = [vocab.encode(Config.parse(c))[1:-1] for c in configs]
    launch = launch_for(model, problem, device, vocab.names)
    return np.array(beam.sequence_log_probs(model, vocab, source_of(model, problem), rows, launch))


def standardized(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std; all zero where x does not vary."""
    spread = x.std()
    return (x - x.mean()) / spread if spread > 0 else np.zeros_like(x)


def blend(model: nn.Module, vocab: TargetVocab, cost: CostModel, problem: Conv2dProblem,
          weight: float = WEIGHT) -> list[tuple[str, float]]:  # fmt: skip
    """The cost model's pool for `problem`, best first, each with its blended score."""
    keys, features = cost.pool_of(problem.key())
    if not keys:
        return []
    score = weight * standardized(sequence_log_probs(model, vocab, problem, keys, cost.device)) + (
        1 - weight
    ) * standardized(cost.trees.predict(features))
    return [(keys[j], float(score[j])) for j in np.argsort(-score, kind="stable")]


def blended_ranker(model: nn.Module, vocab: TargetVocab, cost: CostModel, weight: float = WEIGHT) -> Ranker:
    """The blend as an `evaluation.Ranker`."""

    def rank(problem: DatasetProblem, k: int) -> list[str]:
        conv = problem_from_key(problem.key)
        if not isinstance(conv, Conv2dProblem):
            return []
        return [key for key, _ in blend(model, vocab, cost, conv, weight)[:k]]

    return rank
