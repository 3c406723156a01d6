"""Uploads -> a uint8 batch, with the ingest's conversion (``pipeline.data.decode``).

Whatever the store accepts the service accepts, converted the same way (grayscale replicated,
transparency onto white, shorter side resized to 32 and centre-cropped), so a prediction sees
the image as the model saw its training data.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from fastapi import HTTPException, UploadFile
from PIL import Image, UnidentifiedImageError

from pipeline.data.decode import DecodeReport, decode_image
from service.settings import Settings

FORMATS = "PNG, JPEG, BMP, GIF, WebP, TIFF, PPM"


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def read_uploads(files: list[UploadFile], settings: Settings) -> list[Upload]:
    """The bytes of each file, refusing too many, empty and oversized files (4xx, one line)."""
    if len(files) > settings.max_files:
        raise HTTPException(413, f"{len(files)} files sent; at most {settings.max_files} per request")
    uploads = []
    for index, file in enumerate(files):
        name = file.filename or f"file {index + 1}"
        data = file.file.read(settings.max_file_bytes + 1)
        if len(data) > settings.max_file_bytes:
            raise HTTPException(
                413, f"file {name!r} is larger than the {settings.max_file_bytes / (1 << 20):.3g} MiB limit"
            )
        if not data:
            raise HTTPException(400, f"file {name!r} is empty")
        uploads.append(Upload(name, data))
    return uploads


def _check_pixels(upload: Upload, max_pixels: int) -> None:
    """Refuse huge images from their header, before decoding (a small file can be a bomb)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data)) as img:
                width, height = img.size
    except Image.DecompressionBombError as exc:  # PIL's own limit, past twice Image.MAX_IMAGE_PIXELS
        raise HTTPException(413, f"image {upload.filename!r} is too large to decode ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return  # decode_image reports it as not an image
    if width * height > max_pixels:
        raise HTTPException(
            413, f"image {upload.filename!r} is {width}x{height} pixels, more than the {max_pixels:,}-pixel limit"
        )


def decode_batch(uploads: list[Upload], settings: Settings) -> torch.Tensor:
    """uint8 [N, 3, 32, 32] from the uploads (415 naming the first file that is not an image)."""
    report = DecodeReport()
    arrays = []
    for upload in uploads:
        _check_pixels(upload, settings.max_image_pixels)
        pixels = decode_image(upload.data, upload.filename, report)
        if pixels is None:
            raise HTTPException(415, f"file {upload.filename!r} is not an image this service can read ({FORMATS})")
        arrays.append(pixels)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
