"""Run a per-image plan of ops on a batch: grouped, vectorised, deterministic.

A plan says, for every image and op slot, which op of a table to apply (or none) and with
which magnitude.  Policy, RandAugment and TrivialAugment only differ in how they draw the
plan; this module applies it.  For each slot the images are grouped by op, and each group is
one kernel call on its subset (index_select -> kernel -> index_copy_), with per-image values:
the Python loop runs over the ops present, never over images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipeline.augment.kernels import OpContext, identity
from pipeline.augment.ops import OpSpec

NO_OP = -1
"""Plan entry for 'nothing in this slot' (the op did not fire, or the sub-policy is shorter)."""


def run_plan(
    images: Tensor,
    op_index: Tensor,
    magnitude: Tensor,
    specs: Sequence[OpSpec],
    generator: torch.Generator,
) -> Tensor:
    """Apply ``specs[op_index[i, s]]`` with ``magnitude[i, s]`` to image i, slot after slot.

    op_index: [N, S] int64 (CPU), NO_OP where nothing applies; magnitude: [N, S] in [0, 1].
    Draws, in this order, from the CPU ``generator``: the signs [N, S], then per slot and op
    (in table order) the op's extra uniforms for its group.  The result is therefore the same
    on every device, and a fresh copy: the input is never modified.
    """
    n_images, n_slots = op_index.shape
    negate = torch.rand(n_images, n_slots, generator=generator) < 0.5
    values = _values(op_index, magnitude, negate, specs)
    out = images.clone(memory_format=torch.contiguous_format)
    out_words = as_words(out)
    on_cpu = images.device.type == "cpu"
    for slot in range(n_slots):
        slot_values = values[:, slot]
        for op, rows in _groups(op_index[:, slot], len(specs)):
            spec = specs[op]
            count = rows.shape[0]
            uniforms = torch.rand(count, spec.uniforms, generator=generator, dtype=torch.float64)
            if spec.kernel is identity:
                continue
            # SamplePairing blends with the untouched input batch, like FAA's dataset draw.
            ctx = OpContext(uniforms=uniforms, pool=images)
            if count == n_images:  # the whole batch: no gather/scatter needed
                out = spec.kernel(out, slot_values, ctx).contiguous()
                out_words = as_words(out)
                continue
            index = rows if on_cpu else rows.to(images.device, non_blocking=True)
            result = spec.kernel(out.index_select(0, index), slot_values[rows], ctx)
            out_words.index_copy_(0, index, as_words(result.contiguous()))
    return out


def _values(op_index: Tensor, magnitude: Tensor, negate: Tensor, specs: Sequence[OpSpec]) -> Tensor:
    """[N, S] float64 kernel values for the whole plan at once: OpSpec.values, vectorised over
    the table (one gather per field instead of a handful of tiny ops per group)."""
    fields = torch.tensor(
        [[s.low, s.high - s.low, float(s.signed), s.origin] for s in specs] or [[0.0] * 4],
        dtype=torch.float64,
    )
    low, span, signed, origin = fields[op_index.clamp(min=0)].unbind(-1)
    values = magnitude.to(torch.float64) * span + low
    values = torch.where(negate & (signed > 0), -values, values)
    return values + origin


def as_words(images: Tensor) -> Tensor:
    """A contiguous uint8 batch seen as [N, words] of the widest integer type that fits a row.

    index_copy_ moves one element at a time on CPU; moving 8-byte words instead of bytes makes
    the scatter back into the batch ~6x faster.  Same bytes, so the result is identical.
    """
    n, channels, height, width = images.shape
    row = channels * height * width
    dtype = next(
        d for d in (torch.int64, torch.int32, torch.int16, torch.uint8) if row % d.itemsize == 0
    )
    return images.view(n, row).view(dtype)


def _groups(ops: Tensor, n_ops: int) -> list[tuple[int, Tensor]]:
    """[(op, rows)] for every op present in ``ops`` ([N] int64, NO_OP ignored), op ascending;
    rows ascending.  One sort, no per-op mask over the whole batch."""
    order = torch.argsort(ops, stable=True)
    counts = torch.bincount(ops + 1, minlength=n_ops + 1).tolist()
    groups = []
    start = counts[0]  # skip the NO_OP rows, sorted first
    for op, count in enumerate(counts[1:]):
        if count:
            groups.append((op, order[start : start + count]))
            start += count
    return groups
