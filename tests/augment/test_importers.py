"""Importers (torchvision AutoAugment, Fast AutoAugment archive) and load_policy."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision.transforms import AutoAugment, AutoAugmentPolicy

from pipeline.augment import (
    OPS,
    Policy,
    PolicyError,
    from_faa_archive,
    from_torchvision,
    load_policy,
)

SIZE = 32
# torchvision's own table of magnitudes for 10 bins at 32x32 (private, so only used here).
TV_SPACE = AutoAugment()._augmentation_space(10, (SIZE, SIZE))
ENHANCE = {"Brightness", "Color", "Contrast", "Sharpness"}


def our_value(op: str, magnitude: float) -> float:
    return float(OPS[op].values(torch.tensor([magnitude], dtype=torch.float64))[0])


def check_equivalent(tv_op: tuple[str, float, int | None], ours: list) -> None:
    """Our OpCall(s) for one torchvision (name, probability, bin) do what torchvision does."""
    name, probability, level = tv_op
    assert {c.op for c in ours} == {name}
    assert all(c.probability == probability for c in ours)
    if level is None:
        assert all(c.magnitude == 0.0 for c in ours)
        return
    tv = float(TV_SPACE[name][0][level])
    values = [our_value(name, c.magnitude) for c in ours]
    if name in ENHANCE:  # torchvision: factor 1 +- tv, either side with probability 1/2
        expected = sorted({1.0 + tv, 1.0 - tv})
        assert sorted(set(round(v, 6) for v in values)) == pytest.approx(expected, abs=1e-6)
    elif name in ("ShearX", "ShearY", "Rotate"):
        assert values == pytest.approx([tv] * len(values), abs=1e-6)
    elif name in ("TranslateX", "TranslateY"):
        # The documented deviation: the top bin is 0.4532 of the size in torchvision, 0.45 here.
        assert all(abs(v * SIZE - tv) <= (150 / 331 - 0.45) * SIZE + 1e-4 for v in values)
    elif name == "Posterize":
        assert all(int(v) == int(tv) for v in values)
    elif name == "Solarize":
        assert values == pytest.approx([tv] * len(values), abs=1e-3)
    else:
        pytest.fail(f"no check for {name}")


@pytest.mark.parametrize("which", list(AutoAugmentPolicy), ids=lambda p: p.name)
def test_torchvision_policies_map_op_by_op(which: AutoAugmentPolicy) -> None:
    table = AutoAugment(which).policies
    policy = from_torchvision(which, exact_signs=True)
    copies = len(policy) // len(table)
    assert len(policy) == copies * len(table)
    # Sub-policies come in blocks of ``copies``, one block per torchvision sub-policy.
    for index, tv_sub in enumerate(table):
        block = policy.sub_policies[index * copies : (index + 1) * copies]
        for slot, tv_op in enumerate(tv_sub):
            calls = [sub.ops[slot] for sub in block]
            check_equivalent(tv_op, calls)
            if tv_op[0] in ENHANCE and tv_op[2]:  # both sides, equally often
                counts = Counter(c.magnitude for c in calls)
                assert len(counts) == 2 and len(set(counts.values())) == 1


def test_cifar10_splits_signs_into_100_sub_policies_or_keeps_25() -> None:
    assert len(from_torchvision("CIFAR10")) == 100
    plus_only = from_torchvision("cifar10", exact_signs=False)
    assert len(plus_only) == 25
    assert plus_only.metadata["source"] == "torchvision AutoAugmentPolicy.CIFAR10"
    assert all(
        c.magnitude >= 0.5 for sub in plus_only.sub_policies for c in sub.ops if c.op in ENHANCE
    )


def test_unknown_torchvision_policy() -> None:
    with pytest.raises(PolicyError, match="unknown torchvision policy 'cifar100'"):
        from_torchvision("cifar100")


FAA: list[list[list[Any]]] = [
    [["Contrast", 0.83, 0.5], ["TranslateX", 0.42, 0.39]],
    [["Rotate", 0.5, 0.0], ["Posterize", 0.3, 1.0]],
    [["ShearY", 0.1, 0.75], ["Cutout", 0.9, 0.25]],
]


def test_faa_archive_levels_map_to_the_same_values() -> None:
    policy = from_faa_archive(FAA)
    faa_ranges = {"ShearY": 0.3, "TranslateX": 0.45, "Rotate": 30.0}  # FAA: [-r, r]
    for sub, faa_sub in zip(policy.sub_policies, FAA, strict=True):
        for call, (name, probability, level) in zip(sub.ops, faa_sub, strict=True):
            assert (call.op, call.probability) == (name, probability)
            if name in faa_ranges:  # FAA: v = level * 2r - r, then a random sign flip
                faa_value = float(level) * 2 * faa_ranges[name] - faa_ranges[name]
                assert our_value(name, call.magnitude) == pytest.approx(abs(faa_value))
            else:
                assert call.magnitude == level
    assert policy.metadata["source"] == "Fast AutoAugment archive"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([[["Flip", 0.5, 0.5]]], "sub-policy 0, op 0: unknown op 'Flip'"),
        (
            [[["Rotate", 0.5, 0.5]], [["Rotate", 0.5, 1.5]]],
            "sub-policy 1, op 0: level 1.5 is outside [0, 1]",
        ),
        ([[["Rotate", 1.5, 0.5]]], "sub-policy 0, op 0: probability 1.5 is outside [0, 1]"),
        ([[["Rotate", 0.5]]], "sub-policy 0, op 0: expected [name, probability, level]"),
        ([["Rotate", 0.5, 0.5]], "sub-policy 0, op 0: expected [name, probability, level]"),
        ([5], "sub-policy 0: expected a list of [name, probability, level]"),
        ({"a": 1}, "FAA archive: expected a list of sub-policies"),
    ],
)
def test_faa_archive_errors(bad: object, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        from_faa_archive(bad)
    assert str(info.value).startswith(message)


def test_load_policy_accepts_every_form(tmp_path: Path) -> None:
    policy = Policy([[("Rotate", 0.5, 0.3)], [("Invert", 0.1, 0.0)]])
    path = tmp_path / "policy.json"
    path.write_text(policy.to_json())
    faa_path = tmp_path / "faa.json"
    faa_path.write_text(json.dumps(FAA))
    assert load_policy(policy) is policy
    assert load_policy(policy.to_dict()) == policy
    assert load_policy(policy.to_json()) == policy
    assert load_policy(path) == policy
    assert load_policy(str(path)) == policy
    assert load_policy(FAA) == from_faa_archive(FAA)
    assert load_policy(faa_path) == from_faa_archive(FAA)
    assert load_policy("torchvision:svhn") == from_torchvision(AutoAugmentPolicy.SVHN)
    assert load_policy(AutoAugmentPolicy.IMAGENET) == from_torchvision("IMAGENET")


def test_load_policy_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "missing.json")
    with pytest.raises(PolicyError, match="is not valid JSON"):
        load_policy(broken)
    with pytest.raises(PolicyError, match="cannot read a policy from int"):
        load_policy(3)
    with pytest.raises(PolicyError, match="version 7 is not supported"):
        load_policy('{"version": 7, "sub_policies": []}')


def test_imported_policies_run() -> None:
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    for which in AutoAugmentPolicy:
        out = from_torchvision(which)(images, torch.Generator().manual_seed(0))
        assert out.shape == images.shape
