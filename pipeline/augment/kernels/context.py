"""What a kernel receives besides the images and their per-image values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class OpContext:
    """Per-image randomness already drawn by the caller, and the pool for mixing ops.

    Kernels are deterministic functions of (images, values, context): all randomness is drawn
    beforehand on the CPU generator, which is what makes a batched call equal the per-image
    calls and CPU equal CUDA.

    uniforms: [n, k] float64 draws in [0, 1) (k = OpSpec.uniforms; e.g. the Cutout box centre).
    pool:     [M, C, H, W] images that mixing ops (SamplePairing) blend with; the whole batch
              when called from a policy, so a subset of the batch still pairs with any image.
    """

    uniforms: Tensor
    pool: Tensor | None = None

    @staticmethod
    def empty(n: int) -> OpContext:
        return OpContext(uniforms=torch.zeros(n, 0, dtype=torch.float64))


class Kernel(Protocol):
    """images: uint8 [n, C, H, W]; values: [n] float64 in the op's own units (sign applied)."""

    def __call__(self, images: Tensor, values: Tensor, ctx: OpContext) -> Tensor: ...


def per_image(values: Tensor, images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """[n] per-image scalars as a [n, 1, 1, 1] tensor on the images' device, for broadcasting."""
    return values.to(device=images.device, dtype=dtype).view(len(values), 1, 1, 1)


def scalars(values: Tensor) -> np.ndarray:
    """Per-image scalars as a float64 numpy array, for parameter arithmetic (a few numbers per
    image): float64 like the Python doubles of PIL's reference code, and several times
    cheaper per operation than tiny torch tensors."""
    return values.detach().to("cpu", torch.float64).numpy()
