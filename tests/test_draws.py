"""Fast AutoAugment's objective: several augmented draws per held-out image, any-correct and min-loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ConfigError, parse_params
from pipeline.data import ImageSet
from pipeline.train import evaluate, normalise


class ByBrightness(nn.Module):
    """Class 1 when the image is bright: an augmentation that darkens flips the prediction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.float().mean(dim=(1, 2, 3)) * 10
        return torch.stack([-m, m], dim=1)


def _data(n: int = 8) -> ImageSet:
    images = torch.full((n, 3, 32, 32), 220, dtype=torch.uint8)
    return ImageSet(images, torch.ones(n, dtype=torch.long), ["dark", "bright"], [f"{i:016x}" for i in range(n)])


def coin_darken(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image darkened to black with probability 1/2, independently."""
    dark = torch.rand(len(images), generator=generator) < 0.5
    out = images.clone()
    out[dark] = 0
    return out


def test_one_draw_is_the_plain_score_and_more_draws_take_any_correct_and_min_loss() -> None:
    model, data = ByBrightness(), _data(64)
    one = evaluate(model, data, augment=coin_darken, generator=torch.Generator().manual_seed(0), precision="fp32")
    many = evaluate(model, data, augment=coin_darken, generator=torch.Generator().manual_seed(0), draws=5,
                    precision="fp32")
    assert 0.2 < one.accuracy < 0.8  # about half the images darkened
    assert many.accuracy > one.accuracy and many.accuracy > 0.9  # 1 - 1/32 expected with 5 draws
    assert many.loss < one.loss

    # exactly: replay the draws with the same generator and combine them by hand
    g = torch.Generator().manual_seed(0)
    draws = coin_darken(data.images.repeat(5, 1, 1, 1), g)
    logits = model(normalise(draws, False)).view(5, len(data), 2)
    losses = F.cross_entropy(logits.transpose(1, 2), data.labels.expand(5, -1), reduction="none")
    correct = (logits.argmax(2) == data.labels).any(0)
    assert many.accuracy == pytest.approx(correct.float().mean().item())
    assert many.loss == pytest.approx(losses.min(0).values.mean().item(), rel=1e-5)


def test_draws_outside_the_bounds_are_refused_with_the_key() -> None:
    for bad in (0, 33):
        with pytest.raises(ConfigError, match=r"policy_search\.draws"):
            parse_params({"policy_search": {"draws": bad}})
    with pytest.raises(ConfigError, match=r"policy_search\.objective"):
        parse_params({"policy_search": {"objective": "any_correct"}})
