"""The distinct 2-D convolution layers of ResNet-50 and VGG-16 at 224x224, as kptune problems.

Written out from the published architectures, so no torchvision is needed:

- ResNet-50 v1.5 (torchvision's `resnet50`; He et al. 2016 with the stride moved
  into the 3x3 conv of each bottleneck): a 7x7/2 stem, then stages of
  (3, 4, 6, 3) bottlenecks of widths (64, 128, 256, 512), expansion 4; the first
  block of every stage has a 1x1 downsample conv on its shortcut.
- VGG-16 (Simonyan & Zisserman 2015, configuration D): 13 3x3 pad-1 convs in
  five blocks of (2, 2, 3, 3, 3) at 224, 112, 56, 28, 14.

Benchmarks tune each distinct shape once; `layer_counts` says how often each one
runs in a forward pass, so per-network totals can be weighted.
"""

from __future__ import annotations

import dataclasses

from kptune.problem import Conv2dProblem

NETS = ("resnet50", "vgg16")
IMAGE = 224


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One conv of a network, batch-free: name, input C x H x W, K filters of R x S (square), stride, pad."""

    name: str
    c: int
    h: int
    k: int
    r: int
    stride: int = 1
    pad: int = 0

    def problem(self, batch: int) -> Conv2dProblem:
        return Conv2dProblem(
            n=batch, c=self.c, h=self.h, w=self.h, k=self.k, r=self.r, s=self.r,
            pad_h=self.pad, pad_w=self.pad, stride_h=self.stride, stride_w=self.stride,
        )  # fmt: skip


def resnet50_convs() -> list[ConvSpec]:
    """Every conv of ResNet-50 v1.5 in forward order (53), named as torchvision names its modules."""
    convs = [ConvSpec("conv1", 3, IMAGE, 64, 7, stride=2, pad=3)]
    size = IMAGE // 4  # 112 after the stem, 56 after the 3x3/2 max pool
    in_ch = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), start=1):
        out_ch = 4 * width
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 1 else 1
            name = f"layer{stage}.{block}"
            convs += [
                ConvSpec(f"{name}.conv1", in_ch, size, width, 1),
                ConvSpec(f"{name}.conv2", width, size, width, 3, stride=stride, pad=1),
                ConvSpec(f"{name}.conv3", width, size // stride, out_ch, 1),
            ]
            if block == 0:
                convs.append(ConvSpec(f"{name}.downsample", in_ch, size, out_ch, 1, stride=stride))
            size //= stride
            in_ch = out_ch
    return convs


def vgg16_convs() -> list[ConvSpec]:
    """The 13 convs of VGG-16 in forward order, named convB_I (block B, index I)."""
    convs = []
    in_ch = 3
    for block, (repeats, out_ch) in enumerate(zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512), strict=True), start=1):
        size = IMAGE >> (block - 1)  # a 2x2/2 max pool ends every block
        for i in range(1, repeats + 1):
            convs.append(ConvSpec(f"conv{block}_{i}", in_ch, size, out_ch, 3, pad=1))
            in_ch = out_ch
    return convs


_CONVS = {"resnet50": resnet50_convs, "vgg16": vgg16_convs}


def all_convs(net: str, batch: int) -> list[tuple[str, Conv2dProblem]]:
    """Every conv of `net` in forward order, repeats included."""
    if net not in _CONVS:
        raise ValueError(f"unknown net {net!r}; known: {', '.join(NETS)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return [(spec.name, spec.problem(batch)) for spec in _CONVS[net]()]


def layers(net: str, batch: int) -> list[tuple[str, Conv2dProblem]]:
    """The distinct conv shapes of `net` at this batch, in forward order, each under its first layer's name."""
    seen: dict[Conv2dProblem, str] = {}
    for name, problem in all_convs(net, batch):
        seen.setdefault(problem, name)
    return [(name, problem) for problem, name in seen.items()]


def layer_counts(net: str) -> dict[str, int]:
    """How many convs of `net` share each distinct shape, keyed by the name `layers` gives it."""
    first: dict[Conv2dProblem, str] = {}
    counts: dict[str, int] = {}
    for name, problem in all_convs(net, 1):
        kept = first.setdefault(problem, name)
        counts[kept] = counts.get(kept, 0) + 1
    return counts
