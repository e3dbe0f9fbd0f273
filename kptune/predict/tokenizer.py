"""Tokens: the problem as the source sentence, the config as the target sentence.

Source: one field-tagged token per categorical field (r, s, pads, strides, dilations, groups,
dtype: "r=3", "dtype=fp16"; values above 7 fall back to a power-of-two bucket token, "r=2^3"),
and two per size field (n, c, h, w, k and the derived out_h, out_w): its octave and its quarter
within the octave on a log2 scale ("c:e6" "c:q2" for c = 96). Tile choices depend on sizes
multiplicatively (how many tiles, how full the last one is), so a log scale is the natural
metric, and the vocabulary is closed: any size up to 2^31 maps onto known words, between its
neighbours, instead of becoming an unknown word. A word no training problem held keeps an untrained
embedding (a batch of 6, `n:q2`, where the corpus's batches are powers of two); replacing such words
by the nearest seen ones did not help on layers outside the corpus (`benchmarks/RESULTS.md`).

Then the sizes of the problem's GEMM view, the same two tokens each (`gemm_view`, on by default):
gemm_m = n * out_h * out_w (output pixels: the rows the tiles cover), gemm_k = (c / groups) * r * s
(the reduction length), outputs = gemm_m * k. A tile's fit depends on these products, which the
per-field tokens hold only as sums of logs that the model would have to learn to add; given them as
words, the seq2seq's performance ratios rose in every fold of network-fold CV
(`benchmarks/blend_cv.py` with and without `--no-gemm-view`; figures in `benchmarks/RESULTS.md`).
Their words follow the others in the vocabulary, so a checkpoint trained without them keeps its ids
and still loads (its `ModelConfig.gemm_view` is False).

Target: one token per tuning parameter in the space's order (the kernel family's algorithm
first), from per-position vocabularies (the parameter's values), framed by <s> and </s>.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kptune.problem import Conv2dProblem
from kptune.space import Config, SearchSpace

PAD, BOS, EOS = 0, 1, 2
SIZE_FIELDS = ("n", "c", "h", "w", "k", "out_h", "out_w")
DERIVED_FIELDS = ("gemm_m", "gemm_k", "outputs")  # the GEMM view's sizes
SMALL_FIELDS = ("r", "s", "pad_h", "pad_w", "stride_h", "stride_w", "dil_h", "dil_w", "groups")
DTYPES = ("fp32", "fp16", "bf16", "int8")
MAX_OCTAVE = 31
SMALL_EXACT = 8  # 0..7 exactly; above, a power-of-two bucket


def _source_vocab() -> list[str]:
    words = ["<pad>", "<s>", "</s>"]
    for f in SIZE_FIELDS:
        words += [f"{f}:e{e}" for e in range(MAX_OCTAVE + 1)] + [f"{f}:q{q}" for q in range(4)]
    for f in SMALL_FIELDS:
        words += [f"{f}={v}" for v in range(SMALL_EXACT)] + [f"{f}=2^{e}" for e in range(3, MAX_OCTAVE + 1)]
    words += [f"dtype={d}" for d in DTYPES]
    for f in DERIVED_FIELDS:  # last: a vocabulary without them is a prefix of this one
        words += [f"{f}:e{e}" for e in range(MAX_OCTAVE + 1)] + [f"{f}:q{q}" for q in range(4)]
    return words


SOURCE_VOCAB = _source_vocab()
SOURCE_INDEX = {w: i for i, w in enumerate(SOURCE_VOCAB)}
#: the vocabulary of a source without the GEMM view's words (checkpoints trained before them)
PLAIN_SOURCE_VOCAB_SIZE = SOURCE_VOCAB.index(f"{DERIVED_FIELDS[0]}:e0")


def source_vocab_size(gemm_view: bool) -> int:
    return len(SOURCE_VOCAB) if gemm_view else PLAIN_SOURCE_VOCAB_SIZE


def _size_tokens(field: str, value: int) -> list[str]:
    x = math.log2(max(value, 1))
    octave = min(math.floor(x), MAX_OCTAVE)
    quarter = min(int((x - octave) * 4), 3)
    return [f"{field}:e{octave}", f"{field}:q{quarter}"]


def _small_token(field: str, value: int) -> str:
    if 0 <= value < SMALL_EXACT:
        return f"{field}={value}"
    return f"{field}=2^{min(max(int(math.log2(value)), 3), MAX_OCTAVE)}"


def gemm_sizes(problem: Conv2dProblem) -> tuple[int, int, int]:
    """The problem as a GEMM: (output pixels, reduction length, outputs), the DERIVED_FIELDS."""
    m = problem.n * problem.out_h * problem.out_w
    return m, problem.c // max(problem.groups, 1) * problem.r * problem.s, m * problem.k


def source_words(problem: Conv2dProblem, gemm_view: bool = True) -> list[str]:
    words: list[str] = []
    for field in SIZE_FIELDS:
        words += _size_tokens(field, int(getattr(problem, field)))
    words += [_small_token(field, int(getattr(problem, field))) for field in SMALL_FIELDS]
    words.append(f"dtype={problem.dtype}")
    if gemm_view:
        for field, value in zip(DERIVED_FIELDS, gemm_sizes(problem), strict=True):
            words += _size_tokens(field, value)
    return words


def encode_source(problem: Conv2dProblem, gemm_view: bool = True) -> list[int]:
    """Token ids of the problem, without <s>/</s> (the encoder reads a fixed-length sentence);
    `gemm_view` as the model was trained (`ModelConfig.gemm_view`)."""
    return [SOURCE_INDEX[w] for w in source_words(problem, gemm_view)]


SOURCE_LENGTH = 2 * len(SIZE_FIELDS) + len(SMALL_FIELDS) + 1 + 2 * len(DERIVED_FIELDS)


class TargetVocab:
    """Per-position vocabularies of one search space, laid out in one id range after <pad> <s> </s>.

    Position i's tokens are `offsets[i] + j` for the j-th value of parameter i.
    """

    def __init__(self, names: Sequence[str], values: Sequence[Sequence[int]]) -> None:
        self.names = tuple(names)
        self.values = tuple(tuple(int(v) for v in vs) for vs in values)
        self.offsets: list[int] = []
        size = 3
        for vs in self.values:
            self.offsets.append(size)
            size += len(vs)
        self.size = size

    @classmethod
    def of(cls, space: SearchSpace) -> TargetVocab:
        return cls(space.names, [p.values for p in space.params])

    def to_json(self) -> dict[str, list[object]]:
        return {"names": list(self.names), "values": [list(v) for v in self.values]}

    def token(self, position: int, value: int) -> int:
        return self.offsets[position] + self.values[position].index(value)

    def value(self, position: int, token: int) -> int:
        return self.values[position][token - self.offsets[position]]

    def span(self, position: int) -> range:
        return range(self.offsets[position], self.offsets[position] + len(self.values[position]))

    def encode(self, config: Config) -> list[int]:
        """<s> + one token per parameter + </s>."""
        values = config.values()
        return [BOS, *(self.token(i, v) for i, v in enumerate(values)), EOS]

    def decode(self, tokens: Sequence[int]) -> Config:
        return Config(tuple((n, self.value(i, t)) for i, (n, t) in enumerate(zip(self.names, tokens, strict=True))))
