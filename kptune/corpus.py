"""The shape corpus: every distinct 2-D convolution of 18 real networks at 9 batch sizes, split by network.

What it is for: the problems the autotuner measures and the config-prediction model learns from
and is judged on. The shapes are not sampled: `kptune.networks` writes each network's convs by
hand from its paper and reference implementation, at the network's standard input size
(224x224; Inception-v3 299x299; YOLOv3 416x416; UNet the original 572x572 one-channel input with
unpadded convs). Regenerate the shipped file with `python -m kptune.corpus --rebuild`.

Left out, because kptune tunes groups=1 forward convs only (`Conv2dProblem` refuses the rest):
depthwise convs (MobileNet-v2, EfficientNet-B0: only their stem, 1x1 expand/project, squeeze-and-
excitation and head convs are here), ResNeXt-50's grouped 3x3, UNet's transposed 2x2 up-convs;
and, being training-only, the auxiliary classifiers of GoogLeNet and Inception-v3.

Batches: every shape at 1, 2, 4, ..., 256, except where its input, filter or output tensor would
exceed `MAX_CORPUS_TENSOR_ELEMENTS` = 2**28 elements (1 GiB in fp32). That cap keeps tuning one
problem practical (every config is checked against a float64 reference and timed on copies of the
inputs, so memory and time grow with the largest tensor) and is well inside the 2**31 - 1 elements
that `Conv2dProblem` accepts. It drops, for instance, VGG's 224x224 convs above batch 64 and UNet's
first convs above batch 8 (79 of the 2754 (shape, batch) pairs).

One row per distinct problem (all `Conv2dProblem` fields, batch included), with the networks it
occurs in and `count`, how many convs of those networks' forward passes (one pass each) have it.

The split is fixed, by network, and stored in the file. A problem that occurs in any test network is
test, even when a train network has it too, so no layer of a test network is ever seen in training;
else one in a validation network is validation; else train. Chosen so that each held-out set mixes
families whose relatives stay in train (so it is neither trivial nor out of distribution):

- test: ResNet-34 (basic-block ResNet; bottleneck ResNets stay in train), MobileNet-v2 (inverted
  bottlenecks; EfficientNet-B0 stays in train), YOLOv3 (detection at 416, Darknet residuals);
- validation: SqueezeNet 1.1 (fire modules at 224) and UNet (segmentation at 572, unpadded),
  mirroring test with one classifier and one dense-prediction net.

ResNet-18's shapes are all in ResNet-34, so ResNet-18 is wholly test too; ResNet-34 also takes the
7x7 stem and the four stride-1 3x3 convs shared with ResNet-50/101/152 (and the stem of GoogLeNet
and DenseNet-121), and MobileNet-v2 takes the 7 shapes it shares with EfficientNet-B0. Result:
about 18% of problems test, 10% validation, 72% train (`python -m kptune.corpus` prints the counts).
VGG-19 or ResNet-101 would be poor test networks: their shape sets equal VGG-16's and ResNet-50's,
so the whole family would leave train.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from kptune.errors import CorpusError, KptuneError, ProblemError
from kptune.networks import NETWORKS
from kptune.problem import Conv2dProblem

#: The shipped corpus, written by `python -m kptune.corpus --rebuild`.
DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "corpus.csv"

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)

#: Largest input, filter or output tensor of a corpus problem: 2**28 elements, 1 GiB in fp32.
MAX_CORPUS_TENSOR_ELEMENTS = 2**28

SPLITS = ("train", "validation", "test")
TEST_NETWORKS = frozenset({"resnet34", "mobilenet_v2", "yolov3"})
VALIDATION_NETWORKS = frozenset({"squeezenet1_1", "unet"})

PROBLEM_COLUMNS = (
    "n", "c", "h", "w", "k", "r", "s", "pad_h", "pad_w", "stride_h", "stride_w", "dil_h", "dil_w", "groups", "dtype",
)  # fmt: skip
COLUMNS = (*PROBLEM_COLUMNS, "networks", "count", "split")
NETWORK_SEPARATOR = ";"

_NETWORK_NAME = re.compile(r"[a-z0-9_.+-]+")
_COUNT = re.compile(r"\d{1,9}")


@dataclasses.dataclass(frozen=True)
class CorpusEntry:
    """One distinct problem of the corpus: the networks it occurs in, how many convs have it, and its split."""

    problem: Conv2dProblem
    networks: tuple[str, ...]
    count: int
    split: str


# --------------------------------------------------------------------------- building


def split_of(networks: Iterable[str]) -> str:
    """The split of a problem occurring in `networks`: test beats validation beats train."""
    names = set(networks)
    if names & TEST_NETWORKS:
        return "test"
    if names & VALIDATION_NETWORKS:
        return "validation"
    return "train"


def fits(shape: Conv2dProblem, batch: int) -> bool:
    """Whether `shape` at `batch` keeps every tensor within `MAX_CORPUS_TENSOR_ELEMENTS`."""
    largest = max(
        batch * shape.c * shape.h * shape.w,
        shape.k * shape.c * shape.r * shape.s,
        batch * shape.k * shape.out_h * shape.out_w,
    )
    return largest <= MAX_CORPUS_TENSOR_ELEMENTS


def _occurrences() -> dict[Conv2dProblem, Counter[str]]:
    """Each distinct batch-1 shape -> conv count per network, in order of first appearance."""
    table: dict[Conv2dProblem, Counter[str]] = {}
    for net in NETWORKS.values():
        for spec in net.convs():
            table.setdefault(spec.problem(1), Counter())[net.name] += 1
    return table


def build_corpus() -> list[CorpusEntry]:
    """The corpus from the architecture definitions: shapes in order of first appearance, then batch."""
    entries = []
    for shape, per_network in _occurrences().items():
        networks = tuple(per_network)
        split = split_of(networks)
        for batch in BATCHES:
            if fits(shape, batch):
                problem = dataclasses.replace(shape, n=batch)
                entries.append(CorpusEntry(problem, networks, sum(per_network.values()), split))
    return entries


def corpus_split(entries: Iterable[CorpusEntry], split: str) -> list[CorpusEntry]:
    """The entries of one split ("train", "validation" or "test"), in corpus order."""
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return [entry for entry in entries if entry.split == split]


# --------------------------------------------------------------------------- writing


def _row(entry: CorpusEntry) -> list[str]:
    fields = entry.problem.fields()
    return [str(fields[name]) for name in PROBLEM_COLUMNS] + [
        NETWORK_SEPARATOR.join(entry.networks),
        str(entry.count),
        entry.split,
    ]


def write_corpus(entries: Iterable[CorpusEntry], path: Path | None = None) -> Path:
    """Write `entries` as CSV (header `COLUMNS`, one row each) to `path` (default: the shipped file)."""
    path = DEFAULT_PATH if path is None else Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(_row(entry) for entry in entries)
    return path


# --------------------------------------------------------------------------- loading


def load_corpus(path: Path | None = None) -> list[CorpusEntry]:
    """Read and validate a corpus CSV (default: the shipped one); any flaw is a CorpusError naming file:line."""
    path = DEFAULT_PATH if path is None else Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return parse_corpus(f, str(path))
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read the corpus: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not UTF-8 text ({exc.reason})") from None


def parse_corpus(lines: Iterable[str], where: str = "<corpus>") -> list[CorpusEntry]:
    """Parse corpus CSV text given as lines; `where` names the source in error messages."""
    rows = _rows(lines, where)
    try:
        header_line, header = next(rows)
    except StopIteration:
        raise CorpusError(f"{where}: empty, expected the header line {','.join(COLUMNS)}") from None
    _check_header(header, f"{where}:{header_line}")
    entries: list[CorpusEntry] = []
    first_line: dict[Conv2dProblem, int] = {}
    for line, row in rows:
        at = f"{where}:{line}"
        if len(row) != len(header):
            raise CorpusError(f"{at}: expected {len(header)} fields ({','.join(header)}), got {len(row)}")
        entry = _entry(dict(zip(header, row, strict=True)), at)
        if entry.problem in first_line:
            raise CorpusError(f"{at}: duplicate problem, first on line {first_line[entry.problem]}")
        first_line[entry.problem] = line
        entries.append(entry)
    return entries


def _rows(lines: Iterable[str], where: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped fields) of each non-empty record; csv's own errors become one-line CorpusErrors."""
    reader = csv.reader(lines, strict=True)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CorpusError(f"{where}:{reader.line_num}: malformed CSV: {exc}") from None
        if row:
            yield reader.line_num, [field.strip() for field in row]


