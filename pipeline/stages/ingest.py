"""`autoaug ingest`: add images to the raw store, then record the data version with DVC."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.data import RawStore
from pipeline.data.store import IngestResult


def track_with_dvc(path: Path) -> str | None:
    """`dvc add` the raw store when the working directory is a DVC project, so every data
    version is recorded (data/raw.dvc goes into git). Returns a note for the user."""
    root = Path.cwd()
    if not (root / ".dvc").is_dir():
        return None
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return f"{path} is outside the DVC project at {root}; not tracked"
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        repo.add(str(rel))
    return f"tracked with DVC: commit {rel}.dvc to record this data version"


def ingest(source: str, store_dir: str | os.PathLike[str], *, cache_dir: str | None = None,
           dvc: bool = True) -> tuple[IngestResult, str | None]:
    """Ingest ``source`` into the store; returns the result and the DVC note (if any)."""
    result = RawStore(store_dir).ingest(source, cache_dir=Path(cache_dir) if cache_dir else None)
    note = track_with_dvc(Path(store_dir)) if dvc else None
    return result, note
