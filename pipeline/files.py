"""Small file helpers shared by the stages.

Every file a stage, the store or a search writes goes through ``atomic_path``: the content lands
under a temporary name in the same folder and is renamed over the target only when complete.
A reader (DVC, the service, another worker) therefore sees the old file or the new one, never
half of one, and an interrupted write leaves the old file intact.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` when the block succeeds,
    remove it when the block fails. For writers that take a path (torch.save, PIL, a download).

    The name is unique per call, so concurrent writers of the same file (two search workers
    caching the same child) never write into each other's temporary file: the last rename wins
    with a complete file. It keeps ``path``'s suffix because some writers add theirs to a name
    without it (np.savez appends ``.npz``). It is hidden (a leading dot) so globs skip it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader (or an interrupted stage) never sees half a file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so a reader (or an interrupted stage) never sees half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a ``sqlite:///path`` URL (SQLite creates the file, not its folder)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) not in ("", ":memory:"):
            path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def sqlite_setup_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock next to a ``sqlite:///path`` database while its schema is created
    or migrated: two processes starting on a new file (a stage and a worker) would otherwise
    race in the migrations. Other URLs: no lock (servers migrate in their own transactions)."""
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        yield
        return
    import fcntl

    lock = Path(url.removeprefix("sqlite:///") + ".setup-lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Laps:
    """Wall seconds of a stage's steps, one lap each: ``lap(name)`` ends the step that began at
    the previous lap (or at creation). What a stage spends beyond its training, made visible
    on its MLflow run and in its metrics file (``seconds``, in order)."""

    def __init__(self) -> None:
        import time

        self._now = time.perf_counter
        self._last = self._now()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = self._now()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 3)
        self._last = now
