"""Prediction latency on the CPU: one prediction (top-k by constrained beam), and shapes per second.

    python benchmarks/predict_latency.py --model kptune/data/model-h200.safetensors --threads 1 --out results/

Shapes: the shipped corpus's rows (every split), so sizes vary as in use. "cold": each shape
predicted for the first time in the process, which includes enumerating its valid configs for
the prefix constraint; "warm": the same shapes again (the enumeration is cached per problem, as
in a long-running service). Batch: shapes per second predicting one shape after another.
"candidates": with --candidates, what autotune computes for a new shape before it measures
(`autotune.candidates`: the model's k and the configs the device's tuned shapes lend, ranked by
the cost model in a thread meanwhile), each shape new to the process; the first call, which reads
the shipped dataset and cost model, is reported apart.
"first": with --fresh N, N shapes each predicted in a new process right after loading the
checkpoint (nothing learnt from other shapes yet, as for one `kptune predict`; the process
start and imports are not counted, the checkpoint load is reported apart).
With --registry-versions N, the model registry ($KPTUNE_MODELS) is a temporary one listing N versions of
another device (entries as `kptune retrain` adds them, its metrics of 5 of the shipped dataset's test
problems), as after N nightly retrains: what a prediction pays for reading it.
With --against DIR (another tree's root, e.g. a `git worktree` of an older commit), the cold predictions of this
tree and of DIR's package are timed side by side instead: one process each, the same shapes, alternating shape by
shape (which goes first alternates too), so that a machine whose speed drifts (a shared VM's, by ~30% within
minutes) slows both alike; reported: each tree's cold p50 and p99 and the median of the per-shape ratio.
With --blend, `predict(..., blend=True)` (`kptune predict --blend`): the cold and warm runs time
the blend of the model and the cost model; the first, untimed call also reads the shipped dataset
and cost model. With --rerank, `predict(..., rerank=True)` (`kptune predict --rerank`) likewise.
With --busy N, N other processes spin on the CPU while the cold and warm runs are timed, as measuring workers or
other tuners do on a shared host (unpinned: how the prediction's thread pools fare against them).
Writes predict_latency.json under --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import cpu_name, positive_int, provenance, write_json

from kptune.corpus import load_corpus
from kptune.errors import KptuneError


def percentile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: kptune predict's)")
    ap.add_argument("--shapes", type=int, default=200)
    ap.add_argument("-k", type=positive_int, default=5)
    ap.add_argument("--width", type=int, default=None, help="beam width (default: kptune predict's, beam.WIDTH)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: one CPU core)")
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--blend", action="store_true", help="time predict --blend (the model and the cost model)")
    ap.add_argument("--rerank", action="store_true", help="time predict --rerank (the beam reordered)")
    ap.add_argument("--candidates", action="store_true", help="also time autotune's whole candidate set")
    ap.add_argument("--fresh", type=int, default=0, help="also time N first predictions, one new process each")
    ap.add_argument("--registry-versions", type=int, default=0, help="a temporary registry of N versions, as in use")
    ap.add_argument("--busy", type=int, default=0, help="N processes spinning on the CPU meanwhile (a loaded host)")
    ap.add_argument("--against", type=Path, default=None, help="time this tree's cold predictions beside DIR's")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a --fresh child: corpus row
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # an --against child
    args = ap.parse_args(argv)
    import torch

    from kptune.predict.api import predict
    from kptune.predict.beam import WIDTH
    from kptune.predict.rerank import beam_size, reranked

    args.width = WIDTH if args.width is None else args.width
    torch.set_num_threads(args.threads)
    if args.registry_versions:
        registry = tempfile.TemporaryDirectory(prefix="kptune-latency-registry-")
        os.environ["KPTUNE_MODELS"] = registry.name
        _grown_registry(Path(registry.name), args.registry_versions)
    entries = load_corpus()
    if args.one is not None:
        return _first_prediction(entries[args.one].problem, args)
    problems = [entries[(i * len(entries)) // args.shapes].problem for i in range(min(args.shapes, len(entries)))]
    if args.serve:
        return _serve(problems, args)
    if args.against is not None:
        return _paired(len(problems), args)
    fp32 = next((p for p in problems if reranked(p)), None)
    rerank_width = beam_size(fp32, args.k, args.width)[1] if fp32 is not None else args.width  # what --rerank searches
    try:
        predict(problems[0], args.k, args.model, args.width, blend=args.blend, rerank=args.rerank)  # load once
    except KptuneError as exc:
        print(f"predict_latency: {exc}", file=sys.stderr)
        return 2
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        runs = _timed(problems, args, rerank_width)
    finally:
        for proc in spinning:
            proc.kill()
            proc.wait()
    if args.candidates:  # other corpus rows than above: shapes new to the process
        seen = set(problems)
        fresh = [
            entries[(i * len(entries)) // args.shapes + 1].problem for i in range(min(args.shapes, len(entries) - 1))
        ]
        runs["candidates"] = _candidates([p for p in dict.fromkeys(fresh) if p not in seen], args)
    if args.fresh:
        rows = [(i * len(entries)) // args.fresh for i in range(args.fresh)]
        loads, times = zip(*(_time_in_new_process(row, args) for row in rows), strict=True)
        runs["first"] = {"p50_ms": percentile(times, 0.5), "p99_ms": percentile(times, 0.99),
                         "mean_ms": statistics.fmean(times), "processes": len(times),
                         "load_p50_ms": percentile(loads, 0.5)}  # fmt: skip
        print(f"first in a new process: p50 {runs['first']['p50_ms']:.2f} ms, p99 {runs['first']['p99_ms']:.2f} ms "
              f"over {len(times)} processes (checkpoint load before it, untimed there: p50 "
              f"{runs['first']['load_p50_ms']:.1f} ms)")  # fmt: skip
    doc = {"benchmark": "predict_latency", **provenance(), "model": str(args.model or "shipped"), "k": args.k,
           "width": args.width, "blend": args.blend, "rerank": args.rerank, "threads": args.threads,
           "rerank_width": rerank_width if args.rerank else None, "registry_versions": args.registry_versions,
           "busy": args.busy,
           "shapes": len(problems), "cpu": cpu_name(), **runs}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "predict_latency.json", doc)
    return 0


def _timed(problems: Sequence[Any], args: argparse.Namespace, rerank_width: int) -> dict[str, Any]:
    """The cold and warm runs over `problems`, each printed."""
    from kptune.predict.api import predict

    runs = {}
    for label in ("cold", "warm"):
        times = []
        t0 = time.perf_counter()
        for p in problems:
            t = time.perf_counter()
            predict(p, args.k, args.model, args.width, blend=args.blend, rerank=args.rerank)
            times.append((time.perf_counter() - t) * 1e3)
        wall = time.perf_counter() - t0
        runs[label] = {"p50_ms": percentile(times, 0.5), "p99_ms": percentile(times, 0.99),
                       "mean_ms": statistics.fmean(times), "shapes_per_s": len(problems) / wall}  # fmt: skip
        print(f"{label}: p50 {runs[label]['p50_ms']:.2f} ms, p99 {runs[label]['p99_ms']:.2f} ms, "
              f"{runs[label]['shapes_per_s']:.1f} shapes/s over {len(problems)} shapes (k={args.k}, width "
              f"{args.width}, {args.threads} thread(s){', blend' if args.blend else ''}"
              f"{', rerank: fp32 beams of width ' + str(rerank_width) if args.rerank else ''}"
              f"{f', {args.busy} busy processes' if args.busy else ''})")  # fmt: skip
    return runs


def _candidates(problems: Sequence[Any], args: argparse.Namespace) -> dict[str, Any]:
    """autotune's candidates for each problem, on the checkpoint's device (fresh problems: the model's
    and the cost model's answers are memoized per problem, so each is new here)."""
    from kptune.autotune import candidates, default_model_places, model_for
    from kptune.kernel import get_family
    from kptune.predict.api import load_predictor

    pred = load_predictor(args.model)
    family = get_family("conv2d_fwd")
    model = args.model or model_for(pred.device, family, default_model_places())
    assert model is not None, "load_predictor found it"
    times, counts = [], []
    for p in problems:
        t = time.perf_counter()
        configs, _ = candidates(p, pred.device, family, model, args.k)
        times.append((time.perf_counter() - t) * 1e3)
        counts.append(len(configs))
    rest = times[1:]
    out = {"first_ms": times[0], "p50_ms": percentile(rest, 0.5), "p99_ms": percentile(rest, 0.99),
           "configs_p50": percentile(counts, 0.5)}  # fmt: skip
    print(
        f"candidates (autotune's, {out['configs_p50']:.0f} configs): p50 {out['p50_ms']:.1f} ms, p99 "
        f"{out['p99_ms']:.1f} ms over {len(rest)} new shapes; the first {out['first_ms']:.0f} ms (reads the dataset)"
    )
    return out


def _first_prediction(problem: Any, args: argparse.Namespace) -> int:
    """In a --fresh child: load the checkpoint (untimed), then time one prediction; print milliseconds."""
    from kptune.predict.api import load_predictor, predict

    t = time.perf_counter()
    try:
        load_predictor(args.model)
    except KptuneError as exc:
        print(f"predict_latency: {exc}", file=sys.stderr)
        return 2
    load_ms = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    predict(problem, args.k, args.model, args.width)
    print(load_ms, (time.perf_counter() - t) * 1e3)
    return 0


def _time_in_new_process(row: int, args: argparse.Namespace) -> tuple[float, float]:
    """(checkpoint load ms, first prediction ms) in a new process."""
    argv = [sys.executable, __file__, "--one", str(row), "-k", str(args.k), "--width", str(args.width),
            "--threads", str(args.threads), *(["--model", str(args.model)] if args.model else [])]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    load_ms, first_ms = out.strip().splitlines()[-1].split()
    return float(load_ms), float(first_ms)


def _serve(problems: Sequence[Any], args: argparse.Namespace) -> int:
    """An --against child: predict the first shape (untimed: the load), say "ready", then for each index read from
    stdin predict that shape and print its milliseconds."""
    from kptune.predict.api import predict

    predict(problems[0], args.k, args.model, args.width, rerank=args.rerank)
    print("ready", flush=True)
    for line in sys.stdin:
        t = time.perf_counter()
        predict(problems[int(line)], args.k, args.model, args.width, rerank=args.rerank)
        print((time.perf_counter() - t) * 1e3, flush=True)
    return 0


def _paired(shapes: int, args: argparse.Namespace) -> int:
    """--against: this tree's and DIR's cold predictions of shapes 1.. (0 loads), alternating shape by shape."""
    here = Path(__file__).resolve().parents[1]
    trees = {"this": here, "against": args.against.resolve()}
    if not (trees["against"] / "kptune" / "__init__.py").is_file():
        print(f"predict_latency: {args.against} holds no kptune package", file=sys.stderr)
        return 2
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", "--shapes", str(shapes), "-k", str(args.k),
            "--width", str(args.width), "--threads", str(args.threads), *(["--rerank"] if args.rerank else []),
            *(["--model", str(args.model)] if args.model else [])]  # fmt: skip
    workers = {}
    for name, root in trees.items():
        path = [str(root), str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}  # before what the caller's path holds, not instead
        workers[name] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                         cwd=root)  # fmt: skip
        assert workers[name].stdout is not None and workers[name].stdin is not None
        if workers[name].stdout.readline().strip() != "ready":
            for started in workers.values():
                started.kill()
            print(f"predict_latency: the {name} tree's process did not start", file=sys.stderr)
            return 2
    times: dict[str, list[float]] = {name: [] for name in trees}
    for i in range(1, shapes):
        for name in ("this", "against") if i % 2 else ("against", "this"):
            proc = workers[name]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{i}\n")
            proc.stdin.flush()
            times[name].append(float(proc.stdout.readline()))
    for proc in workers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    ratio = percentile([a / b for a, b in zip(times["this"], times["against"], strict=True)], 0.5)
    runs = {name: {"tree": str(trees[name]), "p50_ms": percentile(t, 0.5), "p99_ms": percentile(t, 0.99),
                   "mean_ms": statistics.fmean(t)} for name, t in times.items()}  # fmt: skip
    for name, run in runs.items():
        print(f"{name} ({run['tree']}): cold p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms")
    print(f"per-shape ratio this / against: median {ratio:.3f} over {shapes - 1} shapes (k={args.k}, width "
          f"{args.width}, {args.threads} thread(s){', rerank' if args.rerank else ''})")  # fmt: skip
    doc = {"benchmark": "predict_latency", "mode": "paired", **provenance(), "k": args.k, "width": args.width,
           "rerank": args.rerank, "threads": args.threads, "shapes": shapes - 1, "cpu": cpu_name(), "cold": runs,
           "ratio_median": ratio}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "predict_latency.json", doc)
    return 0


def _grown_registry(root: Path, versions: int) -> None:
    """A registry at `root` after `versions` nightly retrains of another device, each added and promoted, then
    the old ones pruned as `kptune models prune` does (their entries stay listed): none of this device's."""
    from kptune import dataset as ds
    from kptune.neighbours import default_dataset_places
    from kptune.predict.evaluation import scores
    from kptune.registry import Registry

    test = ds.load(default_dataset_places()[0] / "dataset-h200.db.gz").split("test")[:5]
    metrics = {**scores(test, lambda p, k: [p.winner], 5), "autotune": 1.0, "autotune_configs": 25,
               "lender": "the cost model fit on the dataset"}  # fmt: skip
    meta = {"device": "other GPU", "family": "conv2d_fwd", "source_hash": "0" * 16, "dataset_hash": "0" * 16}
    stand_in = root / "stand-in.safetensors"  # never loaded: only the index is read for this device
    stand_in.write_bytes(b"")
    registry = Registry(root)
    for _ in range(versions):
        registry.promote(registry.add(stand_in, meta, metrics, dataset=stand_in)["version"])
    registry.prune(keep=3)


if __name__ == "__main__":
    sys.exit(main())
