"""Every op of OPS against Fast AutoAugment's PIL definition (tests/augment/pil_reference.py).

The brief's bar: photometric ops within 2 intensity levels on average, geometric ops equal
away from the borders.  The kernels are written to be PIL-exact (same integer and float32
steps as Pillow's C code), so the tests require identical pixels: a Cutout box one pixel too
wide or a blend that rounds instead of truncating fails here.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.augment import OPS, apply_op
from pipeline.augment.kernels import OpContext

from .conftest import natural_images, seeded
from .pil_reference import reference

GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
MAGNITUDES = [0.0, 0.1, 0.37, 0.5, 0.8, 1.0]

# The magnitude at which an op leaves every image unchanged (None: no such magnitude).
NEUTRAL: dict[str, float | None] = {
    "Identity": 0.0,
    "ShearX": 0.0,
    "ShearY": 0.0,
    "TranslateX": 0.0,
    "TranslateY": 0.0,
    "Rotate": 0.0,
    "AutoContrast": None,
    "Invert": None,
    "Equalize": None,
    "Solarize": 1.0,  # threshold 256
    "Posterize": 1.0,  # 8 bits
    "Contrast": 0.5,  # factor 1.0
    "Color": 0.5,
    "Brightness": 0.5,
    "Sharpness": 0.5,
    "Cutout": 0.0,
    "SamplePairing": 0.0,
}


def test_every_op_has_a_neutral_entry() -> None:
    missing = sorted(set(OPS) - set(NEUTRAL))
    assert not missing, f"add the neutral magnitude of {missing} to NEUTRAL"


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("name", list(OPS))
def test_matches_pil(name: str, magnitude: float, size: tuple[int, int]) -> None:
    spec = OPS[name]
    images = natural_images(6, size, seed=11)
    pool = natural_images(4, size, seed=12)
    g = seeded(13)
    negate = torch.arange(len(images)) % 2 == 1  # both signs for signed ops
    uniforms = torch.rand(len(images), spec.uniforms, generator=g, dtype=torch.float64)
    values = spec.values(torch.full((len(images),), magnitude, dtype=torch.float64), negate)
    ours = spec.kernel(images, values, OpContext(uniforms, pool))
    for i in range(len(images)):
        theirs = reference(name, images[i], float(values[i]), uniforms[i].tolist(), pool)
        diff = (ours[i].int() - theirs.int()).abs()
        if name in GEOMETRIC:
            whole = (diff == 0).float().mean().item()
            assert whole >= 0.995, f"image {i}: only {whole:.2%} of pixels match PIL"
            diff = diff[:, 2:-2, 2:-2]  # away from the borders: exact
        else:
            assert diff.float().mean() <= 2.0  # the brief's bar ...
        # ... and the kernels are PIL-exact, which catches drifts a tolerance would hide.
        mismatched = int((diff != 0).sum())
        assert mismatched == 0, (
            f"image {i}: {mismatched} pixels differ from PIL (max {int(diff.max())})"
        )


@pytest.mark.parametrize("name", list(OPS))
def test_neutral_magnitude_is_identity(name: str) -> None:
    neutral = NEUTRAL.get(name)
    if neutral is None:
        pytest.skip(f"{name} has no neutral magnitude")
    images = natural_images(6)
    assert torch.equal(apply_op(images, name, neutral, seeded(0)), images)


@pytest.mark.parametrize("name", [n for n in OPS if n != "Identity"])
def test_changes_images_away_from_neutral(name: str) -> None:
    """Not a silent no-op: at the magnitude farthest from neutral most images change."""
    neutral = NEUTRAL.get(name)
    strongest = 1.0 if neutral is None or neutral < 0.5 else 0.0
    images = natural_images(8)
    out = apply_op(images, name, strongest, seeded(0))
    changed = (out != images).flatten(1).any(1).float().mean()
    assert changed >= 0.75


def test_signed_ops_flip_direction_per_image() -> None:
    """A signed op with a random sign per image: both directions occur in one batch."""
    images = natural_images(1).expand(16, -1, -1, -1).contiguous()
    out = apply_op(images, "TranslateX", 0.5, seeded(3))
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) == 2


def test_translate_moves_content_by_the_expected_pixels() -> None:
    """An independent check of the geometry: +v*W shifts content left (PIL convention)."""
    image = torch.zeros(1, 3, 10, 10, dtype=torch.uint8)
    image[..., 4, 6] = 200
    spec = OPS["TranslateX"]
    out = spec.kernel(image, torch.tensor([0.2], dtype=torch.float64), OpContext.empty(1))
    assert out[0, 0].nonzero().tolist() == [[4, 4]]  # 0.2 * 10 = 2 pixels to the left


def test_solarize_threshold_is_inclusive() -> None:
    image = torch.tensor([99, 100, 101], dtype=torch.uint8).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    out = OPS["Solarize"].kernel(
        image, torch.tensor([100.0], dtype=torch.float64), OpContext.empty(1)
    )
    assert out[0, 0, 0].tolist() == [99, 155, 154]


def test_posterize_truncates_bits_like_faa() -> None:
    image = torch.full((1, 3, 2, 2), 0b10111111, dtype=torch.uint8)
    out = OPS["Posterize"].kernel(
        image, torch.tensor([5.9], dtype=torch.float64), OpContext.empty(1)
    )
    assert int(out[0, 0, 0, 0]) == 0b10111000  # int(5.9) = 5 bits kept


@pytest.mark.parametrize("name", ["TranslateX", "TranslateY"])
def test_half_pixel_translation_rounds_like_pil(name: str) -> None:
    """Shifts of k + 1/2 pixels are where rounding rules differ (PIL: floor(t + 1/2))."""
    images = natural_images(4, (16, 16))
    values = torch.tensor([2.5, -2.5, 1.5, -0.5], dtype=torch.float64) / 16
    ours = OPS[name].kernel(images, values, OpContext.empty(4))
    for i in range(4):
        assert torch.equal(ours[i], reference(name, images[i], float(values[i]), [], images))
