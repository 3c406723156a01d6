"""Data: sources, the raw store, the in-memory ImageSet, stable sampling and the holdout split."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.data.decode import DecodeReport
from pipeline.data.imageset import ImageSet, concat
from pipeline.data.sample import (
    fingerprint,
    holdout_split,
    read_manifest,
    stable_sample,
    write_sample,
)
from pipeline.data.sources import SPLITS, iter_source
from pipeline.data.store import RawStore
from pipeline.errors import DataError

__all__ = [
    "DecodeReport",
    "ImageSet",
    "RawStore",
    "concat",
    "fingerprint",
    "holdout_split",
    "load_data",
    "read_manifest",
    "stable_sample",
    "write_sample",
]


def load_data(path: str | os.PathLike[str]) -> dict[str, ImageSet]:
    """Load every split of ``path`` into memory: an ingested store, an image set (.pt), a
    CIFAR-10 tarball / image-folder tree / python archive. Used by benchmarks (``--data``)."""
    p = Path(path)
    if p.is_dir() and RawStore(p).exists():
        store = RawStore(p)
        return {s: store.split(s) for s in store.counts()}
    if p.is_file() and p.suffix == ".pt":
        return {"train": ImageSet.load(p)}
    report = DecodeReport()
    rows: dict[str, list] = {s: [] for s in SPLITS}
    for rec in iter_source(str(path), report):
        rows[rec.split].append(rec)
    classes = sorted({r.label for recs in rows.values() for r in recs})
    if not classes:
        raise DataError(f"{path}: no images")
    import numpy as np
    import torch

    from pipeline.data.decode import content_id

    out: dict[str, ImageSet] = {}
    for split, recs in rows.items():
        if not recs:
            continue
        pixels = np.stack([r.pixels for r in recs])
        out[split] = ImageSet(
            images=torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
            labels=torch.tensor([classes.index(r.label) for r in recs]),
            classes=classes,
            ids=[content_id(r.pixels) for r in recs],
        )
    return out
