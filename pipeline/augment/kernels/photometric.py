"""Pixel-value ops with a per-image value: PIL ImageOps / ImageEnhance, batched.

The enhance ops follow PIL exactly: ``Image.blend(degenerate, image, factor)`` computes
``trunc(deg + factor * (img - deg))`` in float32 and clips to [0, 255]; doing the same float32
steps here reproduces PIL bit for bit (given the same degenerate image).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.augment.kernels.context import OpContext, per_image


def identity(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    return images


def invert(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """ImageOps.invert: 255 - x (bitwise not on uint8)."""
    return images.bitwise_not()


def solarize(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """ImageOps.solarize(threshold=v): invert the pixels >= v; v = 256 leaves the image as is."""
    # Pixels are integers, so "x >= v" is "x >= ceil(v)".  Inverting is x ^ 255, so the whole
    # op is x ^ (255 * [x >= t]) in uint8: no wider type, no torch.where (both slow on CPU).
    threshold = torch.ceil(values.to(torch.float64)).clamp(0, 256)
    limit = per_image(threshold.clamp(max=255), images, torch.uint8).expand_as(images)
    active = per_image((threshold <= 255) * 255, images, torch.uint8)  # 0: nothing inverted
    # A compare of two same-shape tensors is vectorised; against a broadcast one it is not.
    flip = torch.ge(images, limit.contiguous()).view(torch.uint8).mul_(active)
    return images ^ flip


def posterize(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """ImageOps.posterize(bits=int(v)): keep the int(v) high bits (FAA truncates v)."""
    bits = torch.floor(values.to(torch.float64)).clamp(0, 8).to(torch.int64)
    mask = (0xFF << (8 - bits)) & 0xFF
    return images & per_image(mask, images, torch.uint8)


def to_uint8(values: Tensor) -> Tensor:
    """float in [0, 255] -> uint8, truncating (as C casts do in PIL).

    Goes through int16: torch has no vectorised float -> uint8 cast on CPU, and the two casts
    are ~4x faster than the one.
    """
    return values.to(torch.int16).to(torch.uint8)


def blend(first: Tensor, second: Tensor, alpha: Tensor) -> Tensor:
    """PIL Image.blend(first, second, alpha) = trunc(first + alpha * (second - first)), clipped,
    with a per-image alpha [n].  A float32 ``second`` is used as scratch space (overwritten);
    pass a copy if you need it afterwards."""
    a = first if first.dtype == torch.float32 else first.to(torch.float32)
    b = second if second.dtype == torch.float32 else second.to(torch.float32)
    out = b.sub_(a).mul_(per_image(alpha, second)).add_(a)
    return to_uint8(out.clamp_(0, 255))


def grayscale(images: Tensor) -> Tensor:
    """PIL convert("L") as float32 [n, 1, H, W]: (19595 R + 38470 G + 7471 B + 2**15) >> 16.

    Exact in float32: every partial sum is an integer below 2**24, and scaling by 2**-16 is
    exact, so floor() gives PIL's integer result without an int32 detour.
    """
    rgb = images if images.dtype == torch.float32 else images.to(torch.float32)
    r, g, b = rgb.unbind(1)
    luma = r * 19595.0
    luma.add_(g, alpha=38470.0).add_(b, alpha=7471.0).add_(32768.0).mul_(2.0**-16).floor_()
    return luma.unsqueeze(1)


def brightness(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """ImageEnhance.Brightness: blend with black."""
    out = images.to(torch.float32).mul_(per_image(values, images))
    return to_uint8(out.clamp_(0, 255))


def color(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """ImageEnhance.Color: blend with the grayscale (L) version of the image."""
    rgb = images.to(torch.float32)
    return blend(grayscale(rgb), rgb, values)


def contrast(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """ImageEnhance.Contrast: blend with a flat image at the rounded mean of L."""
    rgb = images.to(torch.float32)
    luma = grayscale(rgb)
    count = luma.shape[2] * luma.shape[3]
    total = luma.sum(dim=(1, 2, 3), dtype=torch.float64)  # integers: exact in float64
    # PIL's int(mean + 0.5) is floor((2 sum + n) / 2n).  The extra 0.5 in the numerator keeps
    # the quotient at least 1/(4n) away from an integer, so floor() is exact even where CUDA
    # divides by a scalar as a multiplication by its reciprocal.
    mean = torch.floor((2 * total + (count + 0.5)) * (1.0 / (2 * count)))
    return blend(per_image(mean, images), rgb, values)


def smooth(images: Tensor) -> Tensor:
    """PIL ImageFilter.SMOOTH as float32: round(3x3 [1 1 1; 1 5 1; 1 1 1] / 13) inside,
    the one-pixel border copied unchanged (PIL does not filter it).

    The 3x3 sum runs on each image flattened to one row: shifting by 1 and by W sums
    neighbours along x and y with long contiguous adds (a depthwise conv2d is ~5x slower on
    CPU).  The wrap-around at row ends only touches border columns, which are restored.
    """
    n, channels, height, width = images.shape
    out = images.to(torch.float32, memory_format=torch.contiguous_format)
    if height < 3 or width < 3:
        return out
    flat = out.view(n * channels, height * width)
    size = height * width
    rows = flat[:, : size - 2] + flat[:, 1 : size - 1] + flat[:, 2:]  # centred at p + 1
    span = size - 2 - 2 * width
    box = rows[:, :span] + rows[:, width : width + span] + rows[:, 2 * width : 2 * width + span]
    centre = flat[:, width + 1 : width + 1 + span]  # box[p] is centred at p + W + 1
    # Integer weights keep the sum S exact in float32, and PIL rounds S / 13 half up:
    # floor((S + 6) / 13).  Computed as floor((S + 6.5) / 13), whose fraction stays in
    # [0.04, 0.96], so the result is exact however the division rounds (CUDA multiplies by
    # the reciprocal of a scalar divisor).
    smoothed = box.add_(centre, alpha=4.0).add_(6.5).mul_(1.0 / 13.0).floor_()
    left, right = out[..., 0].clone(), out[..., -1].clone()
    flat[:, width + 1 : width + 1 + span] = smoothed
    out[..., 0], out[..., -1] = left, right
    return out


def sharpness(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """ImageEnhance.Sharpness: blend with the SMOOTH-filtered image."""
    return blend(smooth(images), images, values)


def autocontrast(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """ImageOps.autocontrast (cutoff 0): stretch each channel's [lo, hi] to [0, 255].

    PIL builds a lookup table ``int(i * scale + offset)`` in double precision, and the result
    at the top of the range is sometimes 254 (255 - epsilon truncated); building the same
    256-entry table per channel in float64 (cheap: 256 values, not the image) keeps us exact.
    """
    n, channels = images.shape[:2]
    flat = images.reshape(n, channels, images.shape[2] * images.shape[3])
    lo = flat.amin(dim=2).to(torch.float64)
    hi = flat.amax(dim=2).to(torch.float64)
    stretch = hi > lo
    # Not ``255.0 / span``: torch computes scalar / tensor as 255 * reciprocal(span), one
    # rounding more than Python's division, which flips int() at the top of the range.
    scale = torch.where(stretch, torch.full_like(hi, 255.0).div((hi - lo).clamp(min=1)), 1.0)
    offset = torch.where(stretch, -lo * scale, 0.0)
    levels = torch.arange(256, device=images.device, dtype=torch.float64)
    table = (levels * scale.unsqueeze(-1) + offset.unsqueeze(-1)).trunc_().clamp_(0, 255)
    return apply_lut(images, table.to(torch.uint8))


def apply_lut(images: Tensor, table: Tensor) -> Tensor:
    """out[i, c, y, x] = table[i, c, images[i, c, y, x]] for a per-image-channel [n, C, 256] table."""
    n, channels = images.shape[:2]
    index = images.reshape(n, channels, images.shape[2] * images.shape[3]).to(torch.int64)
    return table.gather(2, index).view_as(images)


def channel_histograms(flat: Tensor, scatter: bool | None = None) -> Tensor:
    """[rows, pixels] uint8 -> [rows, 256] int64 counts of each level, per row.

    One bincount over row-offset levels on CPU (fastest there); scatter_add_ on CUDA, which
    unlike bincount still runs under torch.use_deterministic_algorithms(True).
    """
    rows, pixels = flat.shape
    if scatter is None:
        scatter = flat.device.type != "cpu"
    if scatter:
        hist = torch.zeros(rows, 256, dtype=torch.int64, device=flat.device)
        ones = torch.ones(1, dtype=torch.int64, device=flat.device).expand(rows, pixels)
        return hist.scatter_add_(1, flat.to(torch.int64), ones)
    offsets = torch.arange(rows, device=flat.device, dtype=torch.int32).mul_(256).view(rows, 1)
    return torch.bincount((flat.to(torch.int32) + offsets).view(-1), minlength=rows * 256).view(
        rows, 256
    )


def equalize(images: Tensor, values: Tensor, ctx: OpContext) -> Tensor:
    """ImageOps.equalize per image and channel, PIL's table in integer arithmetic:
    step = (count - h[last non-empty level]) // 255, lut[i] = (step // 2 + #pixels < i) // step,
    and the identity where step == 0 (e.g. a single-valued channel)."""
    n, channels = images.shape[:2]
    rows = n * channels
    flat = images.reshape(rows, images.shape[2] * images.shape[3])
    hist = channel_histograms(flat)
    below = hist.cumsum(1) - hist  # pixels strictly darker than each level
    top = flat.amax(dim=1, keepdim=True).to(torch.int64)
    step = (flat.shape[1] - hist.gather(1, top)) // 255
    table = (below + step // 2) // step.clamp(min=1)
    levels = torch.arange(256, device=images.device, dtype=torch.int64).expand(rows, 256)
    table = torch.where(step > 0, table.clamp_(max=255), levels)
    return apply_lut(images, table.to(torch.uint8).view(n, channels, 256))
