"""Where does each test problem's recorded winner lie for `kptune predict --rerank`? Seen winners against new ones.

    python benchmarks/winner_coverage.py --out results/

Per test problem of --dtype, with the model and its reranker (default: the shipped ones) reading the dataset's
train and validation problems as the tuned shapes (as `kptune eval --reranker` does), the recorded winner is
- among the reranked first k (a top-k hit),
- in the reranker's pool but not its first k (`rerank.pooled`: the beam's `rerank.WIDTH` candidates and the
  nearest tuned shapes' winners), or
- outside the pool. Then it is also looked for in the plain beam's first --width (as `kptune predict` searches
  it, at that width).
Per group, also the geometric means of t_best / t of the first pick, of the best of the first k and of the best in
the pool (a config a test problem did not run counts as its slowest, as in `kptune eval`). Each count is split by
whether the winner won on at least one tuned shape ("seen") or on none ("new"). The
pool's lent configs and the reranker's record features can only point to configs that tuned shapes hold. So a
new winner must come from the seq2seq's beam alone, and more tuned shapes are what turn new winners into seen
ones. Writes winner_coverage.json under --out.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from common import geomean, positive_int, provenance, write_json

#: where a winner can lie, best first
PLACES = ("top_k", "pool", "outside_pool")
#: the ratios t_best / t kept per problem: the first pick's, the best of the first k's, the best in the pool's
RATIOS = ("top1", "topk", "pool")


def tally(rows: Iterable[tuple[bool, str, int, tuple[float, float, float]]], k: int) -> dict[str, Any]:
    """Counts from one row per problem: (its winner won on a tuned shape, its place among PLACES, its rank in the
    plain beam, 0 if not found there, its RATIOS). Per group (all, seen, new): problems, each place's count, the
    top-k hit rate, of the winners outside the pool how many the plain beam holds, and each ratio's geomean."""
    groups: dict[str, collections.Counter[str]] = {g: collections.Counter() for g in ("all", "seen", "new")}
    ratios: dict[str, list[tuple[float, float, float]]] = {g: [] for g in groups}
    for seen, place, beam_rank, ratio in rows:
        if place not in PLACES:
            raise ValueError(f"unknown place {place!r}: one of {PLACES}")
        for g in ("all", "seen" if seen else "new"):
            groups[g]["problems"] += 1
            groups[g][place] += 1
            groups[g]["outside_pool_in_plain_beam"] += place == "outside_pool" and beam_rank > 0
            ratios[g].append(ratio)
    names = {"top1": "top1_ratio", "topk": f"top{k}_ratio", "pool": "pool_ratio"}
    return {g: {"problems": c["problems"], **{p: c[p] for p in PLACES},
                f"top{k}_hit": round(c["top_k"] / c["problems"], 4) if c["problems"] else None,
                "outside_pool_in_plain_beam": c["outside_pool_in_plain_beam"],
                **{names[r]: _rounded(geomean(x[i] for x in ratios[g])) for i, r in enumerate(RATIOS)}}
            for g, c in groups.items()}  # fmt: skip


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=Path("kptune/data/dataset-h200.db.gz"))
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: the shipped one)")
    ap.add_argument("--reranker", type=Path, default=None, help="default: the one beside the dataset")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("-k", type=positive_int, default=5)
    ap.add_argument("--width", type=int, default=64, help="how far down the plain beam to look for the winner")
    ap.add_argument("--problems", type=int, default=None, help="only the first N test problems")
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    from kptune import dataset as ds
    from kptune.errors import KptuneError
    from kptune.kernel import get_family
    from kptune.neighbours import TunedShapes, lent_problems, reranker_path
    from kptune.predict import rerank
    from kptune.predict.api import DEFAULT_MODEL, load_predictor, search
    from kptune.predict.threads import one_thread
    from kptune.problem import Conv2dProblem, problem_from_key

    try:
        data = ds.load(args.dataset)
        family = get_family(data.meta["family"])
        pred = load_predictor(args.model or DEFAULT_MODEL, family.name)  # the shipped one, promoted or not
        lent = lent_problems(data)
        reranker_file = args.reranker or reranker_path(args.dataset)
        reranker = rerank.Reranker.load(reranker_file, ds.content_hash(lent))
    except (KptuneError, ds.DatasetError) as exc:
        print(f"winner_coverage: {exc}", file=sys.stderr)
        return 2
    tuned = TunedShapes(lent)
    won = {p.times[0][0] for p in tuned.shapes}
    test = [p for p in data.split("test") if f",dtype={args.dtype}," in p.key and p.times][: args.problems]
    device, rows = pred.device, []
    for p in test:
        problem = problem_from_key(p.key)
        assert isinstance(problem, Conv2dProblem)
        pool = rerank.ordered_pool(pred.model, pred.vocab, family, device, tuned, reranker, problem, args.k)
        ordered = [c.config.key() for c in pool]
        place = "top_k" if p.winner in ordered[: args.k] else "pool" if p.winner in ordered else "outside_pool"
        times, best = dict(p.times), p.times[0][1]
        slowest = max(times.values())
        got = [times.get(c, slowest) for c in ordered]
        ratio = (best / got[0], best / min(got[: args.k]), best / min(got))
        beam_rank = 0
        if place == "outside_pool":
            with one_thread():
                wide = [c.config.key() for c in search(pred.model, pred.vocab, family, problem, device, args.width,
                                                       args.width)]  # fmt: skip
            beam_rank = wide.index(p.winner) + 1 if p.winner in wide else 0
        rows.append((p.winner in won, place, beam_rank, ratio))
    doc = {"benchmark": "winner_coverage", **provenance(), "dataset": str(args.dataset),
           "model": str(args.model or "shipped"), "reranker": str(reranker_file),
           "dtype": args.dtype, "k": args.k, "width": args.width, "tuned_shapes": len(tuned.shapes),
           "configs_that_won": len(won), "groups": tally(rows, args.k)}  # fmt: skip
    for group, counts in doc["groups"].items():
        print(group, counts)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "winner_coverage.json", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
