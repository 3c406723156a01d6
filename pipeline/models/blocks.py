"""Building blocks of the model search space.

Every block takes ``(in_channels, out_channels, stride, ...)`` and maps
``[N, in, H, W] -> [N, out, ceil(H / stride), ceil(W / stride)]``, so the space
builder can chain any sequence of them without shape bookkeeping. The one exception is
airbench's ``ConvGroup``, which pools as airbench does (floor: ``H // stride``).

airbench's parts (KellerJordan/cifar10-airbench, airbench94) live here too, shared by the
space and the hand-written port (``baselines.AirbenchNet``): ``WhiteningStem`` (a frozen 2x2
conv whitened from data), ``FrozenScaleBatchNorm``, ``DiracConv`` and ``ConvGroup``.
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
    """Optional 1x1 conv to ``channels`` -> global pool -> dropout -> linear -> x ``scale``.

    The defaults are the usual head (average pool, linear with bias, no scale); airbench's is
    ``pool="max", bias=False, scale=1/9`` (small early logits at its high learning rate).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 0,
        dropout: float = 0.0,
        activation: str = "relu",
        *,
        pool: str = "avg",
        bias: bool = True,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"ClassifierHead: pool {pool!r} must be 'avg' or 'max'")
        self.features: nn.Module = nn.Identity()
        if channels > 0:
            self.features = ConvBNAct(in_channels, channels, 1, activation=activation)
            in_channels = channels
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_channels, num_classes, bias=bias)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.mean((2, 3)) if self.pool == "avg" else x.amax((2, 3))
        out = self.linear(self.dropout(x))
        return out if self.scale == 1.0 else out * self.scale


# ---------------------------------------------------------------- airbench's parts
# After KellerJordan/cifar10-airbench (airbench94): a frozen, data-whitened 2x2 first conv,
# conv groups (conv-pool-BN-GELU-conv-BN-GELU), identity-initialised convs, BN without a
# trainable scale. They reach high accuracy in very few epochs, which a CPU budget needs.


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """airbench's BatchNorm: the scale is frozen at 1 (only the shift trains, at the high
    bias learning rate) and the running statistics move fast (momentum 0.4, eps 1e-12)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


class DiracConv(nn.Conv2d):
    """kxk 'same' conv without bias whose first ``min(in, out)`` filters start as the identity
    (an implicit residual); the others keep PyTorch's default init."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3) -> None:
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[: min(in_channels, out_channels)])


class ConvGroup(nn.Sequential):
    """airbench's conv group: Dirac conv, 2x2 max-pool (when ``stride`` is 2), frozen-scale BN,
    act, Dirac conv, frozen-scale BN, act. The pool floors odd sizes (airbench's, and what
    ``AirbenchNet`` needs to stay exactly airbench94): 31x31 -> 15x15."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 2, activation: str = "gelu"
    ) -> None:
        if stride not in (1, 2):
            raise ValueError(f"ConvGroup: stride {stride} must be 1 or 2")
        layers: list[nn.Module] = [DiracConv(in_channels, out_channels, kernel)]
        if stride == 2:
            layers.append(nn.MaxPool2d(2))
        layers += [
            FrozenScaleBatchNorm(out_channels),
            make_activation(activation),
            DiracConv(out_channels, out_channels, kernel),
            FrozenScaleBatchNorm(out_channels),
            make_activation(activation),
        ]
        super().__init__(*layers)


def whitening_filters(images: torch.Tensor, kernel: int, eps: float = 5e-4) -> torch.Tensor:
    """``[2 * C * k * k, C, k, k]`` filters that whiten the kxk patches of ``images`` (normalised
    float ``[N, C, H, W]``): the eigenvectors of the patch covariance scaled by
    1/sqrt(eigenvalue + eps), largest first, then the same filters negated, so that an
    activation after them keeps both signs of each whitened component."""
    c = images.shape[1]
    patches = images.float().unfold(2, kernel, 1).unfold(3, kernel, 1)  # N,C,H',W',kh,kw
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
    filters = (eigenvectors / torch.sqrt(eigenvalues + eps)[:, None]).reshape(-1, c, kernel, kernel)
    return torch.cat((filters, -filters))


class WhiteningStem(nn.Module):
    """airbench's stem: a kxk conv (no padding, so 32x32 -> 31x31 at k = 2) with
    ``2 * in_channels * k * k`` output channels, whose weight is set from data by
    ``init_from_data`` and then frozen (its bias trains), followed by the activation."""

    def __init__(self, in_channels: int = 3, kernel: int = 2, activation: str = "gelu") -> None:
        super().__init__()
        self.out_channels = 2 * in_channels * kernel**2
        self.conv = nn.Conv2d(in_channels, self.out_channels, kernel, padding=0, bias=True)
        self.conv.weight.requires_grad_(False)  # set from data by init_from_data(), then frozen
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the conv to whiten the patch distribution of ``images`` (normalised float)."""
        weight = whitening_filters(images, self.conv.kernel_size[0], eps)
        self.conv.weight.copy_(weight.to(self.conv.weight))
