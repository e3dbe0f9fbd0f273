"""kptune's tuned conv kernel against cuDNN on every distinct conv layer of ResNet-50 and VGG-16.

    python benchmarks/vs_cudnn.py --nets resnet50 vgg16 --batches 1 32 --device cupy:0 --out results/
    python benchmarks/vs_cudnn.py --nets resnet50 --batches 1 --strategy random --budget 40 --max-layers 4

For each (net, batch, dtype) and layer: tune the layer with `kptune.tune` (resuming
from --db, so a rerun measures only what is missing), then time cuDNN through
PyTorch in this process on the same shape: `cudnn.benchmark` on, TF32 off, the
first call left to cuDNN's own algorithm search, then CUDA events around each call,
rotating input copies that together exceed twice the L2 size, at least 10 runs or
about 25 ms, median. kptune times its kernels the same way, rotating as many copies.
cuBLAS SGEMM 8192^3 (TF32 off) is measured once as the practical FP32 ceiling.

Prints one markdown table (cuDNN/ours > 1 means kptune is faster) and a summary line
per (net, batch, dtype); writes vs_cudnn.json under --out after every layer, so an
interrupted run keeps what it finished. Needs a CUDA build of PyTorch and a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import geomean, provenance, write_json
from layers import NETS, layer_counts, layers

from kptune.errors import KptuneError
from kptune.measurement import TimingSettings
from kptune.problem import Conv2dProblem

DTYPES = ("fp32", "fp16")
TARGET_MS = 25.0  # timed device work per layer
MIN_RUNS = 10
MAX_RUNS = 5000
ROTATE_FACTOR = 2.0  # input copies together exceed this many L2 sizes
MAX_COPIES = 256
L2_FALLBACK_BYTES = 50 * 2**20
SGEMM_N = 8192
SGEMM_RUNS = 10
HOLD_CHUNK = 64  # calls queued behind one GPU-side sleep
HOLD_MARGIN = 2.0  # the sleep lasts this many times the host's enqueue time of its chunk


# -- results --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Job:
    """One layer to compare: its fp32 problem (kptune's dtype) and the dtype cuDNN runs in."""

    net: str
    batch: int
    dtype: str
    layer: str
    count: int  # convs of this shape in one forward pass of the net
    problem: Conv2dProblem


@dataclasses.dataclass(frozen=True)
class Ours:
    """kptune's best for a layer, or why there is none ("not supported: ...", "error: ...")."""

    status: str
    time_ms: float | None = None
    config: str | None = None
    tune: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Cudnn:
    """cuDNN's median time for a layer, or why there is none."""

    status: str
    time_ms: float | None = None
    min_ms: float | None = None
    runs: int = 0
    copies: int = 0
    host_us: float | None = None  # host time to enqueue one call (torch dispatch + cuDNN plan lookup)
    held: bool = False  # calls were queued behind a GPU sleep, so host overhead is not in time_ms


@dataclasses.dataclass(frozen=True)
class Row:
    job: Job
    ours: Ours
    cudnn: Cudnn

    def to_json(self, sgemm_tflops: float | None) -> dict[str, Any]:
        j, flops = self.job, self.job.problem.flops()
        ours_tf, cudnn_tf = tflops(flops, self.ours.time_ms), tflops(flops, self.cudnn.time_ms)
        return {
            "net": j.net, "batch": j.batch, "dtype": j.dtype, "layer": j.layer, "count": j.count,
            "problem": j.problem.key(), "shape": short_shape(j.problem), "flops": flops,
            "ours": dataclasses.asdict(self.ours), "cudnn": dataclasses.asdict(self.cudnn),
            "ratio": speed_ratio(self.cudnn.time_ms, self.ours.time_ms),
            "ours_tflops": ours_tf, "cudnn_tflops": cudnn_tf,
            "ours_sgemm_share": share(ours_tf, sgemm_tflops), "cudnn_sgemm_share": share(cudnn_tf, sgemm_tflops),
        }  # fmt: skip


# -- pure helpers (unit-tested without a GPU) -----------------------------------------------------------
def speed_ratio(cudnn_ms: float | None, ours_ms: float | None) -> float | None:
    """cuDNN time over ours: above 1 means kptune is faster."""
    if cudnn_ms is None or ours_ms is None or ours_ms <= 0:
        return None
    return cudnn_ms / ours_ms


def tflops(flops: float, ms: float | None) -> float | None:
    return flops / (ms * 1e-3) / 1e12 if ms else None


def share(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


def input_copies(set_bytes: int, l2_bytes: int, total_mem_bytes: int | None = None) -> int:
    """Copies of the inputs to rotate through so that together they exceed ROTATE_FACTOR x L2.

    Capped at MAX_COPIES and at a quarter of device memory, never below one.
    """
    want = math.floor(ROTATE_FACTOR * l2_bytes / max(set_bytes, 1)) + 1
    cap = MAX_COPIES if total_mem_bytes is None else min(MAX_COPIES, int(0.25 * total_mem_bytes) // max(set_bytes, 1))
    return max(1, min(want, cap))


def timed_runs(estimate_ms: float) -> int:
    """Runs for about TARGET_MS of timed work, at least MIN_RUNS (and at most MAX_RUNS)."""
    return max(MIN_RUNS, min(MAX_RUNS, math.ceil(TARGET_MS / max(estimate_ms, 1e-4))))


def short_shape(p: Conv2dProblem) -> str:
    """A compact shape for the table: n32 c64 56x56 k64 3x3 /1 p1 (the JSON has the full key)."""
    stride = f"/{p.stride_h}" if p.stride_h == p.stride_w else f"/{p.stride_h}x{p.stride_w}"
    pad = f"p{p.pad_h}" if p.pad_h == p.pad_w else f"p{p.pad_h}x{p.pad_w}"
    return f"n{p.n} c{p.c} {p.h}x{p.w} k{p.k} {p.r}x{p.s} {stride} {pad}"


def plan(nets: Sequence[str], batches: Sequence[int], dtypes: Sequence[str], max_layers: int | None) -> list[Job]:
    """Jobs in run order: net, batch, layer, dtype; the first `max_layers` distinct layers of each net."""
    jobs = []
    for net in nets:
        counts = layer_counts(net)
        for batch in batches:
            for name, problem in layers(net, batch)[:max_layers]:
                jobs += [Job(net, batch, dtype, name, counts[name], problem) for dtype in dtypes]
    return jobs


def our_result(job: Job, tune_layer: Callable[[Conv2dProblem], Ours]) -> Ours:
    """Tune the layer in the job's dtype; a dtype or shape kptune refuses becomes a row, not a crash."""
    try:
        problem = dataclasses.replace(job.problem, dtype=job.dtype)  # Conv2dProblem refuses unsupported dtypes
        return tune_layer(problem)
    except KptuneError as exc:
        reason = "not supported" if job.dtype not in Conv2dProblem.SUPPORTED_DTYPES else "error"
        return Ours(status=f"{reason}: {exc}")


def run_jobs(
    jobs: Sequence[Job],
    tune_layer: Callable[[Conv2dProblem], Ours],
    time_cudnn: Callable[[Conv2dProblem, str], Cudnn],
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Run the jobs in order; none is started once `clock()` has passed `deadline`."""
    rows: list[Row] = []
    for job in jobs:
        if deadline is not None and clock() >= deadline:
            break
        ours = our_result(job, tune_layer)
        row = Row(job, ours, time_cudnn(job.problem, job.dtype))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def grouped(rows: Sequence[Row]) -> list[Row]:
    """Rows grouped by (net, batch, dtype), groups in order of first appearance, layers in run order."""
    groups: dict[tuple[str, int, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.job.net, row.job.batch, row.job.dtype), []).append(row)
    return [row for group in groups.values() for row in group]


def summarize(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per (net, batch, dtype): geomean and min of cuDNN/ours, geomean TFLOP/s of both, count-weighted net time."""
    groups: dict[tuple[str, int, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.job.net, row.job.batch, row.job.dtype), []).append(row)
    out = []
    for (net, batch, dtype), group in groups.items():
        both = [r for r in group if r.ours.time_ms is not None and r.cudnn.time_ms is not None]
        ratios = [(speed_ratio(r.cudnn.time_ms, r.ours.time_ms), r.job.layer) for r in both]
        worst = min(ratios, key=lambda x: x[0] or 0.0) if ratios else (None, None)
        ours_net = sum(r.job.count * (r.ours.time_ms or 0.0) for r in both)
        cudnn_net = sum(r.job.count * (r.cudnn.time_ms or 0.0) for r in both)
        out.append({
            "net": net, "batch": batch, "dtype": dtype, "layers": len(group), "compared": len(both),
            "geomean_ratio": geomean(x for x, _ in ratios), "min_ratio": worst[0], "min_ratio_layer": worst[1],
            "geomean_tflops_ours": geomean(tflops(r.job.problem.flops(), r.ours.time_ms) for r in group),
            "geomean_tflops_cudnn": geomean(tflops(r.job.problem.flops(), r.cudnn.time_ms) for r in group),
            "net_ms_ours": ours_net if both else None, "net_ms_cudnn": cudnn_net if both else None,
            "net_ratio": speed_ratio(cudnn_net, ours_net) if both else None,
        })  # fmt: skip
    return out


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


TABLE_HEADER = (
    "| net | batch | dtype | layer | × | shape | ours ms | our config | cuDNN ms | cuDNN/ours "
    "| ours TFLOP/s | cuDNN TFLOP/s | ours % SGEMM |"
)


def markdown_table(rows: Sequence[Row], sgemm_tflops: float | None) -> str:
    """One table, rows grouped by net, batch and dtype in run order."""
    lines = [TABLE_HEADER, "|" + "---|" * TABLE_HEADER.count(" | ") + "---|"]
    for row in grouped(rows):
        d = row.to_json(sgemm_tflops)
        ours_ms = _fmt(row.ours.time_ms, ".4f") if row.ours.time_ms is not None else row.ours.status.split(":")[0]
        cudnn_ms = _fmt(row.cudnn.time_ms, ".4f") if row.cudnn.time_ms is not None else row.cudnn.status.split(":")[0]
        lines.append(
            f"| {d['net']} | {d['batch']} | {d['dtype']} | {d['layer']} | {d['count']} | {d['shape']} | {ours_ms} "
            f"| {row.ours.config or '-'} | {cudnn_ms} | {_fmt(d['ratio'], '.2f')} | {_fmt(d['ours_tflops'], '.2f')} "
            f"| {_fmt(d['cudnn_tflops'], '.2f')} | {_fmt(d['ours_sgemm_share'], '.0f', 100)} |"
        )
    return "\n".join(lines)


def summary_lines(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """One line per (net, batch, dtype); a group with nothing to compare says so and gives cuDNN's figure."""
    lines = []
    for s in summaries:
        head = f"{s['net']} batch {s['batch']} {s['dtype']}: {s['compared']}/{s['layers']} layers compared"
        if not s["compared"]:
            cudnn = _fmt(s["geomean_tflops_cudnn"], ".2f")
            lines.append(f"{head} (kptune has no result); cuDNN geomean {cudnn} TFLOP/s")
            continue
        lines.append(
            f"{head}, cuDNN/ours geomean {_fmt(s['geomean_ratio'], '.3f')}, min {_fmt(s['min_ratio'], '.3f')} "
            f"({s['min_ratio_layer']}); geomean TFLOP/s ours {_fmt(s['geomean_tflops_ours'], '.2f')}, "
            f"cuDNN {_fmt(s['geomean_tflops_cudnn'], '.2f')}; those layers x their count in the net: "
            f"ours {_fmt(s['net_ms_ours'], '.3f')} ms, cuDNN {_fmt(s['net_ms_cudnn'], '.3f')} ms"
        )
    return lines


def report(meta: dict[str, Any], rows: Sequence[Row], sgemm_tflops: float | None) -> dict[str, Any]:
    return {**meta, "rows": [r.to_json(sgemm_tflops) for r in rows], "summary": summarize(rows)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    dtype_help = "dtype(s) for both; one kptune does not support gives rows marked not supported"
    ap.add_argument("--dtype", nargs="+", choices=DTYPES, default=["fp32"], help=dtype_help)
    ap.add_argument("--device", default="cupy:0", help="kptune device (cuDNN runs on torch's cuda:0)")
    ap.add_argument("--db", type=Path, default=None, help="perf db (default: OUT/vs_cudnn.db); tuning resumes")
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--strategy", default="exhaustive", choices=("exhaustive", "random"))
    ap.add_argument("--budget", type=int, default=None, help="configs per layer for --strategy random")
    ap.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="start no new layer after this many seconds; what finished is still reported")  # fmt: skip
    ap.add_argument("--max-layers", type=int, default=None, metavar="N", help="first N distinct layers of each net")
    ap.add_argument("--jobs", type=int, default=None, help="kptune compile processes")
    ap.add_argument("--shard", default="0/1", metavar="I/N",
                    help="run only jobs I, I+N, I+2N, ... (one process per GPU over a shared --db)")  # fmt: skip
    ap.add_argument("--precompile-only", action="store_true",
                    help="compile every config the planned jobs need (all cores), then exit")  # fmt: skip
    ap.add_argument(
        "--target-ms",
        type=float,
        default=TimingSettings.target_ms,
        help="kptune: timed device time per config (median of at least 5 launches)",
    )
    args = ap.parse_args(argv)
    if args.strategy == "random" and (args.budget is None or args.budget < 1):
        ap.error("--strategy random needs --budget N (N >= 1)")
    try:
        index, count = (int(v) for v in args.shard.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        ap.error(f"--shard takes I/N with 0 <= I < N, not {args.shard!r}")
    args.shard = (index, count)
    if any(b < 1 for b in args.batches) or (args.max_layers is not None and args.max_layers < 1):
        ap.error("--batches and --max-layers must be >= 1")
    return args


# -- the GPU side ---------------------------------------------------------------------------------------
def cuda_torch() -> Any:
    """PyTorch with a usable CUDA device, configured for the comparison; KptuneError (one line) otherwise."""
    try:
        import torch
    except ImportError:
        raise KptuneError("PyTorch is not installed: vs_cudnn needs a CUDA build of torch for cuDNN") from None
    if not torch.cuda.is_available():
        raise KptuneError(f"torch {torch.__version__} sees no CUDA device: run vs_cudnn on a GPU machine")
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm per shape on the first call
    torch.backends.cudnn.allow_tf32 = False  # true FP32, like kptune's kernel
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def _event_times(torch: Any, call: Callable[[int], Any], runs: int, first: int = 0, hold: float = 0.0) -> list[float]:
    """Device ms of `runs` calls (call(first), call(first + 1), ...), one CUDA event pair around each.

    With `hold` (GPU cycles per call), each chunk of calls is queued behind a GPU-side
    sleep that outlasts the host's enqueueing, so the calls run back to back and the
    events measure the device's work, not the host's launch overhead (NVBench's
    blocking kernel does the same).
    """
    times: list[float] = []
    for chunk in range(0, runs, HOLD_CHUNK):
        n = min(HOLD_CHUNK, runs - chunk)
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        if hold:
            torch.cuda._sleep(int(hold * n))
        for i, (start, end) in enumerate(pairs):
            start.record()
            call(first + chunk + i)
            end.record()
        torch.cuda.synchronize()
        times += [start.elapsed_time(end) for start, end in pairs]
    return times


def _host_ms_per_call(torch: Any, call: Callable[[int], Any], runs: int, first: int = 0) -> float:
    """Host ms to enqueue one timed call (two event records and the call), measured before any wait."""
    events = [torch.cuda.Event(enable_timing=True) for _ in range(2 * runs)]
    t0 = time.perf_counter()
    for i in range(runs):
        events[2 * i].record()
        call(first + i)
        events[2 * i + 1].record()
    host_ms = (time.perf_counter() - t0) * 1e3 / runs
    torch.cuda.synchronize()
    return host_ms


def sleep_cycles_per_ms(torch: Any) -> float | None:
    """GPU clock cycles per ms of `torch.cuda._sleep`, measured; None where torch lacks it (then no hold)."""
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is None:
        return None
    cycles = 1_000_000
    sleep(cycles)  # first launch: module load
    times = _event_times(torch, lambda i: sleep(cycles), 3)
    ms = statistics.median(times)
    return cycles / ms if ms > 0 else None


def l2_bytes(torch: Any) -> int:
    return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or L2_FALLBACK_BYTES)


def time_cudnn(torch: Any, problem: Conv2dProblem, dtype: str, cycles_per_ms: float | None) -> Cudnn:
    """Median device time of torch's conv2d (cuDNN) on this shape, rotating inputs past the L2."""
    tdtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
    p, dev = problem, torch.device("cuda", 0)
    x_shape, w_shape = (p.n, p.c, p.h, p.w), (p.k, p.c, p.r, p.s)
    set_bytes = (math.prod(x_shape) + math.prod(w_shape)) * torch.finfo(tdtype).bits // 8
    copies = input_copies(set_bytes, l2_bytes(torch), torch.cuda.get_device_properties(0).total_memory)
    gen = torch.Generator(device=dev).manual_seed(0)
    xs: list[Any] = []
    ws: list[Any] = []
    try:
        for _ in range(copies):
            xs.append(torch.empty(x_shape, device=dev, dtype=tdtype).uniform_(-1.0, 1.0, generator=gen))
            ws.append(torch.empty(w_shape, device=dev, dtype=tdtype).uniform_(-1.0, 1.0, generator=gen))

        def call(i: int) -> Any:
            return torch.nn.functional.conv2d(
                xs[i % copies], ws[i % copies], stride=(p.stride_h, p.stride_w),
                padding=(p.pad_h, p.pad_w), dilation=(p.dil_h, p.dil_w),
            )  # fmt: skip

        with torch.inference_mode():
            call(0)  # cudnn.benchmark searches its algorithms on the first call of a shape
            torch.cuda.synchronize()
            host_ms = _host_ms_per_call(torch, call, 3, first=1)
            hold = HOLD_MARGIN * host_ms * cycles_per_ms if cycles_per_ms else 0.0
            estimate = statistics.median(_event_times(torch, call, 3, first=4, hold=hold))
            runs = timed_runs(estimate)
            times = _event_times(torch, call, runs, first=7, hold=hold)
        return Cudnn("ok", statistics.median(times), min(times), runs, copies, host_ms * 1e3, hold > 0)
    except torch.cuda.OutOfMemoryError as exc:
        return Cudnn(f"error: out of memory ({str(exc).splitlines()[0][:120]})", copies=copies)
    finally:
        xs.clear()
        ws.clear()
        torch.cuda.empty_cache()  # leave the memory to kptune's worker, which tunes the next layer


def _sgemm_times(torch: Any, n: int) -> list[float]:
    dev = torch.device("cuda", 0)
    gen = torch.Generator(device=dev).manual_seed(0)
    a, b = (torch.empty((n, n), device=dev).uniform_(-1.0, 1.0, generator=gen) for _ in range(2))
    c = torch.empty((n, n), device=dev)
    _event_times(torch, lambda i: torch.matmul(a, b, out=c), 3)  # warm-up: cuBLAS heuristics, clocks
    return _event_times(torch, lambda i: torch.matmul(a, b, out=c), SGEMM_RUNS)


def sgemm_ceiling(torch: Any) -> dict[str, Any]:
    """cuBLAS SGEMM 8192^3 with TF32 off: the practical FP32 ceiling, in TFLOP/s (median of SGEMM_RUNS)."""
    times = _sgemm_times(torch, SGEMM_N)
    torch.cuda.empty_cache()
    ms = statistics.median(times)
    return {"n": SGEMM_N, "runs": SGEMM_RUNS, "ms": ms, "min_ms": min(times),
            "tflops": 2.0 * SGEMM_N**3 / (ms * 1e-3) / 1e12}  # fmt: skip


def _tuner(device: Any, db: Any, args: argparse.Namespace, settings: TimingSettings) -> Callable[..., Ours]:
    """tune_layer for run_jobs: kptune.tune into the shared perf db, with a progress bar on stderr."""
    from kptune.progress import TuneProgress
    from kptune.tune import tune

    def tune_layer(problem: Conv2dProblem) -> Ours:
        with TuneProgress(problem, label=short_shape(problem)) as progress:
            result = tune(problem, device=device, strategy=args.strategy, budget=args.budget, db=db,
                          settings=settings, jobs=args.jobs, progress=progress)  # fmt: skip
        if result.best is None:
            return Ours(status=f"error: no config ran correctly ({result.outcomes})", tune=result.to_json())
        return Ours("ok", result.best.time_ms, result.best.config.key(), result.to_json())

    return tune_layer


def precompile_jobs(jobs: Sequence[Job], device: Any, n_jobs: int | None, db: Any) -> tuple[int, int]:
    """Fill the compile cache for every config of every job's problem not yet measured in `db`: (compiled, errors)."""
    from kptune.campaign import plan, union_defines
    from kptune.kernel import get_family
    from kptune.runner import precompile

    family = get_family("conv2d_fwd")
    tasks, _, _ = plan([dataclasses.replace(job.problem, dtype=job.dtype) for job in jobs], family, device, db)
    tasks.sort(key=lambda t: t.index)  # the jobs' order: a pass cut short has compiled the first jobs
    defines = union_defines(tasks, family)
    errors = precompile(family, device, defines, jobs=n_jobs)
    return len(defines), len(errors)


def _print_row(row: Row) -> None:
    r = row.to_json(None)
    print(f"{r['net']} b{r['batch']} {r['dtype']} {r['layer']}: ours {_fmt(row.ours.time_ms, '.4f')} ms "
          f"({row.ours.status.split(':')[0]}), cuDNN {_fmt(row.cudnn.time_ms, '.4f')} ms, "
          f"cuDNN/ours {_fmt(r['ratio'], '.2f')}", file=sys.stderr, flush=True)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    try:
        torch = cuda_torch()
        from kptune.backends import resolve_device
        from kptune.perfdb import PerfDB

        device = resolve_device(args.device)
        args.out.mkdir(parents=True, exist_ok=True)
        db = PerfDB(args.db or args.out / "vs_cudnn.db")
    except KptuneError as exc:
        print(f"vs_cudnn: {exc}", file=sys.stderr)
        return 2
    # kptune rotates as many input copies as cuDNN gets (its default stops at 8), so neither is L2-flattered.
    settings = TimingSettings(rotate_cache_factor=ROTATE_FACTOR, max_input_sets=MAX_COPIES, target_ms=args.target_ms)
    sgemm = sgemm_ceiling(torch)
    cycles_per_ms = sleep_cycles_per_ms(torch)
    meta = {
        "benchmark": "vs_cudnn", **provenance(),
        "device": {"name": torch.cuda.get_device_name(0), "l2_bytes": l2_bytes(torch), "kptune_device": device.spec,
                   "kptune_device_name": device.name, "driver": device.driver, "compiler": device.compiler,
                   "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()},
        "settings": {"nets": args.nets, "batches": args.batches, "dtypes": args.dtype, "strategy": args.strategy,
                     "budget": args.budget, "db": str(db.path), "max_layers": args.max_layers,
                     "time_limit_s": args.time_limit, "kptune_timing": dataclasses.asdict(settings),
                     "cudnn_timing": {"target_ms": TARGET_MS, "min_runs": MIN_RUNS, "max_runs": MAX_RUNS,
                                      "rotate_factor": ROTATE_FACTOR, "max_copies": MAX_COPIES,
                                      "hold_chunk": HOLD_CHUNK, "hold_margin": HOLD_MARGIN,
                                      "sleep_cycles_per_ms": cycles_per_ms},
                     "cudnn_benchmark": torch.backends.cudnn.benchmark,
                     "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                     "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32},
        "sgemm": sgemm,
    }  # fmt: skip
    jobs = plan(args.nets, args.batches, args.dtype, args.max_layers)
    jobs = jobs[args.shard[0] :: args.shard[1]]
    if args.precompile_only:
        clock = time.monotonic()
        with db:
            compiled, failed = precompile_jobs(jobs, device, args.jobs, db)
        print(f"precompiled {compiled} configs ({failed} compile errors) in {time.monotonic() - clock:.1f} s")
        return 0
    path = args.out / "vs_cudnn.json"
    rows: list[Row] = []

    def on_row(row: Row) -> None:
        rows.append(row)
        _print_row(row)
        write_json(path, {**report(meta, rows, sgemm["tflops"]), "jobs": len(jobs), "done": len(rows)})

    deadline = t0 + args.time_limit if args.time_limit is not None else None
    with db:
        run_jobs(jobs, _tuner(device, db, args, settings), lambda p, dt: time_cudnn(torch, p, dt, cycles_per_ms),
                 deadline=deadline, on_row=on_row)  # fmt: skip
    doc = {**report(meta, rows, sgemm["tflops"]), "jobs": len(jobs), "done": len(rows),
           "stopped_by_time_limit": len(rows) < len(jobs), "wall_s": round(time.monotonic() - t0, 1)}  # fmt: skip
    write_json(path, doc)
    print(f"\n{doc['device']['name']}, commit {doc['commit']}, {doc['date']}; "
          f"cuBLAS SGEMM {SGEMM_N}^3 FP32 ceiling {sgemm['tflops']:.2f} TFLOP/s\n")  # fmt: skip
    print(markdown_table(rows, sgemm["tflops"]))
    print()
    print("\n".join(summary_lines(doc["summary"])))
    if doc["stopped_by_time_limit"]:
        print(f"\nstopped by --time-limit after {len(rows)} of {len(jobs)} layers")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
