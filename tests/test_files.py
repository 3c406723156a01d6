from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.files import atomic_path, write_bytes_atomic, write_text_atomic


def test_atomic_path_replaces_the_target_only_when_the_block_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # a reader still sees the complete old file
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_path_keeps_the_old_file_and_leaves_nothing_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "weights.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]


def test_concurrent_writers_of_one_file_get_their_own_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "child.pt"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text("first")
        second.write_text("second")
    assert target.read_text() == "first"  # the last rename wins, with a complete file


def test_the_temporary_name_keeps_the_suffix_for_writers_that_add_theirs(tmp_path: Path) -> None:
    target = tmp_path / "shard.npz"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npz" and tmp.name.startswith(".")
        np.savez(tmp, x=np.arange(3))  # would write tmp + ".npz" for another suffix
    with np.load(target) as z:
        assert z["x"].tolist() == [0, 1, 2]


def test_write_text_and_bytes_atomic(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a.txt", "hello\n")
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]
