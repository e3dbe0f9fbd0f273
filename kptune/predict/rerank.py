"""The beam's candidates reranked by how fast they will run: a learned second stage.

The seq2seq's beam holds the recorded winner far more often than its order shows (width 12: in its 12
for 78% of the H200 test problems, in its first 5 for 61%; width 32: 87%, `benchmarks/RESULTS.md`). The
reranker reorders a pool of candidates, as translation reranks its n-best lists with features the first
pass lacks: the beam's WIDTH, then the winners of the LENDERS tuned shapes nearest the problem that are
valid for it and not in the beam (`pooled`: the winner of a new shape is often a neighbour's, which the
model did not propose). Boosted regression trees fit to order each pool fastest first (`lambdarank`:
LambdaMART; scikit-learn to fit, `costmodel.Trees` to predict, no pickle) score each candidate from
- its place in the pool, its log-probability and its gap to the first's (a lent config is not scored by
  the seq2seq, which costs a decode: it ranks at LENT_LOG_PROB, and a flag says it was lent);
- what it did on the NEAR nearest tuned shapes (`costmodel.neighbour_record`: mean, max and nearest log
  ratio, how often stored), read for the candidates alone (`neighbours.TunedShapes.log_ratios_of`), and
  the nearness rank of the nearest of the LENDERS on which it won (LENDERS: none);
- the problem's sizes and the config's values and launch (the cost model's own features).
So it needs the tuned shapes beside the dataset (`neighbours.Lender`), not the cost model: the cost
model's score and pool rank added nothing in network-fold CV (top 1 0.9449 with them, 0.9451 with the
record read directly, `benchmarks/RESULTS.md`), and building its pool took ~25 ms of ~30 a prediction.
Why LambdaMART rather than a regressor of each candidate's place within its beam (format 2): see `lambdarank`.

Fit out of fold (`fit`): a model's log-probabilities on its own train problems are overconfident, so
the trees learn from problems the model never saw. The lent problems (train and validation)
are grouped by network into FOLDS folds; for each fold the seq2seq is trained as `kptune retrain`
trains its candidate (train + validation, fixed epochs) on the other folds, which are also the tuned
shapes it reads, and ranks the fold's fp32 problems (`fitted`). A config outside a problem's stored fastest
counts as the slowest stored one, as `evaluation.scores` counts it. Fit on fp32 alone, it orders fp16 problems
too (`reranked`): the dataset holds too few fp16 problems to fit on, and on them, in the same network-fold CV,
the fp32-fit trees are ahead of the beam's own order (`benchmarks/rerank_pool_cv.py --score-dtype fp16`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kptune import dataset as ds
from kptune.errors import KptuneError
from kptune.predict import lambdarank
from kptune.predict.beam import WIDTH as PLAIN_WIDTH
from kptune.predict.beam import Candidate
from kptune.predict.costmodel import (
    NEAR,
    Trees,
    config_features,
    load_trees,
    neighbour_record,
    problem_features,
    read_meta,
    save_trees,
)
from kptune.problem import Conv2dProblem, problem_from_key
from kptune.space import Config, SearchSpace, completer

if TYPE_CHECKING:
    from kptune.device import DeviceInfo
    from kptune.neighbours import Lender, TunedShapes
    from kptune.predict.evaluation import Ranker
    from kptune.predict.models import ModelConfig
    from kptune.predict.training import TrainResult

# WIDTH and LENDERS, in network-fold CV over 1,097 problems (top 1, best of 5, top-5 hit;
# `benchmarks/rerank_pool_cv.py`), shapes near by their GEMM (`evaluation.point`): 12 and 48 0.9631, 0.9825, 68.4%
# (seed 1's seq2seqs: 0.9600, 0.9818, 68.2%); 16 and 32 0.9635, 0.9811, 67.9% (0.9593, 0.9808, 67.1%); 16 and 48
# 0.9622, 0.9820, 68.5%; 16 and 16 0.9619, 0.9801, 67.5%; 12 and 16 0.9585, 0.9804, 66.3%. 12 and 48: the plain
# beam's width, so no wider decode, and a smaller pool. (By sizes, before: 16 and 32 0.9556, 0.9763, 64.0%; 24
# and 16 0.9545, 0.9758, 64.1%; 12 and 16 0.9543, 0.9730, 61.4%; no lenders at 24 0.9514, 0.9698, 60.7%.)
#: the beam's candidates the reranker reorders
WIDTH = 12
#: the nearest tuned shapes whose winners join them
LENDERS = 48
#: the log-probability a lent config is ranked with, below any beam's (scoring it costs a decode; in CV,
#: with its own log-probability: top 1 0.9559, best of 5 0.9761, hit 63.6%)
LENT_LOG_PROB = -40.0
#: folds of networks for the out-of-fold fit
FOLDS = 5
FORMAT = "kptune-reranker"
#: 2: the neighbours' record of each candidate in place of the cost model's score and pool rank, and the
#: candidates' places within the beam learnt in place of their log ratios; 3: LambdaMART (`lambdarank`) in
#: place of a regressor of places, on float32 features (as scikit-learn's trees split them); 4: the pool
#: (`pooled`): the beam and the nearest tuned shapes' winners, with the lent flag and the winners' nearness; 5:
#: shapes near by their implicit GEMM (`evaluation.point`), so a format-4 file's trees read other neighbourhoods
FORMAT_VERSION = 5
#: the LambdaMART fit's settings
PARAMS = lambdarank.Params()


#: the dtype whose problems the reranker is fit on: the dataset's other dtype, fp16, has ~5% of its problems
FIT_DTYPE = "fp32"
#: the dtypes whose beams `kptune predict --rerank` reorders. fp16 by the fp32-fit trees: in network-fold CV on
#: the 54 lent fp16 problems (`benchmarks/rerank_pool_cv.py --score-dtype fp16`) top 1 0.876 -> 0.888, best
#: of 5 0.897 -> 0.919, top-5 hit 9.3% -> 14.8% over the beam's order (`benchmarks/RESULTS.md`)
RERANKED_DTYPES = ("fp32", "fp16")


def fitted(problem: Conv2dProblem) -> bool:
    """Whether the reranker is fit on this problem's pool (a lent problem of FIT_DTYPE)."""
    return problem.dtype == FIT_DTYPE


