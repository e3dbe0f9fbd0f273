"""Conv layers drawn at random, none of them in the corpus: shapes no network list chose, to measure how the
predictor does outside the corpus (`compare_gpus.py --corpus FILE`, then `borrowed_offline.py`).

    python benchmarks/random_shapes.py --count 24 --seed 0 --max-gflop 1 --out benchmarks/random_shapes-s0.csv

Each layer is drawn from broad ranges that real CNNs span, independently of any network: batch 1 to 64
(log-uniform, any integer), input channels a multiple of 8 from 8 to 1024 (log-uniform; 1 in 10 an image
stem of 3 or 4), filters a multiple of 8 from 8 to 1024, a square input side of 7 to 224 (any integer; 1 in
10 not square), filters 1x1 (45%), 3x3 (35%), 5x5, 7x7, 2x2 or 1x3 / 3x1 shapes, stride 2 for 1 in 5
(always for 2x2), "same" padding for 17 in 20 and none otherwise. Drawn again while a layer is larger than
--max-gflop, has no output, has a tensor too large for kptune, or is a corpus problem. Written in the
corpus's CSV format (network "random", split "test"), so the tools that read the corpus read it.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from kptune.corpus import CorpusEntry, load_corpus, write_corpus
from kptune.errors import KptuneError
from kptune.problem import Conv2dProblem

FILTERS = ((1, 1), (3, 3), (5, 5), (7, 7), (2, 2), (1, 3), (3, 1))
FILTER_WEIGHTS = (45, 35, 6, 4, 4, 3, 3)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))


def draw(rng: random.Random) -> Conv2dProblem | None:
    """One layer, or None where its output would be empty or a tensor too large for kptune."""
    r, s = rng.choices(FILTERS, FILTER_WEIGHTS)[0]
    stride = 2 if (r, s) == (2, 2) or rng.random() < 0.2 else 1
    same = (r, s) != (2, 2) and rng.random() < 0.85
    c = rng.choice((3, 4)) if rng.random() < 0.1 else 8 * _log_uniform(rng, 1, 128)
    h = _log_uniform(rng, 7, 224)
    w = h if rng.random() < 0.9 else _log_uniform(rng, 7, 224)
    pad_h, pad_w = (r // 2, s // 2) if same else (0, 0)
    if (h + 2 * pad_h - r) // stride + 1 < 1 or (w + 2 * pad_w - s) // stride + 1 < 1:
        return None
    n, k = _log_uniform(rng, 1, 64), 8 * _log_uniform(rng, 1, 128)
    try:
        return Conv2dProblem(n=n, c=c, h=h, w=w, k=k, r=r, s=s, pad_h=pad_h, pad_w=pad_w, stride_h=stride,
                             stride_w=stride)  # fmt: skip
    except KptuneError:  # a tensor over kptune's size limit
        return None


def sample(count: int, seed: int, max_gflop: float, corpus: set[Conv2dProblem]) -> list[Conv2dProblem]:
    """`count` distinct layers of at most `max_gflop`, none in `corpus`, drawn with `seed`."""
    rng = random.Random(seed)
    out: dict[Conv2dProblem, None] = {}
    for _ in range(1000 * count):
        if len(out) == count:
            break
        p = draw(rng)
        if p is not None and p.flops() <= max_gflop * 1e9 and p not in corpus:
            out[p] = None
    return list(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-gflop", type=float, default=1.0)
    ap.add_argument("--out", type=Path, required=True, help="the CSV to write")
    args = ap.parse_args(argv)
    if args.count < 1 or not args.max_gflop > 0:  # (not > 0: NaN too)
        print("random_shapes: --count and --max-gflop must be positive", file=sys.stderr)
        return 2
    try:
        corpus = {e.problem for e in load_corpus()}
        shapes = sample(args.count, args.seed, args.max_gflop, corpus)
        if not shapes:
            print(f"random_shapes: no layer of at most {args.max_gflop} GFLOP drawn", file=sys.stderr)
            return 2
        write_corpus([CorpusEntry(p, ("random",), 1, "test") for p in shapes], args.out)
    except (KptuneError, OSError) as exc:
        print(f"random_shapes: {exc}", file=sys.stderr)
        return 2
    short = f", fewer than the {args.count} asked" if len(shapes) < args.count else ""
    print(f"{len(shapes)} layers (seed {args.seed}, <= {args.max_gflop} GFLOP{short}) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
