"""Building blocks of the model search space.

Every block takes ``(in_channels, out_channels, stride, ...)`` and maps
``[N, in, H, W] -> [N, out, ceil(H / stride), ceil(W / stride)]``, so the space
builder can chain any sequence of them without shape bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hswish": lambda: nn.Hardswish(inplace=True),
    "swish": lambda: nn.SiLU(inplace=True),
    "gelu": nn.GELU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (see ``ACTIVATIONS``)."""
    return ACTIVATIONS[name]()


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (SIMD/AMX-friendly widths)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    # Never round down by more than 10 %: that would silently shrink the block.
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv -> BatchNorm -> activation (no conv bias: BN has its own shift)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: str | None = "relu",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(make_activation(activation))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-excite: channel gates from the global average, hard-sigmoid."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = make_divisible(channels / reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.act = nn.ReLU(inplace=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.gate(self.expand(self.act(self.reduce(scale))))
        return x * scale


class DepthwiseSeparable(nn.Sequential):
    """Depthwise kxk conv + pointwise 1x1 conv (MobileNetV1)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, activation: str = "relu"
    ) -> None:
        super().__init__(
            ConvBNAct(in_channels, in_channels, kernel, stride, groups=in_channels, activation=activation),
            ConvBNAct(in_channels, out_channels, 1, activation=activation),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 inverted residual: expand 1x1 -> depthwise kxk -> [SE] -> linear project 1x1.

    With ``se=False`` and ReLU6 this is the MobileNetV2 block; with squeeze-excite and
    hard-swish it is the MobileNetV3 block. The skip connection is used whenever the
    shapes allow it (stride 1, same channel count).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: int = 1,
        expansion: int = 6,
        activation: str = "relu6",
        se: bool = False,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=activation))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, activation=activation))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(ConvBNAct(hidden, out_channels, 1, activation=None))
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


class BasicResidual(nn.Module):
    """ResNet basic block (two kxk convs); a 1x1 projection when the shape changes."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, kernel: int = 3, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBNAct(in_channels, out_channels, kernel, stride, activation=activation),
            ConvBNAct(out_channels, out_channels, kernel, activation=None),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBNAct(in_channels, out_channels, 1, stride, activation=None)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ConvPool(nn.Sequential):
    """airbench's downsampling: a kxk conv at the input's resolution, then a 2x2 max-pool when
    ``stride`` is 2, then BatchNorm and the activation. Dense convolutions of a few wide layers
    are what a CPU runs fastest per MAC (oneDNN, AMX); pooling after the conv lets it see every
    pixel, at 4x the MACs of a strided conv."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, activation: str = "relu"
    ) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2, bias=False)]
        if stride == 2:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: the blocks' shape contract
        elif stride != 1:
            raise ValueError(f"ConvPool: stride {stride} must be 1 or 2")
        layers += [nn.BatchNorm2d(out_channels), make_activation(activation)]
        super().__init__(*layers)


class ClassifierHead(nn.Module):
    """Optional 1x1 conv to ``channels`` -> global average pool -> dropout -> linear."""

    def __init__(
        self, in_channels: int, num_classes: int, channels: int = 0, dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.features: nn.Module = nn.Identity()
        if channels > 0:
            self.features = ConvBNAct(in_channels, channels, 1, activation=activation)
            in_channels = channels
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3))
        return self.linear(self.dropout(x))
