"""kptune: learn, predict and measure the best tuning parameters of GPU kernels."""

from __future__ import annotations

from kptune.autotune import AutotuneResult, autotune
from kptune.device import DeviceInfo
from kptune.errors import KptuneError, ProblemError
from kptune.kernel import KernelFamily, get_family, register_family
from kptune.measurement import Measurement, Outcome, TimingSettings
from kptune.perfdb import PerfDB
from kptune.problem import Conv2dProblem, Problem, parse_miopen_driver
from kptune.space import Config, Constraint, Param, SearchSpace
from kptune.tune import TuneResult, tune

__version__ = "0.1.0"

__all__ = [
    "AutotuneResult",
    "Config",
    "Constraint",
    "Conv2dProblem",
    "DeviceInfo",
    "KernelFamily",
    "KptuneError",
    "Measurement",
    "Outcome",
    "Param",
    "PerfDB",
    "Problem",
    "ProblemError",
    "SearchSpace",
    "TimingSettings",
    "TuneResult",
    "autotune",
    "get_family",
    "parse_miopen_driver",
    "register_family",
    "tune",
]  # fmt: skip
