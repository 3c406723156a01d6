"""The augmentation policy: current (ETag-pollable), history, one version, its grid picture."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from pipeline.artifacts import PolicyRecord, get_policy
from service.demo import fallback_grid
from service.deps import PublishedDep, SnapshotDep, snapshot_of
from service.etag import answer, base_key, make_etag
from service.published import Prepared, Snapshot
from service.schemas import (
    ErrorOut,
    PolicyDocument,
    PolicyListOut,
    PolicyOut,
    PolicySummaryOut,
)

router = APIRouter(tags=["policy"])

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


def prepare_policy(request: Request, record: PolicyRecord, current: int | None) -> Prepared:
    """PolicyOut of ``record`` serialised once (validating the published policy.json on the way:
    one that is not a policy is a 503 for every request, never a half answer)."""
    text = record.policy_text()
    etag = policy_etag(record, text, record.version == current)
    out = PolicyOut(
        **summary_out(request, record, current).model_dump(),
        studies=list(record.meta.get("studies", [])),
        etag=etag,
        policy=PolicyDocument.model_validate(record.policy().to_dict()),
    )
    return Prepared(out.model_dump_json().encode(), etag)


def _policy(request: Request, snapshot: Snapshot, record: PolicyRecord) -> Response:
    # Bodies hold absolute links, so the base URL is part of the key.
    key = ("policy", record.version, base_key(request))
    return answer(request, snapshot.prepared(key, lambda: prepare_policy(request, record, snapshot.current.policy)))


@router.get(
    "/policy",
    response_model=PolicyOut,
    summary="The current policy with its provenance",
    description="Send the last `ETag` as `If-None-Match` to poll cheaply: 304 and no body while "
    "the policy is unchanged.",
    responses={**NOT_MODIFIED, **NOT_PUBLISHED},
)
async def current(request: Request) -> Response:
    # async and without dependencies: the answer is prepared bytes (or a 304), nothing worth a
    # worker thread or the dependency solver
    snapshot = snapshot_of(request)
    return _policy(request, snapshot, snapshot.require_policy())


@router.get("/policies", response_model=PolicyListOut, summary="Every published policy, newest first")
def history(request: Request, published: PublishedDep, snapshot: SnapshotDep) -> PolicyListOut:
    # Not prepared: a version published without promote joins the history while current.json
    # (the key of everything prepared) stays the same.
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
async def one(request: Request, version: VersionPath) -> Response:
    snapshot = snapshot_of(request)
    key = ("policy", version, base_key(request))
    if (prepared := snapshot.peek(key)) is not None:
        return answer(request, prepared)
    return _policy(request, snapshot, get_policy(snapshot.root, version))


def prepare_grid(record: PolicyRecord) -> Prepared:
    path = record.grid_path
    png = path.read_bytes() if path is not None else fallback_grid(record.policy())
    return Prepared(png, make_etag("grid", record.version, hashlib.sha256(png).hexdigest()), "image/png")


@router.get(
    "/policies/{version}/grid.png",
    name="policy_grid",
    summary="Picture of a policy: sample images, each followed by augmented draws",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "PNG"}, **NOT_MODIFIED, **UNKNOWN},
)
def grid(version: VersionPath, request: Request, snapshot: SnapshotDep) -> Response:
    # sync: drawing a grid for a policy published without one takes a while (once per publish)
    return answer(request, snapshot.prepared(("grid", version), lambda: prepare_grid(get_policy(snapshot.root, version))))
