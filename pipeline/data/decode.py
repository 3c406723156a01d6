"""Decode image files into 32x32 RGB uint8 arrays, the one format the raw store holds.

Conversion rules (also in docs/pipeline.md):
- colour: grayscale (L, I, F, 1) is replicated to three channels; palette images are expanded;
  anything with transparency (RGBA, LA, PA, P with a transparent index) is composited onto a
  white background; CMYK/YCbCr/LAB are converted with PIL's converters.
- size: an image that is not 32x32 is resized so that its shorter side is 32 (bicubic, with
  PIL's antialiasing when shrinking) and then centre-cropped to 32x32, so the aspect ratio is
  kept and nothing is stretched (past 1024:1 only the centre square is resampled, so memory
  stays small whatever the shape).
Files PIL cannot decode are reported as corrupt and skipped by the caller.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.data.imageset import IMAGE_SIZE
from pipeline.hashing import digest

CONTENT_ID_SIZE = 8  # bytes: a content id is 16 hex characters in every store, sample and manifest
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})


@dataclass
class DecodeReport:
    """What happened to the files of one ingest: counts the user sees at the end."""

    decoded: int = 0
    corrupt: list[str] = field(default_factory=list)
    converted_mode: int = 0
    resized: int = 0
    not_images: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.decoded} decoded"]
        if self.converted_mode:
            parts.append(f"{self.converted_mode} converted to RGB")
        if self.resized:
            parts.append(f"{self.resized} resized to {IMAGE_SIZE}x{IMAGE_SIZE}")
        if self.corrupt:
            parts.append(f"{len(self.corrupt)} corrupt skipped (e.g. {self.corrupt[0]})")
        if self.not_images:
            parts.append(f"{len(self.not_images)} non-image files ignored (e.g. {self.not_images[0]})")
        return ", ".join(parts)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "F"):
        # High bit-depth grayscale: scale to 8 bits instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    return img.convert("RGB")


# Past this many pixels the intermediate (shorter side at 32) is not built: see _to_size.
_MAX_INTERMEDIATE_PIXELS = 1 << 20


def _to_size(img: Image.Image) -> Image.Image:
    w, h = img.size
    if (w, h) == (IMAGE_SIZE, IMAGE_SIZE):
        return img
    scale = IMAGE_SIZE / min(w, h)
    new_w, new_h = max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale))
    left, top = (new_w - IMAGE_SIZE) // 2, (new_h - IMAGE_SIZE) // 2
    if new_w * new_h > _MAX_INTERMEDIATE_PIXELS:
        # An extreme aspect ratio (over 1024:1): resizing the whole image would build e.g.
        # 32 x 512M pixels for a 1 x 16M strip. Resample only the centre square's source region
        # (the same mapping; PIL's rounding can differ by a level from the full resize).
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + IMAGE_SIZE) * sx, (top + IMAGE_SIZE) * sy)
        return img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return img.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))


def decode_image(data: bytes, name: str, report: DecodeReport) -> np.ndarray | None:
    """Decode ``data`` to a ``[32, 32, 3]`` uint8 array, or record it as corrupt and return None."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = _to_rgb(img)
            if rgb is not img and img.mode != "RGB":
                report.converted_mode += 1
            sized = _to_size(rgb)
            if sized.size != img.size:
                report.resized += 1
            arr = np.asarray(sized, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        report.corrupt.append(name)
        return None
    report.decoded += 1
    return arr


def content_id(pixels: np.ndarray) -> str:
    """A stable id for an image: a hash of its decoded 32x32 RGB pixels (16 hex chars).

    Hashing pixels rather than file bytes makes the id independent of file name and container,
    so ingesting the same data twice (or from a tarball and from a folder) changes nothing.
    """
    return digest(np.ascontiguousarray(pixels).tobytes(), CONTENT_ID_SIZE)
