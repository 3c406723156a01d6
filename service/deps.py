"""Dependencies as ``Annotated`` aliases: routes declare what they need, not how to get it.

FastAPI solves a dependency once per request, so every route that asks for ``SnapshotDep``
(directly or through ``ModelDep`` / ``ChampionDep``) sees one read of
current.json: the policy and the model of one request come from the same pointer file.

The cheap ones are ``async``: FastAPI runs a plain ``def`` dependency in a worker thread, and
that hand-off costs more than the work (an attribute, a small file read). Loading the champion
(torch) stays a plain ``def``: it must not block the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pipeline.artifacts import ModelRecord
from service.published import Champion, Published, Snapshot
from service.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_published(request: Request) -> Published:
    published: Published = request.app.state.published
    return published


SettingsDep = Annotated[Settings, Depends(get_settings)]
PublishedDep = Annotated[Published, Depends(get_published)]


async def get_snapshot(published: PublishedDep) -> Snapshot:
    return published.snapshot()


def snapshot_of(request: Request) -> Snapshot:
    """``SnapshotDep`` without the dependency machinery, for the routes polled hardest (/policy,
    /model): solving a chain of dependencies costs FastAPI more than preparing their answer."""
    published: Published = request.app.state.published
    return published.snapshot()


SnapshotDep = Annotated[Snapshot, Depends(get_snapshot)]


async def get_current_model(snapshot: SnapshotDep) -> ModelRecord:
    """The current model's record (503 when none is published)."""
    return snapshot.require_model()


ModelDep = Annotated[ModelRecord, Depends(get_current_model)]


def get_champion(published: PublishedDep, record: ModelDep) -> Champion:
    """The current model loaded for inference (cached across requests by version)."""
    return published.champion(record)


ChampionDep = Annotated[Champion, Depends(get_champion)]
