"""Policies from elsewhere: torchvision's AutoAugment tables, the Fast AutoAugment archive.

torchvision (``AutoAugmentPolicy`` CIFAR10 / SVHN / IMAGENET, 10 magnitude bins b = 0..9):

==============================  ==================================  =========================
torchvision op and bin value    our magnitude m (OPS ranges)        exact?
==============================  ==================================  =========================
ShearX/Y 0.3 b/9, random sign   b/9                                 yes
Rotate 30 b/9 deg, random sign  b/9                                 yes
Solarize threshold 255 (1-b/9)  threshold / 256                     yes
Posterize 8 - round(b / 2.25)   (bits - 4) / 4                      yes
AutoContrast/Equalize/Invert    0 (no magnitude)                    yes
Brightness/Color/Contrast/      factor 1 ± 0.9 b/9 with a random    yes, by splitting the
Sharpness                       sign -> m = (factor - 0.1) / 1.8    sign (see below)
TranslateX/Y (150/331) b/9 of   min(1, (150/331) (b/9) / 0.45)      no: top bin 0.4532 -> 0.45
the size, int() to pixels                                           of the size; torchvision
                                                                    truncates to whole pixels
                                                                    where we round like PIL
==============================  ==================================  =========================

Our enhance ops are unsigned (factor 0.1..1.9 as in Fast AutoAugment), while torchvision draws
the side of 1 at random.  With ``exact_signs=True`` (default) every torchvision sub-policy
becomes one sub-policy per sign combination (repeated so each original keeps the same weight),
which reproduces torchvision's distribution exactly: CIFAR10's 25 sub-policies become 100.
With ``exact_signs=False`` only the "+" side is kept (factor >= 1) and the policy keeps 25.

Fast AutoAugment archive (``[[[name, probability, level], ...], ...]``, levels in [0, 1]): FAA
maps level l to ``l * (high - low) + low``; for its symmetric ranges (Shear, Translate,
Rotate: low = -high) and its random sign flip this is |2l - 1| of our signed range, so
m = |2l - 1| there and m = l elsewhere — the same distribution of values, exactly.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from pipeline.augment.errors import PolicyError
from pipeline.augment.ops import OPS
from pipeline.augment.policy import OpCall, Policy, parse_json

TORCHVISION_BINS = 10
_TV_ENHANCE = {"Brightness", "Color", "Contrast", "Sharpness"}


def from_torchvision(policy: Any = "CIFAR10", *, exact_signs: bool = True) -> Policy:
    """Import torchvision's AutoAugment policy (an AutoAugmentPolicy or its name)."""
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    try:
        chosen = (
            policy
            if isinstance(policy, AutoAugmentPolicy)
            else AutoAugmentPolicy[str(policy).upper()]
        )
    except KeyError:
        known = ", ".join(p.name for p in AutoAugmentPolicy)
        raise PolicyError(f"unknown torchvision policy {policy!r} (known: {known})") from None
    # ``policies`` is the public attribute of the v1 transform holding torchvision's table.
    table = AutoAugment(chosen).policies
    variants = [
        [list(combo) for combo in itertools.product(*(_tv_op(op, exact_signs) for op in sub))]
        for sub in table
    ]
    copies = max(len(v) for v in variants)  # a power of two, so every length divides it
    sub_policies = [combo for v in variants for combo in v * (copies // len(v))]
    source = f"torchvision AutoAugmentPolicy.{chosen.name}"
    return Policy(sub_policies, metadata={"source": source, "exact_signs": exact_signs})


def _tv_op(op: tuple[str, float, int | None], exact_signs: bool) -> list[OpCall]:
    """The OpCall(s) equivalent to one torchvision (name, probability, bin) entry."""
    name, probability, level = op
    b = 0 if level is None else int(level)
    top = TORCHVISION_BINS - 1
    if name in _TV_ENHANCE:
        spec = OPS[name]
        offsets = [0.9 * b / top, -0.9 * b / top] if exact_signs and b else [0.9 * b / top]
        return [
            OpCall(name, probability, ((1.0 + d) - spec.low) / (spec.high - spec.low))
            for d in offsets
        ]
    if name in ("ShearX", "ShearY", "Rotate"):
        magnitude = b / top
    elif name in ("TranslateX", "TranslateY"):
        magnitude = min(1.0, (150.0 / 331.0) * (b / top) / OPS[name].high)
    elif name == "Posterize":
        bits = 8 - round(b / (top / 4))
        magnitude = (bits - OPS[name].low) / (OPS[name].high - OPS[name].low)
    elif name == "Solarize":
        magnitude = 255.0 * (1.0 - b / top) / OPS[name].high
    elif name in ("AutoContrast", "Equalize", "Invert"):
        magnitude = 0.0
    else:  # a new op in a future torchvision: fail loudly rather than guess its range
        raise PolicyError(f"torchvision op {name!r} has no mapping to our ops")
    return [OpCall(name, probability, magnitude)]


def from_faa_archive(data: Any) -> Policy:
    """Import a Fast AutoAugment archive policy: ``[[[name, probability, level], ...], ...]``
    (nested lists, or JSON text / a JSON file holding them); levels in [0, 1]."""
    if isinstance(data, str | bytes | Path):
        data = _read_json(data)
    if isinstance(data, str | bytes | Mapping) or not isinstance(data, Sequence):
        raise PolicyError("FAA archive: expected a list of sub-policies")
    sub_policies = []
    for i, sub in enumerate(data):
        if isinstance(sub, str | bytes | Mapping) or not isinstance(sub, Sequence):
            raise PolicyError(f"sub-policy {i}: expected a list of [name, probability, level]")
        ops = []
        for j, entry in enumerate(sub):
            if isinstance(entry, str | bytes) or not isinstance(entry, Sequence) or len(entry) != 3:
                raise PolicyError(f"sub-policy {i}, op {j}: expected [name, probability, level]")
            name, probability, level = entry
            if name not in OPS:
                raise PolicyError(
                    f"sub-policy {i}, op {j}: unknown op {name!r} (known: {', '.join(OPS)})"
                )
            if isinstance(level, bool) or not isinstance(level, Real) or not 0 <= float(level) <= 1:
                raise PolicyError(f"sub-policy {i}, op {j}: level {level!r} is outside [0, 1]")
            magnitude = abs(2.0 * float(level) - 1.0) if OPS[name].signed else float(level)
            ops.append((name, probability, magnitude))  # Policy validates the probability
        sub_policies.append(ops)
    return Policy(sub_policies, metadata={"source": "Fast AutoAugment archive"})


def load_policy(source: Any) -> Policy:
    """A Policy from whatever a user has.

    - a Policy (returned as is), or a dict in our JSON format (``{"version": 1, ...}``);
    - a list: the Fast AutoAugment archive format;
    - ``torchvision.transforms.AutoAugmentPolicy`` or the string ``"torchvision:CIFAR10"``;
    - JSON text, or a path (str / Path) to a JSON file, holding either of the first two.
    Anything malformed raises PolicyError with the place and field at fault.
    """
    from torchvision.transforms import AutoAugmentPolicy

    if isinstance(source, Policy):
        return source
    if isinstance(source, AutoAugmentPolicy):
        return from_torchvision(source)
    if isinstance(source, str) and source.lower().startswith("torchvision:"):
        return from_torchvision(source.split(":", 1)[1])
    if isinstance(source, str | bytes | Path):
        source = _read_json(source)
    if isinstance(source, Mapping):
        return Policy.from_dict(source)
    if isinstance(source, Sequence) and not isinstance(source, str | bytes):
        return from_faa_archive(source)
    raise PolicyError(f"cannot read a policy from {type(source).__name__}")


def _read_json(source: str | bytes | Path) -> Any:
    """JSON text as is; anything else is a path to a JSON file."""
    if isinstance(source, bytes):
        return parse_json(source)
    if isinstance(source, str) and source.lstrip()[:1] in ("{", "["):
        return parse_json(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"cannot read policy file {str(path)!r}: {error.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise PolicyError(f"policy file {str(path)!r} is not valid JSON: {error}") from None
