"""Classify uploaded images with the champion: one batched forward pass per request."""

from __future__ import annotations

from typing import Annotated

import torch
from fastapi import APIRouter, File, Query, UploadFile

from pipeline.device import autocast
from pipeline.train import normalise
from service.deps import ChampionDep, SettingsDep
from service.images import FORMATS, decode_batch, read_uploads
from service.schemas import ClassProbability, ErrorOut, ImagePrediction, PredictOut

router = APIRouter(tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictOut,
    summary="Top-k classes of one or several images",
    description=f"Multipart upload, field `files` (repeat it for several images). Any format and "
    f"size the ingest reads ({FORMATS}), converted the same way (RGB, shorter side to 32 "
    "px, centre crop). Limits: AUTOAUG_MAX_FILES files, AUTOAUG_MAX_FILE_BYTES each.",
    responses={
        400: {"model": ErrorOut, "description": "an empty file"},
        413: {"model": ErrorOut, "description": "too many files, or a file / image too large"},
        415: {"model": ErrorOut, "description": "a file that is not a readable image"},
        422: {"model": ErrorOut, "description": "no files, or a bad query parameter"},
        503: {"model": ErrorOut, "description": "no model published yet"},
    },
)
def predict(
    champion: ChampionDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="images to classify")],
    top_k: Annotated[int, Query(ge=1, le=1000, description="classes per image (capped at the model's)")] = 3,
) -> PredictOut:
    uploads = read_uploads(files, settings)
    images = decode_batch(uploads, settings).to(champion.device)
    device = torch.device(champion.device)
    with champion.lock, torch.inference_mode(), autocast(device, champion.dtype):
        logits = champion.module(normalise(images, channels_last=True)).float()
    probabilities, indices = logits.softmax(dim=1).cpu().topk(min(top_k, len(champion.classes)), dim=1)
    return PredictOut(
        model_version=champion.version,
        predictions=[
            ImagePrediction(
                filename=upload.filename,
                top=[
                    ClassProbability(label=champion.classes[i], index=i, probability=p)
                    for p, i in zip(probs.tolist(), idx.tolist(), strict=True)
                ],
            )
            for upload, probs, idx in zip(uploads, probabilities, indices, strict=True)
        ],
    )
