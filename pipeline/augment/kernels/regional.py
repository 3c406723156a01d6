"""Ops that need per-image randomness beyond the magnitude: Cutout and SamplePairing."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pipeline.augment.kernels.context import OpContext, scalars
from pipeline.augment.kernels.photometric import blend

CUTOUT_COLOR = (125, 123, 114)
"""Fast AutoAugment fills the Cutout box with this colour (about the CIFAR-10 mean)."""


def cutout(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """FAA Cutout: a v*W square box of CUTOUT_COLOR at a random centre.

    Reproduces FAA's CutoutAbs + PIL ImageDraw.rectangle: the box starts at
    x0 = int(max(0, cx - v/2)) (so it is pushed inside at the left/top edge and clipped at the
    right/bottom edge) and covers columns x0 .. int(min(W, x0 + v)) inclusive.  v <= 0 is a
    no-op.  ctx.uniforms[:, 0:2] place the centre uniformly in [0, W) x [0, H).  (FAA's code
    draws ``np.random.uniform(w)``, which numpy reads as low=w, high=1, i.e. (1, W]; we keep
    the evident intent rather than that slip.)
    """
    n, channels, height, width = images.shape
    side = scalars(values) * width
    centre = scalars(ctx.uniforms[:, :2]) * np.array([width, height], dtype=np.float64)
    start = np.floor(np.maximum(centre - side[:, None] / 2, 0.0))  # [n, 2]: x0, y0
    stop = np.floor(np.minimum(start + side[:, None], [width, height]))  # inclusive x1, y1
    stop[side <= 0] = -1  # an empty box
    device = images.device
    bounds = torch.from_numpy(np.concatenate([start, stop], axis=1)).to(device, torch.int64)
    x0, y0, x1, y1 = bounds.view(n, 4, 1, 1, 1).unbind(1)
    xs = torch.arange(width, device=device).view(1, 1, 1, width)
    ys = torch.arange(height, device=device).view(1, 1, height, 1)
    # Compare on the two small axes, combine by broadcasting, then paint with bit masks:
    # torch.where and broadcast compares on the image-sized tensors are slow on CPU.
    in_box = ((xs >= x0) & (xs <= x1)) & ((ys >= y0) & (ys <= y1))  # [n, 1, H, W]
    box = in_box.view(torch.uint8).mul(255)  # 255 in the box, 0 elsewhere
    color = torch.tensor(CUTOUT_COLOR, dtype=torch.uint8, device=device).view(1, channels, 1, 1)
    return (images & box.bitwise_not()) | (color & box)


def sample_pairing(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """SamplePairing: PIL Image.blend(image, partner, v), the partner drawn from ctx.pool.

    ctx.uniforms[:, 0] picks the partner uniformly from the pool (the whole batch under a
    policy), like FAA's np.random.choice over the dataset; it may be the image itself.
    """
    pool = images if ctx.pool is None else ctx.pool
    size = pool.shape[0]
    pick = np.minimum((scalars(ctx.uniforms[:, 0]) * size).astype(np.int64), size - 1)
    partners = pool.index_select(0, torch.from_numpy(pick).to(pool.device))
    return blend(images, partners, values)
