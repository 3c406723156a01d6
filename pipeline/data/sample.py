"""Stable stratified sampling: the 50k -> 10k step every search runs on.

Each image gets a score from a seeded hash of its content id; each class keeps the images with
the lowest scores. Membership therefore depends on content, not position: when images are
appended, an old member leaves only if a new image of its class scores lower, so most of the
previous sample survives (about ``1 / (1 + growth)`` of it) and searches can warm-start.
The validation split (``holdout_split``) is drawn the same way from the images outside it.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import torch

from pipeline.contracts import SampleManifest
from pipeline.data.imageset import ImageSet
from pipeline.errors import DataError
from pipeline.hashing import digest, int_digest

# Digest sizes are part of what is persisted: changing one changes every sample and study name.
SCORE_SIZE = 8  # bytes of an image's rank: which images a sample holds
FINGERPRINT_SIZE = 8  # bytes of a sample fingerprint (manifest.json, study names)


def image_score(image_id: str, seed: int) -> int:
    """Deterministic pseudo-random rank of an image, independent of its position."""
    return int_digest(f"{seed}:{image_id}", SCORE_SIZE)


def class_quotas(available: list[int], size: int) -> list[int]:
    """Split ``size`` over classes as equally as their pools allow.

    Classes too small for an equal share give all they have; the rest is spread over the
    others, earlier classes taking the remainder first.
    """
    total = sum(available)
    if size > total:
        raise DataError(f"sample.size {size} exceeds the {total} training images in the store")
    quotas = [0] * len(available)
    remaining = size
    open_classes = [i for i, n in enumerate(available) if n > 0]
    while remaining > 0 and open_classes:
        share, extra = divmod(remaining, len(open_classes))
        still_open = []
        given = 0
        for rank, c in enumerate(open_classes):
            want = share + (1 if rank < extra else 0)
            take = min(want, available[c] - quotas[c])
            quotas[c] += take
            given += take
            if quotas[c] < available[c]:
                still_open.append(c)
        remaining -= given
        open_classes = still_open
    return quotas


def stable_sample(train: ImageSet, size: int, seed: int = 0) -> ImageSet:
    """The stratified sample of ``size`` images; output sorted by (class, score)."""
    if size <= 0:
        raise DataError(f"sample.size must be positive, got {size}")
    labels = train.labels.tolist()
    by_class: list[list[tuple[int, int]]] = [[] for _ in train.classes]
    for i, (image_id, label) in enumerate(zip(train.ids, labels, strict=True)):
        by_class[label].append((image_score(image_id, seed), i))
    quotas = class_quotas([len(members) for members in by_class], size)
    chosen: list[int] = []
    for members, quota in zip(by_class, quotas, strict=True):
        members.sort()
        chosen.extend(i for _, i in members[:quota])
    return train.subset(torch.tensor(chosen, dtype=torch.long))


def fingerprint(data: ImageSet) -> str:
    """Hash of the (id, label) pairs, order-free: the identity of a sample for studies and runs."""
    pairs = sorted(zip(data.ids, data.labels.tolist(), strict=True))
    return digest("".join(f"{image_id}:{label};" for image_id, label in pairs), FINGERPRINT_SIZE)


def holdout_split(train: ImageSet, exclude: ImageSet | Collection[str], size: int, seed: int) -> ImageSet:
    """Up to ``size`` images of ``train`` outside ``exclude`` (the sample, or its ids), stratified:
    a validation split, so settings are chosen without looking at the test set.

    Drawn like the sample (``stable_sample`` over the remaining images, with its own ``seed``),
    so it is as stable as the sample when data is appended. Smaller than ``size`` when fewer
    images remain, empty when none do (or ``size`` is 0).
    """
    if size < 0:
        raise DataError(f"holdout size must be 0 or more, got {size}")
    excluded = set(exclude.ids if isinstance(exclude, ImageSet) else exclude)
    rest = train.subset(torch.tensor([i for i, x in enumerate(train.ids) if x not in excluded], dtype=torch.long))
    take = min(size, len(rest))
    return stable_sample(rest, take, seed) if take else rest.subset(torch.arange(0))


def write_sample(sample: ImageSet, out_dir: str | os.PathLike[str], *, seed: int, pool: ImageSet) -> dict:
    """Write ``images.pt`` and ``manifest.json`` into ``out_dir``; return the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = SampleManifest(size=len(sample), seed=seed, fingerprint=fingerprint(sample), classes=sample.classes,
                              class_counts=sample.class_counts(), pool_size=len(pool),
                              pool_class_counts=pool.class_counts(), ids=sample.ids, labels=sample.labels.tolist())
    sample.save(out / "images.pt")
    manifest.write(out / "manifest.json")
    return manifest.to_json()


def read_manifest(sample_dir: str | os.PathLike[str]) -> dict:
    return SampleManifest.read(Path(sample_dir) / "manifest.json").to_json()
