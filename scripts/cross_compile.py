"""Compile, on this CPU host, the kernels a recording campaign on a GPU machine will need, into
that machine's CuPy cache format, and pack them to be carried there (kptune/backends/cupy_cache.py).

    python scripts/cross_compile.py --target target.json --cache DIR [--max-gflop 1] [--dtype fp32]
        [--unseen kptune/data/dataset-h200.db.gz] [--jobs N] [--most N] [--pack-mb 20 --out-dir DIR]
    python scripts/cross_compile.py --target target.json --cache DIR --recheck kptune/data/dataset-h200.db.gz ...

target.json comes from `python -m kptune cache describe` on the GPU machine. The define sets are
those of every valid config of every selected corpus shape (as `kptune campaign` selects them), most
used first, so a pack cut at a size holds the most useful binaries; --most N keeps only the N most used
(the rarest compile slowest: a compile that must fit a session stops there). With --recheck, the define
sets are instead those of the configs `kptune db recheck --dataset` will time again on that dataset
(kptune/recheck.py: spikes and batch inversions), in its order. Needs the target's CuPy and
NVRTC installed here (pip install cupy-cuda13x==V nvidia-cuda-nvrtc==V; NVRTC needs no GPU).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from kptune.backends.cupy_backend import kernel_text
from kptune.backends.cupy_cache import CupyTarget, Manifest, cross_compile, pack
from kptune.compiled import define_key
from kptune.corpus import read_shapes
from kptune.dataset import load, problem_keys, read_meta
from kptune.device import DeviceInfo
from kptune.errors import KptuneError
from kptune.kernel import KernelFamily, get_family
from kptune.problem import problem_from_key
from kptune.recheck import suspects
from kptune.space import Config


def _count(args: tuple[str, str, list[dict[str, object]]]) -> collections.Counter[str]:
    family_name, limits, problems = args
    from kptune.problem import Conv2dProblem

    family, device = get_family(family_name), DeviceInfo(**json.loads(limits))
    counts: collections.Counter[str] = collections.Counter()
    for fields in problems:
        problem = Conv2dProblem(**fields)  # type: ignore[arg-type]
        for config in family.space.configs(problem, device):
            counts[json.dumps(sorted(family.defines(problem, config).items()))] += 1
    return counts


def _recheck_defines(family: KernelFamily, dataset: Path) -> list[dict[str, int]]:
    """The distinct define sets of the configs `kptune db recheck` would time on `dataset`, in its order."""
    data = load(dataset)
    wanted: dict[str, dict[str, int]] = {}  # by define_key
    count = 0
    for key, _, spiked, twin in suspects((p.key, list(p.times)) for p in data.problems):
        problem = problem_from_key(key)
        for config in [*spiked, *twin]:
            defines = family.defines(problem, Config.parse(config))
            wanted.setdefault(define_key(defines), defines)
            count += 1
    print(f"{count} configs to time again, {len(wanted)} define sets")
    return list(wanted.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="CuPy cache dir to fill")
    ap.add_argument("--shapes", type=Path, default=Path("kptune/data/corpus.csv"))
    ap.add_argument("--dtype", action="append", choices=["fp32", "fp16"])
    ap.add_argument("--max-gflop", type=float)
    ap.add_argument("--unseen", type=Path, help="skip the shapes this dataset holds")
    ap.add_argument(
        "--limits",
        type=Path,
        default=Path("kptune/data/dataset-h200.db.gz"),
        help="a dataset recorded on the target device (its limits decide valid configs)",
    )
    ap.add_argument("--recheck", type=Path, help="the define sets `kptune db recheck --dataset` will need")
    ap.add_argument("--most", type=int, help="only the N most used define sets")
    ap.add_argument("--kernel", default="conv2d_fwd")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--defines", type=Path, help="reuse (or write) the define sets, most used first")
    ap.add_argument("--pack-mb", type=float, help="pack into .tar.xz parts of about this size")
    ap.add_argument("--out-dir", type=Path, default=Path("."))
    args = ap.parse_args()
    if args.most is not None and args.most < 1:
        ap.error("--most must be at least 1")

    target = CupyTarget.from_json(args.target.read_text(), str(args.target))
    family = get_family(args.kernel)
    if args.defines and args.defines.exists():
        wanted = [dict(d) for d in json.loads(args.defines.read_text())]
    elif args.recheck:
        wanted = _recheck_defines(family, args.recheck)
    else:
        problems = read_shapes(args.shapes)
        if args.max_gflop:
            problems = [p for p in problems if p.flops() <= args.max_gflop * 1e9]
        dtypes = args.dtype or ["fp32"]
        problems = list(dict.fromkeys(dataclasses.replace(p, dtype=d) for p in problems for d in dtypes))
        if args.unseen:
            held = problem_keys(args.unseen)
            problems = [p for p in problems if p.key() not in held]
        limits = json.dumps(read_meta(args.limits)["device_limits"])
        jobs = args.jobs or 2
        fields = [dataclasses.asdict(p) for p in problems]
        with ProcessPoolExecutor(jobs) as pool:
            parts = pool.map(_count, [(args.kernel, limits, fields[i::jobs]) for i in range(jobs)])
            counts = sum(parts, collections.Counter())
        wanted = [dict(json.loads(k)) for k, _ in counts.most_common()]
        print(f"{len(problems)} shapes, {len(wanted)} define sets")
    if args.defines and not args.defines.exists():
        args.defines.write_text(json.dumps([sorted(d.items()) for d in wanted]))
    if args.most is not None:
        wanted = wanted[: args.most]
    t0 = time.perf_counter()
    names_file = args.out_dir / "cross_compile_names.txt"  # in use order, appended as slices finish
    names_file.write_text("")
    names: list[str] = []
    keys: list[str] = []  # define_key of each name's define set
    errors: collections.Counter[str | None] = collections.Counter()
    for i in range(0, len(wanted), 2048):
        chunk = wanted[i : i + 2048]
        results = cross_compile([kernel_text(family.full_source, d) for d in chunk], target, args.cache, args.jobs)
        names += [r.name for r in results if r.name]
        keys += [define_key(d) for d, r in zip(chunk, results, strict=True) if r.name]
        errors.update(r.error for r in results if r.error)
        with names_file.open("a") as f:
            f.write("".join(f"{r.name}\n" for r in results if r.name))
        print(f"{min(i + 2048, len(wanted))}/{len(wanted)} compiled, {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"compiled {len(names)} of {len(wanted)} in {time.perf_counter() - t0:.0f} s into {args.cache}; "
          f"errors {dict(errors.most_common(3))}")  # fmt: skip
    if args.pack_mb:
        per = max(1, int(args.pack_mb * 1e6 / 1700))  # ~1.65 kB of xz per binary (measured, H200 conv2d_fwd)
        for i in range(0, len(names), per):
            out = args.out_dir / f"kernels-{i // per:02d}.tar.xz"
            manifest = Manifest(family.name, family.source_hash, target.arch, target.cupy_version,
                                tuple(keys[i : i + per]))  # fmt: skip
            size = pack(args.cache, names[i : i + per], out, manifest)
            print(f"{out}: {len(names[i : i + per])} binaries, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    try:
        main()
    except (KptuneError, OSError) as exc:  # a missing file, a refused host: one line, exit 2
        print(f"cross_compile.py: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
