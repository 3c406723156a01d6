"""Tiny generated image trees: every test makes its own data, never the real dataset."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog", "frog")



def write_tree(root: Path, per_class: int, *, seed: int = 0, test_per_class: int = 0,
               classes: tuple[str, ...] = CLASSES, start: int = 0) -> Path:
    """Write ``root/train/<class>/NNNN.png`` (+ test/) with random but distinct images."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", test_per_class)):
        if n == 0:
            continue
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(start, start + n):
                pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{i:04d}.png")
    return root


def tar_tree(root: Path, out: Path, wrapper: str = "cifar10") -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(root, arcname=wrapper)
    return out
