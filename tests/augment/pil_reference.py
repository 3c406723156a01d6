"""The reference: Fast AutoAugment's ops written with PIL, one image at a time.

Copied in spirit from FAA's augmentations.py, but with the random parts (sign, Cutout centre,
SamplePairing partner) passed in explicitly so a test can feed both sides the same draws.
``value`` is the op's value in its own units (sign applied), as our kernels receive it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

CUTOUT_COLOR = (125, 123, 114)


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())


def from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def _affine(img: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix)


def _cutout(img: Image.Image, v: float, uniforms: list[float]) -> Image.Image:
    # FAA CutoutAbs, with the centre given (u * size) instead of np.random.uniform.
    w, h = img.size
    v = v * w
    if v <= 0:
        return img
    x0 = int(max(0, uniforms[0] * w - v / 2.0))
    y0 = int(max(0, uniforms[1] * h - v / 2.0))
    x1 = min(w, x0 + v)
    y1 = min(h, y0 + v)
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), CUTOUT_COLOR)
    return img


def _sample_pairing(img: Image.Image, v: float, partner: Image.Image) -> Image.Image:
    return Image.blend(img, partner, v)


Reference = Callable[[Image.Image, float], Image.Image]

REFERENCE: dict[str, Reference] = {
    "Identity": lambda img, v: img,
    "ShearX": lambda img, v: _affine(img, (1, v, 0, 0, 1, 0)),
    "ShearY": lambda img, v: _affine(img, (1, 0, 0, v, 1, 0)),
    "TranslateX": lambda img, v: _affine(img, (1, 0, v * img.size[0], 0, 1, 0)),
    "TranslateY": lambda img, v: _affine(img, (1, 0, 0, 0, 1, v * img.size[1])),
    "Rotate": lambda img, v: img.rotate(v),
    "AutoContrast": lambda img, v: ImageOps.autocontrast(img),
    "Invert": lambda img, v: ImageOps.invert(img),
    "Equalize": lambda img, v: ImageOps.equalize(img),
    # FAA passes a float threshold; Pillow's stub says int but compares pixels with it as is.
    "Solarize": lambda img, v: ImageOps.solarize(img, v),  # type: ignore[arg-type]
    "Posterize": lambda img, v: ImageOps.posterize(img, int(v)),
    "Contrast": lambda img, v: ImageEnhance.Contrast(img).enhance(v),
    "Color": lambda img, v: ImageEnhance.Color(img).enhance(v),
    "Brightness": lambda img, v: ImageEnhance.Brightness(img).enhance(v),
    "Sharpness": lambda img, v: ImageEnhance.Sharpness(img).enhance(v),
}
"""Ops whose PIL reference needs only (image, value)."""


def reference(
    name: str,
    image: torch.Tensor,
    value: float,
    uniforms: list[float],
    pool: torch.Tensor,
) -> torch.Tensor:
    """PIL result for one image [3, H, W] with the given value and draws."""
    img = to_pil(image)
    if name == "Cutout":
        out = _cutout(img, value, uniforms)
    elif name == "SamplePairing":
        partner = pool[min(int(uniforms[0] * len(pool)), len(pool) - 1)]
        out = _sample_pairing(img, value, to_pil(partner))
    else:
        out = REFERENCE[name](img, value)
    return from_pil(out)
