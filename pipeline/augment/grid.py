"""A picture of a policy: sample images, each with several draws of the policy."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from pipeline.augment.batch import BatchTransform, check_batch, default_generator
from pipeline.files import write_bytes_atomic


def policy_grid(
    transform: BatchTransform,
    images: Tensor,
    n_draws: int = 7,
    generator: torch.Generator | None = None,
    path: str | Path | None = None,
    *,
    scale: int = 4,
    padding: int = 2,
) -> bytes:
    """PNG of a grid: one row per image, the original first, then ``n_draws`` augmented copies.

    images: a few uint8 [N, 3, H, W] images; each pixel is drawn ``scale`` x ``scale`` (nearest)
    so 32-px images are readable.  Returns the PNG bytes and also writes them to ``path``.
    """
    from torchvision.utils import make_grid  # imported where used: see adapter.py

    check_batch(images)
    if n_draws < 1 or scale < 1:
        raise ValueError(f"n_draws and scale must be >= 1, got {n_draws} and {scale}")
    generator = default_generator(generator)
    draws = [transform(images, generator) for _ in range(n_draws)]
    columns = torch.stack([images, *draws], dim=1).cpu()  # [N, 1 + n_draws, 3, H, W]
    tiles = columns.flatten(0, 1).repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    grid = make_grid(tiles, nrow=1 + n_draws, padding=padding, pad_value=255)
    buffer = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    png = buffer.getvalue()
    if path is not None:
        write_bytes_atomic(path, png)
    return png
