"""The `kptune` command: a thin layer over the Python API.

Usage errors and bad input print one line to stderr and exit 2; no tracebacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kptune.backends import list_devices, resolve_device
from kptune.errors import KptuneError
from kptune.kernel import get_family
from kptune.local_search import LOCAL
from kptune.measurement import TimingSettings
from kptune.neighbours import COVER, FAR_NEIGHBOURS, NEIGHBOURS
from kptune.perfdb import PerfDB, default_db_path
from kptune.problem import parse_problem
from kptune.strategies import get_strategy

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kptune.device import DeviceInfo
    from kptune.kernel import KernelFamily
    from kptune.problem import Problem

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Kernel-parameter autotuner: measure, store and predict the best tuning parameters.",
)
db_app = typer.Typer(no_args_is_help=True, help="Inspect the perf db.")
app.add_typer(db_app, name="db")
dataset_app = typer.Typer(no_args_is_help=True, help="The recorded dataset the predictor learns from.")
app.add_typer(dataset_app, name="dataset")
models_app = typer.Typer(no_args_is_help=True, help="The model registry: versions, the current one, rollback.")
app.add_typer(models_app, name="models")
cache_app = typer.Typer(no_args_is_help=True, help="CuPy's kernel cache: filled on a CPU host, shipped to a GPU.")
app.add_typer(cache_app, name="cache")

out = Console()
err = Console(stderr=True)

DbOpt = Annotated[Path | None, typer.Option("--db", help="perf db file (default: user data dir, or $KPTUNE_DB)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document")]
RestartsOpt = Annotated[
    int, typer.Option(help="train seeds SEED .. SEED+N-1 and keep the one best on the validation problems")
]
MembersOpt = Annotated[
    int, typer.Option(help="train seeds SEED .. SEED+N-1 and keep them all, as one ensemble (N > 1)")
]
LookaheadOpt = Annotated[
    bool, typer.Option(help="score each value by the launch it leads to (LSTM; --no-lookahead: without)")
]
TargetMsOpt = Annotated[float, typer.Option(help="timed device ms per config (its launches: 5 to --max-runs)")]
MaxRunsOpt = Annotated[int, typer.Option(help="at most this many timed launches per config")]
ShapeOpt = Annotated[str | None, typer.Option(help='e.g. "n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1"')]
MiopenOpt = Annotated[str | None, typer.Option(help='MIOpenDriver arguments, e.g. "conv -n 32 -c 64 ..."')]
DEFAULT_DATASET = Path(__file__).resolve().parent / "data" / "dataset-h200.db.gz"
#: `kptune retrain`'s epochs on train + validation. The nightly candidate trains on the validation problems
#: too: on the H200 dataset's eighteenth installment, 25 epochs on train + validation beat 25 on train
#: alone for each of 4 seeds on every gate metric (test top 1 +0.011 on average), and the runs early-stopped
#: on validation kept epochs 10 to 35 at about the fixed run's scores (benchmarks/RESULTS.md)
RETRAIN_EPOCHS = 25


def _writable(path: Path) -> Path:
    """`path`, checked before the work that ends in writing it (a training run, a fit, a tuning run's plot): its
    directory exists and `path` is not one."""
    folder = path.parent
    if not folder.is_dir():
        raise KptuneError(f"cannot write {path}: no directory {folder}")
    if path.is_dir():
        raise KptuneError(f"cannot write {path}: it is a directory")
    return path


def _existing_db(db: Path | None) -> Path:
    """The perf db a command reads (--db, else the default), which must exist: reading never creates one."""
    path = db if db is not None else default_db_path()
    if not path.exists():
        raise KptuneError(f"no perf db at {path} (run `kptune tune` first, or pass --db)")
    return path


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@app.command()
def devices(as_json: JsonOpt = False) -> None:
    """List every usable device with the limits its driver reports, and the model autotune uses on it."""
    from kptune.autotune import served_by

    found = list_devices()
    family = get_family("conv2d_fwd")
    served = [served_by(d, family) for d in found]  # (model path, whose it is), per device
    if as_json:
        _print_json([{"spec": d.spec, **d.limits(), "model": str(path) if path else None, "model_note": note}
                     for d, (path, note) in zip(found, served, strict=True)])  # fmt: skip
        return
    if not found:
        raise KptuneError("no usable device: install CuPy for a GPU, or PyOpenCL and an OpenCL driver (PoCL)")
    table = Table("device", "name", "kind", "max group", "local mem", "regs/group", "CUs", "simd", "L2")
    for d in found:
        table.add_row(d.spec, d.name, d.kind, str(d.max_work_group_size), f"{d.max_local_mem_bytes // 1024} KiB",
                      str(d.max_registers_per_group or "-"), str(d.compute_units), str(d.simd_width),
                      f"{d.l2_bytes // 1024} KiB")  # fmt: skip
    out.print(table)
    for d, (_, note) in zip(found, served, strict=True):
        out.print(f"{d.spec} model: {note}")


@app.command()
def tune(
    shape: Annotated[str | None, typer.Option(help='e.g. "n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1,stride=1"')] = None,
    miopen: MiopenOpt = None,
    device: Annotated[str | None, typer.Option(help="cupy:N or opencl:P:D (see `kptune devices`)")] = None,
    kernel: Annotated[str, typer.Option(help="kernel family")] = "conv2d_fwd",
    strategy: Annotated[str, typer.Option(help="exhaustive | random")] = "exhaustive",
    budget: Annotated[int | None, typer.Option(help="configs to measure (random)")] = None,
    seed: Annotated[int, typer.Option(help="seed for inputs and the random strategy")] = 0,
    timeout: Annotated[float, typer.Option(help="watchdog seconds per config")] = 60.0,
    jobs: Annotated[int | None, typer.Option(help="parallel compile processes (default: CPU cores)")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure every config (exhaustive) or a sample (random) into the perf db; resumes."""
    from kptune.progress import TuneProgress
    from kptune.tune import tune as run_tune

    problem = parse_problem(shape, miopen)
    get_strategy(strategy), get_family(kernel)  # fail fast, before any device work
    dev = resolve_device(device)
    settings = TimingSettings(timeout_s=timeout, seed=seed)
    with TuneProgress(problem, err, label=f"{kernel} on {dev.spec}") as progress:
        result = run_tune(problem, kernel=kernel, device=dev, strategy=strategy, budget=budget, db=db,
                          settings=settings, jobs=jobs, progress=progress)  # fmt: skip
    if as_json:
        _print_json(result.to_json())
        return
    table = Table(title=f"{problem.key()} on {dev.spec} ({dev.name})", show_header=False)
    table.add_row("kernel", result.kernel)
    table.add_row("configs", f"{result.candidates} ({result.measured} measured now, {result.resumed} from the db)")
    table.add_row("outcomes", ", ".join(f"{k} {v}" for k, v in result.outcomes.items()))
    if result.best is not None:
        table.add_row("best", result.best.config.key())
        table.add_row("time", f"{result.best.time_ms:.4g} ms, {result.best_tflops:.3g} TFLOP/s")
    else:
        table.add_row("best", "none: no config ran correctly")
    table.add_row("wall", f"{result.wall_s:.1f} s, {result.configs_per_s:.2f} configs/s")
    table.add_row("stored in", str(result.db_path))
    out.print(table)


@app.command()
def campaign(
    shapes: Annotated[
        Path | None, typer.Option(help="corpus CSV (kptune/data/corpus.csv) or one shape per line")
    ] = None,
    split: Annotated[list[str] | None, typer.Option(help="corpus split(s) to take: train, validation, test")] = None,
    network: Annotated[list[str] | None, typer.Option(help="only shapes of these networks (corpus CSV)")] = None,
    dtype: Annotated[list[str] | None, typer.Option(help="tune each shape in these dtypes (default: file's)")] = None,
    limit: Annotated[int | None, typer.Option(help="first N shapes only")] = None,
    max_gflop: Annotated[float | None, typer.Option(help="only shapes of at most this many GFLOP")] = None,
    kernel: Annotated[str, typer.Option(help="kernel family")] = "conv2d_fwd",
    device: Annotated[list[str] | None, typer.Option(help="device(s) (default: every GPU, else the CPU)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker slots (default: one per device / Ray GPU)")] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Ray cluster address, or 'local' for a private one")] = None,
    strategy: Annotated[str, typer.Option(help="exhaustive | random")] = "exhaustive",
    budget: Annotated[int | None, typer.Option(help="configs per shape (random)")] = None,
    seed: Annotated[int, typer.Option(help="seed for inputs and the random strategy")] = 0,
    timeout: Annotated[float, typer.Option(help="watchdog seconds per config")] = 60.0,
    target_ms: TargetMsOpt = 2.0,
    max_runs: MaxRunsOpt = 100,
    jobs: Annotated[int | None, typer.Option(help="parallel compile processes (default: spare cores)")] = None,
    chunk: Annotated[int | None, typer.Option(help="hand out configs in runs of this many (default: shapes)")] = None,
    order: Annotated[str, typer.Option(help="largest shapes first | as given | shuffled by --seed")] = "largest",
    from_audit: Annotated[bool, typer.Option("--from-audit", help="first the neighbours of audited misses")] = False,
    unseen: Annotated[
        Path | None, typer.Option(help="leave out the problems this dataset holds (the next installment's shapes)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be tuned; measure nothing")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tune every shape of a file into the perf db, on all local GPUs or a Ray cluster; resumes."""
    import dataclasses

    from kptune.backends import campaign_devices
    from kptune.campaign import campaign as run_campaign
    from kptune.campaign import check_order
    from kptune.corpus import read_shapes
    from kptune.progress import CampaignDisplay

    family = get_family(kernel)
    get_strategy(strategy)
    _check_timing(target_ms, max_runs)
    check_order(order)
    if shapes is None and not from_audit:
        raise KptuneError("give --shapes FILE, --from-audit, or both")
    problems = read_shapes(shapes, splits=split or (), networks=network or (), limit=limit) if shapes else []
    if from_audit:
        from kptune.audit import audit_queue

        queue_device = (
            campaign_devices(device or ())[0] if ray is None else resolve_device(device[0] if device else None)
        )
        queued = audit_queue(db if db is not None else default_db_path(), queue_device.key, kernel)
        err.print(f"{len(queued)} shapes queued by audits (neighbours of the model's misses) go first", markup=False)
        problems = list(dict.fromkeys([*queued, *problems]))
    if max_gflop is not None:
        if not max_gflop > 0:
            raise KptuneError(f"--max-gflop must be positive, not {max_gflop}")
        problems = [p for p in problems if p.flops() <= max_gflop * 1e9]
        if not problems:
            raise KptuneError(f"no shape of at most {max_gflop:g} GFLOP selected")
    if dtype:
        problems = list(dict.fromkeys(dataclasses.replace(p, dtype=d) for p in problems for d in dtype))
    if unseen is not None:
        from kptune.dataset import problem_keys

        held = problem_keys(unseen)
        problems = [p for p in problems if p.key() not in held]
        if not problems:
            raise KptuneError(f"every selected shape is already in {unseen}")
    devices = [] if ray is not None else campaign_devices(device or ())
    if dry_run:
        _campaign_plan(problems, family, devices[0] if devices else resolve_device(device[0] if device else None),
                       db, strategy, budget, seed, as_json)  # fmt: skip
        return
    settings = TimingSettings(timeout_s=timeout, seed=seed, target_ms=target_ms, max_runs=max_runs)
    label = "ray" if ray is not None else ", ".join(dict.fromkeys(d.spec for d in devices))
    with CampaignDisplay(err, label=label) as progress:
        result = run_campaign(problems, family, devices=devices, db=db, workers=workers, ray_address=ray,
                              ray_device=device[0] if ray is not None and device else None, strategy=strategy,
                              budget=budget, settings=settings, jobs=jobs, chunk=chunk, progress=progress,
                              order=order)  # fmt: skip
    if as_json:
        _print_json(result.to_json())
        return
    table = Table(title=f"campaign on {result.device} ({result.workers} {result.engine} workers)", show_header=False)
    table.add_row("shapes", f"{len(result.problems)} ({result.complete} complete)")
    table.add_row("configs", f"{result.measured} measured now, {result.resumed} from the db")
    table.add_row("outcomes", ", ".join(f"{k} {v}" for k, v in result.outcomes.items()) or "-")
    table.add_row("compile pass", f"{result.compiled} configs in {result.compile_s:.1f} s")
    table.add_row("measuring", f"{result.measure_s:.1f} s, {result.configs_per_s:.1f} configs/s, "
                               f"{result.shapes_per_gpu_minute:.2f} shapes per worker-minute")  # fmt: skip
    if result.median_problem_s is not None:
        table.add_row("median shape", f"{result.median_problem_s:.2f} s")
    for failure in result.failures:
        table.add_row("refused" if "device memory" in failure else "worker failed", failure)
    table.add_row("stored in", str(result.db_path))
    out.print(table)
    refused = sum(1 for p in result.problems if p.refused)
    unfinished = len(result.problems) - result.complete - refused
    if unfinished:
        raise KptuneError(f"{unfinished} shapes are not complete; run again to resume")
    if refused:
        raise KptuneError(f"{refused} shapes refused: they do not fit in the device's memory (see above)")


def _campaign_plan(problems: Sequence[Problem], family: KernelFamily, device: DeviceInfo, db: Path | None,
                   strategy: str, budget: int | None, seed: int, as_json: bool) -> None:  # fmt: skip
    """campaign --dry-run: what the db lacks, per shape; nothing measured."""
    from kptune.campaign import plan

    with PerfDB(db if db is not None else default_db_path()) as perfdb:
        tasks, reports, resumed = plan(problems, family, device, perfdb, strategy, budget, seed)
    doc: dict[str, Any] = {"device": device.key, "shapes": len(reports), "complete": sum(r.complete for r in reports),
           "to_tune": len(tasks), "configs_to_measure": sum(len(t.configs) for t in tasks), "configs_in_db": resumed,
           "refused": [f"{r.problem}: {r.refused}" for r in reports if r.refused]}  # fmt: skip
    if as_json:
        _print_json(doc)
        return
    table = Table(title="campaign plan (dry run: nothing measured)", show_header=False)
    for key in ("device", "shapes", "complete", "to_tune", "configs_to_measure", "configs_in_db"):
        table.add_row(key.replace("_", " "), str(doc[key]))
    for refusal in doc["refused"]:
        table.add_row("refused", refusal)
    out.print(table)


def _check_timing(target_ms: float, max_runs: int) -> None:
    if not 0 < target_ms <= 1000:
        raise KptuneError(f"--target-ms must be in (0, 1000], not {target_ms:g}")
    min_runs = TimingSettings.min_runs
    if max_runs < min_runs:
        raise KptuneError(f"--max-runs must be at least {min_runs} (the fewest timed launches), not {max_runs}")


def _check_restarts(restarts: int, early_stop: bool, members: int = 1) -> None:
    if restarts < 1:
        raise KptuneError(f"--restarts must be at least 1, not {restarts}")
    if restarts > 1 and not early_stop:
        raise KptuneError("--restarts chooses on the validation problems: it needs early stopping (--early-stop)")
    if members < 1:
        raise KptuneError(f"--members must be at least 1, not {members}")
    if members > 1 and restarts > 1:
        raise KptuneError("--restarts keeps one seed, --members keeps them all: give one of them")


@app.command("train")
def train_cmd(
    dataset: Annotated[Path, typer.Option(help="dataset file (kptune dataset build)")] = DEFAULT_DATASET,
    out_path: Annotated[Path, typer.Option("--out", help="checkpoint (.safetensors); curve beside it")] = Path(
        "model.safetensors"
    ),
    arch: Annotated[str, typer.Option(help="lstm | transformer")] = "lstm",
    epochs: Annotated[
        int, typer.Option(help="at most this many epochs (exactly this many with --no-early-stop)")
    ] = 300,
    seed: Annotated[int, typer.Option(help="seed for initialisation and batches")] = 0,
    early_stop: Annotated[
        bool,
        typer.Option(
            help="stop on the validation ratios; --no-early-stop: train on train + "
            "validation for exactly --epochs epochs, keep the last"
        ),
    ] = True,
    targets_within: Annotated[
        float, typer.Option(help="configs within this factor of a problem's best are targets too (1.0: the best)")
    ] = 1.05,
    max_targets: Annotated[int, typer.Option(help="at most this many targets per problem")] = 8,
    restarts: RestartsOpt = 1,
    members: MembersOpt = 1,
    lookahead: LookaheadOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Train the seq2seq predictor on the CPU, early-stopping on validation ratios (or for fixed epochs)."""
    from kptune.predict.api import train_checkpoint
    from kptune.predict.models import ModelConfig

    if arch not in ("lstm", "transformer"):
        raise KptuneError(f"--arch must be lstm or transformer, not {arch!r}")
    if epochs < 1:
        raise KptuneError(f"--epochs must be at least 1, not {epochs}")
    if targets_within < 1.0 or max_targets < 1:
        raise KptuneError(f"--targets-within must be >= 1 and --max-targets >= 1, not {targets_within}, "
                          f"{max_targets}")  # fmt: skip
    _check_restarts(restarts, early_stop, members)
    info = train_checkpoint(dataset, _writable(out_path), ModelConfig(arch=arch, epochs=epochs, seed=seed,
                            early_stop=early_stop, targets_within=targets_within, max_targets=max_targets,
                            restarts=restarts, members=members, lookahead=lookahead),
                            log=lambda line: err.print(line, markup=False))  # fmt: skip
    if as_json:
        _print_json(info)
        return
    val = "validation: "
    if info["val_ratio"] is not None:
        val = f"validation ratio {info['val_ratio']:.4f}, loss {info['val_loss']:.4f} on "
    elif info["val_loss"] is not None:
        val = f"validation loss {info['val_loss']:.4f} on "
    trained = f"best epoch {info['best_epoch']} of {info['epochs_run']}"
    if "members" in info:
        trained = f"an ensemble of {len(info['members'])}, best epochs " + ", ".join(
            str(m["best_epoch"]) for m in info["members"]
        )
    out.print(f"wrote {info['checkpoint']} ({trained}, "
              f"{val}{info['validation']}; {info['seconds']} s); "
              f"curve {info['curve']}", markup=False, highlight=False)  # fmt: skip


@app.command("eval")
def eval_cmd(
    model: Annotated[Path, typer.Option(help="checkpoint")] = Path("model.safetensors"),
    dataset: Annotated[Path, typer.Option(help="dataset file")] = DEFAULT_DATASET,
    k: Annotated[int, typer.Option("-k", help="candidates per problem")] = 5,
    dtype: Annotated[str, typer.Option(help="fp32, fp16 or all")] = "fp32",
    reranker: Annotated[
        Path | None, typer.Option(help="also score the beam reordered by this reranker (`kptune dataset reranker`)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score the model on the test networks beside the baselines (exact, top-k hit, ratio, TenSet score)."""
    from kptune.predict.api import evaluate

    if k < 1:
        raise KptuneError(f"-k must be at least 1, not {k}")
    doc = evaluate(model, dataset, k, None if dtype == "all" else dtype, reranker=reranker)
    if as_json:
        _print_json(doc)
        return
    table = Table(
        "method",
        "exact",
        f"top-{k} hit",
        "ratio top-1",
        f"ratio top-{k}",
        "share >= 0.95",
        "TenSet score_1",
        title=f"{doc['test_problems']} test problems ({dtype}), {doc['device']}",
    )
    for name, r in doc["results"].items():
        table.add_row(name, f"{r['exact_match']:.2f}", f"{r[f'top{k}_hit']:.2f}", f"{r['ratio_top1_geomean']:.3f}",
                      f"{r[f'ratio_top{k}_geomean']:.3f}", f"{r['share_top1_ge_0.95']:.2f}",
                      f"{r['tenset_score_1']:.3f}")  # fmt: skip
    out.print(table)


@app.command("predict")
def predict_cmd(
    shape: ShapeOpt = None,
    miopen: MiopenOpt = None,
    k: Annotated[int, typer.Option("-k", help="configs to return")] = 5,
    model: Annotated[
        Path | None, typer.Option(help="checkpoint (default: the registry's current version, else the shipped one)")
    ] = None,
    blend: Annotated[
        bool,
        typer.Option("--blend", help="rank the tuned shapes' configs by the model and the shipped cost model together"),
    ] = False,
    rerank: Annotated[
        bool,
        typer.Option(
            "--rerank",
            help="order the beam and the nearest tuned shapes' winners by the device's shipped reranker (~5 ms)",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The model's top-k configs for a shape (no device needed; valid for the checkpoint's GPU)."""
    from kptune.predict.api import predict
    from kptune.predict.beam import hedges

    if k < 1:
        raise KptuneError(f"-k must be at least 1, not {k}")
    if blend and rerank:
        raise KptuneError("--blend and --rerank are two rankings: choose one")
    problem = parse_problem(shape, miopen)
    found, pred = predict(problem, k, model, blend=blend, rerank=rerank)
    rows = [{"rank": i + 1, "config": c.config.as_dict(), "key": c.config.key(), "log_prob": round(c.log_prob, 4)}
            for i, c in enumerate(found)]  # fmt: skip
    if as_json:
        _print_json({"problem": problem.key(), "device": pred.meta["device"], "candidates": rows})
        return
    # the beam picks its k one at a time, spread over the family's tile (beam.hedges), so log p need not fall
    spread = not blend and not rerank and k > 1 and bool(hedges(pred.meta["family"], pred.vocab)[1])
    caption = "in the order picked: the most likely first, the rest spread over tiles" if spread else None
    caption = "fastest first by the reranker" if rerank else caption
    table = Table("rank", "config", "log p", title=f"{problem.key()} on {pred.meta['device']}", caption=caption)
    for r in rows:
        table.add_row(str(r["rank"]), str(r["key"]), f"{r['log_prob']:.3f}")
    out.print(table)


@app.command("autotune")
def autotune_cmd(
    shape: ShapeOpt = None,
    miopen: MiopenOpt = None,
    k: Annotated[int, typer.Option("-k", help="model candidates to measure")] = 5,
    device: Annotated[str | None, typer.Option(help="cupy:N or opencl:P:D (see `kptune devices`)")] = None,
    model: Annotated[Path | None, typer.Option(help="checkpoint (default: one made for this device)")] = None,
    force: Annotated[bool, typer.Option("--force", help="re-tune even if the db has a winner")] = False,
    budget: Annotated[
        int, typer.Option(help="configs measured when there is no model: half random, half by a local search")
    ] = 24,
    neighbours: Annotated[
        int,
        typer.Option(
            help="also measure this many configs of the nearest tuned shapes: the cost model's "
            "picks, else the nearest shape's fastest (0: none)"
        ),
    ] = NEIGHBOURS,
    far_neighbours: Annotated[
        int,
        typer.Option(
            help="as many as this in place of --neighbours for a shape far from every tuned one (farther than "
            "99% of the tuned shapes lie from their nearest)"
        ),
    ] = FAR_NEIGHBOURS,
    cover: Annotated[
        int, typer.Option(help="and this many that complete them over the nearest tuned shapes (0: none)")
    ] = COVER,
    local: Annotated[
        int,
        typer.Option(
            help="then this many more by a local search around the fastest, in rounds of 5 guided by the model "
            "(0: none)"
        ),
    ] = LOCAL,
    no_model: Annotated[
        bool, typer.Option("--no-model", help="measure --budget configs without a model, even where one serves")
    ] = False,
    jobs: Annotated[int | None, typer.Option(help="parallel compile processes (default: CPU cores)")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The fastest measured config for a shape: from the db, else the model's top-k measured on the device."""
    from kptune.autotune import autotune

    problem = parse_problem(shape, miopen)
    if budget < 1:
        raise KptuneError(f"--budget must be at least 1, not {budget}")
    result = autotune(problem, device=device, k=k, db=db, model=model, force=force, budget=budget, jobs=jobs,
                      neighbours=neighbours, cover=cover, far_neighbours=far_neighbours, local=local,
                      use_model=not no_model)  # fmt: skip
    doc = result.to_json()
    if as_json:
        _print_json(doc)
        return
    table = Table("rank", "config", "outcome", "ms", "TFLOP/s", "ratio to winner",
                  title=f"{problem.key()} on {result.device.spec} ({result.device.name})")  # fmt: skip
    rows = doc["candidates"] or ([doc["best"]] if doc["best"] else [])
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), r["key"], r["outcome"], _num(r["time_ms"], ".4g"), _num(r["tflops"], ".3g"),
                      _num(r["ratio_to_winner"], ".3f"))  # fmt: skip
    out.print(table)
    out.print(f"source: {result.source} ({result.note}); predict {result.predict_ms:.1f} ms, "
              f"total {result.wall_s:.1f} s; stored in {result.db_path}", markup=False, highlight=False)  # fmt: skip
    if result.best is None:
        raise KptuneError("no candidate ran correctly; try --force with a larger --budget")


@app.command("compare")
def compare_cmd(
    shape: Annotated[str | None, typer.Option(help="one shape")] = None,
    shapes: Annotated[Path | None, typer.Option(help="a shapes file (corpus CSV or one shape per line)")] = None,
    split: Annotated[list[str] | None, typer.Option(help="corpus split(s) (with --shapes)")] = None,
    limit: Annotated[int | None, typer.Option(help="first N shapes only")] = None,
    k: Annotated[int, typer.Option("-k", help="model candidates to measure")] = 5,
    neighbours: Annotated[int, typer.Option(help="and configs of the nearest tuned shapes (0: none)")] = NEIGHBOURS,
    cover: Annotated[int, typer.Option(help="and configs covering the nearest tuned shapes (0: none)")] = COVER,
    local: Annotated[int, typer.Option(help="then configs of a local search around the fastest (0: none)")] = LOCAL,
    device: Annotated[str | None, typer.Option(help="cupy:N or opencl:P:D")] = None,
    model: Annotated[Path | None, typer.Option(help="checkpoint (default: one made for this device)")] = None,
    no_model: Annotated[
        bool, typer.Option("--no-model", help="autotune's search without a model, even where one serves")
    ] = False,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="PNG: autotune winner vs optimum")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The model path against exhaustive search on the same device: time each took, distance to the optimum."""
    from kptune.compare import compare, plot, summary
    from kptune.corpus import read_shapes

    if (shape is None) == (shapes is None):
        raise KptuneError("give exactly one of --shape or --shapes")
    if plot_path is not None:
        _writable(plot_path)
    problems = [parse_problem(shape)] if shape else read_shapes(shapes, splits=split or (), limit=limit)  # type: ignore[arg-type]
    rows = compare(problems, device=device, k=k, model=model, db=db, neighbours=neighbours, cover=cover,
                   local=local, use_model=not no_model)  # fmt: skip
    doc: dict[str, Any] = {"rows": [r.to_json() for r in rows], "summary": summary(rows)}
    if plot_path is not None:
        plot(rows, plot_path)
    if as_json:
        _print_json(doc)
        return
    table = Table("problem", "path", "autotune s", "exhaustive s", "speed-up", "ratio", "retimed", "configs")
    for r in rows:
        table.add_row(r.problem.split(":", 1)[-1][:60], r.source, f"{r.model_s:.2f}", f"{r.exhaustive_s:.2f}",
                      _num(r.speedup, ".1f"), _num(r.ratio, ".3f"), _num(r.ratio_retimed, ".3f"),
                      str(r.configs))  # fmt: skip
    out.print(table)
    sm = doc["summary"]
    line = f"{sm['problems']} problems: median speed-up {_num(sm['median_speedup'], '.1f')}x, "
    line += f"geomean ratio {_num(sm['geomean_ratio'], '.3f')} (winners retimed alike: "
    line += f"{_num(sm['geomean_ratio_retimed'], '.3f')})" + (f"; plot {plot_path}" if plot_path else "")
    out.print(line, markup=False, highlight=False)


@app.command("audit")
def audit_cmd(
    sample: Annotated[int, typer.Option(help="problems the model served to re-tune exhaustively")] = 5,
    device: Annotated[str | None, typer.Option(help="cupy:N or opencl:P:D")] = None,
    seed: Annotated[int, typer.Option(help="which problems are sampled")] = 0,
    kernel: Annotated[str, typer.Option(help="kernel family")] = "conv2d_fwd",
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Exhaustive search on a sample of problems the model served: the gap, recorded for active learning."""
    from kptune.audit import MISS, audit

    rows = audit(_existing_db(db), device=device, sample=sample, seed=seed, kernel=kernel)
    if as_json:
        _print_json([r.to_json() for r in rows])
        return
    table = Table("problem", "model's best ms", "optimum ms", "ratio", "configs")
    for r in rows:
        table.add_row(r.problem.split(":", 1)[-1][:60], _num(r.model_ms, ".4g"), _num(r.optimum_ms, ".4g"),
                      _num(r.ratio, ".3f"), str(r.configs))  # fmt: skip
    out.print(table)
    missed = sum(1 for r in rows if r.ratio is not None and r.ratio < MISS)
    out.print(f"{missed} of {len(rows)} missed by more than 5%: `kptune campaign --from-audit` tunes their "
              "neighbours first", markup=False)  # fmt: skip


@app.command("report")
def report_cmd(
    out_path: Annotated[Path, typer.Option("--out", help="HTML file to write")] = Path("kptune-report.html"),
    db: DbOpt = None,
    registry: Annotated[Path | None, typer.Option("--registry", help="model registry dir")] = None,
) -> None:
    """One HTML page: predicted vs optimal times, ratio per network, model versions over time."""
    from kptune.registry import Registry
    from kptune.report import write_report

    path = _existing_db(db)
    out.print(f"wrote {write_report(path, _writable(out_path), Registry(registry))}", markup=False, highlight=False)


RegistryOpt = Annotated[
    Path | None,
    typer.Option("--registry", help="model registry dir (default: $KPTUNE_MODELS or the user data dir's models/)"),
]


@app.command("retrain")
def retrain_cmd(
    db: DbOpt = None,
    device: Annotated[str | None, typer.Option(help="device key in the db (default: its only one)")] = None,
    kernel: Annotated[str, typer.Option(help="kernel family")] = "conv2d_fwd",
    arch: Annotated[str, typer.Option(help="lstm | transformer")] = "lstm",
    epochs: Annotated[
        int | None,
        typer.Option(
            help=f"train for exactly this many epochs (default {RETRAIN_EPOCHS}); with --early-stop at most "
            "this many (default 300)"
        ),
    ] = None,
    early_stop: Annotated[
        bool,
        typer.Option(
            help="hold the validation problems out and stop on their ratios; default: train on train + "
            "validation for --epochs epochs, more data being worth more than the stop (RESULTS.md)"
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    restarts: Annotated[
        int | None,
        typer.Option(
            help="with --early-stop: train seeds SEED .. SEED+N-1 and keep the one best on the validation "
            "problems (default 3 with --early-stop, else 1)"
        ),
    ] = None,
    members: MembersOpt = 1,
    lookahead: LookaheadOpt = True,
    corpus: Annotated[
        Path | None, typer.Option(help="corpus CSV whose split column decides (default: shipped)")
    ] = None,
    registry: RegistryOpt = None,
    base: Annotated[
        bool, typer.Option(help="cut on top of the dataset autotune lends from now, if measured on this device")
    ] = True,
    reranker: Annotated[
        bool,
        typer.Option(
            "--reranker", help="also fit the reranker of `kptune predict --rerank` on the cut (5 more seq2seqs)"
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> int:
    """Nightly: train on everything in the db (and fit the cost model on it), promote the new version only if
    autotune's candidates from it are not worse (exit 0), else 10."""
    from kptune.predict.models import ModelConfig
    from kptune.registry import Registry
    from kptune.retrain import retrain

    if arch not in ("lstm", "transformer"):
        raise KptuneError(f"--arch must be lstm or transformer, not {arch!r}")
    if epochs is None:
        epochs = 300 if early_stop else RETRAIN_EPOCHS
    if epochs < 1:
        raise KptuneError(f"--epochs must be at least 1, not {epochs}")
    if restarts is None:
        restarts = 3 if early_stop and members == 1 else 1
    _check_restarts(restarts, early_stop, members)
    cfg = ModelConfig(arch=arch, epochs=epochs, early_stop=early_stop, seed=seed, restarts=restarts, members=members,
                      lookahead=lookahead)  # fmt: skip
    path = db if db is not None else default_db_path()
    from kptune.corpus import load_corpus

    entries = load_corpus(corpus) if corpus is not None else None
    # the reranker's folds train as the nightly candidate does by default: fixed epochs on train + validation
    folds_cfg = ModelConfig(arch=arch, epochs=RETRAIN_EPOCHS if early_stop else epochs, early_stop=False, seed=seed,
                            lookahead=lookahead)  # fmt: skip
    result = retrain(path, device, kernel, Registry(registry), cfg, log=lambda s: err.print(s, markup=False),
                     corpus=entries, base=base, reranker=folds_cfg if reranker else None)  # fmt: skip
    if as_json:
        _print_json(result.to_json())
    else:
        verdict = "promoted" if result.promoted else "not promoted"
        out.print(f"v{result.version} {verdict}: {result.reason}", markup=False, highlight=False)
    return result.exit_code


@models_app.command("list")
def models_list(registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Every version with its device, data hash and metrics; * marks the current ones."""
    from kptune.registry import Registry

    reg = Registry(registry)
    versions = reg.versions()
    current = {(v["device"], v["family"]): (reg.current(v["device"], v["family"]) or ({},))[0].get("version")
               for v in versions}  # fmt: skip
    if as_json:
        _print_json({"root": str(reg.root), "versions": versions})
        return
    table = Table("", "version", "device", "family", "dataset", "lends", "ratio top-5", "ratio autotune", "created",
                  title=str(reg.root))  # fmt: skip
    for v in versions:
        mark = "*" if current.get((v["device"], v["family"])) == v["version"] else ""
        table.add_row(mark, str(v["version"]), v["device"], v["family"], str(v.get("dataset_hash")),
                      "pruned" if v.get("pruned") else "its dataset" if v.get("lent_dataset") else "shipped",
                      _num(v["metrics"].get("ratio_top5_geomean"), ".3f"),
                      _num(v["metrics"].get("autotune_ratio_geomean"), ".3f"), v["created"])  # fmt: skip
    out.print(table)


@models_app.command("promote")
def models_promote(
    version: Annotated[int, typer.Argument(help="version number")], registry: RegistryOpt = None
) -> None:
    """Make a version the current model for its device and kernel."""
    from kptune.registry import Registry

    entry = Registry(registry).promote(version)
    out.print(f"v{entry['version']} is now current for {entry['device']} / {entry['family']}", markup=False)


@models_app.command("rollback")
def models_rollback(
    device: Annotated[str, typer.Option(help="device key, e.g. 'cupy:NVIDIA H200'")],
    kernel: Annotated[str, typer.Option(help="kernel family")] = "conv2d_fwd",
    registry: RegistryOpt = None,
) -> None:
    """Make the previously promoted version current again."""
    from kptune.registry import Registry

    entry = Registry(registry).rollback(device, kernel)
    out.print(f"v{entry['version']} is current again for {device} / {kernel}", markup=False)


@models_app.command("prune")
def models_prune(
    keep: Annotated[int, typer.Option(help="per device and kernel: keep the last N promoted and the N newest")] = 3,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete the files of old versions (~8 MB each); they stay listed with their metrics."""
    from kptune.registry import Registry

    pruned = Registry(registry).prune(keep)
    if as_json:
        _print_json({"pruned": [v["version"] for v in pruned]})
    else:
        which = ", ".join(f"v{v['version']}" for v in pruned) or "none"
        out.print(f"pruned: {which}", markup=False, highlight=False)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@db_app.command("show")
def db_show(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Counts, outcomes and the best config of every tuned problem."""
    path = _existing_db(db)
    with PerfDB(path) as perfdb:
        summary = perfdb.summary()
    if as_json:
        _print_json(summary)
        return
    out.print(f"[bold]{summary['path']}[/] (schema v{summary['schema_version']})")
    out.print(", ".join(f"{k}: {v}" for k, v in summary["counts"].items()))
    out.print("outcomes: " + (", ".join(f"{k} {v}" for k, v in summary["outcomes"].items()) or "none"))
    table = Table("problem", "device", "kernel", "best config", "ms", "TFLOP/s", "ok configs")
    for row in summary["best"]:
        table.add_row(row["problem"], row["device"], row["kernel"], row["config"], f"{row['time_ms']:.4g}",
                      f"{row['tflops']:.3g}", str(row["configs_ok"]))  # fmt: skip
    out.print(table)


@db_app.command("merge")
def db_merge(
    sources: Annotated[list[Path], typer.Argument(help="perf db files to copy from (never written)")],
    db: DbOpt = None,
) -> None:
    """Copy the measurements of other perf dbs (e.g. each device session's) into this one; reruns add nothing."""
    for source in sources:
        if not source.is_file():
            raise KptuneError(f"no perf db at {source}")
    with PerfDB(db) as target:
        for source in sources:
            with PerfDB(source) as other:
                added = target.merge_from(other)
            err.print(f"{source}: {added} measurements added to {target.path}", markup=False)


@db_app.command("export")
def db_export(
    fmt: Annotated[str, typer.Option("--format", help="t4 | kt-cache | miopen")],
    out_path: Annotated[Path, typer.Option("--out", help="file to write")],
    shape: Annotated[str | None, typer.Option(help="the problem (t4, kt-cache)")] = None,
    device: Annotated[str | None, typer.Option(help="device key as stored, or a unique part of it")] = None,
    kernel: Annotated[str, typer.Option(help="kernel family")] = "conv2d_fwd",
    db: DbOpt = None,
) -> None:
    """Write measurements in another tool's format: Kernel Tuner T4 or cache JSON, or a MIOpen perf db."""
    from kptune import interop

    if fmt not in ("t4", "kt-cache", "miopen"):
        raise KptuneError(f"--format must be t4, kt-cache or miopen, not {fmt!r}")
    _writable(out_path)
    family = get_family(kernel)
    path = _existing_db(db)
    with PerfDB(path) as perfdb:
        device_id, device_key = perfdb.find_device(device)
        if fmt == "miopen":
            lines = interop.to_miopen_perfdb(perfdb, device_key, family)
            try:
                out_path.write_text("".join(line + "\n" for line in lines))
            except OSError as exc:
                raise KptuneError(f"cannot write {out_path}: {exc.strerror or exc}") from None
            err.print(f"wrote {len(lines)} problems' best configs to {out_path}", markup=False)
            return
        if shape is None:
            raise KptuneError(f"--format {fmt} exports one problem: give --shape")
        problem = parse_problem(shape)
        if fmt == "t4":
            doc = interop.to_t4(perfdb, problem, device_key, family)
        else:
            doc = interop.to_kernel_tuner_cache(perfdb, problem, perfdb.device_info(device_id), family)
    interop.write_json(out_path, doc)
    count = len(doc["results"]) if fmt == "t4" else len(doc["cache"])
    err.print(f"wrote {count} configs of {problem.key()} to {out_path}", markup=False)


@db_app.command("import")
def db_import(
    file: Annotated[Path, typer.Argument(help="a Kernel Tuner T4 results file")],
    shape: Annotated[str, typer.Option(help="the problem the file measured")],
    device: Annotated[str, typer.Option(help="device key already in the db, or a local device spec")],
    kernel: Annotated[str, typer.Option(help="kernel family")] = "conv2d_fwd",
    db: DbOpt = None,
) -> None:
    """Add a T4 results file's measurements to the perf db (source: import)."""
    from kptune import interop
    from kptune.backends import resolve_device

    family = get_family(kernel)
    problem = parse_problem(shape)
    measurements = interop.from_t4(interop.read_json(file), family, str(file))
    with PerfDB(db) as perfdb:
        known = {k: i for i, k in perfdb.conn.execute("SELECT id, key FROM devices")}
        dev = perfdb.device_info(known[device]) if device in known else resolve_device(device)
        pid, did = perfdb.problem_id(problem), perfdb.device_id(dev)
        kid = perfdb.kernel_id(family.name, family.source_hash, family.space.names)
        perfdb.add_many((pid, did, kid, m, "import") for m in measurements)
    err.print(f"imported {len(measurements)} measurements of {problem.key()} on {dev.key}", markup=False)


@db_app.command("recheck")
def db_recheck(
    dataset: Annotated[
        Path | None, typer.Option(help="also the problems of this installment (same device) that the db lacks")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cupy:N or opencl:P:D: the device the times came from")] = None,
    kernel: Annotated[str, typer.Option(help="kernel family")] = "conv2d_fwd",
    factor: Annotated[float, typer.Option(help="a spike: slower than this many times every neighbour")] = 3.0,
    target_ms: TargetMsOpt = 2.0,
    max_runs: MaxRunsOpt = 100,
    timeout: Annotated[float, typer.Option(help="watchdog seconds per config")] = 60.0,
    jobs: Annotated[int | None, typer.Option(help="parallel compile processes (default: CPU cores)")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Time again, in full, each config recorded far slower than every config one parameter away (a
    spike: a stalled single launch) or slower than on the same problem at twice the batch (an inversion);
    the new time becomes the config's latest. Resumes."""
    from kptune.recheck import problems_of, recheck

    if not factor > 1:
        raise KptuneError(f"--factor must be above 1, not {factor:g}")
    _check_timing(target_ms, max_runs)
    get_family(kernel)
    dev = resolve_device(device)
    settings = TimingSettings(timeout_s=timeout, target_ms=target_ms, max_runs=max_runs)
    with PerfDB(db) as perfdb:
        problems = problems_of(perfdb, dev.key, kernel, dataset)
        rows = recheck(problems, perfdb, device=dev, kernel=kernel, factor=factor, settings=settings, jobs=jobs)
    confirmed = sum(r.confirmed for r in rows)
    inversions = sum(r.kind == "inversion" for r in rows)
    suspects = len({r.problem for r in rows})
    line = (f"{len(rows) - inversions} spikes and {inversions} batch inversions in {suspects} of {len(problems)} "
            f"problems timed again: {len(rows) - confirmed} were faults, {confirmed} confirmed")  # fmt: skip
    if as_json:
        _print_json(
            {"device": dev.key, "problems": len(problems), "summary": line, "rechecked": [r.to_json() for r in rows]}
        )
        return
    table = Table("problem", "config", "suspect", "recorded ms", "re-timed ms", "outcome")
    for r in rows:
        retimed = f"{r.retimed_ms:.4g}" if r.retimed_ms is not None else "-"
        table.add_row(r.problem.split(":", 1)[-1][:60], r.config, r.kind, f"{r.recorded_ms:.4g}", retimed, r.outcome)
    if rows:
        out.print(table)
    err.print(line, markup=False)


@dataset_app.command("build")
def dataset_build(
    out_path: Annotated[Path, typer.Option("--out", help="dataset file to write (.db.gz)")],
    device: Annotated[str | None, typer.Option(help="device key as stored, or a unique part of it")] = None,
    kernel: Annotated[str, typer.Option(help="kernel family")] = "conv2d_fwd",
    top: Annotated[int, typer.Option(help="configs kept per train/validation problem")] = 32,
    sampled: Annotated[
        int | None,
        typer.Option(
            help="also problems with >= N configs measured (random "
            "samples): labels are the sample's best, not the optimum"
        ),
    ] = None,
    base: Annotated[
        Path | None, typer.Option(help="an earlier installment: its problems the db lacks are carried over")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Cut the dataset from a perf db: exhaustively tuned problems, top configs, all of them for test."""
    from kptune import dataset

    path = _existing_db(db)
    if top < 1:
        raise KptuneError(f"--top must be at least 1, not {top}")
    if sampled is not None and sampled < 2:
        raise KptuneError(f"--sampled must be at least 2, not {sampled}")
    _writable(out_path)
    earlier = dataset.load(base) if base is not None else None
    with PerfDB(path) as perfdb:
        _, device_key = perfdb.find_device(device)
        data, counts = dataset.build(perfdb, device_key, kernel, top, sampled=sampled, base=earlier)
    try:
        out_path.write_bytes(data)
    except OSError as exc:
        raise KptuneError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    err.print(f"wrote {out_path} ({len(data) / 1e6:.2f} MB): " + ", ".join(f"{k} {v}" for k, v in counts.items()),
              markup=False)  # fmt: skip


@dataset_app.command("costmodel")
def dataset_costmodel(
    path: Annotated[Path, typer.Argument(help="dataset file (.db.gz)")],
    out_path: Annotated[
        Path | None, typer.Option("--out", help="cost model file (default: costmodel-X.safetensors beside it)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the fit")] = 0,
) -> None:
    """Fit the cost model on a dataset's train and validation problems (scikit-learn; a minute or so)
    and save it where autotune finds it: beside the dataset, named after it."""
    from kptune import dataset
    from kptune.neighbours import cost_model_path
    from kptune.predict.costmodel import fit_for_dataset

    data = dataset.load(path)
    target = _writable(out_path if out_path is not None else cost_model_path(path))
    try:
        model = fit_for_dataset(data, target, seed)
    except ImportError:
        raise KptuneError("fitting the cost model needs scikit-learn: pip install 'kptune[model]'") from None
    except OSError as exc:
        raise KptuneError(f"cannot write {target}: {exc.strerror or exc}") from None
    err.print(f"wrote {target}: {len(model.trees.roots)} trees over {len(model.tuned.shapes)} tuned shapes",
              markup=False)  # fmt: skip


@dataset_app.command("reranker")
def dataset_reranker(
    path: Annotated[Path, typer.Argument(help="dataset file (.db.gz)")],
    out_path: Annotated[
        Path | None, typer.Option("--out", help="reranker file (default: reranker-X.safetensors beside it)")
    ] = None,
    folds: Annotated[int, typer.Option(help="folds of networks, a seq2seq trained for each")] = 5,
    epochs: Annotated[int, typer.Option(help="each fold's seq2seq: epochs on its train + validation problems")] = 25,
    seed: Annotated[int, typer.Option(help="seed of the seq2seqs and the fits")] = 0,
) -> None:
    """Fit the reranker of the beam (`kptune predict --rerank`) out of fold on a dataset's train and
    validation problems: a seq2seq per fold of networks (minutes each, one CPU core), its beams read
    against the other folds' tuned shapes; saved where predict finds it, beside the dataset."""
    from kptune import dataset
    from kptune.neighbours import reranker_path
    from kptune.predict import rerank
    from kptune.predict.models import ModelConfig

    if folds < 2 or epochs < 1:
        raise KptuneError(f"--folds must be at least 2 and --epochs at least 1, not {folds} and {epochs}")
    data = dataset.load(path)
    target = _writable(out_path if out_path is not None else reranker_path(path))
    try:
        model = rerank.fit(data, ModelConfig(seed=seed, early_stop=False, epochs=epochs), folds,
                           lambda s: err.print(s, markup=False))  # fmt: skip
        model.save(target)
    except ImportError:
        raise KptuneError("fitting the reranker needs scikit-learn: pip install 'kptune[model]'") from None
    except OSError as exc:
        raise KptuneError(f"cannot write {target}: {exc.strerror or exc}") from None
    err.print(f"wrote {target}: {len(model.trees.roots)} trees over {model.meta['problems']} problems ranked out of "
              f"fold", markup=False)  # fmt: skip


@dataset_app.command("show")
def dataset_show(path: Annotated[Path, typer.Argument(help="dataset file")]) -> None:
    """Counts of a dataset file: problems, shapes, dtypes, splits, device."""
    from kptune import dataset

    out.print("\n".join(dataset.summary(dataset.load(path))), markup=False, highlight=False)


@cache_app.command("describe")
def cache_describe(
    device: Annotated[int, typer.Option(help="CUDA device index")] = 0,
    output: Annotated[Path | None, typer.Option("--out", help="write the JSON here, not to stdout")] = None,
) -> None:
    """On the GPU machine: what names and builds a kernel in its CuPy cache (scripts/cross_compile.py reads it)."""
    from kptune.backends.cupy_cache import describe_target

    text = describe_target(device).to_json()
    if output is None:
        out.print(text, markup=False, highlight=False)
    else:
        try:
            output.write_text(text + "\n")
        except OSError as exc:
            raise KptuneError(f"cannot write {output}: {exc.strerror or exc}") from None


@cache_app.command("load")
def cache_load(archive: Annotated[Path, typer.Argument(help="a .tar.xz from scripts/cross_compile.py")]) -> None:
    """On the GPU machine: unpack cross-compiled kernels into kptune's CuPy cache, and mark their
    define sets compiled for the GPUs they were built for."""
    from kptune.backends.cupy_backend import cupy_cache_dir, list_devices
    from kptune.backends.cupy_cache import register, unpack

    target = cupy_cache_dir()
    count, manifest = unpack(archive, target)
    marked = register(manifest, list_devices()) if manifest is not None else []
    where = f"; {len(manifest.keys)} define sets marked compiled for {', '.join(d.spec for d in marked)}" \
        if manifest is not None and marked else ""  # fmt: skip
    err.print(f"{count} kernels into {target}{where}", markup=False)


def _usage_error_types() -> tuple[type[BaseException], ...]:
    # typer >= 0.29 vendors click (its errors derive from TyperException); older typer uses click.
    types: list[type[BaseException]] = []
    typer_base = getattr(typer.exceptions, "TyperException", None)
    if typer_base is not None:
        types.append(typer_base)
    try:
        import click

        types.append(click.ClickException)
    except ImportError:
        pass
    return tuple(types)


def one_line(message: str) -> str:
    """`message` on one line: control characters (newlines in echoed input too) written as escapes."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in message.strip())


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line and exit 2 for every usage or input error."""
    interrupted = "kptune: interrupted; everything measured so far is in the perf db"
    try:
        result = app(args=argv, standalone_mode=False, prog_name="kptune")
    except KptuneError as exc:
        err.print(f"kptune: error: {one_line(str(exc))}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        err.print(interrupted, markup=False)
        return 130
    except _usage_error_types() as exc:
        code = getattr(exc, "exit_code", None)
        if hasattr(exc, "format_message"):
            message = exc.format_message()
            if type(exc).__name__ == "NoArgsIsHelpError":
                err.print(message, markup=False, highlight=False)
                return 2
            err.print(f"kptune: error: {one_line(message)}", highlight=False, markup=False, soft_wrap=True)
            return 2
        return int(code) if isinstance(code, int) else 1
    if result == 130:  # typer turns Ctrl-C into exit code 130 without a word
        err.print(interrupted, markup=False)
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
