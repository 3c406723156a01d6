"""The raw store: every ingested image, once, as uint8 shards plus an index.

Layout of ``data/raw/`` (the folder DVC tracks):
    store.json                  classes, shard list, per-split counts, a content hash
    shards/<split>-<digest>.npz images [n, 32, 32, 3] uint8, labels int16, ids (16-char hex)
An ingest appends one shard per split holding only images whose content id is new, so
ingesting the same data twice changes nothing, and a data update is an appended shard.
Writes are atomic: shards land under temporary names, ``store.json`` is replaced last, and a
shard that no index names (left by an interrupted ingest) is removed by the next ingest.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.decode import DecodeReport, content_id
from pipeline.data.imageset import ImageSet, concat
from pipeline.data.sources import SPLITS, iter_source
from pipeline.errors import DataError
from pipeline.files import atomic_path, write_text_atomic
from pipeline.hashing import digest

STORE_FORMAT = 1
INDEX = "store.json"
SHARD_DIGEST_SIZE = 6  # bytes of the shard-name hash: part of every existing shard's file name
CONTENT_HASH_SIZE = 8


def _content_hash(shards: list[dict[str, Any]]) -> str:
    """Hash of the sorted shard file names (each names the hash of its image ids)."""
    return digest("|".join(sorted(s["file"] for s in shards)), CONTENT_HASH_SIZE)


@dataclass
class IngestResult:
    added: dict[str, int]
    duplicates: int
    report: DecodeReport
    total: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        added = ", ".join(f"{n} {s}" for s, n in self.added.items()) or "nothing"
        total = ", ".join(f"{n} {s}" for s, n in self.total.items())
        return f"added {added}; {self.duplicates} duplicates skipped; store now holds {total}. Files: {self.report.summary()}"


class RawStore:
    """Read and append to the raw store at ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def exists(self) -> bool:
        return self.index_path.is_file()

    def index(self) -> dict:
        if not self.exists():
            raise DataError(f"{self.root}: no raw store here yet; run `autoaug ingest SOURCE` first")
        with open(self.index_path) as fh:
            index = json.load(fh)
        if index.get("format") != STORE_FORMAT:
            raise DataError(f"{self.index_path}: unsupported store format {index.get('format')!r}")
        return index

    def content_hash(self) -> str:
        """The identity of the store's content: a hash of its shard names, which are hashes of
        their image ids. Equal stores give equal hashes; every ingest that adds images changes it.

        store.json records it as ``content_hash`` (``fingerprint`` before; the value is the
        same), but it is recomputed from the shard list, so a store of any age answers.
        """
        return _content_hash(self.index()["shards"])

    def split(self, split: str) -> ImageSet:
        """All images of ``split`` in ingest order."""
        index = self.index()
        parts = [self._read_shard(s["file"], index["classes"]) for s in index["shards"] if s["split"] == split]
        if not parts:
            raise DataError(f"{self.root}: the store holds no {split!r} images")
        return concat(parts)

    def _read_shard(self, name: str, classes: list[str]) -> ImageSet:
        with np.load(self.root / "shards" / name) as z:
            images = torch.from_numpy(np.ascontiguousarray(z["images"].transpose(0, 3, 1, 2)))
            labels = torch.from_numpy(z["labels"].astype(np.int64))
            ids = [i.decode() for i in z["ids"].tolist()]
        return ImageSet(images, labels, list(classes), ids)

    def known_ids(self) -> set[str]:
        if not self.exists():
            return set()
        ids: set[str] = set()
        for s in self.index()["shards"]:
            with np.load(self.root / "shards" / s["file"]) as z:
                ids.update(i.decode() for i in z["ids"].tolist())
        return ids

    def ingest(self, source: str, cache_dir: Path | None = None) -> IngestResult:
        """Add the new images of ``source``; nothing is written if it holds none or fails."""
        report = DecodeReport()
        index: dict[str, Any] = self.index() if self.exists() else {"format": STORE_FORMAT, "classes": [], "shards": []}
        seen = self.known_ids()
        new: dict[str, list[tuple[str, str, np.ndarray]]] = defaultdict(list)
        duplicates = 0
        for rec in iter_source(source, report, cache_dir):
            cid = content_id(rec.pixels)
            if cid in seen:
                duplicates += 1
                continue
            seen.add(cid)
            new[rec.split].append((cid, rec.label, rec.pixels))
        if report.decoded == 0:
            raise DataError(f"{source}: no readable images ({report.summary()})")

        classes = list(index["classes"])
        incoming = sorted({label for rows in new.values() for _, label, _ in rows})
        if not classes:
            classes = incoming
        else:
            unknown = [c for c in incoming if c not in classes]
            if unknown:
                raise DataError(
                    f"{source}: class {unknown[0]!r} is not one of the store's classes {classes}; "
                    "a new class would change every model's output layer, so start a new store for it"
                )
        if new:
            self._write(index, classes, new)
        self._remove_orphans()
        added = {s: len(new[s]) for s in SPLITS if new.get(s)}
        total = self.counts()
        return IngestResult(added=added, duplicates=duplicates, report=report, total=total)

    def _write(self, index: dict, classes: list[str], new: dict[str, list[tuple[str, str, np.ndarray]]]) -> None:
        shard_dir = self.root / "shards"
        shard_dir.mkdir(parents=True, exist_ok=True)
        shards = list(index["shards"])
        label_of = {c: i for i, c in enumerate(classes)}
        for split in SPLITS:
            rows = new.get(split)
            if not rows:
                continue
            ids = np.array([cid for cid, _, _ in rows], dtype="S16")
            name = f"{split}-{digest(ids.tobytes(), SHARD_DIGEST_SIZE)}.npz"
            with atomic_path(shard_dir / name) as tmp:
                np.savez(
                    tmp,
                    images=np.stack([p for _, _, p in rows]),
                    labels=np.array([label_of[label] for _, label, _ in rows], dtype=np.int16),
                    ids=ids,
                )
            shards.append({"file": name, "split": split, "count": len(rows)})
        new_index = {
            "format": STORE_FORMAT,
            "classes": classes,
            "shards": shards,
            "content_hash": _content_hash(shards),
        }
        write_text_atomic(self.index_path, json.dumps(new_index, indent=2) + "\n")

    def _remove_orphans(self) -> None:
        named = {s["file"] for s in self.index()["shards"]} if self.exists() else set()
        shard_dir = self.root / "shards"
        if not shard_dir.is_dir():
            return
        for f in shard_dir.iterdir():
            if f.name not in named:
                f.unlink()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for s in self.index()["shards"]:
            out[s["split"]] += s["count"]
        return dict(out)
