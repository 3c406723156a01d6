"""The grouped, vectorised plan runner against a plain per-image loop."""

from __future__ import annotations

import pytest
import torch

from pipeline.augment import OPS
from pipeline.augment.engine import NO_OP, as_words, run_plan
from pipeline.augment.kernels import OpContext

from .conftest import natural_images, seeded

# Ops that draw no extra uniforms, so a per-image loop can replay the exact same draws.
PLAIN = [name for name, spec in OPS.items() if spec.uniforms == 0]


def per_image_reference(images, op_index, magnitude, specs, generator):  # type: ignore[no-untyped-def]
    negate = torch.rand(op_index.shape, generator=generator) < 0.5
    out = images.clone()
    for i in range(len(images)):
        for slot in range(op_index.shape[1]):
            op = int(op_index[i, slot])
            if op == NO_OP:
                continue
            spec = specs[op]
            value = spec.values(magnitude[i, slot : slot + 1], negate[i, slot : slot + 1])
            out[i : i + 1] = spec.kernel(out[i : i + 1], value, OpContext.empty(1))
    return out


def test_run_plan_equals_a_per_image_loop() -> None:
    specs = [OPS[name] for name in PLAIN]
    g = seeded(0)
    images = natural_images(40)
    op_index = torch.randint(-1, len(specs), (40, 3), generator=g)
    magnitude = torch.rand(40, 3, generator=g, dtype=torch.float64)
    ours = run_plan(images, op_index, magnitude, specs, seeded(1))
    theirs = per_image_reference(images, op_index, magnitude, specs, seeded(1))
    assert torch.equal(ours, theirs)
    untouched = (op_index == NO_OP).all(1)
    assert torch.equal(ours[untouched], images[untouched])


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((3, 4, 4), torch.int64),
        ((3, 2, 2), torch.int32),
        ((3, 1, 2), torch.int16),
        ((3, 1, 1), torch.uint8),
    ],
)
def test_as_words_reinterprets_rows(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    images = torch.randint(0, 256, (5, *shape), dtype=torch.uint8)
    words = as_words(images)
    assert words.dtype == dtype and words.shape[0] == 5
    assert words.data_ptr() == images.data_ptr()  # a view, no copy


def test_vectorised_values_equal_opspec_values() -> None:
    from pipeline.augment import RANDAUGMENT_OPS, TRIVIALAUGMENT_OPS
    from pipeline.augment.engine import _values

    for table in (OPS, RANDAUGMENT_OPS, TRIVIALAUGMENT_OPS):
        specs = list(table.values())
        g = seeded(2)
        op_index = torch.randint(0, len(specs), (200, 2), generator=g)
        magnitude = torch.rand(200, 2, generator=g, dtype=torch.float64)
        negate = torch.rand(200, 2, generator=g) < 0.5
        values = _values(op_index, magnitude, negate, specs)
        for i in range(200):
            for s in range(2):
                spec = specs[int(op_index[i, s])]
                expected = spec.values(magnitude[i, s : s + 1], negate[i, s : s + 1])
                assert torch.equal(values[i, s : s + 1], expected)


def test_histogram_paths_agree() -> None:
    """bincount (CPU) and scatter_add_ (used on CUDA) count the same levels."""
    from pipeline.augment.kernels.photometric import channel_histograms

    flat = natural_images(5).reshape(15, -1)
    by_bincount = channel_histograms(flat, scatter=False)
    assert torch.equal(by_bincount, channel_histograms(flat, scatter=True))
    assert torch.equal(by_bincount[3], torch.bincount(flat[3].long(), minlength=256))