def _check_header(header: Sequence[str], at: str) -> None:
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise CorpusError(f"{at}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise CorpusError(f"{at}: unknown column(s) {', '.join(unknown)}; expected {','.join(COLUMNS)}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise CorpusError(f"{at}: column(s) {', '.join(repeated)} given twice")


def _entry(values: dict[str, str], at: str) -> CorpusEntry:
    """One validated row: the problem through Conv2dProblem's own checks, then networks, count and split."""
    try:
        problem = Conv2dProblem.from_fields({name: values[name] for name in PROBLEM_COLUMNS})
    except ProblemError as exc:
        raise CorpusError(f"{at}: {exc}") from None
    networks = _networks(values["networks"], at)
    if not _COUNT.fullmatch(values["count"]):
        raise CorpusError(f"{at}: count must be a positive integer, got {values['count'][:40]!r}")
    count = int(values["count"])
    if count < len(networks):
        raise CorpusError(f"{at}: count {count} is below the {len(networks)} network(s) listed")
    if values["split"] not in SPLITS:
        raise CorpusError(f"{at}: unknown split {values['split'][:40]!r}; known: {', '.join(SPLITS)}")
    return CorpusEntry(problem, networks, count, values["split"])


def _networks(text: str, at: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(NETWORK_SEPARATOR))
    bad = [name for name in names if not _NETWORK_NAME.fullmatch(name)]
    if bad:
        raise CorpusError(
            f"{at}: networks must be {NETWORK_SEPARATOR!r}-separated names of [a-z0-9_.+-], got {text[:60]!r}"
        )
    if len(set(names)) != len(names):
        raise CorpusError(f"{at}: a network is listed twice in {text[:60]!r}")
    return names


def read_shapes(
    path: Path, *, splits: Sequence[str] = (), networks: Sequence[str] = (), limit: int | None = None
) -> list[Conv2dProblem]:
    """The problems of a shapes file: a corpus CSV (filtered by split and network), or one shape per line.

    A line is a `--shape` string ("n=32,c=64,...") or MIOpenDriver arguments ("conv -n 32 ...");
    blank lines and lines starting with # are skipped. Duplicates are dropped, first kept.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read the shapes file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not UTF-8 text ({exc.reason})") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    if first.replace(" ", "").startswith("n,c,h,w"):
        entries = parse_corpus(text.splitlines(), str(path))
        for split in splits:
            if split not in SPLITS:
                raise CorpusError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        known = {name for entry in entries for name in entry.networks}
        if unknown := [n for n in networks if n not in known]:
            raise CorpusError(f"{path}: no network {unknown[0]!r}; it has: {', '.join(sorted(known))}")
        problems = [
            e.problem
            for e in entries
            if (not splits or e.split in splits) and (not networks or set(e.networks) & set(networks))
        ]
    else:
        if splits or networks:
            raise CorpusError(f"{path}: --split and --network need a corpus CSV (header {','.join(COLUMNS)})")
        from kptune.problem import parse_problem

        problems = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                problems.append(parse_problem(miopen=line) if line.split()[0].startswith("conv") else
                                parse_problem(shape=line))  # fmt: skip
            except ProblemError as exc:
                raise CorpusError(f"{path}:{number}: {exc}") from None
    problems = list(dict.fromkeys(problems))
    if not problems:
        raise CorpusError(f"{path}: no shapes selected")
    return problems[:limit] if limit is not None else problems


# --------------------------------------------------------------------------- summary and CLI


def summary(entries: Sequence[CorpusEntry]) -> list[str]:
    """Human-readable counts: networks, problems and batch-free shapes, per split and per batch."""
    total = len(entries)
    networks = {name for entry in entries for name in entry.networks}
    shapes = {dataclasses.replace(entry.problem, n=1) for entry in entries}
    head = f"{len(networks)} networks, {total} distinct problems"
    lines = [f"{head} ({len(shapes)} shapes at up to {len(BATCHES)} batch sizes)"]
    for split in SPLITS:
        part = corpus_split(entries, split)
        part_shapes = {dataclasses.replace(entry.problem, n=1) for entry in part}
        only = sorted({name for entry in part for name in entry.networks} - _networks_outside(entries, split))
        lines.append(
            f"{split}: {len(part)} problems ({len(part) / max(total, 1):.1%}), {len(part_shapes)} shapes; "
            f"networks only here: {', '.join(only) or '-'}"
        )
    per_batch = Counter(entry.problem.n for entry in entries)
    lines.append("per batch: " + ", ".join(f"{n}: {per_batch[n]}" for n in sorted(per_batch)))
    return lines


def _networks_outside(entries: Iterable[CorpusEntry], split: str) -> set[str]:
    return {name for entry in entries if entry.split != split for name in entry.networks}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kptune.corpus [--rebuild | --check] [--path FILE]`: print the counts, rewrite or verify the CSV."""
    parser = argparse.ArgumentParser(prog="python -m kptune.corpus", description=main.__doc__)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--rebuild", action="store_true", help="regenerate the CSV from kptune.networks")
    action.add_argument("--check", action="store_true", help="exit 1 if the CSV differs from a rebuild")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH, help=f"corpus CSV (default: {DEFAULT_PATH})")
    args = parser.parse_args(argv)
    try:
        if args.rebuild:
            entries = build_corpus()
            print(f"wrote {write_corpus(entries, args.path)}")
        else:
            entries = load_corpus(args.path)
        if args.check and entries != build_corpus():
            print(f"{args.path} differs from build_corpus(): run python -m kptune.corpus --rebuild", file=sys.stderr)
            return 1
    except KptuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary(entries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
