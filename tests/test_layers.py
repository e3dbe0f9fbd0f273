"""The hand-written ResNet-50 / VGG-16 layer lists against published counts and FLOPs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import layers as L


def _conv_gflops(net: str, batch: int = 1) -> float:
    return sum(p.flops() for _, p in L.all_convs(net, batch)) / 1e9


def test_resnet50_has_53_convs_23_distinct_shapes() -> None:
    assert len(L.all_convs("resnet50", 1)) == 53  # 1 stem + 16 bottlenecks x 3 + 4 downsamples
    distinct = L.layers("resnet50", 1)
    assert len(distinct) == 23
    assert len({p for _, p in distinct}) == 23
    counts = L.layer_counts("resnet50")
    assert list(counts) == [name for name, _ in distinct]
    assert sum(counts.values()) == 53
    # layer1.0's downsample (64->256 1x1 at 56) is the same shape as its conv3: kept under conv3's name.
    assert counts["layer1.0.conv3"] == 4 and "layer1.0.downsample" not in counts
    # layer3's 5 repeated blocks share conv1/conv2/conv3 shapes with block 1.
    assert counts["layer3.1.conv1"] == 5 and counts["layer3.1.conv2"] == 5 and counts["layer3.0.conv3"] == 6


def test_resnet50_shapes_follow_v1_5() -> None:
    by_name = dict(L.layers("resnet50", 8))
    stem = by_name["conv1"]
    assert (stem.n, stem.c, stem.h, stem.k, stem.r, stem.stride_h, stem.pad_h) == (8, 3, 224, 64, 7, 2, 3)
    assert (stem.out_h, stem.out_w) == (112, 112)
    # v1.5: the stride sits in the 3x3 conv, the 1x1 conv before it keeps the resolution.
    c1, c2 = by_name["layer2.0.conv1"], by_name["layer2.0.conv2"]
    assert (c1.h, c1.stride_h, c2.h, c2.stride_h, c2.out_h) == (56, 1, 56, 2, 28)
    ds = by_name["layer4.0.downsample"]
    assert (ds.c, ds.h, ds.k, ds.r, ds.stride_h, ds.out_h) == (1024, 14, 2048, 1, 2, 7)
    last = by_name["layer4.1.conv1"]
    assert (last.c, last.h, last.k) == (2048, 7, 512)


def test_resnet50_conv_flops_match_published_4_1_gmac() -> None:
    # torchvision lists 4.09 GMAC for the whole net; the fc layer adds 2 MMAC.
    assert _conv_gflops("resnet50") == pytest.approx(8.18, rel=0.01)
    assert _conv_gflops("resnet50", 32) == pytest.approx(32 * _conv_gflops("resnet50"))


def test_vgg16_has_13_convs_9_distinct_and_30_7_gflop() -> None:
    assert len(L.all_convs("vgg16", 1)) == 13
    distinct = L.layers("vgg16", 1)
    assert len(distinct) == 9
    assert L.layer_counts("vgg16") == {
        "conv1_1": 1, "conv1_2": 1, "conv2_1": 1, "conv2_2": 1, "conv3_1": 1,
        "conv3_2": 2, "conv4_1": 1, "conv4_2": 2, "conv5_1": 3,
    }  # fmt: skip
    assert all(p.r == 3 and p.pad_h == 1 and p.stride_h == 1 and p.out_h == p.h for _, p in distinct)
    assert _conv_gflops("vgg16") == pytest.approx(30.7, rel=0.01)


def test_every_layer_is_a_valid_kptune_problem_and_keys_differ() -> None:
    for net in L.NETS:
        keys = [p.key() for _, p in L.layers(net, 32)]
        assert len(keys) == len(set(keys))
        assert all(k.startswith("conv2d:n=32,") for k in keys)


def test_unknown_net_and_bad_batch_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown net"):
        L.layers("alexnet", 1)
    with pytest.raises(ValueError, match="batch"):
        L.layers("vgg16", 0)
