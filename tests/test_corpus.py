"""The shape corpus: the shipped CSV against its architectures and published facts, the split rule, bad files."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kptune import corpus as C
from kptune.errors import CorpusError, KptuneError
from kptune.networks import NETWORKS, network
from kptune.problem import Conv2dProblem


@pytest.fixture(scope="module")
def shipped() -> list[C.CorpusEntry]:
    return C.load_corpus()


def _gflops(net: str) -> float:
    return sum(spec.problem(1).flops() for spec in network(net).convs()) / 1e9


def _batches(entries: list[C.CorpusEntry], shape: Conv2dProblem) -> list[int]:
    """The batch sizes at which the corpus has `shape` (given at n=1)."""
    return sorted(e.problem.n for e in entries if dataclasses.replace(e.problem, n=1) == shape)


def _at_batch(entries: list[C.CorpusEntry], net: str, batch: int) -> list[C.CorpusEntry]:
    return [e for e in entries if net in e.networks and e.problem.n == batch]


# --------------------------------------------------------------------------- the shipped file


def test_shipped_csv_is_reproducible_from_the_architectures(shipped: list[C.CorpusEntry]) -> None:
    assert shipped == C.build_corpus()
    assert C.DEFAULT_PATH.name == "corpus.csv" and C.DEFAULT_PATH.parent.name == "data"


def test_size_networks_and_distinct_problems(shipped: list[C.CorpusEntry]) -> None:
    networks = {name for e in shipped for name in e.networks}
    assert networks == set(NETWORKS) and len(networks) >= 12
    assert len(shipped) >= 1500
    assert len({e.problem for e in shipped}) == len(shipped)
    assert {e.problem.n for e in shipped} == set(C.BATCHES)
    assert all(e.problem.groups == 1 and e.problem.dtype == "fp32" for e in shipped)


def test_count_is_the_number_of_convs_with_that_shape(shipped: list[C.CorpusEntry]) -> None:
    by_problem = {e.problem: e for e in shipped}
    stem = by_problem[Conv2dProblem(n=1, c=3, h=224, w=224, k=64, r=7, s=7, pad_h=3, pad_w=3, stride_h=2, stride_w=2)]
    resnets = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d"}
    assert set(stem.networks) == resnets | {"googlenet", "densenet121"} and stem.count == 8
    # VGG's 512->512 3x3 at 14x14: 2 in VGG-11, 3 in VGG-16, 4 in VGG-19.
    conv5 = by_problem[Conv2dProblem(n=32, c=512, h=14, w=14, k=512, r=3, s=3, pad_h=1, pad_w=1)]
    assert (conv5.networks, conv5.count) == (("vgg11", "vgg16", "vgg19"), 9)
    # The stride-1 256->256 3x3 at 14: ResNet-18 3, ResNet-34 11, ResNet-50 5, ResNet-101 22, ResNet-152 35.
    layer3 = by_problem[Conv2dProblem(n=1, c=256, h=14, w=14, k=256, r=3, s=3, pad_h=1, pad_w=1)]
    assert layer3.count == 3 + 11 + 5 + 22 + 35


def test_tensor_cap_drops_exactly_the_oversized_batches(shipped: list[C.CorpusEntry]) -> None:
    cap = C.MAX_CORPUS_TENSOR_ELEMENTS
    assert cap == 2**28
    for e in shipped:
        p = e.problem
        assert max(p.n * p.c * p.h * p.w, p.k * p.c * p.r * p.s, p.n * p.k * p.out_h * p.out_w) <= cap
    vgg_first = Conv2dProblem(n=1, c=3, h=224, w=224, k=64, r=3, s=3, pad_h=1, pad_w=1)  # 3.2M output elements
    assert _batches(shipped, vgg_first) == [1, 2, 4, 8, 16, 32, 64]
    unet_first = Conv2dProblem(n=1, c=1, h=572, w=572, k=64, r=3, s=3)  # 64 x 570 x 570 = 20.8M per image
    assert _batches(shipped, unet_first) == [1, 2, 4, 8]
    small = Conv2dProblem(n=1, c=512, h=7, w=7, k=512, r=3, s=3, pad_h=1, pad_w=1)
    assert _batches(shipped, small) == list(C.BATCHES)
    assert not C.fits(vgg_first, 128) and C.fits(vgg_first, 64)


# --------------------------------------------------------------------------- the split


def test_split_rule_holds(shipped: list[C.CorpusEntry]) -> None:
    for e in shipped:
        nets = set(e.networks)
        if nets & C.TEST_NETWORKS:
            assert e.split == "test", e
        elif nets & C.VALIDATION_NETWORKS:
            assert e.split == "validation", e
        else:
            assert e.split == "train", e
    train_networks = {name for e in C.corpus_split(shipped, "train") for name in e.networks}
    assert not train_networks & C.TEST_NETWORKS
    assert not train_networks & C.VALIDATION_NETWORKS


def test_every_layer_of_a_test_network_is_in_test_at_every_batch(shipped: list[C.CorpusEntry]) -> None:
    test = {e.problem for e in C.corpus_split(shipped, "test")}
    for name in C.TEST_NETWORKS:
        for spec in network(name).convs():
            for batch in C.BATCHES:
                problem = spec.problem(batch)
                assert problem in test or not C.fits(problem, batch)
    # ResNet-18's shapes are a subset of ResNet-34's, so it is held out as a whole too.
    assert all(e.split == "test" for e in shipped if "resnet18" in e.networks)


def test_split_sizes_and_partition(shipped: list[C.CorpusEntry]) -> None:
    parts = {split: C.corpus_split(shipped, split) for split in C.SPLITS}
    assert sum(len(p) for p in parts.values()) == len(shipped)
    share = {split: len(p) / len(shipped) for split, p in parts.items()}
    assert 0.15 <= share["test"] <= 0.25
    assert 0.10 <= share["validation"] <= 0.15
    # Each held-out network family keeps a relative in train.
    train_nets = {name for e in parts["train"] for name in e.networks}
    assert {"resnet50", "efficientnet_b0", "densenet121", "inception_v3", "vgg16"} <= train_nets
    with pytest.raises(CorpusError, match="unknown split 'dev'"):
        C.corpus_split(shipped, "dev")


# --------------------------------------------------------------------------- per-network facts


@pytest.mark.parametrize(
    ("net", "convs"),
    [
        # torchvision's Conv2d module count (minus depthwise/grouped where noted), or the paper's.
        ("resnet18", 20), ("resnet34", 36), ("resnet50", 53), ("resnet101", 104), ("resnet152", 155),
        ("resnext50_32x4d", 53 - 16), ("vgg11", 8), ("vgg16", 13), ("vgg19", 16), ("alexnet", 5),
        ("googlenet", 57), ("inception_v3", 94), ("densenet121", 120), ("squeezenet1_1", 26),
        ("mobilenet_v2", 52 - 17), ("efficientnet_b0", 81 - 16),
        ("unet", 23 - 4),  # the paper's 23 conv layers less the four transposed up-convs
        ("yolov3", 75),  # darknet's yolov3.cfg: 52 in Darknet-53, 23 in the heads
    ],
)  # fmt: skip
def test_conv_counts(net: str, convs: int) -> None:
    assert len(network(net).convs()) == convs


@pytest.mark.parametrize(
    ("net", "gflop"),
    [
        # torchvision's documented GFLOPS column (multiply-adds of the whole model, x2; conv layers only
        # here, so VGG/AlexNet less their fc layers' 0.124/0.059 GMAC).
        ("resnet18", 2 * 1.81), ("resnet34", 2 * 3.66), ("resnet50", 2 * 4.09), ("resnet101", 2 * 7.80),
        ("resnet152", 2 * 11.51), ("vgg11", 2 * (7.61 - 0.124)), ("vgg16", 2 * (15.47 - 0.124)),
        ("vgg19", 2 * (19.63 - 0.124)), ("alexnet", 2 * (0.71 - 0.059)), ("inception_v3", 2 * 5.71),
        ("densenet121", 2 * 2.83), ("squeezenet1_1", 2 * 0.35),
        ("yolov3", 65.86),  # darknet prints 65.864 BFLOPs for yolov3.cfg at 416x416
    ],
)  # fmt: skip
def test_conv_gflops_match_published_figures(net: str, gflop: float) -> None:
    assert _gflops(net) == pytest.approx(gflop, rel=0.015)


def test_distinct_shapes_per_network_in_the_corpus(shipped: list[C.CorpusEntry]) -> None:
    assert len(_at_batch(shipped, "resnet50", 1)) == 23
    assert len(_at_batch(shipped, "resnet101", 32)) == 23  # same shapes, more repeats
    assert len(_at_batch(shipped, "vgg16", 1)) == 9
    assert len(_at_batch(shipped, "alexnet", 8)) == 5
    assert len(_at_batch(shipped, "resnet18", 1)) == 11


def test_architecture_details() -> None:
    inception = network("inception_v3").convs()
    assert {(c.r, c.s, c.pad_h, c.pad_w) for c in inception} >= {(1, 7, 0, 3), (7, 1, 3, 0), (1, 3, 0, 1), (3, 1, 1, 0)}
    assert network("inception_v3").input_chw == (3, 299, 299) and inception[0].out_h == 149
    assert sum(c.r == 5 for c in network("googlenet").convs()) == 9  # the paper's 5x5 branch in each module
    unet = network("unet").convs()
    assert (unet[0].c, unet[0].h, unet[-1].out_h, unet[-1].k) == (1, 572, 388, 2)
    yolo = network("yolov3").convs()
    assert [(c.h, c.k) for c in yolo if c.name.endswith("detect")] == [(13, 255), (26, 255), (52, 255)]
    mobilenet = network("mobilenet_v2").convs()
    assert all(c.r == 1 for c in mobilenet[1:]) and mobilenet[-1].k == 1280
    densenet = network("densenet121").convs()
    assert [c.c for c in densenet if "transition" in c.name] == [256, 512, 1024]
    with pytest.raises(ValueError, match="unknown network 'lenet'"):
        network("lenet")


def _torchvision_convs(name: str, size: int) -> list[tuple[int, ...]]:
    """(c, h, w, k, r, s, stride, pad_h, pad_w) of every groups=1 Conv2d a torchvision model runs, in order."""
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("torchvision.models")
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = getattr(models, name)(weights=None, **kwargs).eval()
    seen: list[tuple[int, ...]] = []

    def hook(module: Any, inputs: tuple[Any, ...], _output: Any) -> None:  # torch.nn.Conv2d, tensors
        if module.groups == 1:
            assert module.dilation == (1, 1) and module.stride[0] == module.stride[1]
            kernel, padding = tuple(module.kernel_size), tuple(module.padding)
            seen.append((*inputs[0].shape[1:], module.out_channels, *kernel, module.stride[0], *padding))

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return seen


@pytest.mark.parametrize("net", [name for name in NETWORKS if name not in ("unet", "yolov3")])
def test_matches_torchvision_conv_by_conv(net: str) -> None:
    """Skipped without torchvision (CI has none); run by hand where it is installed."""
    convs = network(net).convs()
    mine = [(c.c, c.h, c.w, c.k, c.r, c.s, c.stride, c.pad_h, c.pad_w) for c in convs]
    theirs = _torchvision_convs(net, network(net).input_chw[1])
    if net == "googlenet":  # torchvision's port has a 3x3 (pad 1) where the paper's 5x5 (pad 2) branch is
        mine = [(*m[:4], 3, 3, 1, 1, 1) if m[4] == 5 else m for m in mine]
    assert mine == theirs


# --------------------------------------------------------------------------- malformed files


def _shipped_lines(count: int) -> list[str]:
    return C.DEFAULT_PATH.read_text().splitlines()[:count]


def _load_bad(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(KptuneError) as info:
        C.load_corpus(path)
    message = str(info.value)
    assert isinstance(info.value, CorpusError) and "\n" not in message
    assert message.startswith(f"{path}:")
    return message


def _with_field(line: str, column: str, value: str) -> str:
    fields = line.split(",")
    fields[C.COLUMNS.index(column)] = value
    return ",".join(fields)


def test_truncated_row(tmp_path: Path) -> None:
    header, first, second = _shipped_lines(3)
    message = _load_bad(tmp_path, [header, first, second[: len(second) // 2]])
    assert message.startswith(f"{tmp_path / 'bad.csv'}:3: expected 18 fields")


def test_text_in_a_number_column(tmp_path: Path) -> None:
    header, first, second = _shipped_lines(3)
    message = _load_bad(tmp_path, [header, first, _with_field(second, "c", "abc")])
    assert ":3: c must be an integer, got 'abc'" in message


def test_unknown_split(tmp_path: Path) -> None:
    header, first = _shipped_lines(2)
    message = _load_bad(tmp_path, [header, _with_field(first, "split", "holdout")])
    assert ":2: unknown split 'holdout'" in message


def test_zero_size(tmp_path: Path) -> None:
    header, first = _shipped_lines(2)
    assert ":2: h must be >= 1, got 0" in _load_bad(tmp_path, [header, _with_field(first, "h", "0")])


def test_impossible_shape(tmp_path: Path) -> None:
    header, first = _shipped_lines(2)  # the 7x7 stem on a 2-row input without row padding: no output row
    line = _with_field(_with_field(first, "h", "2"), "pad_h", "0")
    assert ":2: output size" in _load_bad(tmp_path, [header, line])


def test_missing_and_unknown_columns(tmp_path: Path) -> None:
    header, first = _shipped_lines(2)
    without_split = [",".join(line.split(",")[:-1]) for line in (header, first)]
    assert ":1: missing column(s) split" in _load_bad(tmp_path, without_split)
    assert ":1: unknown column(s) layout" in _load_bad(tmp_path, [header + ",layout", first + ",nchw"])


def test_bad_networks_count_and_duplicates(tmp_path: Path) -> None:
    header, first, second = _shipped_lines(3)
    assert ":2: networks must be" in _load_bad(tmp_path, [header, _with_field(first, "networks", "")])
    assert "listed twice" in _load_bad(tmp_path, [header, _with_field(first, "networks", "vgg16;vgg16")])
    assert ":3: count must be a positive" in _load_bad(tmp_path, [header, first, _with_field(second, "count", "x")])
    assert ":2: count 0 is below" in _load_bad(tmp_path, [header, _with_field(first, "count", "0")])
    assert ":3: duplicate problem, first on line 2" in _load_bad(tmp_path, [header, first, first])


def test_empty_missing_undecodable_and_unquotable_files(tmp_path: Path) -> None:
    assert "empty, expected the header line" in _load_bad(tmp_path, [])
    with pytest.raises(CorpusError, match="cannot read the corpus"):
        C.load_corpus(tmp_path / "nowhere.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"n,c\n\xff\xfe\n")
    with pytest.raises(CorpusError, match="not UTF-8"):
        C.load_corpus(binary)
    header, first = _shipped_lines(2)
    assert ":3: malformed CSV" in _load_bad(tmp_path, [header, first, '1,"3'])


def test_blank_lines_are_skipped_and_line_numbers_count_them(tmp_path: Path) -> None:
    header, first, second = _shipped_lines(3)
    path = tmp_path / "blank.csv"
    path.write_text(f"{header}\n\n{first}\n\n{_with_field(second, 'k', '-1')}\n")
    with pytest.raises(CorpusError, match=r"blank\.csv:5: k must be >= 1"):
        C.load_corpus(path)


# --------------------------------------------------------------------------- command line


def test_rebuild_writes_the_shipped_bytes_and_check_spots_drift(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "corpus.csv"
    assert C.main(["--rebuild", "--path", str(path)]) == 0
    assert path.read_bytes() == C.DEFAULT_PATH.read_bytes()
    out = capsys.readouterr().out
    assert f"18 networks, {len(C.build_corpus())} distinct problems" in out
    assert "test: " in out and "validation: " in out and "per batch: 1: 306" in out
    assert C.main(["--check", "--path", str(path)]) == 0
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    assert C.main(["--check", "--path", str(path)]) == 1
    assert "differs from build_corpus()" in capsys.readouterr().err
    path.write_text("\n".join([*lines[:5], _with_field(lines[5], "split", "x")]) + "\n")
    assert C.main(["--path", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and ":6: unknown split 'x'" in err and "\n" not in err


def test_module_entry_point_prints_counts() -> None:
    done = subprocess.run([sys.executable, "-m", "kptune.corpus"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    counts = Counter(line.split(":")[0] for line in done.stdout.splitlines())
    assert all(counts[split] == 1 for split in C.SPLITS)
    assert "18 networks" in done.stdout
