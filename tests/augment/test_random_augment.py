"""RandAugment and TrivialAugment on our kernels, checked against torchvision's spaces."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import RandAugment as TvRandAugment
from torchvision.transforms import TrivialAugmentWide

from pipeline.augment import (
    RANDAUGMENT_OPS,
    TRIVIALAUGMENT_OPS,
    OpSpec,
    OpTable,
    RandAugment,
    TrivialAugment,
)
from pipeline.augment.kernels import identity, invert

from .conftest import natural_images, seeded

BINS = 31
SIZE = 32
ENHANCE = {"Brightness", "Color", "Contrast", "Sharpness"}


def check_table_matches(ours: OpTable, theirs: dict[str, tuple[torch.Tensor, bool]]) -> None:
    assert set(ours) == set(theirs)
    for name, (magnitudes, signed) in theirs.items():
        spec = ours[name]
        assert spec.signed == signed, name
        if magnitudes.ndim == 0:  # no magnitude
            assert not spec.uses_magnitude, name
            continue
        levels = torch.arange(BINS, dtype=torch.float64) / (BINS - 1)
        values = spec.values(levels)
        expected = magnitudes.to(torch.float64)
        if name in ENHANCE:
            expected = 1.0 + expected  # torchvision adds 1 to the factor
        if name in ("TranslateX", "TranslateY") and spec.high < 1:
            values = values * SIZE  # ours: a fraction of the size
        if name == "Posterize":
            values = values.floor()  # our kernel keeps int(value) bits
        torch.testing.assert_close(values, expected, atol=1e-4, rtol=0, msg=name)


def test_randaugment_space_is_torchvisions() -> None:
    check_table_matches(RANDAUGMENT_OPS, TvRandAugment()._augmentation_space(BINS, (SIZE, SIZE)))


def test_trivialaugment_space_is_torchvisions() -> None:
    check_table_matches(TRIVIALAUGMENT_OPS, TrivialAugmentWide()._augmentation_space(BINS))


@pytest.mark.parametrize("make", [lambda: RandAugment(2, 9), TrivialAugment], ids=["ra", "ta"])
def test_deterministic_given_the_generator(make) -> None:  # type: ignore[no-untyped-def]
    transform = make()
    images = natural_images(24)
    before = images.clone()
    first = transform(images, seeded(3))
    assert torch.equal(first, transform(images, seeded(3)))
    assert not torch.equal(first, transform(images, seeded(4)))
    assert torch.equal(images, before)
    assert first.dtype == torch.uint8 and first.shape == images.shape


def test_randaugment_zero_ops_is_identity() -> None:
    images = natural_images(4)
    assert torch.equal(RandAugment(num_ops=0)(images, seeded(0)), images)


def test_randaugment_draws_ops_per_image() -> None:
    """num_ops ops drawn uniformly per image: with {Identity, Invert}, one op, half invert."""
    table: OpTable = {"Identity": OpSpec(identity), "Invert": OpSpec(invert)}
    images = natural_images(2000, (4, 4))
    out = RandAugment(num_ops=1, ops=table)(images, seeded(0))
    inverted = (out == 255 - images).flatten(1).all(1).float().mean()
    assert 0.45 < inverted < 0.55
    twice = RandAugment(num_ops=2, ops=table)(images, seeded(0))
    inverted_once = (twice == 255 - images).flatten(1).all(1).float().mean()
    assert 0.45 < inverted_once < 0.55  # odd number of inversions out of two


def test_trivialaugment_varies_op_and_magnitude_per_image() -> None:
    copies = natural_images(1).expand(64, -1, -1, -1).contiguous()
    out = TrivialAugment()(copies, seeded(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) > 32


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandAugment(num_ops=-1),
        lambda: RandAugment(magnitude=31),
        lambda: RandAugment(magnitude=-1),
        lambda: RandAugment(num_magnitude_bins=1),
        lambda: TrivialAugment(num_magnitude_bins=1),
    ],
)
def test_rejects_bad_arguments(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        make()
