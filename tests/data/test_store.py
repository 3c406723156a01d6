from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.data import RawStore
from pipeline.errors import DataError

from .trees import CLASSES, tar_tree, write_tree


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ingest_then_read_back(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", 4, test_per_class=2)
    store = RawStore(tmp_path / "raw")
    result = store.ingest(str(tree))
    assert result.added == {"train": 12, "test": 6}
    train = store.split("train")
    assert train.images.dtype == torch.uint8 and train.images.shape == (12, 3, 32, 32)
    assert train.classes == sorted(CLASSES)
    assert train.class_counts() == {c: 4 for c in sorted(CLASSES)}
    assert len(set(train.ids)) == 12


def test_ingesting_the_same_data_twice_changes_nothing(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", 3)
    store = RawStore(tmp_path / "raw")
    store.ingest(str(tree))
    before = _files(store.root)
    again = store.ingest(str(tar_tree(tree, tmp_path / "same.tar.gz")))
    assert again.added == {} and again.duplicates == 9
    assert _files(store.root) == before


def test_appending_adds_only_new_images(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    store.ingest(str(write_tree(tmp_path / "a", 3, seed=1)))
    more = write_tree(tmp_path / "b", 2, seed=2)
    # the update also repeats the old images: they must be skipped
    write_tree(tmp_path / "b", 3, seed=1, start=100)
    result = store.ingest(str(more))
    assert result.added == {"train": 6} and result.duplicates == 9
    assert len(store.split("train")) == 15
    assert len(store.index()["shards"]) == 2


def test_unknown_class_is_rejected_without_writing(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    store.ingest(str(write_tree(tmp_path / "a", 2)))
    before = _files(store.root)
    with pytest.raises(DataError, match="'bird' is not one of the store's classes"):
        store.ingest(str(write_tree(tmp_path / "b", 2, seed=5, classes=("bird",))))
    assert _files(store.root) == before


def test_orphan_shards_from_an_interrupted_ingest_are_removed(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    store.ingest(str(write_tree(tmp_path / "a", 2)))
    orphan = store.root / "shards" / ".train-abc.npz.tmp"
    orphan.write_bytes(b"partial")
    store.ingest(str(write_tree(tmp_path / "b", 1, seed=9)))
    assert not orphan.exists()
    assert json.loads(store.index_path.read_text())["format"] == 1


def test_missing_store_has_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="autoaug ingest"):
        RawStore(tmp_path / "nothing").split("train")


def test_content_hash_names_the_content_and_reads_stores_written_before_it_had_that_name(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    store.ingest(str(write_tree(tmp_path / "a", 2, seed=0)))
    first = store.content_hash()
    assert json.loads(store.index_path.read_text())["content_hash"] == first
    # A store written before the rename recorded the same value as "fingerprint".
    index = json.loads(store.index_path.read_text())
    index["fingerprint"] = index.pop("content_hash")
    store.index_path.write_text(json.dumps(index))
    assert store.content_hash() == first
    store.ingest(str(write_tree(tmp_path / "b", 1, seed=9)))
    assert store.content_hash() != first


def test_an_update_killed_mid_ingest_leaves_the_store_as_it_was_and_the_next_ingest_completes_it(
    tmp_path: Path,
) -> None:
    """The update's process is killed (SIGKILL) after writing its shard, before the index: the
    store reads as before the update, and ingesting the update again completes it."""
    import signal
    import subprocess
    import sys
    import textwrap

    store = RawStore(tmp_path / "raw")
    store.ingest(str(write_tree(tmp_path / "a", 2)))
    before = (store.index_path.read_text(), store.content_hash(), store.counts())
    update = write_tree(tmp_path / "b", 2, seed=9)
    script = textwrap.dedent(f"""
        import os, signal
        import pipeline.data.store as store_module
        from pipeline.data import RawStore

        def killed(*args, **kwargs):  # the index write: the process dies just before it
            os.kill(os.getpid(), signal.SIGKILL)

        store_module.write_text_atomic = killed
        RawStore({str(store.root)!r}).ingest({str(update)!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert any(f.name not in before[0] for f in (store.root / "shards").iterdir())  # the shard was written
    assert (store.index_path.read_text(), store.content_hash(), store.counts()) == before
    result = store.ingest(str(update))
    assert result.added == {"train": 2 * len(CLASSES)}
    assert store.counts()["train"] == before[2]["train"] + 2 * len(CLASSES)
    assert sorted(f.name for f in (store.root / "shards").iterdir()) == \
        sorted(s["file"] for s in store.index()["shards"])  # nothing left over from the killed run
