"""Search spaces: ordered tuning parameters, their values, and constraints.

A space is data. Enumerating the valid configurations of a (problem, device)
pair is a pure function; measuring lives in `kptune.runner`. Constraints are
Python expressions over the parameters (UPPER case), the problem's fields and
derived sizes, and `device` (a `DeviceInfo`), e.g. ``"BM % TM == 0"`` or
``"(BM + BN) * BK * 4 <= device.max_local_mem_bytes"``; callables work too.

`prefix_valid` answers exactly whether a prefix of values (in parameter order)
can still be completed into a valid config: the beam search masks with it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import itertools
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kptune.device import DeviceInfo
from kptune.errors import InvalidConfigError
from kptune.problem import Problem

if TYPE_CHECKING:
    from kptune.space_table import DeviceTable


def next_pow2(x: int) -> int:
    return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


_EXPR_FUNCS: dict[str, Any] = {
    "min": min,
    "max": max,
    "abs": abs,
    "next_pow2": next_pow2,
    "ceil_div": ceil_div,
    "log2": math.log2,
}


#: names a rule reads that are the same for every problem on a device (beside the parameters)
_DEVICE_NAMES = frozenset(_EXPR_FUNCS) | {"device"}

Check = Callable[[Mapping[str, Any]], bool]


@dataclasses.dataclass(frozen=True)
class Param:
    """One tuning parameter: a compile-time define with a fixed list of values."""

    name: str
    values: tuple[int, ...]
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A rule a valid config obeys. `params` are the tuning parameters it reads."""

    params: tuple[str, ...]
    check: Callable[[Mapping[str, Any]], bool]
    why: str
    expr: str = ""

    @classmethod
    def from_expr(cls, expr: str, why: str, param_names: Sequence[str]) -> Constraint:
        check = ExprCheck(expr)
        used = tuple(p for p in param_names if p in check.names)
        return cls(params=used, check=check, why=why or expr, expr=expr)


