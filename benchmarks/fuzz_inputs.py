"""Bad input, fuzzed: every parser and loader fed random, mutated and truncated inputs.

    python benchmarks/fuzz_inputs.py --cases 10000 --out results/

Targets: the --shape parser, the MIOpenDriver parser, the corpus loader, T4 import, perf db,
dataset and checkpoint files, first through the library, then the same inputs through the CLI
commands that read them (`predict --shape/--miopen/--model`, `campaign --shapes --dry-run`,
`db import`, `db show`, `dataset show`, run in this process). Inputs: random text over each
format's own alphabet, valid inputs with bytes flipped, inserted or deleted, and valid inputs
truncated. A library outcome is "ok" (accepted), "refused" (a KptuneError: one clear line) or
"crash" (any other exception: a bug); a CLI outcome is "ok" (exit 0), "refused" (exit 2 and one
line "kptune: error: ...") or "crash" (a traceback, another exit code, or several lines).
Prints a table per target and writes fuzz_inputs.json under --out.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import random
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import provenance, write_json

from kptune.errors import KptuneError

SHAPE = "n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1,stride=1,dilation=1,dtype=fp16"
MIOPEN = "conv -n 32 -c 64 -H 56 -W 56 -k 64 -y 3 -x 3 -p 1 -q 1 -u 1 -v 1 -l 1 -j 1 -g 1"
CORPUS_HEAD = "n,c,h,w,k,r,s,pad_h,pad_w,stride_h,stride_w,dil_h,dil_w,groups,dtype,networks,count,split\n"
CORPUS_ROW = "1,3,224,224,64,7,7,3,3,2,2,1,1,1,fp32,resnet18;resnet34,2,test\n"


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few random flips, insertions, deletions or a truncation of `data`."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if not b:
            b.append(rng.randrange(256))
        elif op < 0.35:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.6:
            b.insert(rng.randrange(len(b) + 1), rng.choice(b"0123456789-=,;:. \\n\\x00\\xff"))
        elif op < 0.85:
            del b[rng.randrange(len(b))]
        else:
            del b[rng.randrange(len(b)) :]
    return bytes(b)


def text_case(valid: str, rng: random.Random) -> str:
    if rng.random() < 0.3:
        alphabet = valid + "0123456789-=,x ._\\n\\t\\x00é"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
    return mutate(valid.encode(), rng).decode("utf-8", "replace")


def targets(tmp: Path) -> dict[str, tuple[Callable[[random.Random], Any], Callable[[Any], Any]]]:
    """name -> (make a case from an rng, run the target on it)."""
    import torch

    from kptune import dataset, interop
    from kptune.corpus import parse_corpus
    from kptune.device import DeviceInfo
    from kptune.kernel import get_family
    from kptune.predict import checkpoint
    from kptune.predict.models import ModelConfig, build_model
    from kptune.predict.tokenizer import TargetVocab
    from kptune.problem import parse_problem

    family = get_family("conv2d_fwd")
    dev = DeviceInfo("cupy", "0", "GPU", "v", "gpu", "d", "c", 1024, 49152, 65536, 132, 32, 50 << 20, 1 << 37)
    vocab = TargetVocab.of(family.space)
    cfg = ModelConfig(embed=8, hidden=16)
    good_ckpt = tmp / "good.safetensors"
    meta = {"family": family.name, "source_hash": family.source_hash, "device": dev.key,
            "device_limits": dev.limits(), "dataset_hash": "x", "training": {}}  # fmt: skip
    checkpoint.save(good_ckpt, build_model(cfg, vocab.size), cfg, vocab, meta)
    ckpt_bytes = good_ckpt.read_bytes()
    data_bytes = (Path(__file__).resolve().parents[1] / "kptune" / "data" / "dataset-h200.db.gz").read_bytes()
    t4 = json.dumps({"schema_version": "1.0.0", "results": [{"configuration": dict.fromkeys(family.space.names, 1),
                     "invalidity": "correct", "correctness": 1, "times": {},
                     "measurements": [{"name": "time", "value": 1.5, "unit": "ms"}]}]})  # fmt: skip
    perfdb_bytes = _small_perfdb(tmp / "small.db", family, dev)
    torch.set_num_threads(1)

    def load_bytes(loader: Callable[[Path], Any], suffix: str) -> Callable[[bytes], Any]:
        def run(blob: bytes) -> Any:
            path = tmp / f"case{suffix}"
            path.write_bytes(blob)
            return loader(path)

        return run

    def t4_case(rng: random.Random) -> Any:
        text = mutate(t4.encode(), rng).decode("utf-8", "replace")
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    def t4_run(doc: Any) -> Any:
        if isinstance(doc, str):
            path = tmp / "case.json"
            path.write_text(doc)
            return interop.from_t4(interop.read_json(path), family)
        return interop.from_t4(doc, family)

    return {
        "--shape parser": (lambda r: text_case(SHAPE, r), lambda s: parse_problem(shape=s)),
        "MIOpenDriver parser": (lambda r: text_case(MIOPEN, r), lambda s: parse_problem(miopen=s)),
        "corpus loader": (
            lambda r: CORPUS_HEAD + text_case(CORPUS_ROW, r),
            lambda s: parse_corpus(s.splitlines(True), "fuzz.csv"),
        ),
        "T4 import": (t4_case, t4_run),
        "dataset file": (
            lambda r: mutate(data_bytes[: r.randint(0, 4096)] if r.random() < 0.5 else data_bytes, r),
            load_bytes(dataset.load, ".db.gz"),
        ),
        "perf db file": (lambda r: mutate(perfdb_bytes, r), load_bytes(_read_perfdb, ".db")),
        "checkpoint file": (lambda r: mutate(ckpt_bytes, r), load_bytes(checkpoint.load, ".safetensors")),
    }


def _small_perfdb(path: Path, family: Any, device: Any) -> bytes:
    """The bytes of a small real perf db: one problem, three measured configs."""
    from kptune.measurement import Measurement, Outcome
    from kptune.perfdb import PerfDB
    from kptune.problem import parse_problem

    problem = parse_problem(shape="n=1,c=8,h=8,w=8,k=8,r=3,s=3,pad=1")
    with PerfDB(path) as db:
        ids = (db.problem_id(problem), db.device_id(device), db.kernel_id(family.name, family.source_hash,
                                                                           family.space.names))  # fmt: skip
        for i, config in enumerate(family.space.configs(problem, device)[:3]):
            db.add(*ids, Measurement(config, Outcome.OK, time_ms=1.0 + i, min_ms=1.0 + i, runs=5), "manual")
    return path.read_bytes()


def _read_perfdb(path: Path) -> Any:
    from kptune.perfdb import PerfDB

    with PerfDB(path) as db:
        return db.summary(), [db.measurements(t.problem_id, t.device_id, t.kernel_id) for t in db.tuned_problems()]


def cli_targets(
    tmp: Path, library: dict[str, Any]
) -> dict[str, tuple[Callable[[random.Random], Any], Callable[[Any], list[str]]]]:
    """name -> (make a case, the kptune argv that reads it): the library targets' inputs through the CLI."""
    good_shape = "n=1,c=8,h=8,w=8,k=8,r=3,s=3,pad=1"

    def file_arg(suffix: str) -> Callable[[Any], str]:
        def write(case: Any) -> str:
            path = tmp / f"cli{suffix}"
            if isinstance(case, bytes):
                path.write_bytes(case)
            else:
                path.write_text(case if isinstance(case, str) else json.dumps(case), encoding="utf-8")
            return str(path)

        return write

    from kptune.backends import list_devices

    corpus, t4, perfdb, data, ckpt = (file_arg(x) for x in (".csv", ".json", ".db", ".db.gz", ".safetensors"))
    db, device = str(tmp / "cli-target.db"), list_devices()[0].spec  # T4 import needs a real device
    return {
        "kptune predict --shape": (library["--shape parser"][0],
                                   lambda s: ["predict", "--shape", s, "-k", "2", "--json"]),
        "kptune predict --miopen": (library["MIOpenDriver parser"][0],
                                    lambda s: ["predict", "--miopen", s, "-k", "2", "--json"]),
        "kptune campaign --shapes --dry-run": (library["corpus loader"][0],
                                               lambda s: ["campaign", "--shapes", corpus(s), "--dry-run", "--json",
                                                          "--strategy", "random", "--budget", "2", "--db", db]),
        "kptune db import (T4)": (library["T4 import"][0],
                                  lambda d: ["db", "import", t4(d), "--shape", good_shape, "--device", device,
                                             "--db", db]),
        "kptune db show": (library["perf db file"][0], lambda b: ["db", "show", "--db", perfdb(b)]),
        "kptune dataset show": (library["dataset file"][0], lambda b: ["dataset", "show", data(b)]),
        "kptune predict --model": (library["checkpoint file"][0],
                                   lambda b: ["predict", "--model", ckpt(b), "--shape", good_shape, "--json"]),
    }  # fmt: skip


