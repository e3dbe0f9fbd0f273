"""Problems: what a kernel computes, independent of how it is tuned.

A problem is a frozen dataclass of named integer (or short string) fields with a
canonical key string. `Conv2dProblem` is the built-in one; another kernel family
brings its own subclass of `Problem` (see `kptune.kernel.KernelFamily`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex
import types
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from kptune.errors import ProblemError

#: Largest element count of one tensor: kernels index with 32-bit ints.
MAX_TENSOR_ELEMENTS = 2**31 - 1

_PROBLEM_TYPES: dict[str, type[Problem]] = {}


@dataclasses.dataclass(frozen=True)
class Problem:
    """Base class of every problem type: subclasses are frozen dataclasses."""

    kind: ClassVar[str] = "problem"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _PROBLEM_TYPES[cls.kind] = cls

    def fields(self) -> dict[str, int | str]:
        """The problem's fields in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def key(self) -> str:
        """Canonical key: the same problem always gives the same string."""
        body = ",".join(f"{k}={v}" for k, v in self.fields().items())
        return f"{self.kind}:{body}"

    def derived(self) -> Mapping[str, int]:
        """Quantities computed from the fields that constraints may read."""
        return {}

    def flops(self) -> float:
        """Useful floating-point operations of one run (for TFLOP/s)."""
        return 0.0

    def device_bytes(self) -> int:
        """Device memory one measurement needs at the least (0: unknown)."""
        return 0

    def tflops(self, time_ms: float | None) -> float | None:
        """TFLOP/s of one run taking `time_ms`; None without a time."""
        return self.flops() / (time_ms * 1e-3) / 1e12 if time_ms else None

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> Self:
        """Build from a field dict, converting and validating every value."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ProblemError(f"unknown key(s) {', '.join(unknown)} for {cls.kind}; known: {', '.join(names)}")
        converted: dict[str, Any] = {}
        for name, raw in values.items():
            converted[name] = _convert(name, raw, names[name])
        try:
            return cls(**converted)
        except TypeError as exc:  # a required field is missing
            missing = [
                n
                for n, f in names.items()
                if n not in converted and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ]
            raise ProblemError(f"missing key(s) {', '.join(missing)} for {cls.kind}") from exc

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse "a=1,b=2"; subclasses add aliases by overriding `aliases`."""
        return cls.from_fields(cls.expand_aliases(parse_key_values(text)))

    @classmethod
    def expand_aliases(cls, values: dict[str, str]) -> dict[str, str]:
        """Map shorthand keys onto fields; the base class has none."""
        return values


def problem_type(kind: str) -> type[Problem]:
    """The registered problem class for a kind (as stored in keys and the db)."""
    try:
        return _PROBLEM_TYPES[kind]
    except KeyError:
        raise ProblemError(f"unknown problem kind {kind!r}") from None


def problem_from_key(key: str) -> Problem:
    """Inverse of `Problem.key()`."""
    kind, sep, body = key.partition(":")
    if not sep:
        raise ProblemError(f"not a problem key: {key!r}")
    return problem_type(kind).parse(body)


#: between two items of a shape: a comma, or spaces (tabs) with no "=" beside them ("n=1 c=3", but "n = 1" is one
#: item; other whitespace, a newline, stays in the item, which an error then echoes)
_ITEM_SEP = re.compile(r"\s*,\s*|(?<![=\s])[ \t]+(?![=\s])")


def parse_key_values(text: str) -> dict[str, str]:
    """Split "a=1, b = 2" (or "a=1 b=2") into {"a": "1", "b": "2"}; duplicates are an error."""
    if not isinstance(text, str) or not text.strip():
        raise ProblemError("empty shape: expected key=value pairs such as n=1,c=3,...")
    out: dict[str, str] = {}
    for item in _ITEM_SEP.split(text.strip()):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key or not value:
            raise ProblemError(f"malformed item {item!r}: expected key=value")
        if key in out:
            raise ProblemError(f"key {key!r} given twice")
        out[key] = value
    if not out:
        raise ProblemError("empty shape: expected key=value pairs such as n=1,c=3,...")
    return out


_INT_RE = re.compile(r"[+-]?\d{1,12}")


