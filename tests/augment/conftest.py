"""Tiny generated images for the augmentation tests (never the real dataset)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as nnf


def natural_images(n: int, size: tuple[int, int] = (32, 32), seed: int = 0) -> torch.Tensor:
    """uint8 [n, 3, H, W] that look a little like photos: smooth blobs plus some noise, with
    varied ranges per image (so AutoContrast and Equalize have something to do)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 5, 5, generator=g)
    smooth = nnf.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    low = torch.rand(n, 1, 1, 1, generator=g) * 80
    high = 150 + torch.rand(n, 1, 1, 1, generator=g) * 105
    noise = torch.randn(n, 3, *size, generator=g) * 6
    return (low + smooth.clamp(0, 1) * (high - low) + noise).clamp(0, 255).to(torch.uint8)


@pytest.fixture
def images() -> torch.Tensor:
    return natural_images(6)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
