"""The per-image adapter (PIL / tensor) and the policy picture."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from pipeline.augment import ImageTransform, Policy, policy_grid

from .conftest import natural_images, seeded
from .pil_reference import from_pil, to_pil

POLICY = Policy([[("Rotate", 0.8, 0.7), ("Color", 0.6, 0.9)], [("Invert", 0.5, 0.0)]])


def test_adapter_on_pil_matches_the_batch_transform() -> None:
    image = natural_images(1)
    out = ImageTransform(POLICY, seeded(4))(to_pil(image[0]))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (32, 32)
    assert torch.equal(from_pil(out), POLICY(image, seeded(4))[0])


def test_adapter_keeps_the_pil_mode() -> None:
    gray = to_pil(natural_images(1)[0]).convert("L")
    out = ImageTransform(POLICY, seeded(0))(gray)
    assert out.mode == "L" and out.size == gray.size


def test_adapter_on_tensors() -> None:
    images = natural_images(3)
    single = ImageTransform(POLICY, seeded(1))(images[0])
    assert single.shape == (3, 32, 32) and single.dtype == torch.uint8
    assert torch.equal(single, POLICY(images[:1], seeded(1))[0])
    batch = ImageTransform(POLICY, seeded(1))(images)
    assert torch.equal(batch, POLICY(images, seeded(1)))


def test_adapter_composes_with_torchvision_and_follows_the_global_seed() -> None:
    pipeline = v2.Compose([ImageTransform(POLICY), v2.PILToTensor()])
    image = to_pil(natural_images(1)[0])
    torch.manual_seed(0)
    first = [pipeline(image) for _ in range(8)]
    torch.manual_seed(0)
    again = [pipeline(image) for _ in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert len({tuple(t.flatten().tolist()) for t in first}) > 1  # not the same draw each call


def test_adapter_rejects_other_inputs() -> None:
    with pytest.raises(TypeError):
        ImageTransform(POLICY)("not an image")  # type: ignore[type-var]


def test_grid_png_layout(tmp_path: Path) -> None:
    images = natural_images(3)
    path = tmp_path / "grid.png"
    png = policy_grid(POLICY, images, n_draws=4, generator=seeded(0), path=path, scale=3, padding=2)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert path.read_bytes() == png
    grid = torch.from_numpy(__import__("numpy").array(Image.open(io.BytesIO(png)))).permute(2, 0, 1)
    tile = 32 * 3
    assert grid.shape == (3, 3 * (tile + 2) + 2, 5 * (tile + 2) + 2)
    # The first column is the original, each pixel drawn 3x3.
    first = grid[:, 2 : 2 + tile, 2 : 2 + tile]
    assert torch.equal(first, images[0].repeat_interleave(3, -1).repeat_interleave(3, -2))
    # The draws are the policy applied to the batch, in order, from the generator.
    g = seeded(0)
    draw = POLICY(images, g)
    second = grid[:, 2 : 2 + tile, 4 + tile : 4 + 2 * tile]
    assert torch.equal(second, draw[0].repeat_interleave(3, -1).repeat_interleave(3, -2))


def test_grid_is_deterministic_and_validates() -> None:
    images = natural_images(2)
    assert policy_grid(POLICY, images, 2, seeded(1)) == policy_grid(POLICY, images, 2, seeded(1))
    with pytest.raises(ValueError):
        policy_grid(POLICY, images, 0, seeded(1))
