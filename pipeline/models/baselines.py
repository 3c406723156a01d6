"""Reference networks, registered next to the search space so that searched models are
compared on equal terms (same trainer, same data, same cost counters)."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.blocks import BasicResidual, ConvBNAct, ConvGroup, whitening_filters


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR (He et al. 2016): 3 stages x 3 basic blocks, 16/32/64 channels.

    Uses 1x1 projection shortcuts where the shape changes (option B): 0.27 M parameters.
    """

    def __init__(self, num_classes: int = 10, blocks_per_stage: int = 3) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3)
        layers: list[nn.Module] = []
        channels = 16
        for stage, width in enumerate((16, 32, 64)):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicResidual(channels, width, stride))
                channels = width
        self.blocks = nn.Sequential(*layers)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.blocks(self.stem(x)).mean((2, 3)))


# ---------------------------------------------------------------- airbench-style net
# After KellerJordan/cifar10-airbench (airbench94), written out by hand from the parts in
# blocks.py; the search space holds the same network (``SPACE_POINTS["airbench94"]``, a test
# checks that the two agree).


class AirbenchNet(nn.Module):
    """airbench94-style net; ``widths`` of the three conv groups (airbench94: 64, 256, 256)."""

    def __init__(
        self, num_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256), whiten_kernel: int = 2
    ) -> None:
        super().__init__()
        whiten_width = 2 * 3 * whiten_kernel**2
        self.whiten = nn.Conv2d(3, whiten_width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from data by init_from_data(), then frozen
        self.act = nn.GELU()
        self.groups = nn.Sequential(
            ConvGroup(whiten_width, widths[0]), ConvGroup(widths[0], widths[1]), ConvGroup(widths[1], widths[2])
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.linear = nn.Linear(widths[2], num_classes, bias=False)
        self.output_scale = 1 / 9  # keeps early logits small with a high learning rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return self.linear(self.pool(x).flatten(1)) * self.output_scale

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first conv to whiten the patch distribution of ``images`` (normalised float).

        The filters are the eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue),
        in +/- pairs, so that GELU keeps both signs of each whitened component
        (``blocks.whitening_filters``).
        """
        weight = whitening_filters(images, self.whiten.kernel_size[0], eps)
        self.whiten.weight.copy_(weight.to(self.whiten.weight))
