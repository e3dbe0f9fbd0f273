"""A device's valid configs as a table, so that a new problem's rules are checked in one pass.

A `Completer` answers "which values may follow this prefix" for one problem. Searching depth-first
for a completion of each prefix cost a new problem ~1.5 ms of rule checks in a beam search of width 24,
a fifth of a reranked prediction (the table: ~0.6 ms, benchmarks/RESULTS.md). A `DeviceTable` holds,
for one space and device, every config valid by the rules that read no problem field (32,450 of the conv
space's 1.5 million on an H100), as rows of values in the space's order (depth-first, so each prefix is
one contiguous run of rows).
A problem's own rules (13 for conv2d, each reading a few parameters) are then checked once per distinct
combination of the parameters each reads (a few hundred at most), and the answers spread over the rows:
`counts(env)` is the running count of the rows valid for the problem, and a prefix is completable when
its run holds a valid row (`runs`: the runs of each value after a prefix, memoized for the device).
The answers are those of the rules as written, exceptions included (`_fuse`'s: an arithmetic or value
error makes a config invalid); a space with a callable rule has no table (`table_for` gives None).
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from kptune.device import DeviceInfo
from kptune.space import _DEVICE_NAMES, _EXPR_FUNCS, Constraint, ExprCheck, SearchSpace, _fuse

#: a device whose space holds more valid configs than this gets no table (its memory, its build time)
MAX_ROWS = 1_000_000
#: a rule group whose combinations are fewer than this numbers them (int64) to find the distinct ones
CODED = 1 << 62


class _Hoist(ast.NodeTransformer):
    """Replaces each largest subexpression that reads only `names` (the problem's and the device's, no
    parameter, no name a comprehension or lambda binds) by a name of its own, computed once per problem
    (`parts`: name, source) instead of once per combination."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.parts: list[tuple[str, str]] = []

    def visit(self, node: ast.AST) -> ast.AST:
        if (
            isinstance(node, ast.expr)
            and not isinstance(node, (ast.Name, ast.Constant))
            and all(
                n.id in self.names if isinstance(n, ast.Name) else not isinstance(n, _BINDERS) for n in ast.walk(node)
            )
        ):
            name = f"_problem_{len(self.parts)}"
            self.parts.append((name, ast.unparse(node)))
            return ast.Name(name, ast.Load())
        return super().visit(node)


#: expressions that bind names of their own
_BINDERS = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.NamedExpr)


class _Rules:
    """The problem rules reading one set of parameters: checked on each distinct combination of their values
    among the table's rows (`combos`; `inverse`: each row's combination)."""

    def __init__(self, rules: Sequence[Constraint], params: tuple[str, ...], combos: list[tuple[int, ...]],
                 inverse: np.ndarray | None) -> None:  # fmt: skip
        self.params, self.combos, self.inverse = params, combos, inverse
        self._one = _fuse(rules)  # one combination at a time, errors as invalid: where `_all` raised
        checks = [cast(ExprCheck, r.check) for r in rules]
        names = sorted(set().union(*(c.free_names for c in checks)) - set(params))
        binds = "".join(f"    {name} = env[{name!r}]\n" for name in names)
        hoisted = _Hoist(set(names))
        test = ast.unparse(hoisted.visit(ast.parse(" and ".join(f"({c.expr})" for c in checks), mode="eval")))
        binds += "".join(f"    {name} = {expr}\n" for name, expr in hoisted.parts)
        target = "".join(f"{p}, " for p in params)
        source = f"def rules(env, combos):\n{binds}    return [True if ({test}) else False for ({target}) in combos]\n"
        namespace: dict[str, Any] = {"__builtins__": {}}
        exec(compile(source, "<problem rules>", "exec"), namespace)
        self._all = namespace["rules"]

    def holds(self, env: Mapping[str, Any]) -> np.ndarray:
        """Whether the rules hold for each combination, for the problem bound in `env`."""
        try:
            return np.array(self._all(env, self.combos), dtype=bool)
        except (ArithmeticError, ValueError):
            local = dict(env)
            out = []
            for combo in self.combos:
                local.update(zip(self.params, combo, strict=True))
                out.append(self._one(local))
            return np.array(out, dtype=bool)