class ExprCheck:
    """A compiled constraint expression; picklable (the worker process receives spaces)."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        tree = ast.parse(expr, mode="eval")
        self.names = frozenset(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))
        bound = {n.id for c in ast.walk(tree) if isinstance(c, ast.comprehension) for n in ast.walk(c.target)
                 if isinstance(n, ast.Name)} | {a.arg for f in ast.walk(tree) if isinstance(f, ast.Lambda)
                                                for a in f.args.args}  # fmt: skip
        self.free_names = self.names - bound  # what it reads from the environment
        self._code = compile(tree, f"<constraint {expr}>", "eval")
        self._globals: dict[str, Any] = {"__builtins__": {}}  # one dict, not one per call (hot in beam search)

    def __call__(self, env: Mapping[str, Any]) -> bool:
        return bool(eval(self._code, self._globals, env))

    def __reduce__(self) -> tuple[type[ExprCheck], tuple[str]]:
        return (ExprCheck, (self.expr,))


def _fuse(constraints: Sequence[Constraint]) -> Callable[[Mapping[str, Any]], bool]:
    """One generated function checking all of `constraints` in order, the expression rules inlined:
    one call per search node instead of one eval per rule (the hot path of the beam search and of
    enumeration). An arithmetic or value error means invalid, as in `violations`."""
    exprs = [c.check for c in constraints if isinstance(c.check, ExprCheck)]
    others = tuple(c.check for c in constraints if not isinstance(c.check, ExprCheck))
    names = sorted(set().union(*(e.free_names for e in exprs)))
    body = [f"        {name} = env[{name!r}]" for name in names]
    if exprs:
        body.append(f"        if not ({' and '.join(f'({e.expr})' for e in exprs)}):\n            return False")
    if others:
        body.append("        for other in _others:\n            if not other(env):\n                return False")
    source = "def fused(env):\n    try:\n" + "\n".join([*body, "        return True"])
    source += "\n    except (_ArithmeticError, _ValueError):\n        return False\n"
    namespace: dict[str, Any] = {"__builtins__": {}, "_others": others, "_ArithmeticError": ArithmeticError,
                                 "_ValueError": ValueError}  # fmt: skip
    exec(compile(source, "<rules>", "exec"), namespace)
    return namespace["fused"]  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True, order=True)
class Config:
    """A frozen, hashable assignment of every parameter of a space."""

    items: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, values: Mapping[str, int]) -> Config:
        return cls(tuple((k, int(v)) for k, v in values.items()))

    def __getitem__(self, name: str) -> int:
        for k, v in self.items:
            if k == name:
                return v
        raise KeyError(name)

    def as_dict(self) -> dict[str, int]:
        return dict(self.items)

    def values(self) -> tuple[int, ...]:
        return tuple(v for _, v in self.items)

    def key(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.items)

    @classmethod
    def parse(cls, key: str) -> Config:
        try:
            return cls(tuple((k, int(v)) for k, v in (p.split("=") for p in key.split(","))))
        except ValueError:
            raise InvalidConfigError(f"not a config key: {key!r}") from None

    def __str__(self) -> str:
        return self.key()


class SearchSpace:
    """Ordered parameters plus constraints; see the module docstring."""

    def __init__(self, params: Sequence[Param], constraints: Sequence[Constraint] = ()) -> None:
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names in {names}")
        for c in constraints:
            unknown = set(c.params) - set(names)
            if unknown:
                raise ValueError(f"constraint {c.why!r} reads unknown parameters {unknown}")
        self.params: tuple[Param, ...] = tuple(params)
        self.names: tuple[str, ...] = tuple(names)
        self.constraints: tuple[Constraint, ...] = tuple(constraints)
        # A constraint is checked at the depth where its last parameter is bound.
        self._by_depth: list[list[Constraint]] = [[] for _ in range(len(names) + 1)]
        for c in self.constraints:
            depth = max((names.index(p) + 1 for p in c.params), default=0)
            self._by_depth[depth].append(c)
        self._checks: list[Callable[[Mapping[str, Any]], bool]] | None = None  # built on first use
        self._split: tuple[list[Check | None], list[Check | None]] | None = None

    @property
    def checks_by_depth(self) -> list[Callable[[Mapping[str, Any]], bool]]:
        """Per depth, one function checking every rule whose last parameter is bound at that depth."""
        if self._checks is None:
            self._checks = [_fuse(rules) for rules in self._by_depth]
        return self._checks

    @property
    def device_and_problem_checks_by_depth(self) -> tuple[list[Check | None], list[Check | None]]:
        """`checks_by_depth` in two halves (None where a depth has no rule): the rules that read no
        problem field (only parameters, `device` and the expression functions: their answers hold for
        every problem on a device), and the others (callables included: what they read is unknown)."""
        if self._split is None:
            free = set(self.names) | _DEVICE_NAMES
            halves: tuple[list[Check | None], list[Check | None]] = ([], [])
            for rules in self._by_depth:
                device = [c for c in rules if isinstance(c.check, ExprCheck) and c.check.free_names <= free]
                problem = [c for c in rules if c not in device]
                halves[0].append(_fuse(device) if device else None)
                halves[1].append(_fuse(problem) if problem else None)
            self._split = halves
        return self._split

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_checks": None, "_split": None}  # (generated functions do not pickle)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Build from the parsed form of a space file (see kernels/*.toml)."""
        params = [Param(p["name"], tuple(int(v) for v in p["values"]), p.get("doc", "")) for p in data["params"]]
        names = [p.name for p in params]
        constraints = [Constraint.from_expr(c["expr"], c.get("why", ""), names) for c in data.get("constraints", [])]
        return cls(params, constraints)

    @property
    def raw_size(self) -> int:
        return math.prod(len(p.values) for p in self.params)

    def raw_configs(self) -> Iterator[Config]:
        for values in itertools.product(*(p.values for p in self.params)):
            yield Config(tuple(zip(self.names, values, strict=True)))

    # -- binding to a problem and device -------------------------------------------------

    def _env(self, problem: Problem, device: DeviceInfo) -> dict[str, Any]:
        env: dict[str, Any] = dict(_EXPR_FUNCS)
        env.update(problem.fields())
        env.update(problem.derived())
        env["device"] = device
        return env

    def violations(self, problem: Problem, device: DeviceInfo, config: Config | Mapping[str, int]) -> list[str]:
        """Every rule `config` breaks (empty: valid)."""
        values = config.as_dict() if isinstance(config, Config) else dict(config)
        out = []
        if list(values) != list(self.names):
            return [f"config must set exactly {', '.join(self.names)} in that order"]
        for p in self.params:
            if values[p.name] not in p.values:
                out.append(f"{p.name}={values[p.name]} is not one of {list(p.values)}")
        env = self._env(problem, device)
        env.update(values)
        for c in self.constraints:
            try:
                ok = c.check(env)
            except (ArithmeticError, ValueError):
                ok = False
            if not ok:
                out.append(c.why)
        return out

    def valid(self, problem: Problem, device: DeviceInfo, config: Config | Mapping[str, int]) -> bool:
        return not self.violations(problem, device, config)

    def require_valid(self, problem: Problem, device: DeviceInfo, config: Config | Mapping[str, int]) -> None:
        bad = self.violations(problem, device, config)
        if bad:
            raise InvalidConfigError(f"invalid config: {bad[0]}")

    def prefix_valid(self, problem: Problem, device: DeviceInfo, partial: Sequence[int] | Mapping[str, int]) -> bool:
        """Whether `partial` (values for the first len(partial) parameters) can be completed."""
        values = tuple(partial.values()) if isinstance(partial, Mapping) else tuple(partial)
        if isinstance(partial, Mapping) and tuple(partial) != self.names[: len(values)]:
            return False
        return values in _enumerated(self, problem, device)[0]

    def configs(self, problem: Problem, device: DeviceInfo) -> list[Config]:
        """Every valid config for this problem and device, in parameter order."""
        return [Config(tuple(zip(self.names, v, strict=True))) for v in _enumerated(self, problem, device)[1]]

    def _enumerate(
        self, problem: Problem, device: DeviceInfo
    ) -> tuple[frozenset[tuple[int, ...]], tuple[tuple[int, ...], ...]]:
        """(every completable prefix, every valid config in space order)."""
        env = self._env(problem, device)
        prefixes: set[tuple[int, ...]] = set()
        complete: list[tuple[int, ...]] = []

        checks = self.checks_by_depth

        def walk(depth: int, prefix: tuple[int, ...]) -> bool:
            if depth == len(self.params):
                prefixes.add(prefix)
                complete.append(prefix)
                return True
            param = self.params[depth]
            any_ok = False
            for v in param.values:
                env[param.name] = v
                if checks[depth + 1](env) and walk(depth + 1, (*prefix, v)):
                    any_ok = True
            env.pop(param.name, None)
            if any_ok:
                prefixes.add(prefix)
            return any_ok

        if checks[0](env):
            walk(0, ())
        return frozenset(prefixes), tuple(complete)