def reranked(problem: Conv2dProblem) -> bool:
    """Whether the reranker reorders this problem's beam (RERANKED_DTYPES)."""
    return problem.dtype in RERANKED_DTYPES


def beam_size(problem: Conv2dProblem, k: int, width: int) -> tuple[int, int]:
    """(candidates, width) of the beam `kptune predict --rerank` searches for `problem` where the plain beam
    is (k, width): at least WIDTH each where the reranker reorders it, else the plain beam's."""
    return (max(k, WIDTH), max(width, WIDTH)) if reranked(problem) else (k, width)


def pooled(problem: Conv2dProblem, found: Sequence[Candidate], tuned: TunedShapes, device: DeviceInfo,
           space: SearchSpace, near: int = NEAR,
           lenders: int = LENDERS) -> tuple[list[Candidate], np.ndarray]:  # fmt: skip
    """The pool the reranker orders: the beam's candidates `found`, then the winners of the `lenders` tuned
    shapes nearest `problem` that are valid for it and not among them, nearest first (each at LENT_LOG_PROB);
    and their feature rows (`features`)."""
    if not tuned.shapes:
        raise KptuneError("the reranker reads the tuned shapes, and there are none")
    nearest = tuned.nearest(problem, near)
    won = winners(tuned, nearest, lenders)
    keys = [c.config.key() for c in found]
    have = set(keys)
    valid = completer(space, problem, device).completable
    lent = [i for i in (tuned.index[key] for key in won if key not in have) if valid(tuned.values[i])]
    pool = [*found, *(Candidate(tuned.configs[i], LENT_LOG_PROB) for i in lent)]
    keys += [tuned.configs[i].key() for i in lent]
    return pool, features(problem, pool, len(found), tuned, device, nearest, won, keys, lenders)


def winners(tuned: TunedShapes, nearest: np.ndarray, lenders: int = LENDERS) -> dict[str, int]:
    """Each config that won on one of the first `lenders` of `nearest`: the rank of the nearest such shape."""
    won: dict[str, int] = {}
    for rank, i in enumerate(nearest[:lenders]):
        won.setdefault(tuned.shapes[i].times[0][0], rank)
    return won


def features(problem: Conv2dProblem, pool: Sequence[Candidate], beam: int, tuned: TunedShapes, device: DeviceInfo,
             nearest: np.ndarray, won: dict[str, int], keys: Sequence[str], lenders: int) -> np.ndarray:  # fmt: skip
    """One row per candidate of `pool` (its first `beam` from the beam, the rest lent; `keys` their config
    keys), read on the tuned shapes `nearest` (and `won`: `winners` of the first `lenders`): see the module
    docstring."""
    ratio, stored = tuned.log_ratios_of(nearest, keys)
    record = neighbour_record(ratio, stored).tolist()  # Python floats: a row of NumPy scalars converts slowly
    shape = problem_features(problem)
    first = pool[0].log_prob if pool else 0.0
    rows = [[i, c.log_prob, c.log_prob - first, *record[i], *shape, *config_features(problem, c.config, device),
             won.get(keys[i], lenders), float(i >= beam)] for i, c in enumerate(pool)]  # fmt: skip
    return np.array(rows, dtype=np.float32)  # scikit-learn's trees split float32: the trees see what they were fit on


