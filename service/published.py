"""The service's view of the published folder: one pointer read per request, a cached champion.

Hot switch: every request reads current.json once (a ``Snapshot``) and from then on only the
version folders it names, which never change; so a request sees the old or the new version,
never a mix, and a new publish is picked up by the next request without a restart. The loaded
champion network is cached by (version, publish time) and loaded under a lock, so concurrent
requests after a switch load it once; a request that already holds the old one keeps using it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from torch import nn

from pipeline.artifacts import (
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
    """The current model's record and its loaded network (eval mode), always from one version."""

    record: ModelRecord
    module: nn.Module
    device: str

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def classes(self) -> list[str]:
        return self.record.classes


@dataclass
class Snapshot:
    """What current.json said when a request started; records are read from those versions only."""

    root: Path
    current: Current

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


def _broken(root: Path, kind: str, version: int, exc: Exception) -> BrokenPublishError:
    return BrokenPublishError(
        f"{root}/current.json names {kind} version {version}, which cannot be read ({exc}); run publish again"
    )


class Published:
    """The published folder as the service sees it (one instance per app)."""

    def __init__(self, root: Path, device: str = "cpu") -> None:
        self.root = Path(root)
        self.device = device
        self._lock = threading.Lock()
        self._champion: Champion | None = None

    def snapshot(self) -> Snapshot:
        try:
            return Snapshot(self.root, read_current(self.root))
        except ArtifactError as exc:
            raise BrokenPublishError(str(exc)) from exc

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
                module = record.load(self.device)
            except ArtifactError as exc:
                raise BrokenPublishError(str(exc)) from exc
            champion = Champion(record, module, self.device)
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
