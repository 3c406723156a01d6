"""Batched uint8 kernels: ``kernel(images [n, C, H, W], values [n], ctx) -> images``.

Every kernel applies its own value to each image (no shared magnitude), keeps dtype, shape
and device, and is deterministic given (images, values, ctx).
"""

from pipeline.augment.kernels.context import Kernel, OpContext
from pipeline.augment.kernels.geometric import (
    rotate,
    shear_x,
    shear_y,
    translate_x,
    translate_x_pixels,
    translate_y,
    translate_y_pixels,
)
from pipeline.augment.kernels.photometric import (
    autocontrast,
    brightness,
    color,
    contrast,
    equalize,
    identity,
    invert,
    posterize,
    sharpness,
    solarize,
)
from pipeline.augment.kernels.regional import cutout, sample_pairing

__all__ = [
    "Kernel",
    "OpContext",
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "cutout",
    "equalize",
    "identity",
    "invert",
    "posterize",
    "rotate",
    "sample_pairing",
    "sharpness",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_x_pixels",
    "translate_y",
    "translate_y_pixels",
]
