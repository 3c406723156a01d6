"""Policy: validation, JSON, and applying it to a batch (per-image choices, vectorised)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.augment import (
    OPS,
    POLICY_VERSION,
    OpCall,
    Policy,
    PolicyError,
    SubPolicy,
    apply_op,
    policy_json_schema,
)

from .conftest import natural_images, seeded

EXAMPLE = [
    [("ShearX", 0.9, 0.3), ("Invert", 0.2, 0.0)],
    [("Color", 0.5, 0.8), ("Cutout", 1.0, 0.5)],
    [("Equalize", 0.7, 0.0)],
]


def tiny(n: int) -> torch.Tensor:
    """Many small images for statistics: cheap and still non-trivial."""
    return natural_images(n, (6, 6), seed=21)


# -- construction and JSON ----------------------------------------------------------------


def test_accepts_tuples_dicts_and_objects_alike() -> None:
    from_tuples = Policy(EXAMPLE)
    from_dicts = Policy(
        [[{"op": o, "probability": p, "magnitude": m} for o, p, m in sub] for sub in EXAMPLE]
    )
    from_objects = Policy([SubPolicy([OpCall(*op) for op in sub]) for sub in EXAMPLE])
    assert from_tuples == from_dicts == from_objects
    assert len(from_tuples) == 3
    assert from_tuples.sub_policies[1].ops[1] == OpCall("Cutout", 1.0, 0.5)


def test_json_round_trip_keeps_everything() -> None:
    policy = Policy(EXAMPLE, metadata={"source": "test", "fold": 2})
    text = policy.to_json()
    data = json.loads(text)
    assert data["version"] == POLICY_VERSION
    assert data["sub_policies"][0][0] == {"op": "ShearX", "probability": 0.9, "magnitude": 0.3}
    again = Policy.from_json(text)
    assert again == policy
    assert again.metadata == {"source": "test", "fold": 2}
    assert Policy.from_dict(policy.to_dict()) == policy
    assert Policy.from_json(text.encode()) == policy


def test_float_values_survive_json_exactly() -> None:
    policy = Policy([[("Rotate", 0.1 + 0.2, 1 / 3)]])
    call = Policy.from_json(policy.to_json()).sub_policies[0].ops[0]
    assert (call.probability, call.magnitude) == (0.1 + 0.2, 1 / 3)


def test_schema_describes_the_format() -> None:
    schema = policy_json_schema()
    json.dumps(schema)  # serialisable, for the service
    op_schema = schema["properties"]["sub_policies"]["items"]["items"]
    assert set(op_schema["properties"]["op"]["enum"]) == set(OPS)
    assert schema["properties"]["version"]["const"] == POLICY_VERSION
    assert set(op_schema["required"]) == {"op", "probability", "magnitude"}


MALFORMED = [
    (
        [[("ShearX", 0.5, 0.5)], [("Invert", 0.2, 0), ("Color", 1.4, 0.2)]],
        "sub-policy 1, op 1: probability 1.4 is outside [0, 1]",
    ),
    ([[("ShearX", 0.5, 1.2)]], "sub-policy 0, op 0: magnitude 1.2 is outside [0, 1]"),
    ([[("ShearX", -0.1, 0.2)]], "sub-policy 0, op 0: probability -0.1 is outside [0, 1]"),
    ([[("ShearX", 0.5, float("nan"))]], "sub-policy 0, op 0: magnitude nan is outside [0, 1]"),
    ([[("ShearX", 0.5, 0.5)], [], [("Flip", 0.5, 0.5)]], "sub-policy 1: has no ops"),
    ([[("ShearX", 0.5, 0.5), ("Flip", 0.5, 0.5)]], "sub-policy 0, op 1: unknown op 'Flip'"),
    ([[("ShearX", "0.5", 0.5)]], "sub-policy 0, op 0: probability must be a number"),
    ([[("ShearX", True, 0.5)]], "sub-policy 0, op 0: probability must be a number"),
    ([[("ShearX", 0.5)]], "sub-policy 0, op 0: expected [op, probability, magnitude]"),
    (
        [[{"op": "ShearX", "prob": 0.5, "magnitude": 0.1}]],
        "sub-policy 0, op 0: unknown field 'prob'",
    ),
    ([[{"op": "ShearX", "magnitude": 0.1}]], "sub-policy 0, op 0: missing field 'probability'"),
    (
        [("ShearX", 0.5, 0.5)],
        "sub-policy 0, op 0: expected an object or [op, probability, magnitude]",
    ),
    ([], "policy: has no sub-policies"),
    ("ShearX", "policy: expected a list, got a string"),
]


@pytest.mark.parametrize(("bad", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_policies_name_the_place(bad: object, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy(bad)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


MALFORMED_JSON = [
    ('{"version": 1, "sub_policies": [[', "policy is not valid JSON"),
    ('{"sub_policies": []}', "policy: missing field 'version'"),
    ('{"version": 2, "sub_policies": []}', "policy: version 2 is not supported (expected 1)"),
    ('{"version": "1", "sub_policies": []}', "policy: version '1' is not supported"),
    ('{"version": 1}', "policy: missing field 'sub_policies'"),
    ('{"version": 1, "sub_policies": [], "extra": 0}', "policy: unknown field 'extra'"),
    ("[1, 2]", "policy: expected a JSON object, got a list"),
    (
        '{"version": 1, "sub_policies": [[{"op": "Rotate", "probability": 0.5, "magnitude": 2}]]}',
        "sub-policy 0, op 0: magnitude 2 is outside [0, 1]",
    ),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED_JSON, ids=[m for _, m in MALFORMED_JSON])
def test_malformed_json_is_rejected_clearly(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_json(text)
    assert str(info.value).startswith(message)


# -- applying ------------------------------------------------------------------------------


def test_deterministic_given_the_generator() -> None:
    policy = Policy(EXAMPLE)
    images = natural_images(32)
    assert torch.equal(policy(images, seeded(1)), policy(images, seeded(1)))
    assert not torch.equal(policy(images, seeded(1)), policy(images, seeded(2)))


def test_keeps_dtype_shape_and_input() -> None:
    images = natural_images(16)
    before = images.clone()
    out = Policy(EXAMPLE)(images, seeded(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(images, before)


def test_probability_zero_and_one() -> None:
    images = tiny(64)
    assert torch.equal(Policy([[("Invert", 0.0, 0.0)]])(images, seeded(0)), images)
    assert torch.equal(Policy([[("Invert", 1.0, 0.0)]])(images, seeded(0)), 255 - images)


def test_each_op_fires_with_its_probability_per_image() -> None:
    images = tiny(4000)
    out = Policy([[("Invert", 0.3, 0.0)]])(images, seeded(0))
    inverted = (out == 255 - images).flatten(1).all(1).float().mean().item()
    assert 0.27 < inverted < 0.33


def test_sub_policies_are_chosen_uniformly_per_image() -> None:
    images = tiny(3000)
    policy = Policy([[("Invert", 1.0, 0.0)], [("Posterize", 1.0, 0.0)], [("Identity", 1.0, 0.0)]])
    out = policy(images, seeded(0))
    inverted = (out == 255 - images).flatten(1).all(1)
    posterized = (out == images & 0xF0).flatten(1).all(1)
    for fraction in (inverted.float().mean(), posterized.float().mean()):
        assert 0.30 < fraction < 0.37
    assert not (inverted & posterized).any()


def test_ops_of_a_sub_policy_apply_in_order() -> None:
    images = tiny(8)
    first = Policy([[("Solarize", 1.0, 0.5), ("Posterize", 1.0, 0.0)]])(images, seeded(0))
    expected = apply_op(apply_op(images, "Solarize", 0.5), "Posterize", 0.0)
    assert torch.equal(first, expected)
    swapped = Policy([[("Posterize", 1.0, 0.0), ("Solarize", 1.0, 0.5)]])(images, seeded(0))
    assert not torch.equal(swapped, first)


def test_images_of_one_batch_get_different_draws() -> None:
    copies = natural_images(1).expand(64, -1, -1, -1).contiguous()
    out = Policy(EXAMPLE)(copies, seeded(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) > 8


def test_batch_size_does_not_change_the_op_semantics() -> None:
    """A policy of deterministic ops gives each image the same result in any batch."""
    policy = Policy(
        [[("AutoContrast", 1.0, 0.0), ("Equalize", 1.0, 0.0)], [("Sharpness", 1.0, 0.9)]]
    )
    images = natural_images(10)
    out = policy(images, seeded(3))
    singles = [
        apply_op(apply_op(images[i : i + 1], "AutoContrast", 0), "Equalize", 0) for i in range(10)
    ]
    sharpened = apply_op(images, "Sharpness", 0.9)
    for i in range(10):
        assert torch.equal(out[i], singles[i][0]) or torch.equal(out[i], sharpened[i])


def test_rejects_bad_batches() -> None:
    policy = Policy(EXAMPLE)
    with pytest.raises(ValueError, match="uint8"):
        policy(natural_images(2).float(), seeded(0))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        policy(natural_images(2)[0], seeded(0))
    with pytest.raises(TypeError):
        policy([1, 2, 3], seeded(0))  # type: ignore[arg-type]


def test_without_a_generator_uses_torch_global_seed() -> None:
    policy = Policy(EXAMPLE)
    images = natural_images(16)
    torch.manual_seed(5)
    first = policy(images)
    torch.manual_seed(5)
    assert torch.equal(policy(images), first)


def test_many_sub_policies() -> None:
    """The search builds policies with thousands of sub-policies (RandAugment as a policy)."""
    names = [n for n in OPS if n != "Identity"]
    subs = [[(a, 1.0, 0.5), (b, 1.0, 0.5)] for a in names for b in names]
    out = Policy(subs)(natural_images(64), seeded(0))
    assert out.shape == (64, 3, 32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu() -> None:
    policy = Policy([[(name, 0.7, 0.6), (name, 0.5, 0.3)] for name in OPS])
    images = natural_images(64)
    cpu = policy(images, seeded(9))
    assert torch.equal(policy(images.cuda(), seeded(9)).cpu(), cpu)


def test_same_seed_same_result_in_a_fresh_process() -> None:
    """No hidden state (table order, caches, global RNG): another interpreter agrees."""
    import hashlib
    import subprocess
    import sys

    code = (
        "import hashlib, torch\n"
        "from pipeline.augment import Policy, TrivialAugment\n"
        "from tests.augment.conftest import natural_images\n"
        f"policy = Policy({[[tuple(op) for op in sub] for sub in EXAMPLE]!r})\n"
        "images = natural_images(16)\n"
        "out = policy(images, torch.Generator().manual_seed(7))\n"
        "out = TrivialAugment()(out, torch.Generator().manual_seed(8))\n"
        "print(hashlib.sha256(out.numpy().tobytes()).hexdigest())\n"
    )
    from pipeline.augment import TrivialAugment

    here = Policy(EXAMPLE)(natural_images(16), seeded(7))
    here = TrivialAugment()(here, seeded(8))
    expected = hashlib.sha256(here.numpy().tobytes()).hexdigest()
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == expected
