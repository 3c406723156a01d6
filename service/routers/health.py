"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ChampionDep, SnapshotDep
from service.schemas import ErrorOut, HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the process answers")
async def healthz() -> HealthOut:
    return HealthOut()


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Readiness: a champion model is loaded",
    responses={503: {"model": ErrorOut, "description": "nothing published yet, or it cannot be loaded"}},
)
def readyz(snapshot: SnapshotDep, champion: ChampionDep) -> ReadyOut:
    return ReadyOut(model_version=champion.version, policy_version=snapshot.current.policy)
