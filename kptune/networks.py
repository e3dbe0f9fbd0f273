"""The 2-D convolution layers of real networks, written out by hand from their published architectures.

Every builder returns the network's forward convs in forward order, repeats included, batch-free
(`ConvSpec`), at the network's standard input size. No torchvision or weights are needed: the
layer lists are written from the papers; those torchvision also builds were checked conv by conv
against its models (`tests/test_corpus.py`, where torchvision is installed), YOLOv3 against
darknet's yolov3.cfg, UNet against the paper's figure 1.

What is left out, and why:

- depthwise and grouped convs (MobileNet-v2's and EfficientNet-B0's depthwise 3x3/5x5,
  ResNeXt's grouped 3x3): kptune refuses groups > 1 (`Conv2dProblem`);
- transposed convs (UNet's 2x2 up-convolutions): kptune tunes forward convs only;
- training-only auxiliary classifiers (GoogLeNet's two, Inception-v3's one): never run at inference.

`kptune.corpus` turns these lists into the shape corpus; `benchmarks/layers.py` reuses them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from kptune.problem import Conv2dProblem

Pair = int | tuple[int, int]


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One forward conv of a network without its batch: input C x H x W, K filters of R x S, stride, padding."""

    name: str
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: int = 1
    pad_h: int = 0
    pad_w: int = 0

    @property
    def out_h(self) -> int:
        return self.problem(1).out_h

    @property
    def out_w(self) -> int:
        return self.problem(1).out_w

    def problem(self, batch: int) -> Conv2dProblem:
        """This conv at `batch` images as a kptune problem (fp32, groups=1, no dilation)."""
        return Conv2dProblem(
            n=batch, c=self.c, h=self.h, w=self.w, k=self.k, r=self.r, s=self.s,
            pad_h=self.pad_h, pad_w=self.pad_w, stride_h=self.stride, stride_w=self.stride,
        )  # fmt: skip


