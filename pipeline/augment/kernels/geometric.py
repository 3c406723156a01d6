"""Shear, translate and rotate: one batched nearest-neighbour affine warp, PIL-exact.

Why not affine_grid/grid_sample: grid_sample rounds source coordinates half-to-even in float32,
while PIL (the reference of Fast AutoAugment) samples ``floor`` of the coordinate computed in
16.16 fixed point.  Reproducing PIL's integer arithmetic is both exact and cheaper: the whole
warp is integer index arithmetic plus one gather on uint8 data, no float image is ever made.

PIL convention: the output pixel (x, y) takes the input pixel at
``floor(a*(x+.5) + b*(y+.5) + c), floor(d*(x+.5) + e*(y+.5) + f)`` for the inverse matrix
(a, b, c, d, e, f); outside the image the fill value (0, as PIL's default) is written.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pipeline.augment.kernels.context import OpContext, scalars

FILL = 0
"""Value written where the warp samples outside the image (PIL's and torchvision's default)."""

_ONE = 65536  # 1.0 in PIL's 16.16 fixed point


def _fixed_from_matrix(m: np.ndarray) -> np.ndarray:
    """[n, 6] float64 PIL inverse matrices -> [n, 6] int64 fixed-point coefficients.

    PIL's affine_fixed: every entry becomes FIX(v) = floor(v * 65536 + 0.5), after a2 and a5
    absorb the half-pixel offset of the first output pixel (``a[2] + a[0]*.5 + a[1]*.5``).
    """
    shifted = m.copy()
    shifted[:, 2::3] = m[:, 2::3] + m[:, 0::3] * 0.5 + m[:, 1::3] * 0.5  # columns 2 and 5
    return np.floor(shifted * _ONE + 0.5).astype(np.int64)


def warp_fixed(images: Tensor, coeffs: np.ndarray, fill: int = FILL) -> Tensor:
    """Warp each image by its own fixed-point inverse map (nearest, PIL semantics).

    coeffs: [n, 6] int64 (a0, a1, a2, a3, a4, a5) so that for output (x, y)
    ``x_in = (a2 + a1*y + a0*x) >> 16`` and ``y_in = (a5 + a4*y + a3*x) >> 16``.
    """
    n, channels, height, width = images.shape
    device = images.device
    # PIL only takes this path while coordinates stay below 32768, so fixed-point values fit
    # in int32, whose arithmetic is 2-4x faster than int64 on CPU; larger ones fall back.
    bound = int(np.abs(coeffs).max(initial=0)) * (1 + height + width)
    dtype = torch.int32 if bound < 2**31 else torch.int64
    # x and y are computed together as [n, 2, H, W]: half the (small, overhead-bound) ops.
    k = torch.from_numpy(coeffs[:, [0, 3, 1, 4, 2, 5]]).to(device=device, dtype=dtype)
    per_x, per_y, offset = k.view(n, 3, 2, 1, 1).unbind(1)  # each [n, 2, 1, 1]
    xs = torch.arange(width, device=device, dtype=dtype).view(1, 1, 1, width)
    ys = torch.arange(height, device=device, dtype=dtype).view(1, 1, height, 1)
    # Arithmetic right shift floors negative coordinates too, like PIL's ``xx >> 16``.
    source_xy = ((offset + per_y * ys) + per_x * xs) >> 16  # [n, 2, H, W]: x_in, y_in
    # The sign bit of (v | (size-1-v)) is set iff v is outside [0, size): branch-free and
    # compare-free (torch's compares against scalars are slow on CPU).
    last = torch.tensor([width - 1, height - 1], device=device, dtype=dtype).view(1, 2, 1, 1)
    signs = source_xy | (last - source_xy)
    outside = (signs[:, 0] | signs[:, 1]) >> (dtype.itemsize * 8 - 1)  # -1 outside, 0 inside
    x_in, y_in = source_xy.unbind(1)
    source = ((y_in * width + x_in) & ~outside).to(torch.int64).reshape(n, 1, height * width)
    flat = images.reshape(n, channels, height * width)
    out = flat.gather(2, source.expand(n, channels, height * width))
    keep = (~outside).to(torch.uint8).reshape(n, 1, height * width)  # 255 inside, 0 outside
    out &= keep
    if fill:
        out |= keep.bitwise_not() & fill
    return out.view(n, channels, height, width)


def _matrices(n: int, **entries: np.ndarray) -> np.ndarray:
    """[n, 6] identity matrices (1, 0, 0, 0, 1, 0) with the named entries (a..f) replaced."""
    m = np.tile(np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), (n, 1))
    for name, column in entries.items():
        m[:, "abcdef".index(name)] = column
    return m


def shear_x(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """FAA ShearX: PIL transform (1, v, 0, 0, 1, 0), sheared about the top-left corner."""
    v = scalars(values)
    return warp_fixed(images, _fixed_from_matrix(_matrices(len(v), b=v)))


def shear_y(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """FAA ShearY: PIL transform (1, 0, 0, v, 1, 0)."""
    v = scalars(values)
    return warp_fixed(images, _fixed_from_matrix(_matrices(len(v), d=v)))


def _shift(images: Tensor, shift_x: np.ndarray, shift_y: np.ndarray) -> Tensor:
    """Translate by whole pixels: x_in = x + shift_x, y_in = y + shift_y (fixed point)."""
    coeffs = _matrices(len(shift_x), c=shift_x, f=shift_y) * _ONE
    return warp_fixed(images, coeffs.astype(np.int64))


def _whole_pixels(offset: np.ndarray) -> np.ndarray:
    """PIL samples x_in = floor(x + .5 + t) for a translation matrix (its 'scale' path, in
    double), which is x + floor(t + .5) for every integer x: one shift per image."""
    return np.floor(offset + 0.5)


def translate_x(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """FAA TranslateX: v is a fraction of the width; PIL transform (1, 0, v*W, 0, 1, 0)."""
    shift = _whole_pixels(scalars(values) * images.shape[-1])
    return _shift(images, shift, np.zeros_like(shift))


def translate_y(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """FAA TranslateY: v is a fraction of the height; PIL transform (1, 0, 0, 0, 1, v*H)."""
    shift = _whole_pixels(scalars(values) * images.shape[-2])
    return _shift(images, np.zeros_like(shift), shift)


def translate_x_pixels(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """TranslateX by v pixels (torchvision's TrivialAugmentWide space), PIL rounding."""
    shift = _whole_pixels(scalars(values))
    return _shift(images, shift, np.zeros_like(shift))


def translate_y_pixels(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """TranslateY by v pixels."""
    shift = _whole_pixels(scalars(values))
    return _shift(images, np.zeros_like(shift), shift)


def rotate(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """PIL ``Image.rotate(v)``: v degrees counter-clockwise about the centre (w/2, h/2)."""
    height, width = images.shape[-2:]
    cx, cy = width / 2.0, height / 2.0
    # Same steps as PIL: angle mod 360, negated radians, matrix entries rounded to 15 decimals.
    angle = -np.radians(np.remainder(scalars(values), 360.0))
    cos = np.round(np.cos(angle), 15)
    sin = np.round(np.sin(angle), 15)
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    matrix = _matrices(len(cos), a=cos, b=sin, c=c, d=-sin, e=cos, f=f)
    return warp_fixed(images, _fixed_from_matrix(matrix))
