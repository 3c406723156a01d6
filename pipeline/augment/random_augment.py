"""RandAugment and TrivialAugment (Wide) as batch transforms on the same kernels.

They follow torchvision's definitions (op lists and ranges in RANDAUGMENT_OPS /
TRIVIALAUGMENT_OPS, magnitude bins, a random sign per op), drawing everything per image:
RandAugment applies ``num_ops`` ops chosen uniformly (with replacement) at one magnitude;
TrivialAugment applies one op at a magnitude bin drawn uniformly per image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.augment.batch import check_batch, default_generator
from pipeline.augment.engine import run_plan
from pipeline.augment.ops import RANDAUGMENT_OPS, TRIVIALAUGMENT_OPS, OpTable


class RandAugment:
    """RandAugment(N, M): ``num_ops`` random ops per image, each at bin ``magnitude`` of
    ``num_magnitude_bins`` (torchvision's defaults: 2, 9, 31)."""

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: int = 9,
        num_magnitude_bins: int = 31,
        ops: OpTable = RANDAUGMENT_OPS,
    ) -> None:
        if num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {num_ops}")
        if num_magnitude_bins < 2 or not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(
                f"magnitude must be in [0, {num_magnitude_bins - 1}] with num_magnitude_bins "
                f">= 2, got magnitude={magnitude}, num_magnitude_bins={num_magnitude_bins}"
            )
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.num_magnitude_bins = num_magnitude_bins
        self.ops = ops

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_batch(images)
        generator = default_generator(generator)
        n = images.shape[0]
        op_index = torch.randint(len(self.ops), (n, self.num_ops), generator=generator)
        level = self.magnitude / (self.num_magnitude_bins - 1)
        magnitude = torch.full((n, self.num_ops), level, dtype=torch.float64)
        return run_plan(images, op_index, magnitude, list(self.ops.values()), generator)

    def __repr__(self) -> str:
        return (
            f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, "
            f"num_magnitude_bins={self.num_magnitude_bins})"
        )


class TrivialAugment:
    """TrivialAugmentWide: one random op per image at a random bin of ``num_magnitude_bins``."""

    def __init__(self, num_magnitude_bins: int = 31, ops: OpTable = TRIVIALAUGMENT_OPS) -> None:
        if num_magnitude_bins < 2:
            raise ValueError(f"num_magnitude_bins must be >= 2, got {num_magnitude_bins}")
        self.num_magnitude_bins = num_magnitude_bins
        self.ops = ops

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_batch(images)
        generator = default_generator(generator)
        n = images.shape[0]
        op_index = torch.randint(len(self.ops), (n, 1), generator=generator)
        bins = torch.randint(self.num_magnitude_bins, (n, 1), generator=generator)
        magnitude = bins.to(torch.float64) / (self.num_magnitude_bins - 1)
        return run_plan(images, op_index, magnitude, list(self.ops.values()), generator)

    def __repr__(self) -> str:
        return f"TrivialAugment(num_magnitude_bins={self.num_magnitude_bins})"
