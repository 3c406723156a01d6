"""The service's view of the published folder: one pointer read per request, everything else
prepared once per publish, a cached champion.

Hot switch: every request reads the bytes of current.json once. While they are the bytes the
last request saw, it gets the same ``Snapshot``, whose records and prepared responses (a JSON
body serialised once, with its ETag) were built by an earlier request; when they differ, a new
Snapshot is made, and everything is read again from the version folders it names. Version
folders never change once published, so a request sees the old or the new version, never a mix,
and a new publish is picked up by the next request without a restart. Each process (each
uvicorn worker) keeps its own Snapshot and notices the new pointer on its own.

The loaded champion network is cached by (version, publish time) and loaded under a lock, so
concurrent requests after a switch load it once; a request that already holds the old one keeps
using it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from pipeline.artifacts import (
    CURRENT_FILE,
    ArtifactError,
    Current,
    ModelRecord,
    PolicyRecord,
    get_model,
    get_policy,
    model_history,
    policy_history,
    read_current,
)

WHAT_TO_RUN = "run `dvc repro` (its publish stage writes there)"


class NotPublishedError(Exception):
    """Nothing of the requested kind has been published yet (the service answers 503)."""


class BrokenPublishError(Exception):
    """The published folder is inconsistent or unreadable (the service answers 503)."""


@dataclass(frozen=True)
class Champion:
    """The current model's record and its loaded network (eval mode, channels_last: the layout
    oneDNN's fast convolution kernels work in), always from one version. ``lock``: one forward
    pass at a time per process, each with all the process's torch threads (concurrent passes on
    the same cores only slow each other down)."""

    record: ModelRecord
    module: nn.Module
    device: str
    dtype: torch.dtype | None = None  # what inference autocasts to (None: plain fp32)
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def classes(self) -> list[str]:
        return self.record.classes


@dataclass(frozen=True)
class Prepared:
    """A response serialised once per publish: its body, its ETag and its media type."""

    body: bytes
    etag: str
    media_type: str = "application/json"


PREPARED_PER_SNAPSHOT = 64
"""Most prepared responses one Snapshot keeps. Keys include the request's base URL (bodies hold
absolute links), which the client chooses: past this bound answers are built, not stored."""


@dataclass
class Snapshot:
    """What current.json said when a request started; records are read from those versions only.

    Shared by every request that sees the same pointer bytes (``Published.snapshot``): the
    records and the prepared responses are read and built once, by the first request that needs
    them. Failures (an unreadable version) are not kept, so each request tries again.
    """

    root: Path
    current: Current
    _prepared: dict[Hashable, Prepared] = field(default_factory=dict, repr=False)

    @cached_property
    def policy(self) -> PolicyRecord | None:
        version = self.current.policy
        if version is None:
            return None
        try:
            return get_policy(self.root, version)
        except ArtifactError as exc:  # includes UnknownVersionError: the pointer names a lost folder
            raise _broken(self.root, "policy", version, exc) from exc

    @cached_property
    def model(self) -> ModelRecord | None:
        version = self.current.model
        if version is None:
            return None
        try:
            return get_model(self.root, version)
        except ArtifactError as exc:
            raise _broken(self.root, "model", version, exc) from exc

    def require_policy(self) -> PolicyRecord:
        if self.policy is None:
            raise NotPublishedError(f"no policy published yet in {self.root}/: {WHAT_TO_RUN}")
        return self.policy

    def require_model(self) -> ModelRecord:
        if self.model is None:
            raise NotPublishedError(f"no model published yet in {self.root}/: {WHAT_TO_RUN}")
        return self.model

    def peek(self, key: Hashable) -> Prepared | None:
        """The response stored under ``key``, if one is."""
        return self._prepared.get(key)

    def prepared(self, key: Hashable, build: Callable[[], Prepared]) -> Prepared:
        """The response stored under ``key``, built by ``build()`` the first time. Two requests
        racing on a new key both build it (the same bytes); the dict write is atomic."""
        found = self._prepared.get(key)
        if found is None:
            found = build()
            if len(self._prepared) < PREPARED_PER_SNAPSHOT:
                self._prepared[key] = found
        return found


def _read_pointer(path: str) -> tuple[int, bytes]:
    """current.json's inode and bytes, with plain system calls (a fifth of ``Path.read_bytes``'s
    cost). The inode tells apart a file replaced by identical bytes (a published folder rebuilt
    from scratch within the same second, whose versions may hold other content)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        inode = os.fstat(fd).st_ino
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return inode, b"".join(chunks)
    finally:
        os.close(fd)


def _broken(root: Path, kind: str, version: int, exc: Exception) -> BrokenPublishError:
    return BrokenPublishError(
        f"{root}/current.json names {kind} version {version}, which cannot be read ({exc}); run publish again"
    )


class Published:
    """The published folder as the service sees it (one instance per app)."""

    def __init__(self, root: Path, device: str = "cpu", dtype: torch.dtype | None = None) -> None:
        self.root = Path(root)
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        self._champion: Champion | None = None
        self._snapshot: tuple[tuple[int, bytes], Snapshot] | None = None
        self._pointer_path = os.fspath(self.root / CURRENT_FILE)  # a str: no Path arithmetic per request

    def snapshot(self) -> Snapshot:
        """The Snapshot of current.json as it is now: the last one while its inode and bytes are
        unchanged (publish replaces the file: a new inode, new bytes).

        Bytes, not the file's mtime: an in-place rewrite within the kernel's timestamp
        granularity (milliseconds) would keep the mtime; reading a small file from the page
        cache costs microseconds.
        """
        try:
            pointer = _read_pointer(self._pointer_path)
        except FileNotFoundError:
            pointer = (0, b"")
        except OSError as exc:
            raise BrokenPublishError(f"{self._pointer_path}: unreadable ({exc})") from exc
        cached = self._snapshot
        if cached is not None and cached[0] == pointer:
            return cached[1]
        try:
            # Parsed by the artifacts module's reader (one definition of a valid pointer). Should a
            # publish land between the two reads, this Snapshot is newer than its key, and the
            # next request, seeing other bytes, simply makes another one.
            snapshot = Snapshot(self.root, read_current(self.root))
        except ArtifactError as exc:
            raise BrokenPublishError(str(exc)) from exc
        self._snapshot = (pointer, snapshot)
        return snapshot

    def champion(self, record: ModelRecord) -> Champion:
        """The loaded network of ``record`` (cached: only the latest version stays in memory)."""
        key = (record.version, record.published_at)
        cached = self._champion
        if cached is not None and (cached.version, cached.record.published_at) == key:
            return cached
        with self._lock:
            cached = self._champion
            if cached is not None and (cached.version, cached.record.published_at) == key:
                return cached
            try:
                module = record.load(self.device).to(memory_format=torch.channels_last)
            except ArtifactError as exc:
                raise BrokenPublishError(str(exc)) from exc
            champion = Champion(record, module, self.device, self.dtype)
            self._champion = champion
            return champion

    def policy_history(self) -> list[PolicyRecord]:
        try:
            return policy_history(self.root)
        except ArtifactError as exc:
            raise BrokenPublishError(str(exc)) from exc

    def model_history(self) -> list[ModelRecord]:
        try:
            return model_history(self.root)
        except ArtifactError as exc:
            raise BrokenPublishError(str(exc)) from exc
