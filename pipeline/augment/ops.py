"""The op tables: name -> (kernel, low, high, signed), as data.

A magnitude m in [0, 1] becomes the kernel's value ``origin ± (m * (high - low) + low)``; the
sign is drawn at random per image for signed ops.  The same kernels serve three tables:

- OPS: Fast AutoAugment's search space (the ranges of the paper's table).  Policies (and
  their JSON) are expressed in it.
- RANDAUGMENT_OPS / TRIVIALAUGMENT_OPS: torchvision's RandAugment and TrivialAugmentWide
  spaces (enhance ops are signed around 1, strength grows with the magnitude).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from pipeline.augment import kernels as k
from pipeline.augment.batch import check_batch, default_generator
from pipeline.augment.kernels import Kernel, OpContext


@dataclass(frozen=True)
class OpSpec:
    """One op of a table.

    kernel:   the batched kernel (images, values, ctx) -> images.
    low/high: the value at magnitude 0 and 1 (for signed ops: of the absolute value).
    signed:   the value's sign is flipped at random, per image, with probability 1/2.
    origin:   added after the sign (1.0 for enhance factors that are symmetric around 1).
    uniforms: how many extra U[0, 1) numbers per image the kernel reads from ctx.uniforms.
    """

    kernel: Kernel
    low: float = 0.0
    high: float = 0.0
    signed: bool = False
    origin: float = 0.0
    uniforms: int = 0

    @property
    def uses_magnitude(self) -> bool:
        return self.low != self.high

    def values(self, magnitudes: Tensor, negate: Tensor | None = None) -> Tensor:
        """[n] magnitudes in [0, 1] -> [n] float64 kernel values; negate [n] bool flips signed ops.

        Per-image scalars stay float64 (a few numbers, not pixels) so they equal the
        Python-double values PIL's reference code computes.
        """
        # FAA's own expression order (level * (high - low) + low) keeps values bit-identical.
        values = magnitudes.to(torch.float64) * (self.high - self.low) + self.low
        if self.signed and negate is not None:
            values = torch.where(negate, -values, values)
        return values + self.origin if self.origin else values


OpTable = Mapping[str, OpSpec]

_ENHANCE = (0.1, 1.9)

OPS: OpTable = MappingProxyType(
    {
        "Identity": OpSpec(k.identity),
        "ShearX": OpSpec(k.shear_x, 0.0, 0.3, signed=True),
        "ShearY": OpSpec(k.shear_y, 0.0, 0.3, signed=True),
        "TranslateX": OpSpec(k.translate_x, 0.0, 0.45, signed=True),  # fraction of the width
        "TranslateY": OpSpec(k.translate_y, 0.0, 0.45, signed=True),  # fraction of the height
        "Rotate": OpSpec(k.rotate, 0.0, 30.0, signed=True),  # degrees
        "AutoContrast": OpSpec(k.autocontrast),
        "Invert": OpSpec(k.invert),
        "Equalize": OpSpec(k.equalize),
        "Solarize": OpSpec(k.solarize, 0.0, 256.0),  # threshold; 256 = no pixel inverted
        "Posterize": OpSpec(k.posterize, 4.0, 8.0),  # bits kept = int(value); 8 = identity
        "Contrast": OpSpec(k.contrast, *_ENHANCE),  # PIL enhance factor; 1 = identity
        "Color": OpSpec(k.color, *_ENHANCE),
        "Brightness": OpSpec(k.brightness, *_ENHANCE),
        "Sharpness": OpSpec(k.sharpness, *_ENHANCE),
        "Cutout": OpSpec(k.cutout, 0.0, 0.2, uniforms=2),  # box side, fraction of the width
        "SamplePairing": OpSpec(k.sample_pairing, 0.0, 0.4, uniforms=1),  # blend weight
    }
)
"""Fast AutoAugment's ops and ranges (Lim et al. 2019, table; SamplePairing from its code)."""


def _torchvision_space(
    *, shear: float, translate: float, in_pixels: bool, rotate: float, enhance: float, bits: float
) -> OpTable:
    """torchvision's AutoAugment-family space on our kernels (bins become m = bin / (bins - 1))."""
    shift_x, shift_y = (
        (k.translate_x_pixels, k.translate_y_pixels)
        if in_pixels
        else (k.translate_x, k.translate_y)
    )
    return MappingProxyType(
        {
            "Identity": OpSpec(k.identity),
            "ShearX": OpSpec(k.shear_x, 0.0, shear, signed=True),
            "ShearY": OpSpec(k.shear_y, 0.0, shear, signed=True),
            "TranslateX": OpSpec(shift_x, 0.0, translate, signed=True),
            "TranslateY": OpSpec(shift_y, 0.0, translate, signed=True),
            "Rotate": OpSpec(k.rotate, 0.0, rotate, signed=True),
            "Brightness": OpSpec(k.brightness, 0.0, enhance, signed=True, origin=1.0),
            "Color": OpSpec(k.color, 0.0, enhance, signed=True, origin=1.0),
            "Contrast": OpSpec(k.contrast, 0.0, enhance, signed=True, origin=1.0),
            "Sharpness": OpSpec(k.sharpness, 0.0, enhance, signed=True, origin=1.0),
            # torchvision rounds the bits (8 - round(m * span)); our kernel truncates, so the
            # range is shifted by a half: int(8.5 - m * span) == 8 - round(m * span).
            "Posterize": OpSpec(k.posterize, 8.5, 8.5 - bits),
            "Solarize": OpSpec(k.solarize, 255.0, 0.0),  # torchvision: threshold 255 * (1 - m)
            "AutoContrast": OpSpec(k.autocontrast),
            "Equalize": OpSpec(k.equalize),
        }
    )


RANDAUGMENT_OPS: OpTable = _torchvision_space(
    shear=0.3, translate=150.0 / 331.0, in_pixels=False, rotate=30.0, enhance=0.9, bits=4.0
)
"""torchvision RandAugment's space; translation as a fraction of the size (150/331)."""

TRIVIALAUGMENT_OPS: OpTable = _torchvision_space(
    shear=0.99, translate=32.0, in_pixels=True, rotate=135.0, enhance=0.99, bits=6.0
)
"""torchvision TrivialAugmentWide's space; translation in pixels (up to 32), as torchvision."""


def apply_op(
    images: Tensor,
    name: str,
    magnitude: float | Tensor,
    generator: torch.Generator | None = None,
    *,
    table: OpTable = OPS,
) -> Tensor:
    """Apply one op of ``table`` to every image, with magnitude(s) in [0, 1].

    magnitude: one float for all images or a [N] tensor; random signs and extra draws (Cutout
    box, SamplePairing partner) come from ``generator`` (a CPU generator).
    """
    check_batch(images)
    spec = table[name]
    generator = default_generator(generator)
    n = images.shape[0]
    magnitudes = torch.as_tensor(magnitude, dtype=torch.float64).expand(n)
    negate = torch.rand(n, generator=generator) < 0.5
    uniforms = torch.rand(n, spec.uniforms, generator=generator, dtype=torch.float64)
    ctx = OpContext(uniforms=uniforms, pool=images)
    return spec.kernel(images, spec.values(magnitudes, negate), ctx)