@dataclasses.dataclass(frozen=True)
class Reranker:
    """The fitted trees; `order` ranks a beam's pool (`pooled`) by their score."""

    trees: Trees
    meta: dict[str, Any]

    def order(self, problem: Conv2dProblem, candidates: Sequence[Candidate], tuned: TunedShapes,
              device: DeviceInfo, space: SearchSpace) -> list[Candidate]:  # fmt: skip
        """The pool of the beam `candidates` (`pooled`) fastest first by the trees (ties keep the pool's
        order); the beam's order where the reranker does not apply (`reranked`) or there is no beam."""
        if not candidates or not reranked(problem):
            return list(candidates)
        pool, x = pooled(problem, candidates, tuned, device, space, int(self.meta["near"]))
        predicted = self.trees.predict(x)
        return [pool[j] for j in np.argsort(-predicted, kind="stable")]

    def save(self, path: Path) -> None:
        save_trees(path, self.trees, {**self.meta, "format": FORMAT, "format_version": FORMAT_VERSION})

    @classmethod
    def load(cls, path: Path, dataset_hash: str | None = None) -> Reranker:
        """A saved reranker; CostModelError if the file is not one, or (with `dataset_hash`) was fit on
        other data."""
        meta = read_meta(path, FORMAT, FORMAT_VERSION, ("near", "baseline", "depth"), "reranker", dataset_hash,
                         refit="kptune dataset reranker DATASET")  # fmt: skip
        return cls(load_trees(path, meta, "reranker"), meta)


def ordered_pool(model: Any, vocab: Any, family: Any, device: DeviceInfo, tuned: TunedShapes, reranker: Reranker,
                 problem: Conv2dProblem, k: int) -> list[Candidate]:  # fmt: skip
    """The whole pool of `problem`'s beam ordered by `reranker`, as `kptune predict --rerank` orders it for k
    candidates (its picks are the first k)."""
    from kptune.predict.api import search
    from kptune.predict.threads import one_thread

    with one_thread():
        found = search(model, vocab, family, problem, device, *beam_size(problem, k, PLAIN_WIDTH))
    return reranker.order(problem, found, tuned, device, family.space)


def ranker(model: Any, vocab: Any, family: Any, device: DeviceInfo, tuned: TunedShapes, reranker: Reranker,
           lender: Lender | None = None) -> Ranker:  # fmt: skip
    """The beam's pool ordered by `reranker` as `kptune predict --rerank` orders it, as an `evaluation.Ranker`;
    with `lender`, a far shape's places given to its cost model as `predict --rerank` gives them (`far_mixed`)."""

    def rank(problem: ds.DatasetProblem, k: int) -> list[str]:
        conv = problem_from_key(problem.key)
        assert isinstance(conv, Conv2dProblem)
        pool = ordered_pool(model, vocab, family, device, tuned, reranker, conv, k)
        return [c.config.key() for c in (far_mixed(conv, pool, k, lender) if lender is not None else pool[:k])]

    return rank


def far_mixed(problem: Conv2dProblem, reranked: list[Candidate], k: int, lender: Lender) -> list[Candidate]:
    """The first k of the pool `reranked`; but where `problem` lies far from every tuned shape of `lender`
    (`TunedShapes.far`), its cost model's first pick first, then the reranked ones not above it, and (k >= 2) the
    last place the cost model's first pick not above that: far from the tuned shapes the reranker's picks miss the
    fastest more often, and the cost model's first picks do better (`benchmarks/RESULTS.md`; ~17 ms more). A pick
    from the pool keeps its log-probability; another gets LENT_LOG_PROB (`kptune predict` scores it)."""
    if not reranked or lender.cost is None or not lender.far(problem):
        return reranked[:k]
    ranked = lender.rank_neighbours(problem, k + 1)
    if not ranked:
        return reranked[:k]
    proposed = {c.config.key(): c for c in reranked}
    keys = [ranked[0], *[c.config.key() for c in reranked if c.config.key() != ranked[0]][: max(k - 2, 0)]]
    if k >= 2:
        rest = [key for key in ranked if key not in keys] or [c.config.key() for c in reranked if c.config.key()
                                                               not in keys]  # fmt: skip
        keys += rest[:1]
    return [proposed.get(key, Candidate(Config.parse(key), LENT_LOG_PROB)) for key in keys]