#: held while a Completer (and the DeviceRules it shares) binds values in its environments
_BINDING = threading.RLock()


class Completer:
    """Which values may follow a prefix, for one problem and device, without enumerating the space.

    `completable(prefix)` checks the rules bound so far, then searches depth-first for one valid
    completion; every answer is memoized (a found completion marks its whole path), so a beam
    search asks a few hundred cheap questions where `configs()` would visit every valid config.
    What holds for every problem on the device is shared by their completers (`DeviceRules`): the
    values the rules reading no problem field allow after a prefix, so a search steps only through
    those, and one completion found for each prefix, which a new problem tries first by checking
    only its own rules along it. Agrees with `SearchSpace.prefix_valid` (tests/test_space.py checks it).
    A search binds values in environments it shares (its own, and the device's), so one thread at a
    time asks (`_BINDING`): autotune's beam search and cost model ask about the same problem at once.
    From the second problem on a device, a Completer answers from the device's table instead
    (`kptune.space_table`: its rules checked once per problem, ~0.3 ms, then each answer a lookup), the
    same answers; the first does not wait for the table to be built (a one-shot `kptune predict`).
    """

    def __init__(self, space: SearchSpace, problem: Problem, device: DeviceInfo, table: bool | None = None) -> None:
        """`table`: answer from the device's table (True), by search (False), or from the second problem on
        a device on (None)."""
        self.space = space
        self._env = space._env(problem, device)
        self._checks = space.checks_by_depth
        self._names = space.names
        # with the device's table: it, and how many of its first i rows are valid for the problem
        self._table: tuple[DeviceTable, Any] | None = None
        if _DEVICE_NAMES.isdisjoint({*problem.fields(), *problem.derived()}):
            shared = _device_rules(space, device)
            self._children, self._witness = shared.children, shared.witness
            self._problem_checks = space.device_and_problem_checks_by_depth[1]
            shared.problems += 1
            if table or (table is None and shared.problems > 1):  # the table pays from the second on (~0.1 s, once)
                from kptune.space_table import table_for

                found = table_for(space, device)
                self._table = (found, found.counts(self._env)) if found is not None else None
        else:  # a problem field shadows a name the device's rules read: nothing shared, every rule checked here
            self._children, self._witness = (lambda prefix: space.params[len(prefix)].values), {}
            self._problem_checks = list(self._checks)
        # per prefix reached with its rules held: a completion (the remaining values), or None: there is none
        self._found: dict[tuple[int, ...], tuple[int, ...] | None] = {}
        self._allowed: dict[tuple[int, ...], list[int]] = {}

    def _ok(self, depth: int) -> bool:
        return self._checks[depth](self._env)

    def _holds(self, depth: int, suffix: tuple[int, ...]) -> bool:
        """Whether this problem's rules hold along `suffix` after a bound prefix of `depth` values."""
        env, names, checks = self._env, self._names, self._problem_checks
        for i, v in enumerate(suffix, depth):
            env[names[i]] = v
            check = checks[i + 1]
            if check is not None and not check(env):
                return False
        return True

    def _extensions(self, prefix: tuple[int, ...], first: bool) -> list[tuple[int, tuple[int, ...]]]:
        """(value, completion after it) for the next values that keep `prefix` completable (the first
        only if `first`); the prefix's values are bound and its rules held."""
        depth = len(prefix)
        name, check, env, found = self._names[depth], self._problem_checks[depth + 1], self._env, self._found
        out = []
        for v in self._children(prefix):
            longer = (*prefix, v)
            env[name] = v
            if longer in found:
                rest = found[longer]
            elif check is None or check(env):
                rest = self._completion(longer)
            else:
                rest = found[longer] = None
            if rest is not None:
                out.append((v, rest))
                if first:
                    break
        return out

    def _completion(self, prefix: tuple[int, ...]) -> tuple[int, ...] | None:
        """A completion of `prefix` (its values bound, its rules held): the remaining values, or None."""
        depth = len(prefix)
        if depth == len(self._names):
            completion: tuple[int, ...] | None = ()
        else:
            completion = self._witness.get(prefix)
            if completion is None or not self._holds(depth, completion):
                first = self._extensions(prefix, True)
                completion = (first[0][0], *first[0][1]) if first else None
                if completion is not None:
                    self._witness.setdefault(prefix, completion)
        self._found[prefix] = completion
        return completion

    def completable(self, prefix: Sequence[int]) -> bool:
        if self._table is not None:
            table, counts = self._table
            run = table.run(tuple(prefix))
            return run is not None and counts[run[1]] > counts[run[0]]
        with _BINDING:
            return self._completable(tuple(prefix))

    def _completable(self, prefix: tuple[int, ...]) -> bool:
        if prefix in self._found:
            return self._found[prefix] is not None
        names = self.space.names
        if len(prefix) > len(names):
            return False
        ok = self._ok(0)
        for depth, value in enumerate(prefix):
            if not ok or value not in self.space.params[depth].values:
                ok = False
                break
            self._env[names[depth]] = value
            ok = self._ok(depth + 1)
        if not ok:
            self._found[prefix] = None
            return False
        return self._completion(prefix) is not None

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """The values of the next parameter that keep `prefix` completable."""
        if self._table is not None:
            key = tuple(prefix)
            out = self._allowed.get(key)
            if out is None:
                table, counts = self._table
                out = self._allowed[key] = [v for v, (start, stop) in table.runs(key).items()
                                            if counts[stop] > counts[start]]  # fmt: skip
            return list(out)
        with _BINDING:
            return self._allowed_after(tuple(prefix))

    def _allowed_after(self, prefix: tuple[int, ...]) -> list[int]:
        out = self._allowed.get(prefix)
        if out is None:
            if len(prefix) >= len(self._names) or not self._completable(prefix):
                out = []
            else:
                for name, value in zip(self._names, prefix, strict=False):  # its rules held: bind, no re-check
                    self._env[name] = value
                out = [v for v, _ in self._extensions(prefix, False)]
            self._allowed[prefix] = out
        return list(out)


