"""The champion model: metadata, history and a weights download that loads in plain PyTorch."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse

from pipeline.artifacts import ModelRecord
from service.deps import ModelDep, PublishedDep, SnapshotDep, snapshot_of
from service.etag import REVALIDATE, answer, base_key, make_etag, matches, not_modified
from service.published import Prepared
from service.schemas import (
    ErrorOut,
    ModelListOut,
    ModelMetricsOut,
    ModelOut,
    ModelSummaryOut,
    WeightsOut,
)

router = APIRouter(tags=["model"])

NOT_PUBLISHED: dict[int | str, dict[str, Any]] = {503: {"model": ErrorOut, "description": "no model published yet (the line says what to run)"}}


def meta_digest(record: ModelRecord) -> str:
    return hashlib.sha256(json.dumps(record.meta, sort_keys=True).encode()).hexdigest()


def model_etag(record: ModelRecord) -> str:
    return make_etag("model", record.version, meta_digest(record))


def model_out(request: Request, record: ModelRecord) -> ModelOut:
    meta = record.meta
    return ModelOut(
        version=record.version,
        published_at=record.published_at,
        config=record.config,
        classes=record.classes,
        params=record.count("params"),
        macs=record.count("macs"),
        metrics=ModelMetricsOut.model_validate(meta.get("metrics", {})),
        fingerprint=record.fingerprint,
        lineage=dict(meta.get("lineage", {})),
        weights=WeightsOut(
            exported=record.exported_path is not None,
            export_error=meta.get("export_error"),
            url=str(request.url_for("model_weights")),
        ),
    )


def prepare_model(request: Request, record: ModelRecord) -> Prepared:
    """ModelOut of ``record`` serialised once (a meta.json missing a field: 503 every time)."""
    return Prepared(model_out(request, record).model_dump_json().encode(), model_etag(record))


@router.get(
    "/model",
    response_model=ModelOut,
    summary="The champion: configuration, size, accuracy, lineage",
    responses={304: {"description": "unchanged (If-None-Match)"}, **NOT_PUBLISHED},
)
async def champion(request: Request) -> Response:
    # async and without dependencies: the answer is prepared bytes (or a 304), nothing worth a
    # worker thread or the dependency solver
    snapshot = snapshot_of(request)  # once: the record and its prepared answer from one pointer
    record = snapshot.require_model()
    key = ("model", record.version, base_key(request))  # the body links to the weights
    return answer(request, snapshot.prepared(key, lambda: prepare_model(request, record)))


@router.get("/models", response_model=ModelListOut, summary="Every published model, newest first")
def history(published: PublishedDep, snapshot: SnapshotDep) -> ModelListOut:
    current = snapshot.current.model
    return ModelListOut(
        current=current,
        models=[
            ModelSummaryOut(
                version=r.version,
                published_at=r.published_at,
                test_accuracy=r.meta.get("metrics", {}).get("test_accuracy"),
                params=r.count("params"),
                macs=r.count("macs"),
                fingerprint=r.fingerprint,
                current=r.version == current,
            )
            for r in published.model_history()
        ],
    )


class WeightsFormat(StrEnum):
    exported = "exported"
    state_dict = "state_dict"


@router.get(
    "/model/weights",
    name="model_weights",
    summary="Download the champion's weights",
    description=(
        "`exported` (default): model.pt2, a `torch.export` program that loads in plain PyTorch: "
        "`torch.export.load('model.pt2').module()(images)` with float images in [0, 1], "
        "[N, 3, 32, 32] (normalisation is inside). `state_dict`: the state dict for "
        "`pipeline.models.build_model(config, len(classes))` (config and classes from `GET /model`)."
    ),
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the file"},
        404: {"model": ErrorOut, "description": "torch.export failed for this model: use state_dict"},
        **NOT_PUBLISHED,
    },
)
def weights(
    request: Request,
    record: ModelDep,
    format: Annotated[WeightsFormat, Query(description="exported (model.pt2) or state_dict")] = WeightsFormat.exported,
) -> Response:
    if format is WeightsFormat.exported:
        path = record.exported_path
        if path is None:
            reason = record.meta.get("export_error") or "not written"
            raise HTTPException(404, f"model version {record.version} has no model.pt2 ({reason}); "
                                     "ask for ?format=state_dict")
        filename = f"autoaug-model-v{record.version}.pt2"
    else:
        path = record.state_dict_path
        filename = f"autoaug-model-v{record.version}-state_dict.pt"
    etag = make_etag(format.value, record.version, meta_digest(record))
    if matches(request, etag):
        return not_modified(etag, REVALIDATE)
    return FileResponse(
        path, media_type="application/octet-stream", filename=filename,
        headers={"ETag": etag, "Cache-Control": REVALIDATE, "X-Model-Version": str(record.version)},
    )
