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
        self.at = {name: names.index(name) for name in PARAMETERS}
        self.lookahead = functools.lru_cache(maxsize=4096)(self._lookahead)
        self.flat = functools.lru_cache(maxsize=4096)(self._flat)

    def features(self, prefix: tuple[int, ...]) -> list[float]:
        """The features of the config prefix `prefix` (values in `names` order)."""
        f = [0.0] * FEATURES
        at, t = self.at, len(prefix)
        if t <= at["BM"]:
            return f
        bm = prefix[at["BM"]]
        tiles_m = math.ceil(self.m / bm)
        f[0:3] = 1.0, math.log2(tiles_m), self.m / (tiles_m * bm)
        if t <= at["BN"]:
            return f
        bn = prefix[at["BN"]]
        tiles_n = math.ceil(self.n / bn)
        ctas = tiles_m * tiles_n
        f[3:8] = 1.0, math.log2(tiles_n), self.n / (tiles_n * bn), math.log2(ctas / self.sms), self._wave_fill(ctas)
        if t > at["BK"]:
            bk = prefix[at["BK"]]
            f[8:11] = 1.0, math.log2(max(self.k / bk, 1)), self.k / (math.ceil(self.k / bk) * bk)
        if t > max(at["TM"], at["TN"]):
            f[11:13] = 1.0, math.log2(bm / prefix[at["TM"]] * bn / prefix[at["TN"]])
        if t > max(at["KSPLIT"], at["BK"]):
            split = prefix[at["KSPLIT"]]
            f[13:17] = (1.0, math.log2(ctas * split / self.sms), self._wave_fill(ctas * split),
                        math.log2(max(self.k / split / prefix[at["BK"]], 1)))  # fmt: skip
        return f

    def varying(self) -> set[int]:
        """The positions whose value changes the features (at any other, every value scores the same)."""
        return set(self.at.values())

    def _wave_fill(self, ctas: int) -> float:
        return ctas / (math.ceil(ctas / self.sms) * self.sms)

    def _lookahead(self, prefix: tuple[int, ...], values: tuple[int, ...]) -> tuple[tuple[float, ...], ...]:
        """The features of `prefix` extended by each of `values` (memoized: beams share prefixes)."""
        return tuple(tuple(self.features((*prefix, v))) for v in values)

    def _flat(self, prefix: tuple[int, ...], values: tuple[int, ...]) -> array.array[float]:
        """`lookahead` as one float32 buffer, row after row (what a decoder step reads), filled from
        `features` directly: ~0.1 ms less per new shape than flattening `lookahead`'s rows."""
        flat = array.array("f")
        for v in values:
            flat.extend(self.features((*prefix, v)))
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
