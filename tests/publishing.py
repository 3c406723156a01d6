"""Tiny published results for the artifacts, service and client tests (no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.artifacts import ModelRecord, PolicyRecord, publish_model, publish_policy
from pipeline.augment import Policy, policy_grid

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FINGERPRINT = "f1ngerpr1nt0001"
RUN_ID = "0123456789abcdef0123456789abcdef"


def tiny_config(stem_channels: int = 16) -> dict[str, Any]:
    """A valid search-space config small enough to export in well under a second."""
    blocks = [
        {"type": "identity", "repeats": 1, "channels": c, "kernel": 3, "stride": 1,
         "expansion": 1, "activation": "relu", "se": False}
        for c in (16, 16, 24, 48, 64, 128, 192)
    ]
    blocks[0]["type"] = "conv"
    return {"stem": {"type": "conv", "channels": stem_channels, "activation": "relu"}, "blocks": blocks,
            "head": {"type": "avgpool", "channels": 0, "dropout": 0.0}}


def tiny_model(seed: int = 0, num_classes: int = 10, stem_channels: int = 16) -> nn.Module:
    """An untrained tiny network with non-trivial BN statistics (so eval mode matters)."""
    from pipeline.models import build_model

    torch.manual_seed(seed)
    model = build_model(tiny_config(stem_channels), num_classes)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None and module.running_var is not None:
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def tiny_policy(magnitude: float = 0.5) -> Policy:
    return Policy(
        [[("Rotate", 1.0, magnitude), ("Invert", 0.5, 0.0)], [("ShearX", 0.9, magnitude)]],
        metadata={"source": "tests"},
    )


def demo_images(n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def add_policy(root: Path, magnitude: float = 0.5, *, grid: bool = True, score: float = 0.8) -> PolicyRecord:
    policy = tiny_policy(magnitude)
    png = policy_grid(policy, demo_images(), 3, torch.Generator().manual_seed(0)) if grid else None
    return publish_policy(
        root, policy, fingerprint=FINGERPRINT, mlflow_run_id=RUN_ID, summary={"score": score, "trials": 12},
        grid_png=png, studies=["search_policy-abcd1234-f1ngerpr1nt0001-fold0"],
    )


def add_model(
    root: Path, seed: int = 0, *, classes: list[str] | None = None, accuracy: float = 0.5,
    export: bool = True, stem_channels: int = 16,
) -> ModelRecord:
    classes = classes or CLASSES
    model = tiny_model(seed, len(classes), stem_channels)
    return publish_model(
        root, model, config=tiny_config(stem_channels), classes=classes,
        metrics={"test_accuracy": accuracy, "per_class_accuracy": {c: accuracy for c in classes},
                 "tta": "flip", "latency_ms": 1.5},
        fingerprint=FINGERPRINT,
        lineage={"mlflow_run_ids": {"retrain": RUN_ID, "search_model": RUN_ID[::-1]},
                 "registry": {"name": "autoaug-classifier", "version": str(seed + 1)},
                 "policy_version": 1, "studies": ["search_model-0011aabb-f1ngerpr1nt0001"]},
        export=export,
    )
