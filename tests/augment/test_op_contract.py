"""Contract every op of every table must keep (a new op is tested without touching this file).

Like optuna's sampler contract suites: one parametrised suite over all (table, op) entries.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.augment import OPS, RANDAUGMENT_OPS, TRIVIALAUGMENT_OPS, OpSpec, apply_op
from pipeline.augment.kernels import OpContext

from .conftest import natural_images, seeded

TABLES = {"OPS": OPS, "RANDAUGMENT_OPS": RANDAUGMENT_OPS, "TRIVIALAUGMENT_OPS": TRIVIALAUGMENT_OPS}
ENTRIES = [(table, name) for table, ops in TABLES.items() for name in ops]
ENTRY_IDS = [f"{table}.{name}" for table, name in ENTRIES]

# Sizes other than 32x32 (and non-square) catch kernels that assume CIFAR's shape.
SIZES = [(32, 32), (20, 28)]


def spec_of(table: str, name: str) -> OpSpec:
    return TABLES[table][name]


def draws(spec: OpSpec, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image values (varied magnitudes and signs) and the kernel's extra uniforms."""
    g = seeded(seed)
    magnitudes = torch.rand(n, generator=g, dtype=torch.float64)
    negate = torch.rand(n, generator=g) < 0.5
    uniforms = torch.rand(n, spec.uniforms, generator=g, dtype=torch.float64)
    return spec.values(magnitudes, negate), uniforms


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("table", "name"), ENTRIES, ids=ENTRY_IDS)
def test_keeps_dtype_shape_device_and_input(table: str, name: str, size: tuple[int, int]) -> None:
    images = natural_images(4, size)
    before = images.clone()
    out = apply_op(images, name, 0.7, seeded(1), table=TABLES[table])
    assert out.dtype == torch.uint8
    assert out.shape == images.shape
    assert out.device == images.device
    assert torch.equal(images, before), "the input batch must not be modified"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("table", "name"), ENTRIES, ids=ENTRY_IDS)
def test_batched_equals_per_image(table: str, name: str, size: tuple[int, int]) -> None:
    spec = spec_of(table, name)
    images = natural_images(6, size, seed=2)
    pool = natural_images(5, size, seed=3)
    values, uniforms = draws(spec, len(images), seed=4)
    batched = spec.kernel(images, values, OpContext(uniforms, pool))
    for i in range(len(images)):
        single_ctx = OpContext(uniforms[i : i + 1], pool)
        single = spec.kernel(images[i : i + 1], values[i : i + 1], single_ctx)
        assert torch.equal(batched[i], single[0]), f"image {i} differs when run alone"


@pytest.mark.parametrize(("table", "name"), ENTRIES, ids=ENTRY_IDS)
def test_same_generator_same_output(table: str, name: str) -> None:
    images = natural_images(8)
    first = apply_op(images, name, 0.8, seeded(5), table=TABLES[table])
    second = apply_op(images, name, 0.8, seeded(5), table=TABLES[table])
    assert torch.equal(first, second)


@pytest.mark.parametrize(("table", "name"), ENTRIES, ids=ENTRY_IDS)
def test_values_stay_in_the_declared_range(table: str, name: str) -> None:
    spec = spec_of(table, name)
    magnitudes = torch.linspace(0, 1, 11, dtype=torch.float64)
    for negate in (torch.zeros(11, dtype=torch.bool), torch.ones(11, dtype=torch.bool)):
        values = spec.values(magnitudes, negate) - spec.origin
        expected = magnitudes * (spec.high - spec.low) + spec.low
        if spec.signed and bool(negate[0]):
            expected = -expected
        torch.testing.assert_close(values, expected)
    assert spec.values(torch.zeros(1, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(("table", "name"), ENTRIES, ids=ENTRY_IDS)
def test_accepts_a_non_contiguous_batch(table: str, name: str) -> None:
    images = natural_images(4)
    channels_last = images.contiguous(memory_format=torch.channels_last)
    expected = apply_op(images, name, 0.6, seeded(6), table=TABLES[table])
    assert torch.equal(apply_op(channels_last, name, 0.6, seeded(6), table=TABLES[table]), expected)


@pytest.mark.parametrize(("table", "name"), ENTRIES, ids=ENTRY_IDS)
def test_empty_batch(table: str, name: str) -> None:
    empty = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    assert apply_op(empty, name, 0.5, seeded(0), table=TABLES[table]).shape == empty.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("table", "name"), ENTRIES, ids=ENTRY_IDS)
def test_cuda_equals_cpu(table: str, name: str) -> None:
    images = natural_images(8)
    cpu = apply_op(images, name, 0.7, seeded(7), table=TABLES[table])
    cuda = apply_op(images.cuda(), name, 0.7, seeded(7), table=TABLES[table])
    assert cuda.device.type == "cuda"
    assert torch.equal(cuda.cpu(), cpu)
