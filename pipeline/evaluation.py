"""A trained classifier measured the way retrain reports it: test accuracy with the recipe's
TTA, per-class accuracies from the confusion matrix, size and CPU latency."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from pipeline.config import TrainConfig
from pipeline.contracts import Tta
from pipeline.data import ImageSet
from pipeline.train import evaluate, normalise


def tta_name(recipe: TrainConfig) -> Tta:
    """How retrain names the recipe's test-time augmentation."""
    return "flip+translate" if recipe.tta and recipe.tta_translate else "flip" if recipe.tta else "none"


@dataclass(frozen=True)
class SplitScore:
    """A model's score on a test split, with its predictions (for the paired comparison)."""

    accuracy: float
    loss: float
    predictions: torch.Tensor  # [n] predicted classes, CPU
    confusion: torch.Tensor  # [classes x classes] counts, true class by row

    def per_class(self, classes: list[str]) -> dict[str, float]:
        return {c: float(self.confusion[i, i] / max(int(self.confusion[i].sum()), 1)) for i, c in enumerate(classes)}


def score(model: torch.nn.Module, test_set: ImageSet, recipe: TrainConfig, device: torch.device) -> SplitScore:
    """``model`` on ``test_set`` with the recipe's TTA and precision."""
    scored = evaluate(model.to(device), test_set, tta_flip=recipe.tta, tta_translate=recipe.tta_translate,
                      precision=recipe.precision, keep_predictions=True)
    assert scored.predictions is not None
    predictions = scored.predictions.cpu()
    return SplitScore(scored.accuracy, scored.loss, predictions, confusion_matrix(test_set, predictions))


def confusion_matrix(data: ImageSet, predictions: torch.Tensor) -> torch.Tensor:
    """[classes x classes] counts, true class by row."""
    k = len(data.classes)
    index = data.labels.cpu() * k + predictions.cpu()
    return torch.bincount(index, minlength=k * k).reshape(k, k)


@torch.no_grad()
def latency_ms(model: torch.nn.Module, device: torch.device, batch: int, repeats: int = 30) -> float:
    """Median milliseconds per image of the forward pass at ``batch`` images per call."""
    model.eval()
    x = normalise(torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device))
    for _ in range(3):
        model(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / batch
