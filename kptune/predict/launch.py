"""What a value does to the launch: features of a config prefix that the decoder scores its choices by.

The seq2seq reads the problem's sizes and writes parameter values, but how a tile size splits the
GEMM into thread blocks (CTAs), how full the last tile is and how the blocks fill the device's SMs
are products and quotients of those sizes, which a model trained on a few hundred problems learns
poorly: the seq2seq's worst picks on the H200 were tiles too large for a small GEMM, with no split
of the reduction to fill 132 SMs. `Launch` computes them exactly. When the decoder is about to
choose parameter t, `Launch.lookahead` gives, for each allowed value v, the features of the prefix
extended by v, and the model adds a learned score of them (bilinear in its state) to v's logit
(`models.LSTMTranslator`, `ModelConfig.lookahead`): a value is judged by the launch it leads to.

Features (FEATURES of them, 0 where a parameter they need is not yet chosen; implicit-GEMM
geometry, the algorithm all but a few winners use): a flag and log2 tiles and fill along the GEMM's
M (after BM) and N (after BN), with log2 CTAs per SM and the last wave's fill; log2 reduction steps
and their fill (after BK); log2 threads per CTA (after TM and TN); with the split factor (KSPLIT),
log2 CTAs per SM, the last wave's fill and log2 reduction steps per split.
"""

from __future__ import annotations

import array
import functools
import math
from collections.abc import Sequence
from typing import Any

from kptune.device import DeviceInfo
from kptune.problem import Conv2dProblem, Problem

FEATURES = 17
PARAMETERS = ("BM", "BN", "BK", "TM", "TN", "KSPLIT")