def _convert(name: str, raw: Any, field: dataclasses.Field[Any]) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if kind == "int":
        if isinstance(raw, bool):
            raise ProblemError(f"{name} must be an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str) and _INT_RE.fullmatch(raw.strip()):
            return int(raw.strip())  # str.strip knows more whitespace than int() (e.g. \x1d): found by fuzzing
        raise ProblemError(f"{name} must be an integer, got {str(raw)[:40]!r}")
    return str(raw).strip().lower() if isinstance(raw, str) else raw


@dataclasses.dataclass(frozen=True)
class Conv2dProblem(Problem):
    """A 2-D convolution, NCHW, forward: y[n,k,p,q] = sum_c,r,s x[n,c,h,w] * w[k,c,r,s].

    Supported today: groups=1, dtype fp32 or fp16 (fp16 storage, fp32 accumulation),
    layout NCHW, direction fwd; anything
    else is refused with a message rather than tuned wrongly.
    """

    kind: ClassVar[str] = "conv2d"
    SUPPORTED_DTYPES: ClassVar[tuple[str, ...]] = ("fp32", "fp16")

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    pad_h: int = 0
    pad_w: int = 0
    stride_h: int = 1
    stride_w: int = 1
    dil_h: int = 1
    dil_w: int = 1
    groups: int = 1
    dtype: str = "fp32"
    layout: str = "nchw"
    direction: str = "fwd"

    def __post_init__(self) -> None:
        for name in ("n", "c", "h", "w", "k", "r", "s", "stride_h", "stride_w", "dil_h", "dil_w"):
            if getattr(self, name) < 1:
                raise ProblemError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pad_h", "pad_w"):
            if getattr(self, name) < 0:
                raise ProblemError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.groups < 1:
            raise ProblemError(f"groups must be >= 1, got {self.groups}")
        if self.groups != 1:
            raise ProblemError(f"groups={self.groups} is not supported yet (only groups=1)")
        if self.dtype not in self.SUPPORTED_DTYPES:
            raise ProblemError(
                f"dtype {self.dtype!r} is not supported yet (supported: {', '.join(self.SUPPORTED_DTYPES)})"
            )
        if self.layout != "nchw":
            raise ProblemError(f"layout {self.layout!r} is not supported yet (only nchw)")
        if self.direction != "fwd":
            raise ProblemError(f"direction {self.direction!r} is not supported yet (only fwd)")
        if self.out_h < 1 or self.out_w < 1:
            raise ProblemError(
                f"output size {self.out_h}x{self.out_w} is below 1: the filter "
                f"(dilated {self.dil_h * (self.r - 1) + 1}x{self.dil_w * (self.s - 1) + 1}) "
                f"does not fit the padded input {self.h + 2 * self.pad_h}x{self.w + 2 * self.pad_w}"
            )
        for tensor, count in (
            ("input", self.n * self.c * self.h * self.w),
            ("filter", self.k * self.c * self.r * self.s),
            ("output", self.n * self.k * self.out_h * self.out_w),
        ):
            if count > MAX_TENSOR_ELEMENTS:
                raise ProblemError(f"{tensor} tensor has {count} elements, above the supported {MAX_TENSOR_ELEMENTS}")

    @property
    def out_h(self) -> int:
        return (self.h + 2 * self.pad_h - self.dil_h * (self.r - 1) - 1) // self.stride_h + 1

    @property
    def out_w(self) -> int:
        return (self.w + 2 * self.pad_w - self.dil_w * (self.s - 1) - 1) // self.stride_w + 1

    def derived(self) -> Mapping[str, int]:
        """The implicit GEMM view: M output pixels x N output channels, reduced over K (read-only: computed once
        per problem, a prediction asks ~60 times)."""
        return types.MappingProxyType(self._derived)

    @functools.cached_property
    def _derived(self) -> dict[str, int]:
        return {
            "GEMM_M": self.n * self.out_h * self.out_w,
            "GEMM_N": self.k,
            "GEMM_K": self.c * self.r * self.s,
            "OUT_H": self.out_h,
            "OUT_W": self.out_w,
        }

    def flops(self) -> float:
        return 2.0 * self.n * self.k * self.out_h * self.out_w * self.c * self.r * self.s

    def device_bytes(self) -> int:
        """Input, filter and output in the dtype, plus the output's float64 reference kept for verification."""
        item = 2 if self.dtype == "fp16" else 4
        out = self.n * self.k * self.out_h * self.out_w
        return item * (self.n * self.c * self.h * self.w + self.k * self.c * self.r * self.s + out) + 8 * out

    @classmethod
    def expand_aliases(cls, values: dict[str, str]) -> dict[str, str]:
        out = dict(values)
        for short, pair in (
            ("pad", ("pad_h", "pad_w")),
            ("stride", ("stride_h", "stride_w")),
            ("dilation", ("dil_h", "dil_w")),
            ("dil", ("dil_h", "dil_w")),
        ):
            if short in out:
                value = out.pop(short)
                for name in pair:
                    if name in values:
                        raise ProblemError(f"give either {short} or {name}, not both")
                    out[name] = value
        for alias, name in (("g", "groups"), ("u", "stride_h"), ("v", "stride_w")):
            if alias in out:
                if name in out:
                    raise ProblemError(f"give either {alias} or {name}, not both")
                out[name] = out.pop(alias)
        return out


# MIOpenDriver `conv` arguments: short flag, long flag, field (None: accepted and ignored).
_MIOPEN_FLAGS: tuple[tuple[str, str, str | None], ...] = (
    ("-n", "--batchsize", "n"),
    ("-c", "--in_channels", "c"),
    ("-H", "--in_h", "h"),
    ("-W", "--in_w", "w"),
    ("-k", "--out_channels", "k"),
    ("-y", "--fil_h", "r"),
    ("-x", "--fil_w", "s"),
    ("-p", "--pad_h", "pad_h"),
    ("-q", "--pad_w", "pad_w"),
    ("-u", "--conv_stride_h", "stride_h"),
    ("-v", "--conv_stride_w", "stride_w"),
    ("-l", "--dilation_h", "dil_h"),
    ("-j", "--dilation_w", "dil_w"),
    ("-g", "--group_count", "groups"),
    ("-F", "--forw", "forw"),
    ("-m", "--mode", "mode"),
    ("-I", "--in_layout", "in_layout"),
    ("-O", "--out_layout", "out_layout"),
    ("-f", "--fil_layout", "fil_layout"),
    ("-t", "--time", None),
    ("-V", "--verify", None),
    ("-i", "--iter", None),
    ("-s", "--search", None),
    ("-w", "--wall", None),
    ("-b", "--bias", None),
    ("-P", "--printconv", None),
    ("-z", "--pad_mode", None),
)
_MIOPEN_COMMANDS = {"conv": "fp32", "convfp16": "fp16", "convbfp16": "bf16", "convint8": "int8"}


def parse_miopen_driver(args: str | list[str]) -> Conv2dProblem:
    """Parse MIOpenDriver arguments, e.g. "conv -n 32 -c 64 -H 56 -W 56 -k 64 -y 3 -x 3 -p 1 -q 1"."""
    try:
        tokens = shlex.split(args) if isinstance(args, str) else list(args)
    except ValueError as exc:
        raise ProblemError(f"cannot split MIOpenDriver arguments: {exc}") from None
    if tokens and tokens[0].endswith("MIOpenDriver"):
        tokens = tokens[1:]
    if not tokens or tokens[0] not in _MIOPEN_COMMANDS:
        raise ProblemError(f"MIOpenDriver arguments must start with one of {', '.join(_MIOPEN_COMMANDS)}")
    dtype = _MIOPEN_COMMANDS[tokens[0]]
    by_flag = {}
    for short, long, name in _MIOPEN_FLAGS:
        by_flag[short] = name
        by_flag[long] = name
    values: dict[str, str] = {}
    i = 1
    while i < len(tokens):
        flag = tokens[i]
        value: str | None
        if flag.startswith("--") and "=" in flag:
            flag, value = flag.split("=", 1)
        else:
            value = tokens[i + 1] if i + 1 < len(tokens) else None
            i += 1
        i += 1
        if flag not in by_flag:
            raise ProblemError(f"unknown MIOpenDriver option {flag!r}")
        if value is None:
            raise ProblemError(f"MIOpenDriver option {flag} needs a value")
        name = by_flag[flag]
        if name is None:
            continue
        if name in values:
            raise ProblemError(f"MIOpenDriver option {flag} given twice")
        values[name] = value
    forw = values.pop("forw", "1")
    if forw != "1":
        raise ProblemError(f"-F {forw}: only the forward direction (-F 1) is supported yet")
    mode = values.pop("mode", "conv")
    if mode != "conv":
        raise ProblemError(f"-m {mode}: only convolution mode (conv) is supported")
    layouts = {values.pop(k, "NCHW").upper() for k in ("in_layout", "out_layout", "fil_layout")}
    if layouts != {"NCHW"}:
        raise ProblemError(f"layouts {sorted(layouts)}: only NCHW is supported yet")
    values["dtype"] = dtype
    return Conv2dProblem.from_fields(values)


def parse_problem(shape: str | None = None, miopen: str | None = None) -> Conv2dProblem:
    """One entry point for the CLI: a --shape string or MIOpenDriver arguments."""
    if (shape is None) == (miopen is None):
        raise ProblemError("give exactly one of --shape or --miopen")
    if shape is not None:
        return Conv2dProblem.parse(shape)
    assert miopen is not None
    return parse_miopen_driver(miopen)
