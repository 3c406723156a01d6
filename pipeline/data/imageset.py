"""The in-memory image container every stage passes around."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.errors import DataError
from pipeline.files import atomic_path

IMAGE_SIZE = 32


@dataclass
class ImageSet:
    """Images as one uint8 tensor ``[N, 3, 32, 32]`` plus labels, class names and content ids.

    ``ids[i]`` is the content hash of image ``i`` (see :func:`pipeline.data.decode.content_id`);
    it identifies an image across ingests, samples and folds.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    ids: list[str]

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if len(self.ids) != n:
            raise ValueError(f"ids must have {n} entries, got {len(self.ids)}")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor | Sequence[int]) -> ImageSet:
        """The images at ``index`` (a LongTensor or a sequence of ints), in that order."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(
            images=self.images[idx],
            labels=self.labels[idx],
            classes=list(self.classes),
            ids=[self.ids[i] for i in idx.tolist()],
        )

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return {name: int(c) for name, c in zip(self.classes, counts, strict=True)}

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device), self.classes, self.ids)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to ``path`` atomically (a reader never sees a half-written file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "format": 1,
            "images": self.images.cpu().contiguous(),
            "labels": self.labels.cpu(),
            "classes": list(self.classes),
            "ids": list(self.ids),
        }
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ImageSet:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such image set (run the stage that writes it first)")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return cls(blob["images"], blob["labels"], list(blob["classes"]), list(blob["ids"]))


def concat(sets: Sequence[ImageSet]) -> ImageSet:
    """Concatenate image sets that share the same class list."""
    if not sets:
        raise ValueError("nothing to concatenate")
    classes = sets[0].classes
    for s in sets[1:]:
        if s.classes != classes:
            raise ValueError("cannot concatenate image sets with different class lists")
    return ImageSet(
        images=torch.cat([s.images for s in sets]),
        labels=torch.cat([s.labels for s in sets]),
        classes=list(classes),
        ids=[i for s in sets for i in s.ids],
    )
