"""Pinned values of every persisted identifier.

Content ids name images in stores, samples and manifests; scores decide which images a sample
holds; fingerprints and shard names are parts of study names and file names. A change to the
hash (its function, digest size or input encoding) silently renames all of them, so these
values were computed once with the original code and must not change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.data import ImageSet, RawStore, fingerprint
from pipeline.data.decode import content_id
from pipeline.data.sample import image_score

from .trees import write_tree


def test_content_ids_are_pinned() -> None:
    ramp = np.arange(32 * 32 * 3, dtype=np.uint64).reshape(32, 32, 3).astype(np.uint8)
    assert content_id(ramp) == "49f6fe599637b92a"
    assert content_id(np.zeros((32, 32, 3), np.uint8)) == "4ee755e9bb44de18"


def test_image_scores_are_pinned() -> None:
    assert image_score("0123456789abcdef", 0) == 1504814174109200552
    assert image_score("0123456789abcdef", 7) == 2089873991020892117


def test_sample_fingerprint_is_pinned() -> None:
    data = ImageSet(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 1]), ["a", "b"],
                    ["cc", "aa", "bb"])
    assert fingerprint(data) == "79f88d10a1ae34c1"


def test_store_shard_names_ids_and_content_hash_are_pinned(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    store.ingest(str(write_tree(tmp_path / "tree", 2, seed=0, test_per_class=1)))
    index = json.loads(store.index_path.read_text())
    assert [s["file"] for s in index["shards"]] == ["train-ab2c8274a2c8.npz", "test-91b220cdb5de.npz"]
    assert store.split("train").ids == ["013ed23c913056b5", "1883b91f73339434", "51bc9d410f3050ec",
                                        "8cb861f56c2fcf7a", "11ac9b0459b9e08e", "150b979750135d05"]
    assert index["content_hash"] == store.content_hash() == "586c2db7dd91b695"
