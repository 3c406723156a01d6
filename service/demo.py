"""Built-in sample pictures, for a policy grid when publish stored none (the service has no data)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw

from pipeline.augment import Policy, policy_grid


@lru_cache(maxsize=1)
def demo_images() -> torch.Tensor:
    """Three deterministic 32x32 scenes (sky and sun, a house, a boat): uint8 [3, 3, 32, 32]."""
    scenes = []
    sky = Image.new("RGB", (32, 32), (110, 170, 235))
    draw = ImageDraw.Draw(sky)
    draw.rectangle((0, 22, 31, 31), fill=(70, 150, 60))
    draw.ellipse((19, 3, 28, 12), fill=(250, 220, 60))
    scenes.append(sky)
    house = Image.new("RGB", (32, 32), (200, 225, 245))
    draw = ImageDraw.Draw(house)
    draw.rectangle((7, 15, 24, 29), fill=(190, 80, 60))
    draw.polygon([(4, 16), (16, 5), (27, 16)], fill=(90, 50, 40))
    draw.rectangle((14, 21, 18, 29), fill=(60, 40, 30))
    scenes.append(house)
    sea = Image.new("RGB", (32, 32), (230, 200, 150))
    draw = ImageDraw.Draw(sea)
    draw.rectangle((0, 18, 31, 31), fill=(30, 90, 160))
    draw.polygon([(6, 18), (26, 18), (22, 23), (10, 23)], fill=(240, 240, 240))
    draw.polygon([(16, 4), (16, 17), (24, 17)], fill=(220, 60, 60))
    scenes.append(sea)
    return torch.from_numpy(np.stack([np.asarray(s) for s in scenes])).permute(0, 3, 1, 2).contiguous()


def fallback_grid(policy: Policy, draws: int = 7, seed: int = 0) -> bytes:
    """PNG of ``policy`` applied to the built-in scenes (same seed, same picture)."""
    return policy_grid(policy, demo_images(), draws, torch.Generator().manual_seed(seed))
