"""Checks and defaults shared by everything that takes a batch and a generator."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


def check_batch(images: Tensor) -> None:
    """Batch transforms take uint8 [N, 3, H, W] (RGB) on any device."""
    if not isinstance(images, Tensor):
        raise TypeError(f"expected a uint8 tensor [N, 3, H, W], got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected a uint8 tensor [N, 3, H, W], got {images.dtype} {tuple(images.shape)}"
        )


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """The CPU generator to draw from; without one, a fresh one seeded from torch's global RNG
    (so torch.manual_seed and DataLoader worker seeding still make runs reproducible)."""
    if generator is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
        return torch.Generator().manual_seed(seed)
    if generator.device.type != "cpu":
        raise ValueError(
            "pass a CPU torch.Generator: randomness is drawn on the CPU and moved to the "
            f"images' device (got a {generator.device.type} generator)"
        )
    return generator


class BatchTransform(Protocol):
    """``f(images uint8 [N, 3, H, W] on any device, generator) -> uint8 [N, 3, H, W]``."""

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor: ...