def run_cli(argv: list[str]) -> tuple[str, str]:
    """Run kptune in this process: ("ok" | "refused" | "crash", what it wrote to stderr)."""
    from kptune.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except Exception as exc:  # a traceback: a bug
        return "crash", f"{type(exc).__name__}: {exc}"
    text = err.getvalue()
    if code == 0:
        return "ok", text
    lines = text.strip().splitlines()
    if code == 2 and len(lines) == 1 and lines[0].startswith("kptune: error: ") and "Traceback" not in text:
        return "refused", text
    return "crash", f"exit {code}: {text[-300:]}"


def run_library(run: Callable[[Any], Any], case: Any) -> tuple[str, str]:
    """Run one library target on `case`: ("ok" | "refused" | "crash", what went wrong)."""
    try:
        run(case)
        return "ok", ""
    except KptuneError as exc:
        return "refused", str(exc)
    except Exception as exc:  # anything else is a bug
        return "crash", f"{type(exc).__name__}: {str(exc)[:160]}"


def _fuzz(all_targets: dict[str, tuple[Callable[[random.Random], Any], Any]], cases: int, seed: int,
          attempt: Callable[[Any, Any], tuple[str, str]]) -> dict[str, Any]:  # fmt: skip
    """`cases` fuzzed inputs spread over the targets: outcome counts and a few crash examples each."""
    out: dict[str, Any] = {}
    per = max(1, cases // len(all_targets))
    for name, (make, target) in all_targets.items():
        rng = random.Random(f"{seed}:{name}")
        counts: collections.Counter[str] = collections.Counter()
        crashes: list[str] = []
        for _ in range(per):
            case = make(rng)
            outcome, text = attempt(target, case)
            counts[outcome] += 1
            if outcome == "crash" and len(crashes) < 5:
                crashes.append(f"{text[:200]} <- {str(case)[:120]!r}")
        out[name] = {"cases": per, **counts, "crash_examples": crashes}
    return out


def run_cli_cases(cases: int, seed: int) -> dict[str, Any]:
    """Fuzzed inputs through the CLI commands that read them."""
    with tempfile.TemporaryDirectory() as tmp:
        return _fuzz(cli_targets(Path(tmp), targets(Path(tmp))), cases, seed, lambda argv, case: run_cli(argv(case)))


def run_cases(cases: int, seed: int) -> dict[str, Any]:
    """Fuzzed inputs straight into the library's parsers and loaders."""
    with tempfile.TemporaryDirectory() as tmp:
        return _fuzz(targets(Path(tmp)), cases, seed, run_library)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000, help="library cases (as many again through the CLI)")
    ap.add_argument("--cli-cases", type=int, default=None, help="CLI cases (default: --cases)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    results = {**run_cases(args.cases, args.seed),
               **run_cli_cases(args.cases if args.cli_cases is None else args.cli_cases, args.seed)}  # fmt: skip
    print("| target | cases | accepted | refused (one line) | crashes |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['cases']} | {r.get('ok', 0)} | {r.get('refused', 0)} | {r.get('crash', 0)} |")
        for example in r["crash_examples"]:
            print(f"  crash: {example}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "fuzz_inputs.json", {"benchmark": "fuzz_inputs", **provenance(), "results": results})
    return 1 if any(r.get("crash") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
