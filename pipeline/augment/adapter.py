"""Use a batch transform (Policy, RandAugment, ...) as a per-image torchvision transform."""

from __future__ import annotations

from typing import TypeVar

import torch
from PIL import Image
from torch import Tensor

from pipeline.augment.batch import BatchTransform

ImageT = TypeVar("ImageT", Image.Image, Tensor)


class ImageTransform:
    """Wrap a batch transform for users' own DataLoaders: PIL image -> PIL image, uint8 tensor
    [3, H, W] (or a batch [N, 3, H, W]) -> the same shape.

    Randomness: without ``generator`` every call draws its seed from torch's global RNG, which
    DataLoader seeds differently in each worker (and torch.manual_seed makes reproducible).
    A ``generator`` you pass is copied into every worker, so workers would repeat each other's
    draws; pass one only for single-process use.  Non-RGB PIL images are converted to RGB and
    back to their mode (an alpha channel is not kept).
    """

    def __init__(self, transform: BatchTransform, generator: torch.Generator | None = None):
        self.transform = transform
        self.generator = generator

    def __call__(self, image: ImageT) -> ImageT:
        if isinstance(image, Image.Image):
            # torchvision is imported where it is used, as in importers.py: importing the op
            # table (pipeline.config does, to validate params.yaml) should not load it.
            from torchvision.transforms.v2 import functional as tvf

            rgb = image if image.mode == "RGB" else image.convert("RGB")
            batch = tvf.pil_to_tensor(rgb).unsqueeze(0)
            out = tvf.to_pil_image(self.transform(batch, self.generator)[0])
            return out if image.mode == "RGB" else out.convert(image.mode)
        if isinstance(image, Tensor):
            if image.ndim == 3:
                return self.transform(image.unsqueeze(0), self.generator)[0]
            return self.transform(image, self.generator)
        raise TypeError(f"expected a PIL image or a uint8 tensor, got {type(image).__name__}")

    def __repr__(self) -> str:
        return f"ImageTransform({self.transform!r})"
