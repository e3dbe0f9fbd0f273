"""The distinct 2-D convolution layers of ResNet-50 and VGG-16 at 224x224, as kptune problems.

The layer lists themselves live in `kptune.networks` (written out from the published
architectures, shared with the shape corpus `kptune.corpus`); this module keeps the two
networks the benchmarks compare against cuDNN:

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

from kptune.networks import ConvSpec, resnet50, vgg16
from kptune.problem import Conv2dProblem

NETS = ("resnet50", "vgg16")
IMAGE = 224

__all__ = ["IMAGE", "NETS", "ConvSpec", "all_convs", "layer_counts", "layers", "resnet50_convs", "vgg16_convs"]


def resnet50_convs() -> list[ConvSpec]:
    """Every conv of ResNet-50 v1.5 in forward order (53), named as torchvision names its modules."""
    return resnet50()


def vgg16_convs() -> list[ConvSpec]:
    """The 13 convs of VGG-16 in forward order, named convB_I (block B, index I)."""
    return vgg16()


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
