"""Stratified K splits of the sample into D_M (child training) and D_A (policy scoring).

Like the sample, split membership comes from a seeded hash of each image's content, so after a
data update most images keep their side of each split and prior studies stay comparable.
"""

from __future__ import annotations

import torch

from pipeline.data import ImageSet
from pipeline.data.sample import image_score


def stratified_splits(data: ImageSet, folds: int, held_out: float, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``folds`` pairs of index tensors (D_M, D_A); each D_A holds ``held_out`` of every class."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be in (0, 1), got {held_out}")
    labels = data.labels.tolist()
    splits = []
    for k in range(folds):
        train_idx: list[int] = []
        held_idx: list[int] = []
        for c in range(len(data.classes)):
            members = [i for i, label in enumerate(labels) if label == c]
            members.sort(key=lambda i: image_score(f"fold{k}:{data.ids[i]}", seed))
            n_held = round(len(members) * held_out)
            held_idx.extend(members[:n_held])
            train_idx.extend(members[n_held:])
        splits.append((torch.tensor(sorted(train_idx)), torch.tensor(sorted(held_idx))))
    return splits


def search_split(sample: ImageSet, held_out: float, seed: int, train_images: int,
                 val_images: int) -> tuple[ImageSet, ImageSet]:
    """The searches' split of the sample that trains networks (the model and the recipe
    search): the policy search's first fold (D_M for training, D_A for validation), each cut to
    ``train_images`` / ``val_images`` by the same stable content-hash sampler as the sample."""
    from pipeline.data import stable_sample

    d_m, d_a = stratified_splits(sample, 2, held_out, seed)[0]
    train_set, val_set = sample.subset(d_m), sample.subset(d_a)
    if train_images < len(train_set):
        train_set = stable_sample(train_set, train_images, seed)
    if val_images < len(val_set):
        val_set = stable_sample(val_set, val_images, seed)
    return train_set, val_set
