"""See what a policy does: an image in, a PNG grid of augmented draws out."""

from __future__ import annotations

from typing import Annotated

import torch
from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile

from pipeline.artifacts import get_policy
from pipeline.augment import Policy, policy_grid
from service.deps import PublishedDep, SettingsDep, SnapshotDep
from service.images import FORMATS, decode_batch, read_uploads
from service.schemas import ErrorOut

router = APIRouter(tags=["augment"])


@router.post(
    "/augment",
    summary="A PNG grid: the image, then augmented draws of a policy",
    description=f"Multipart upload, field `image` ({FORMATS}; converted like the ingest). The "
    "policy is the `policy` form field (policy JSON, schema `PolicyIn`; with curl "
    "`-F 'policy=<policy.json'`), else the published `version`, else the current policy. "
    "Same seed, same picture.",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "the grid (4x scale)"},
        400: {"model": ErrorOut, "description": "empty file, or both a policy and a version"},
        404: {"model": ErrorOut, "description": "unknown policy version"},
        413: {"model": ErrorOut, "description": "file or image too large"},
        415: {"model": ErrorOut, "description": "not a readable image"},
        422: {"model": ErrorOut, "description": "malformed policy JSON (the line names the problem)"},
        503: {"model": ErrorOut, "description": "no policy given and none published yet"},
    },
)
def augment(
    settings: SettingsDep,
    published: PublishedDep,
    snapshot: SnapshotDep,
    image: Annotated[UploadFile, File(description="one image")],
    policy: Annotated[str | None, Form(description="policy JSON (optional)")] = None,
    version: Annotated[int | None, Query(ge=1, description="a published policy version")] = None,
    draws: Annotated[int, Query(ge=1, le=16, description="augmented copies")] = 7,
    seed: Annotated[int, Query(ge=0, le=2**62, description="random seed of the draws")] = 0,
) -> Response:
    policy_text = (policy or "").strip()
    if policy_text == "null":  # the field is documented as a policy document or null (JSON)
        policy_text = ""
    if policy_text and version is not None:
        raise HTTPException(400, "send either a policy (form field) or a version (query), not both")
    if policy_text:
        chosen, source = Policy.from_json(policy_text), "request"
    elif version is not None:
        chosen, source = get_policy(published.root, version).policy(), str(version)
    else:
        record = snapshot.require_policy()
        chosen, source = record.policy(), str(record.version)
    images = decode_batch(read_uploads([image], settings), settings)
    png = policy_grid(chosen, images, draws, torch.Generator().manual_seed(seed))
    return Response(png, media_type="image/png", headers={"X-Policy-Version": source})