def _pair(value: Pair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def conv(name: str, c: int, size: Pair, k: int, kernel: Pair, stride: int = 1, pad: Pair = 0) -> ConvSpec:
    """A ConvSpec from the short form papers use: square sizes as one int, (h, w) pairs otherwise."""
    (h, w), (r, s), (pad_h, pad_w) = _pair(size), _pair(kernel), _pair(pad)
    return ConvSpec(name, c, h, w, k, r, s, stride, pad_h, pad_w)


def pooled(size: int, kernel: int, stride: int, pad: int = 0, ceil: bool = False) -> int:
    """Output size of a max/avg pool, floor or ceil mode (PyTorch's rule: a window never starts in the padding)."""
    span = size + 2 * pad - kernel
    out = -(-span // stride) + 1 if ceil else span // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@dataclasses.dataclass(frozen=True)
class Network:
    """A network of the corpus: its name, standard input (C, H, W), where its layers come from, and its builder."""

    name: str
    input_chw: tuple[int, int, int]
    source: str
    build: Callable[[], list[ConvSpec]]

    def convs(self) -> list[ConvSpec]:
        """Every corpus conv in forward order, repeats included."""
        return self.build()


# --------------------------------------------------------------------------- ResNet, ResNeXt

_RESNET_WIDTHS = (64, 128, 256, 512)


def _basic_block(name: str, c: int, size: int, planes: int, stride: int) -> list[ConvSpec]:
    return [
        conv(f"{name}.conv1", c, size, planes, 3, stride=stride, pad=1),
        conv(f"{name}.conv2", planes, size // stride, planes, 3, pad=1),
    ]


def _bottleneck(name: str, c: int, size: int, planes: int, stride: int, groups: int, base_width: int) -> list[ConvSpec]:
    """v1.5 bottleneck (stride in the 3x3, as torchvision); a grouped 3x3 (ResNeXt) is left out."""
    width = planes * base_width // 64 * groups
    convs = [conv(f"{name}.conv1", c, size, width, 1)]
    if groups == 1:
        convs.append(conv(f"{name}.conv2", width, size, width, 3, stride=stride, pad=1))
    convs.append(conv(f"{name}.conv3", width, size // stride, planes * 4, 1))
    return convs


def _resnet(depths: tuple[int, ...], bottleneck: bool, groups: int = 1, base_width: int = 64) -> list[ConvSpec]:
    """torchvision's ResNet/ResNeXt at 224: a 7x7/2 stem and a 3x3/2 max pool, then four stages of blocks."""
    convs = [conv("conv1", 3, 224, 64, 7, stride=2, pad=3)]
    size, c = 56, 64
    expansion = 4 if bottleneck else 1
    for stage, (blocks, planes) in enumerate(zip(depths, _RESNET_WIDTHS, strict=True), start=1):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 1 else 1
            name = f"layer{stage}.{block}"
            if bottleneck:
                convs += _bottleneck(name, c, size, planes, stride, groups, base_width)
            else:
                convs += _basic_block(name, c, size, planes, stride)
            if stride != 1 or c != planes * expansion:
                convs.append(conv(f"{name}.downsample", c, size, planes * expansion, 1, stride=stride))
            size //= stride
            c = planes * expansion
    return convs


def resnet18() -> list[ConvSpec]:
    """ResNet-18: basic blocks (2, 2, 2, 2); 20 convs."""
    return _resnet((2, 2, 2, 2), bottleneck=False)


def resnet34() -> list[ConvSpec]:
    """ResNet-34: basic blocks (3, 4, 6, 3); 36 convs."""
    return _resnet((3, 4, 6, 3), bottleneck=False)


def resnet50() -> list[ConvSpec]:
    """ResNet-50 v1.5: bottlenecks (3, 4, 6, 3); 53 convs."""
    return _resnet((3, 4, 6, 3), bottleneck=True)


def resnet101() -> list[ConvSpec]:
    """ResNet-101 v1.5: bottlenecks (3, 4, 23, 3); 104 convs."""
    return _resnet((3, 4, 23, 3), bottleneck=True)


def resnet152() -> list[ConvSpec]:
    """ResNet-152 v1.5: bottlenecks (3, 8, 36, 3); 155 convs."""
    return _resnet((3, 8, 36, 3), bottleneck=True)


def resnext50_32x4d() -> list[ConvSpec]:
    """ResNeXt-50 32x4d: bottlenecks (3, 4, 6, 3) of widths 128..1024; its 16 grouped 3x3 convs left out (37 kept)."""
    return _resnet((3, 4, 6, 3), bottleneck=True, groups=32, base_width=4)


# --------------------------------------------------------------------------- VGG, AlexNet

_VGG_DEPTHS = {"vgg11": (1, 1, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


def _vgg(depths: tuple[int, ...]) -> list[ConvSpec]:
    """Simonyan & Zisserman: 3x3 pad-1 convs in five blocks at 224, 112, 56, 28, 14, named convB_I."""
    convs = []
    c = 3
    for block, (repeats, k) in enumerate(zip(depths, (64, 128, 256, 512, 512), strict=True), start=1):
        size = 224 >> (block - 1)  # a 2x2/2 max pool ends every block
        for i in range(1, repeats + 1):
            convs.append(conv(f"conv{block}_{i}", c, size, k, 3, pad=1))
            c = k
    return convs


def vgg11() -> list[ConvSpec]:
    """VGG-11 (configuration A): 8 convs."""
    return _vgg(_VGG_DEPTHS["vgg11"])


def vgg16() -> list[ConvSpec]:
    """VGG-16 (configuration D): 13 convs."""
    return _vgg(_VGG_DEPTHS["vgg16"])


def vgg19() -> list[ConvSpec]:
    """VGG-19 (configuration E): 16 convs."""
    return _vgg(_VGG_DEPTHS["vgg19"])


def alexnet() -> list[ConvSpec]:
    """AlexNet as torchvision builds it (the one-GPU variant of Krizhevsky 2014: 64, 192, 384, 256, 256 filters)."""
    return [
        conv("conv1", 3, 224, 64, 11, stride=4, pad=2),  # -> 55, max pool 3/2 -> 27
        conv("conv2", 64, 27, 192, 5, pad=2),  # max pool 3/2 -> 13
        conv("conv3", 192, 13, 384, 3, pad=1),
        conv("conv4", 384, 13, 256, 3, pad=1),
        conv("conv5", 256, 13, 256, 3, pad=1),
    ]


# --------------------------------------------------------------------------- GoogLeNet, Inception-v3

# GoogLeNet (Szegedy et al. 2014, table 1): #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
_GOOGLENET_MODULES: tuple[tuple[str, int, tuple[int, int, int, int, int, int]], ...] = (
    ("inception3a", 28, (64, 96, 128, 16, 32, 32)),
    ("inception3b", 28, (128, 128, 192, 32, 96, 64)),
    ("inception4a", 14, (192, 96, 208, 16, 48, 64)),
    ("inception4b", 14, (160, 112, 224, 24, 64, 64)),
    ("inception4c", 14, (128, 128, 256, 24, 64, 64)),
    ("inception4d", 14, (112, 144, 288, 32, 64, 64)),
    ("inception4e", 14, (256, 160, 320, 32, 128, 128)),
    ("inception5a", 7, (256, 160, 320, 32, 128, 128)),
    ("inception5b", 7, (384, 192, 384, 48, 128, 128)),
)


def _inception_v1(name: str, c: int, size: int, widths: tuple[int, int, int, int, int, int]) -> list[ConvSpec]:
    b1, r3, b3, r5, b5, proj = widths
    return [
        conv(f"{name}.branch1", c, size, b1, 1),
        conv(f"{name}.branch2.0", c, size, r3, 1),
        conv(f"{name}.branch2.1", r3, size, b3, 3, pad=1),
        conv(f"{name}.branch3.0", c, size, r5, 1),
        conv(f"{name}.branch3.1", r5, size, b5, 5, pad=2),
        conv(f"{name}.branch4.1", c, size, proj, 1),
    ]


def googlenet() -> list[ConvSpec]:
    """GoogLeNet as in the paper: 57 convs; the 5x5 branch is 5x5 (torchvision's port uses 3x3 there)."""
    convs = [
        conv("conv1", 3, 224, 64, 7, stride=2, pad=3),  # -> 112, max pool -> 56
        conv("conv2", 64, 56, 64, 1),
        conv("conv3", 64, 56, 192, 3, pad=1),  # max pool -> 28
    ]
    c = 192
    for name, size, widths in _GOOGLENET_MODULES:
        convs += _inception_v1(name, c, size, widths)
        c = widths[0] + widths[2] + widths[4] + widths[5]
    return convs


def _inception_a(name: str, c: int, pool_features: int) -> list[ConvSpec]:
    return [
        conv(f"{name}.branch1x1", c, 35, 64, 1),
        conv(f"{name}.branch5x5_1", c, 35, 48, 1),
        conv(f"{name}.branch5x5_2", 48, 35, 64, 5, pad=2),
        conv(f"{name}.branch3x3dbl_1", c, 35, 64, 1),
        conv(f"{name}.branch3x3dbl_2", 64, 35, 96, 3, pad=1),
        conv(f"{name}.branch3x3dbl_3", 96, 35, 96, 3, pad=1),
        conv(f"{name}.branch_pool", c, 35, pool_features, 1),
    ]


def _inception_b(name: str, c: int) -> list[ConvSpec]:
    return [
        conv(f"{name}.branch3x3", c, 35, 384, 3, stride=2),
        conv(f"{name}.branch3x3dbl_1", c, 35, 64, 1),
        conv(f"{name}.branch3x3dbl_2", 64, 35, 96, 3, pad=1),
        conv(f"{name}.branch3x3dbl_3", 96, 35, 96, 3, stride=2),
    ]


def _inception_c(name: str, c: int, c7: int) -> list[ConvSpec]:
    row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # factorised 7x7: (kernel, pad)
    return [
        conv(f"{name}.branch1x1", c, 17, 192, 1),
        conv(f"{name}.branch7x7_1", c, 17, c7, 1),
        conv(f"{name}.branch7x7_2", c7, 17, c7, row[0], pad=row[1]),
        conv(f"{name}.branch7x7_3", c7, 17, 192, col[0], pad=col[1]),
        conv(f"{name}.branch7x7dbl_1", c, 17, c7, 1),
        conv(f"{name}.branch7x7dbl_2", c7, 17, c7, col[0], pad=col[1]),
        conv(f"{name}.branch7x7dbl_3", c7, 17, c7, row[0], pad=row[1]),
        conv(f"{name}.branch7x7dbl_4", c7, 17, c7, col[0], pad=col[1]),
        conv(f"{name}.branch7x7dbl_5", c7, 17, 192, row[0], pad=row[1]),
        conv(f"{name}.branch_pool", c, 17, 192, 1),
    ]


def _inception_d(name: str, c: int) -> list[ConvSpec]:
    return [
        conv(f"{name}.branch3x3_1", c, 17, 192, 1),
        conv(f"{name}.branch3x3_2", 192, 17, 320, 3, stride=2),
        conv(f"{name}.branch7x7x3_1", c, 17, 192, 1),
        conv(f"{name}.branch7x7x3_2", 192, 17, 192, (1, 7), pad=(0, 3)),
        conv(f"{name}.branch7x7x3_3", 192, 17, 192, (7, 1), pad=(3, 0)),
        conv(f"{name}.branch7x7x3_4", 192, 17, 192, 3, stride=2),
    ]


def _inception_e(name: str, c: int) -> list[ConvSpec]:
    return [
        conv(f"{name}.branch1x1", c, 8, 320, 1),
        conv(f"{name}.branch3x3_1", c, 8, 384, 1),
        conv(f"{name}.branch3x3_2a", 384, 8, 384, (1, 3), pad=(0, 1)),
        conv(f"{name}.branch3x3_2b", 384, 8, 384, (3, 1), pad=(1, 0)),
        conv(f"{name}.branch3x3dbl_1", c, 8, 448, 1),
        conv(f"{name}.branch3x3dbl_2", 448, 8, 384, 3, pad=1),
        conv(f"{name}.branch3x3dbl_3a", 384, 8, 384, (1, 3), pad=(0, 1)),
        conv(f"{name}.branch3x3dbl_3b", 384, 8, 384, (3, 1), pad=(1, 0)),
        conv(f"{name}.branch_pool", c, 8, 192, 1),
    ]


def inception_v3() -> list[ConvSpec]:
    """Inception-v3 at 299 (Szegedy et al. 2016, as torchvision's `inception_v3`): 94 convs, grids 35, 17 and 8."""
    convs = [
        conv("Conv2d_1a_3x3", 3, 299, 32, 3, stride=2),  # -> 149
        conv("Conv2d_2a_3x3", 32, 149, 32, 3),  # -> 147
        conv("Conv2d_2b_3x3", 32, 147, 64, 3, pad=1),  # max pool 3/2 -> 73
        conv("Conv2d_3b_1x1", 64, 73, 80, 1),
        conv("Conv2d_4a_3x3", 80, 73, 192, 3),  # -> 71, max pool 3/2 -> 35
    ]
    convs += _inception_a("Mixed_5b", 192, 32) + _inception_a("Mixed_5c", 256, 64) + _inception_a("Mixed_5d", 288, 64)
    convs += _inception_b("Mixed_6a", 288)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        convs += _inception_c(name, 768, c7)
    convs += _inception_d("Mixed_7a", 768)
    convs += _inception_e("Mixed_7b", 1280) + _inception_e("Mixed_7c", 2048)
    return convs


# --------------------------------------------------------------------------- DenseNet, SqueezeNet


def densenet121() -> list[ConvSpec]:
    """DenseNet-121 (Huang et al. 2017, growth 32, bottleneck 4x32, compression 0.5): 120 convs."""
    convs = [conv("features.conv0", 3, 224, 64, 7, stride=2, pad=3)]  # -> 112, max pool 3/2 pad 1 -> 56
    c, size = 64, 56
    for block, layers in enumerate((6, 12, 24, 16), start=1):
        for i in range(1, layers + 1):
            name = f"features.denseblock{block}.denselayer{i}"
            convs += [conv(f"{name}.conv1", c, size, 128, 1), conv(f"{name}.conv2", 128, size, 32, 3, pad=1)]
            c += 32
        if block < 4:
            convs.append(conv(f"features.transition{block}.conv", c, size, c // 2, 1))  # avg pool 2/2 follows
            c, size = c // 2, size // 2
    return convs


# SqueezeNet 1.1's fire modules fire2..fire9: squeeze width, width of each expand branch, max pool after it.
_SQUEEZENET_FIRES: tuple[tuple[int, int, bool], ...] = (
    (16, 64, False), (16, 64, True), (32, 128, False), (32, 128, True),
    (48, 192, False), (48, 192, False), (64, 256, False), (64, 256, False),
)  # fmt: skip


def squeezenet1_1() -> list[ConvSpec]:
    """SqueezeNet 1.1 (the SqueezeNet repo's v1.1, as torchvision): 26 convs, the classifier a 1x1 conv to 1000."""
    convs = [conv("features.0", 3, 224, 64, 3, stride=2)]  # -> 111
    size = pooled(111, 3, 2, ceil=True)  # 55
    c = 64
    for i, (squeeze, expand, pool_after) in enumerate(_SQUEEZENET_FIRES, start=2):
        convs += [
            conv(f"fire{i}.squeeze", c, size, squeeze, 1),
            conv(f"fire{i}.expand1x1", squeeze, size, expand, 1),
            conv(f"fire{i}.expand3x3", squeeze, size, expand, 3, pad=1),
        ]
        c = 2 * expand
        if pool_after:
            size = pooled(size, 3, 2, ceil=True)  # 27, 13
    convs.append(conv("classifier.1", c, size, 1000, 1))
    return convs


# --------------------------------------------------------------------------- MobileNet-v2, EfficientNet-B0

# (expansion t, output channels c, repeats n, first stride s), Sandler et al. 2018 table 2.
_MOBILENET_V2: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)  # fmt: skip


def mobilenet_v2() -> list[ConvSpec]:
    """MobileNet-v2 1.0 at 224: the stem, every 1x1 expand/project and the last 1x1 (35 of 52 convs; no depthwise)."""
    convs = [conv("stem", 3, 224, 32, 3, stride=2, pad=1)]
    c, size, index = 32, 112, 1
    for t, k, repeats, first_stride in _MOBILENET_V2:
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            if t != 1:
                convs.append(conv(f"block{index}.expand", c, size, c * t, 1))
            size = (size - 1) // stride + 1  # depthwise 3x3, pad 1
            convs.append(conv(f"block{index}.project", c * t, size, k, 1))
            c, index = k, index + 1
    convs.append(conv("last", c, size, 1280, 1))
    return convs


# (expansion, kernel, first stride, output channels, repeats), Tan & Le 2019 table 1.
_EFFICIENTNET_B0: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)  # fmt: skip


def _mbconv(name: str, c: int, size: int, expansion: int, k: int, stride: int) -> list[ConvSpec]:
    """An MBConv block's non-depthwise convs: expand, squeeze-and-excitation (two 1x1 on the pooled 1x1), project."""
    expanded, squeezed = c * expansion, max(1, c // 4)
    convs = [conv(f"{name}.expand", c, size, expanded, 1)] if expansion != 1 else []
    return [
        *convs,
        conv(f"{name}.se.fc1", expanded, 1, squeezed, 1),
        conv(f"{name}.se.fc2", squeezed, 1, expanded, 1),
        conv(f"{name}.project", expanded, (size - 1) // stride + 1, k, 1),
    ]


def efficientnet_b0() -> list[ConvSpec]:
    """EfficientNet-B0 at 224 (as torchvision): stem, MBConv expand/SE/project convs and the head (65 of 81 convs)."""
    convs = [conv("stem", 3, 224, 32, 3, stride=2, pad=1)]
    c, size, index = 32, 112, 1
    for expansion, _kernel, first_stride, k, repeats in _EFFICIENTNET_B0:
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            convs += _mbconv(f"block{index}", c, size, expansion, k, stride)
            size = (size - 1) // stride + 1  # depthwise kernel x kernel, pad kernel // 2
            c, index = k, index + 1
    convs.append(conv("head", c, size, 1280, 1))
    return convs


# --------------------------------------------------------------------------- UNet, YOLOv3


def unet() -> list[ConvSpec]:
    """UNet as in Ronneberger et al. 2015: 572x572x1 in, unpadded 3x3 convs, 2 classes out at 388x388.

    19 forward convs; the paper's 23 include the four 2x2 up-convolutions (transposed, left out).
    """
    convs = []
    c, size = 1, 572
    for level, k in enumerate((64, 128, 256, 512, 1024), start=1):
        convs += [conv(f"down{level}.conv1", c, size, k, 3), conv(f"down{level}.conv2", k, size - 2, k, 3)]
        c, size = k, size - 4
        if level < 5:
            size //= 2  # 2x2/2 max pool: 568 -> 284 -> 140 -> 68 -> 32
    for level, k in enumerate((512, 256, 128, 64), start=1):
        size *= 2  # the 2x2 up-conv halves the channels; the cropped skip brings them back to 2k
        convs += [conv(f"up{level}.conv1", 2 * k, size, k, 3), conv(f"up{level}.conv2", k, size - 2, k, 3)]
        c, size = k, size - 4
    convs.append(conv("final", c, size, 2, 1))
    return convs


def _darknet_residuals(name: str, c: int, size: int, repeats: int) -> list[ConvSpec]:
    convs = []
    for i in range(repeats):
        convs += [conv(f"{name}.{i}.conv1", c, size, c // 2, 1), conv(f"{name}.{i}.conv2", c // 2, size, c, 3, pad=1)]
    return convs


def _yolo_head(name: str, c: int, size: int, width: int) -> list[ConvSpec]:
    """Five alternating 1x1 (width) / 3x3 (2 x width) convs, a 3x3, and the 1x1 detection conv to 3 x (80 + 5)."""
    convs = [conv(f"{name}.0", c, size, width, 1)]
    for i in (1, 3):
        convs.append(conv(f"{name}.{i}", width, size, 2 * width, 3, pad=1))
        convs.append(conv(f"{name}.{i + 1}", 2 * width, size, width, 1))
    convs.append(conv(f"{name}.5", width, size, 2 * width, 3, pad=1))
    convs.append(conv(f"{name}.detect", 2 * width, size, 255, 1))
    return convs


def yolov3() -> list[ConvSpec]:
    """YOLOv3 at 416 (Redmon & Farhadi 2018; darknet's yolov3.cfg, 80 classes): Darknet-53's 52 convs + 23 in heads."""
    convs = [conv("stem", 3, 416, 32, 3, pad=1)]
    c, size = 32, 416
    for stage, repeats in enumerate((1, 2, 8, 8, 4), start=1):
        convs.append(conv(f"stage{stage}.down", c, size, 2 * c, 3, stride=2, pad=1))
        c, size = 2 * c, size // 2
        convs += _darknet_residuals(f"stage{stage}", c, size, repeats)
    # Scale 1 at 13 on Darknet's 1024 channels; each later scale takes the previous head's 5th conv (a 1x1 to
    # `width`), halves it with a 1x1, upsamples 2x and concatenates the backbone's map there (512 at 26, 256 at 52).
    convs += _yolo_head("head13", 1024, 13, 512)
    convs += [conv("route26.conv", 512, 13, 256, 1), *_yolo_head("head26", 256 + 512, 26, 256)]
    convs += [conv("route52.conv", 256, 26, 128, 1), *_yolo_head("head52", 128 + 256, 52, 128)]
    return convs


def _registry(networks: Iterable[Network]) -> dict[str, Network]:
    return {net.name: net for net in networks}


_IMAGENET = (3, 224, 224)
_TV = "torchvision.models"

#: Every network of the corpus, in the order the corpus lists them.
NETWORKS: dict[str, Network] = _registry(
    (
        Network("resnet18", _IMAGENET, f"He et al. 2016; {_TV}.resnet18", resnet18),
        Network("resnet34", _IMAGENET, f"He et al. 2016; {_TV}.resnet34", resnet34),
        Network("resnet50", _IMAGENET, f"He et al. 2016, v1.5; {_TV}.resnet50", resnet50),
        Network("resnet101", _IMAGENET, f"He et al. 2016, v1.5; {_TV}.resnet101", resnet101),
        Network("resnet152", _IMAGENET, f"He et al. 2016, v1.5; {_TV}.resnet152", resnet152),
        Network("resnext50_32x4d", _IMAGENET, f"Xie et al. 2017; {_TV}.resnext50_32x4d", resnext50_32x4d),
        Network("vgg11", _IMAGENET, f"Simonyan & Zisserman 2015, config A; {_TV}.vgg11", vgg11),
        Network("vgg16", _IMAGENET, f"Simonyan & Zisserman 2015, config D; {_TV}.vgg16", vgg16),
        Network("vgg19", _IMAGENET, f"Simonyan & Zisserman 2015, config E; {_TV}.vgg19", vgg19),
        Network("alexnet", _IMAGENET, f"Krizhevsky 2014 one-GPU variant; {_TV}.alexnet", alexnet),
        Network("googlenet", _IMAGENET, "Szegedy et al. 2014, table 1 (5x5 branch as published)", googlenet),
        Network("inception_v3", (3, 299, 299), f"Szegedy et al. 2016; {_TV}.inception_v3", inception_v3),
        Network("densenet121", _IMAGENET, f"Huang et al. 2017; {_TV}.densenet121", densenet121),
        Network("squeezenet1_1", _IMAGENET, f"Iandola et al., SqueezeNet v1.1; {_TV}.squeezenet1_1", squeezenet1_1),
        Network("mobilenet_v2", _IMAGENET, f"Sandler et al. 2018; {_TV}.mobilenet_v2", mobilenet_v2),
        Network("efficientnet_b0", _IMAGENET, f"Tan & Le 2019; {_TV}.efficientnet_b0", efficientnet_b0),
        Network("unet", (1, 572, 572), "Ronneberger et al. 2015, fig. 1 (unpadded, 2 classes)", unet),
        Network("yolov3", (3, 416, 416), "Redmon & Farhadi 2018; darknet cfg/yolov3.cfg", yolov3),
    )
)


def network(name: str) -> Network:
    """The network called `name`; a ValueError names the known ones."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; known: {', '.join(NETWORKS)}") from None