class Launch:
    """The features of one problem's config prefixes on a device with `sms` SMs (compute units), for a
    space whose parameters are `names` (in decoding order)."""

    def __init__(self, problem: Conv2dProblem, sms: int, names: Sequence[str]) -> None:
        missing = [n for n in PARAMETERS if n not in names]
        if missing:
            raise ValueError(f"launch features need parameters {', '.join(missing)}")
        derived = problem.derived()
        self.m, self.n, self.k = derived["GEMM_M"], derived["GEMM_N"], derived["GEMM_K"]
        self.sms = max(sms, 1)
        self.at = at = {name: names.index(name) for name in PARAMETERS}
        # (the position after which a block of features is set, its slice, how): each block needs the tile
        # (BM, BN) chosen, and the parameters it reads
        tile = max(at["BM"], at["BN"])
        self._blocks = [
            (at["BM"], slice(0, 3), self._tiles_m),
            (tile, slice(3, 8), self._tiles_n),
            (max(tile, at["BK"]), slice(8, 11), self._steps),
            (max(tile, at["TM"], at["TN"]), slice(11, 13), self._threads),
            (max(tile, at["KSPLIT"], at["BK"]), slice(13, 17), self._split),
        ]
        self.lookahead = functools.lru_cache(maxsize=4096)(self._lookahead)
        self._positions = sorted(at.values())
        self._flat_of = functools.lru_cache(maxsize=4096)(self._flat)

    def features(self, prefix: tuple[int, ...]) -> list[float]:
        """The features of the config prefix `prefix` (values in `names` order)."""
        f = [0.0] * FEATURES
        t = len(prefix)
        for after, cut, block in self._blocks:
            if t > after:
                f[cut] = block(prefix)
        return f

    def _tiles_m(self, prefix: tuple[int, ...]) -> tuple[float, ...]:
        bm = prefix[self.at["BM"]]
        tiles_m = math.ceil(self.m / bm)
        return 1.0, math.log2(tiles_m), self.m / (tiles_m * bm)

    def _tiles_n(self, prefix: tuple[int, ...]) -> tuple[float, ...]:
        bn = prefix[self.at["BN"]]
        tiles_n = math.ceil(self.n / bn)
        ctas = self._ctas(prefix)
        return 1.0, math.log2(tiles_n), self.n / (tiles_n * bn), math.log2(ctas / self.sms), self._wave_fill(ctas)

    def _steps(self, prefix: tuple[int, ...]) -> tuple[float, ...]:
        bk = prefix[self.at["BK"]]
        return 1.0, math.log2(max(self.k / bk, 1)), self.k / (math.ceil(self.k / bk) * bk)

    def _threads(self, prefix: tuple[int, ...]) -> tuple[float, ...]:
        at = self.at
        return 1.0, math.log2(prefix[at["BM"]] / prefix[at["TM"]] * prefix[at["BN"]] / prefix[at["TN"]])

    def _split(self, prefix: tuple[int, ...]) -> tuple[float, ...]:
        at, ctas = self.at, self._ctas(prefix)
        split = prefix[at["KSPLIT"]]
        return (1.0, math.log2(ctas * split / self.sms), self._wave_fill(ctas * split),
                math.log2(max(self.k / split / prefix[at["BK"]], 1)))  # fmt: skip

    def _ctas(self, prefix: tuple[int, ...]) -> int:
        return math.ceil(self.m / prefix[self.at["BM"]]) * math.ceil(self.n / prefix[self.at["BN"]])

    def varying(self) -> set[int]:
        """The positions whose value changes the features (at any other, every value scores the same): where a
        block of features is set. Not TM, whose block waits for TN."""
        return {after for after, _, _ in self._blocks}

    def _wave_fill(self, ctas: int) -> float:
        return ctas / (math.ceil(ctas / self.sms) * self.sms)

    def _lookahead(self, prefix: tuple[int, ...], values: tuple[int, ...]) -> tuple[tuple[float, ...], ...]:
        """The features of `prefix` extended by each of `values` (memoized: beams share prefixes)."""
        return tuple(tuple(self.features((*prefix, v))) for v in values)

    def flat(self, prefix: tuple[int, ...], values: tuple[int, ...]) -> array.array[float]:
        """`lookahead` as one float32 buffer, row after row (what a decoder step reads). Memoized by the
        values the features read (PARAMETERS'), the others zeroed: beams that differ only elsewhere (the
        algorithm, the vector width, ...) share one computation."""
        t = len(prefix)
        read = [0] * t
        for i in self._positions:
            if i >= t:
                break
            read[i] = prefix[i]
        return self._flat_of(tuple(read), values)

    def _flat(self, prefix: tuple[int, ...], values: tuple[int, ...]) -> array.array[float]:
        """`flat` of a prefix, filled from `features` directly: ~0.1 ms less per new shape than flattening
        `lookahead`'s rows."""
        t = len(prefix)
        head = self.features(prefix)  # the blocks set before position t: the same for every value
        new = [(cut, block) for after, cut, block in self._blocks if after == t]
        flat = array.array("f")
        for v in values:
            f = list(head)
            longer = (*prefix, v)
            for cut, block in new:
                f[cut] = block(longer)
            flat.extend(f)
        return flat


def launch_for(model: Any, problem: Problem, device: DeviceInfo, names: Sequence[str]) -> Launch | None:
    """The launch features `model` needs for `problem` on `device` (None for a model without lookahead);
    one `Launch` per (problem, SM count, parameters) for the last 1024, so that a problem predicted
    again reuses its memoized features."""
    if not getattr(model, "lookahead", False):
        return None
    if not isinstance(problem, Conv2dProblem):
        raise ValueError(f"launch features describe conv2d problems, not {problem.kind}")
    return _launch(problem, device.compute_units, tuple(names))


@functools.lru_cache(maxsize=1024)
def _launch(problem: Conv2dProblem, sms: int, names: tuple[str, ...]) -> Launch:
    return Launch(problem, sms, names)


def lookahead_rows(launch: Launch, values: Sequence[int], vocab_values: Sequence[Sequence[int]],
                   width: int) -> list[list[list[float]]]:  # fmt: skip
    """A target config's lookahead features at each position (teacher forcing): [positions][width]
    [FEATURES], each position's values in vocabulary order, zero-padded to `width`; zero at positions
    that do not vary (`Launch.varying`)."""
    varies, pad = launch.varying(), [0.0] * FEATURES
    rows = []
    for t, options in enumerate(vocab_values):
        found = [list(f) for f in launch.lookahead(tuple(values[:t]), tuple(options))] if t in varies else []
        rows.append(found + [pad] * (width - len(found)))
    return rows
