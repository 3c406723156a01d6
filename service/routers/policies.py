"""The augmentation policy: current (ETag-pollable), history, one version, its grid picture."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from pipeline.artifacts import PolicyRecord, get_policy
from service.demo import fallback_grid
from service.deps import PolicyDep, PublishedDep, SnapshotDep
from service.etag import make_etag, matches, not_modified
from service.schemas import (
    ErrorOut,
    PolicyDocument,
    PolicyListOut,
    PolicyOut,
    PolicySummaryOut,
)

router = APIRouter(tags=["policy"])

REVALIDATE = "no-cache"  # clients may keep a copy but must ask (If-None-Match) before using it
Responses = dict[int | str, dict[str, Any]]
NOT_PUBLISHED: Responses = {503: {"model": ErrorOut, "description": "no policy published yet (the line says what to run)"}}
UNKNOWN: Responses = {404: {"model": ErrorOut, "description": "that version was never published"}}
NOT_MODIFIED: Responses = {304: {"description": "If-None-Match named the current ETag: nothing changed, no body"}}
VersionPath = Annotated[int, Path(ge=1, description="policy version (1, 2, ...)")]


def policy_etag(record: PolicyRecord, text: str, current: bool) -> str:
    """The body says whether the version is the current one, so the tag does too: a client
    revalidating /policies/N after a newer publish gets a 200 with ``current: false``, not a 304
    that keeps its stale ``current: true``."""
    return make_etag("policy" if current else "policy-superseded", record.version,
                     hashlib.sha256(text.encode()).hexdigest())


def summary_out(request: Request, record: PolicyRecord, current: int | None) -> PolicySummaryOut:
    meta = record.meta
    return PolicySummaryOut(
        version=record.version,
        published_at=record.published_at,
        fingerprint=record.fingerprint,
        mlflow_run_id=meta.get("mlflow_run_id"),
        sub_policies=int(meta.get("sub_policies", 0)),
        summary=dict(meta.get("summary", {})),
        current=record.version == current,
        url=str(request.url_for("policy_version", version=record.version)),
        grid_url=str(request.url_for("policy_grid", version=record.version)),
    )


def _answer(request: Request, response: Response, record: PolicyRecord, current: int | None) -> PolicyOut | Response:
    text = record.policy_text()
    etag = policy_etag(record, text, record.version == current)
    if matches(request, etag):
        return not_modified(etag, REVALIDATE)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = REVALIDATE
    return PolicyOut(
        **summary_out(request, record, current).model_dump(),
        studies=list(record.meta.get("studies", [])),
        etag=etag,
        policy=PolicyDocument.model_validate(record.policy().to_dict()),
    )


@router.get(
    "/policy",
    response_model=PolicyOut,
    summary="The current policy with its provenance",
    description="Send the last `ETag` as `If-None-Match` to poll cheaply: 304 and no body while "
    "the policy is unchanged.",
    responses={**NOT_MODIFIED, **NOT_PUBLISHED},
)
def current(request: Request, response: Response, record: PolicyDep) -> PolicyOut | Response:
    return _answer(request, response, record, record.version)


@router.get("/policies", response_model=PolicyListOut, summary="Every published policy, newest first")
def history(request: Request, published: PublishedDep, snapshot: SnapshotDep) -> PolicyListOut:
    current_version = snapshot.current.policy
    return PolicyListOut(
        current=current_version,
        policies=[summary_out(request, r, current_version) for r in published.policy_history()],
    )


@router.get(
    "/policies/{version}",
    name="policy_version",
    response_model=PolicyOut,
    summary="One published policy version",
    responses={**NOT_MODIFIED, **UNKNOWN},
)
def one(
    request: Request, response: Response, version: VersionPath, published: PublishedDep, snapshot: SnapshotDep
) -> PolicyOut | Response:
    return _answer(request, response, get_policy(published.root, version), snapshot.current.policy)


@router.get(
    "/policies/{version}/grid.png",
    name="policy_grid",
    summary="Picture of a policy: sample images, each followed by augmented draws",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "PNG"}, **UNKNOWN},
)
def grid(request: Request, version: VersionPath, published: PublishedDep) -> Response:
    record = get_policy(published.root, version)
    path = record.grid_path
    png = path.read_bytes() if path is not None else fallback_grid(record.policy())
    etag = make_etag("grid", version, hashlib.sha256(png).hexdigest())
    if matches(request, etag):
        return not_modified(etag, REVALIDATE)
    return Response(png, media_type="image/png", headers={"ETag": etag, "Cache-Control": REVALIDATE})