class DeviceRules:
    """For one space and device, what holds for every problem, shared by their `Completer`s: the values
    that may follow a prefix by the rules that read no problem field (memoized), and a completion
    found for a prefix (`witness`: valid by those rules; a problem checks its own along it)."""

    def __init__(self, space: SearchSpace, device: DeviceInfo) -> None:
        self.space = space
        self._env: dict[str, Any] = {**_EXPR_FUNCS, "device": device}
        self._checks = space.device_and_problem_checks_by_depth[0]
        self._memo: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.witness: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.problems = 0  # the Completers made on these rules: the second builds the device's table

    def children(self, prefix: tuple[int, ...]) -> tuple[int, ...]:
        kids = self._memo.get(prefix)
        if kids is None:
            param, check = self.space.params[len(prefix)], self._checks[len(prefix) + 1]
            if check is None:
                kids = param.values
            else:
                env = self._env
                env.update(zip(self.space.names, prefix, strict=False))
                ok = []
                for v in param.values:
                    env[param.name] = v
                    if check(env):
                        ok.append(v)
                kids = tuple(ok)
            self._memo[prefix] = kids
        return kids


@functools.lru_cache(maxsize=1024)
def completer(space: SearchSpace, problem: Problem, device: DeviceInfo) -> Completer:
    """The problem's Completer, one per (space, problem, device) in a process: its memoized answers
    carry over to the next question (the beam search's, the tuned shapes' cover)."""
    return Completer(space, problem, device)


@functools.lru_cache(maxsize=16)
def _device_rules(space: SearchSpace, device: DeviceInfo) -> DeviceRules:
    return DeviceRules(space, device)


@functools.lru_cache(maxsize=256)
def _enumerated(
    space: SearchSpace, problem: Problem, device: DeviceInfo
) -> tuple[frozenset[tuple[int, ...]], tuple[tuple[int, ...], ...]]:
    return space._enumerate(problem, device)
