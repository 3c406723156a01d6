"""Model search space, reference baselines and cost counters.

    build_model(cfg_or_name, num_classes=10) -> nn.Module
    SPACE, validate_config, normalise_config, sample_config, suggest_config, ModelConfigError
    BASELINES: name -> factory(num_classes) ; count_params, count_macs
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pipeline.models.baselines import AirbenchNet, ResNet20
from pipeline.models.cost import count_activations, count_macs, count_params
from pipeline.models.space import (
    MOBILENETV2_CONFIG,
    SPACE,
    SPACE_POINTS,
    ModelConfigError,
    SpaceNet,
    narrowed,
    narrowed_name,
    normalise_config,
    sample_config,
    seed_design,
    suggest_config,
    validate_config,
)

BASELINES: dict[str, Callable[[int], nn.Module]] = {
    "resnet20": lambda num_classes: ResNet20(num_classes),
    "mobilenetv2": lambda num_classes: SpaceNet(MOBILENETV2_CONFIG, num_classes),
    # airbench94's widths; the fast net of the accuracy benchmark.
    "airbench94": lambda num_classes: AirbenchNet(num_classes, (64, 256, 256)),
    # Half-width variant: ~4x fewer MACs for tight CPU budgets.
    "airbench_half": lambda num_classes: AirbenchNet(num_classes, (32, 128, 128)),
}
"""Reference networks by name; ``build_model(name)`` builds them."""


def build_model(cfg_or_name: dict[str, Any] | str, num_classes: int = 10, *, seed: int | None = None) -> nn.Module:
    """A fresh network from a search-space config (dict) or a baseline name.

    ``seed``: initialise the weights from ``torch.manual_seed(seed)`` inside a forked RNG (the
    caller's global RNG is left as it was), so the same seed gives the same initial weights in
    any process. Without it the weights come from the global RNG, whose seed PyTorch draws at
    random in every new process.
    """
    if isinstance(cfg_or_name, str) and cfg_or_name not in BASELINES:
        raise ModelConfigError(f"model: unknown baseline {cfg_or_name!r}; known: {sorted(BASELINES)}")

    def make() -> nn.Module:
        if isinstance(cfg_or_name, str):
            return BASELINES[cfg_or_name](num_classes)
        return SpaceNet(cfg_or_name, num_classes)

    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


__all__ = [
    "BASELINES",
    "MOBILENETV2_CONFIG",
    "SPACE",
    "SPACE_POINTS",
    "AirbenchNet",
    "ModelConfigError",
    "ResNet20",
    "SpaceNet",
    "build_model",
    "count_activations",
    "count_macs",
    "count_params",
    "narrowed",
    "narrowed_name",
    "normalise_config",
    "sample_config",
    "seed_design",
    "suggest_config",
    "validate_config",
]
