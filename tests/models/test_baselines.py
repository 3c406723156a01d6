from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models import (
    BASELINES,
    AirbenchNet,
    ModelConfigError,
    build_model,
    count_macs,
    count_params,
)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_build_and_classify(name: str) -> None:
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("resnet20", 0.26e6, 0.28e6), ("mobilenetv2", 2.1e6, 2.4e6), ("airbench94", 1.9e6, 2.05e6)],
)
def test_parameter_counts_match_the_published_sizes(name: str, low: float, high: float) -> None:
    assert low <= count_params(build_model(name)) <= high


def test_resnet20_macs_are_about_41m() -> None:
    # ResNet-20 is usually quoted at ~41 M MACs on 32x32 inputs.
    assert 39e6 <= count_macs("resnet20") <= 42e6


def test_unknown_baseline_lists_the_known_ones() -> None:
    with pytest.raises(ModelConfigError, match="resnet20"):
        build_model("resnet21")


def test_airbench_whitening_decorrelates_patches() -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(64, 1, 12, 12, generator=gen)
    images = torch.cat([base, base + 0.3 * torch.randn(64, 2, 12, 12, generator=gen)], 1)  # correlated
    net = AirbenchNet(widths=(32, 32, 32))
    net.init_from_data(images, eps=1e-8)
    out = nn.functional.conv2d(images, net.whiten.weight)[:, :12]  # the + half of the filters
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = flat.T @ flat / len(flat)
    assert torch.allclose(covariance, torch.eye(12), atol=0.05)
    assert not net.whiten.weight.requires_grad


def test_whitening_images_are_drawn_from_every_class() -> None:
    # A store in class order: the first 5,000 images would all be class 0.
    from pipeline.train import whitening_indices

    labels = torch.arange(10).repeat_interleave(1000)
    picked = whitening_indices(labels, 5000, seed=0)
    counts = torch.bincount(labels[picked], minlength=10)
    assert len(picked) == 5000 and len(picked.unique()) == 5000
    assert counts.tolist() == [500] * 10
    assert not torch.equal(picked, whitening_indices(labels, 5000, seed=1))  # a draw, not a fixed slice
    assert torch.equal(whitening_indices(labels[:300], 5000, seed=0), torch.arange(300))  # few images: all
