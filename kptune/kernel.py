"""Kernel families: a kernel source, its search space, launch geometry and reference.

Registering a `KernelFamily` from Python is all another kernel needs to get the
whole pipeline (space, compile, verify, time, perf db, CLI via --kernel). The
callables must be module-level functions so that the measuring worker process
can receive the family.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import tomllib
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from kptune.errors import KptuneError
from kptune.problem import Problem
from kptune.space import Config, SearchSpace

Dim3 = tuple[int, int, int]


def kernels_dir() -> Path:
    """Where kernel sources and space files live (the repo's kernels/, or the installed copy)."""
    repo = Path(__file__).resolve().parent.parent / "kernels"
    if (repo / "dialect.h").is_file():
        return repo
    return Path(str(resources.files("kptune_kernels")))


def read_kernel_file(name: str) -> str:
    return (kernels_dir() / name).read_text()


def load_space(name: str) -> SearchSpace:
    """Load a search space file (TOML) from kernels/."""
    with (kernels_dir() / name).open("rb") as f:
        return SearchSpace.from_dict(tomllib.load(f))


@dataclasses.dataclass(frozen=True)
class KernelFamily:
    """Everything kptune needs to tune one kernel.

    source:      kernel text in the portable dialect (kernels/dialect.h is prepended)
    entry:       the kernel function's name
    geometry:    (problem, config) -> (groups, local size), each 3-D
    make_inputs: (problem, rng) -> input arrays by buffer name
    output:      (problem) -> (buffer name, shape, dtype) of the one output
    buffers:     buffer names in kernel argument order (inputs and the output)
    scalars:     (problem) -> int arguments that follow the buffers
    reference:   (problem, inputs) -> the expected output in float64
    array_inputs, array_reference: (problem, seed, xp) -> inputs and (problem, inputs, xp) -> the
                 reference, with array module xp (NumPy or CuPy), so that a backend with device arrays
                 makes the problem on the device (optional; both or neither)
    tolerance:   largest accepted ||out - ref|| / ||ref||, a number or (problem) -> number
    problem_defines: (problem, config) -> extra compile-time defines (e.g. the element type)
    zeroed_output: (config) -> whether the output must be zeroed before each launch (a kernel
                 that accumulates into it, e.g. split-K); the memset is then timed with it
    """

    name: str
    problem_type: type[Problem]
    source: str
    entry: str
    space: SearchSpace
    geometry: Callable[[Any, Config], tuple[Dim3, Dim3]]
    make_inputs: Callable[[Any, np.random.Generator], dict[str, np.ndarray]]
    output: Callable[[Any], tuple[str, tuple[int, ...], np.dtype[Any]]]
    buffers: tuple[str, ...]
    scalars: Callable[[Any], tuple[int, ...]]
    reference: Callable[[Any, Mapping[str, np.ndarray]], np.ndarray]
    tolerance: float | Callable[[Any], float] = 1e-4
    problem_defines: Callable[[Any, Config], dict[str, int]] | None = None
    zeroed_output: Callable[[Config], bool] | None = None
    array_inputs: Callable[[Any, int, Any], dict[str, Any]] | None = None
    array_reference: Callable[[Any, Mapping[str, Any], Any], Any] | None = None

    def defines(self, problem: Problem, config: Config) -> dict[str, int]:
        """Everything the compiler is given: the config, plus what the problem fixes."""
        extra = self.problem_defines(problem, config) if self.problem_defines else {}
        return {**config.as_dict(), **extra}

    def needs_zeroed_output(self, config: Config) -> bool:
        return bool(self.zeroed_output and self.zeroed_output(config))

    def tolerance_for(self, problem: Problem) -> float:
        return self.tolerance(problem) if callable(self.tolerance) else self.tolerance

    @functools.cached_property
    def full_source(self) -> str:
        """What the compilers see: the dialect header, then the kernel (read once)."""
        return read_kernel_file("dialect.h") + "\n" + self.source

    @functools.cached_property
    def source_hash(self) -> str:
        """Identifies the kernel's code in caches and the perf db."""
        return hashlib.sha256(self.full_source.encode()).hexdigest()[:16]

    def accepts(self, problem: Problem) -> bool:
        return isinstance(problem, self.problem_type)


_FAMILIES: dict[str, KernelFamily] = {}


def register_family(family: KernelFamily, *, replace: bool = False) -> KernelFamily:
    """Make a family available to `tune()`, the CLI (--kernel) and the worker."""
    if family.name in _FAMILIES and not replace and _FAMILIES[family.name] is not family:
        raise ValueError(f"kernel family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> KernelFamily:
    import kptune.families  # noqa: F401  - registers the built-in families

    try:
        return _FAMILIES[name]
    except KeyError:
        raise KptuneError(f"unknown kernel {name!r}; known: {', '.join(sorted(_FAMILIES))}") from None