class DeviceTable:
    """See the module docstring."""

    def __init__(self, space: SearchSpace, rows: list[tuple[int, ...]]) -> None:
        self.space = space
        self.values = np.array(rows, dtype=np.int64).reshape(len(rows), len(space.names))
        # each row's value indices, for the runs: depth-first rows are sorted by them
        self._index = np.empty_like(self.values)
        for d, param in enumerate(space.params):
            values = np.array(param.values, dtype=np.int64)
            by_value = np.argsort(values, kind="stable")
            self._index[:, d] = by_value[np.searchsorted(values[by_value], self.values[:, d])]
        self._runs: dict[tuple[int, ...], dict[int, tuple[int, int]]] = {}
        self._row_of = {row: i for i, row in enumerate(rows)}  # a whole config's row, without walking the runs
        self._rules = self._problem_rules()

    def _problem_rules(self) -> list[_Rules]:
        free = set(self.space.names) | _DEVICE_NAMES
        by_params: dict[tuple[str, ...], list[Constraint]] = {}
        for rule in self.space.constraints:
            assert isinstance(rule.check, ExprCheck), "table_for builds none for a space with a callable rule"
            if not rule.check.free_names <= free:
                by_params.setdefault(rule.params, []).append(rule)
        groups: list[tuple[tuple[str, ...], list[Constraint]]] = []  # a set of parameters within another's joins it
        for params, rules in sorted(by_params.items(), key=lambda kv: -len(kv[0])):
            wider = next((g for g in groups if set(params) <= set(g[0])), None)
            if wider is None:
                groups.append((params, list(rules)))
            else:
                wider[1].extend(rules)
        out = []
        for params, rules in groups:
            if not params:
                out.append(_Rules(rules, params, [()], None))
                continue
            cols = [self.space.names.index(p) for p in params]
            radix = [len(self.space.params[c].values) for c in cols]
            if math.prod(radix) < CODED:  # one number per combination: a faster unique
                code = np.zeros(len(self.values), dtype=np.int64)
                for c, r in zip(cols, radix, strict=True):
                    code = code * r + self._index[:, c]
                _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
            else:
                _, first, inverse = np.unique(self._index[:, cols], axis=0, return_index=True, return_inverse=True)
            combos = [tuple(row) for row in self.values[first][:, cols].tolist()]
            out.append(_Rules(rules, params, combos, inverse.ravel().astype(np.intp)))
        return out

    def counts(self, env: Mapping[str, Any]) -> np.ndarray:
        """For the problem bound in `env`: counts[i] is how many of the first i rows are valid for it."""
        valid = np.ones(len(self.values), dtype=bool)
        for rules in self._rules:
            holds = rules.holds(env)
            if rules.inverse is None:
                valid &= bool(holds[0])
            else:
                valid &= holds[rules.inverse]
        counts = np.zeros(len(valid) + 1, dtype=np.int32)
        np.cumsum(valid, dtype=np.int32, out=counts[1:])
        return counts

    def runs(self, prefix: tuple[int, ...]) -> dict[int, tuple[int, int]]:
        """The rows (start, stop) of each value that follows `prefix` on some row (empty: `prefix` is on
        none, or is complete)."""
        out = self._runs.get(prefix)
        if out is None:
            depth = len(prefix)
            if depth >= len(self.space.names):
                out = {}
            else:
                run = self.run(prefix)
                out = {}
                if run is not None:
                    start, stop = run
                    values = self.space.params[depth].values
                    cuts = start + np.searchsorted(self._index[start:stop, depth], np.arange(len(values) + 1))
                    bounds = cuts.tolist()
                    out = {v: (bounds[i], bounds[i + 1]) for i, v in enumerate(values) if bounds[i] < bounds[i + 1]}
            self._runs[prefix] = out
        return out

    def run(self, prefix: tuple[int, ...]) -> tuple[int, int] | None:
        """The rows (start, stop) that begin with `prefix`, or None: no row does."""
        if not prefix:
            return (0, len(self.values))
        if len(prefix) == len(self.space.names):
            row = self._row_of.get(prefix)
            return (row, row + 1) if row is not None else None
        return self.runs(prefix[:-1]).get(prefix[-1])


def _device_rows(space: SearchSpace, device: DeviceInfo) -> list[tuple[int, ...]] | None:
    """Every config valid by the rules that read no problem field, depth first; None past MAX_ROWS."""
    checks = space.device_and_problem_checks_by_depth[0]
    env: dict[str, Any] = {**_EXPR_FUNCS, "device": device}
    names, params = space.names, space.params
    rows: list[tuple[int, ...]] = []

    def walk(depth: int, prefix: tuple[int, ...]) -> bool:
        if depth == len(names):
            rows.append(prefix)
            return len(rows) <= MAX_ROWS
        check = checks[depth + 1]
        for v in params[depth].values:
            env[names[depth]] = v
            if (check is None or check(env)) and not walk(depth + 1, (*prefix, v)):
                return False
        return True

    if checks[0] is not None and not checks[0](env):
        return rows
    return rows if walk(0, ()) else None


@functools.lru_cache(maxsize=16)
def table_for(space: SearchSpace, device: DeviceInfo) -> DeviceTable | None:
    """The table of `space` on `device`, built once per process; None for a space with a callable rule
    (what it reads is unknown) or more than MAX_ROWS valid configs on the device."""
    if any(not isinstance(rule.check, ExprCheck) for rule in space.constraints):
        return None
    rows = _device_rows(space, device)
    return DeviceTable(space, rows) if rows is not None else None