def network_folds(problems: Sequence[ds.DatasetProblem], folds: int = FOLDS) -> dict[str, int]:
    """Each network's fold: networks by their problem count, largest first, each to the smallest fold so far."""
    count = collections.Counter(p.networks[0] if p.networks else "" for p in problems)
    load, fold = [0] * folds, {}
    for net, n in sorted(count.items(), key=lambda kv: (-kv[1], kv[0])):
        fold[net] = load.index(min(load))
        load[fold[net]] += n
    return fold


def problem_folds(problems: Sequence[ds.DatasetProblem], folds: int = FOLDS) -> dict[str, int]:
    """Each problem's fold (by key): its first network's (`network_folds`)."""
    fold = network_folds(problems, folds)
    return {p.key: fold[p.networks[0] if p.networks else ""] for p in problems}


Rows = list[tuple[str, np.ndarray, np.ndarray]]


def out_of_fold_rows(data: ds.Dataset, cfg: ModelConfig, folds: int = FOLDS,
                     log: Callable[[str], None] = lambda s: None) -> Rows:  # fmt: skip
    """(problem key, feature rows, targets) of every lent fp32 problem, each ranked by a seq2seq trained on
    the other folds, which are the tuned shapes it reads (see the module docstring)."""
    from kptune.device import DeviceInfo
    from kptune.kernel import get_family
    from kptune.neighbours import TunedShapes, lent_problems
    from kptune.predict.api import search
    from kptune.predict.threads import one_thread

    family = get_family(data.meta["family"])
    device = DeviceInfo(**data.meta["device_limits"])
    lent = lent_problems(data)
    fold_of = problem_folds(lent, folds)
    fold = lambda p: fold_of[p.key]  # noqa: E731
    out = []
    for f in range(folds):
        held = [p for p in lent if fold(p) == f and fitted(problem_from_key(p.key))]  # type: ignore[arg-type]
        rest = [p for p in lent if fold(p) != f]
        if not held or not rest:
            continue
        log(f"reranker fold {f + 1}/{folds}: {len(rest)} problems to fit on, {len(held)} fp32 to rank")
        result = train_fold(data, rest, cfg, log)
        tuned = TunedShapes(rest)
        for p in held:
            problem = problem_from_key(p.key)
            assert isinstance(problem, Conv2dProblem)
            with one_thread():
                found = search(result.model, result.vocab, family, problem, device, WIDTH, WIDTH)
            if not found:
                continue
            times = dict(p.times)
            slowest, best = max(times.values()), p.times[0][1]
            pool, x = pooled(problem, found, tuned, device, family.space)
            targets = [math.log(best / times.get(c.config.key(), slowest)) for c in pool]
            out.append((p.key, x, np.array(targets)))
    return out


def train_fold(data: ds.Dataset, rest: Sequence[ds.DatasetProblem], cfg: ModelConfig,
               log: Callable[[str], None] = lambda s: None) -> TrainResult:  # fmt: skip
    """A fold's seq2seq: trained on the other folds' problems `rest` of `data` with `cfg` for its fixed epochs,
    as `kptune retrain` trains its candidate (no early stop)."""
    from kptune.predict.training import train

    return train(ds.Dataset(data.meta, tuple(rest)), dataclasses.replace(cfg, early_stop=False), log)


def fit(data: ds.Dataset, cfg: ModelConfig, folds: int = FOLDS,
        log: Callable[[str], None] = lambda s: None) -> Reranker:  # fmt: skip
    """A reranker fit out of fold on a dataset's lent problems (`out_of_fold_rows`), training each fold's
    seq2seq with `cfg` (fixed epochs)."""
    from kptune.neighbours import lent_problems

    meta = {"device": data.meta["device"], "family": data.meta["family"], "source_hash": data.meta["source_hash"],
            "dataset_hash": ds.content_hash(lent_problems(data)), "folds": folds, "epochs": cfg.epochs,
            "seed": cfg.seed}  # fmt: skip
    return fit_rows(out_of_fold_rows(data, cfg, folds, log), meta, cfg.seed)


def fit_rows(rows: Rows, meta: dict[str, Any], seed: int = 0, params: lambdarank.Params = PARAMS) -> Reranker:
    """Trees fit on `rows` (`out_of_fold_rows`) to order each beam fastest first (`lambdarank`); `meta` goes
    into its file's header."""
    if not rows:
        raise KptuneError("the reranker has nothing to learn from: no lent fp32 problem outside a fold")
    trees = lambdarank.fit([(x, y) for _, x, y in rows], params, seed)
    return Reranker(trees, {"near": NEAR, **meta, "problems": len(rows), "lambdarank": dataclasses.asdict(params)})
