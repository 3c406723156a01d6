"""Policy = sub-policies of (op, probability, magnitude); a batch transform; JSON.

Applying a policy to a batch picks one sub-policy per image (uniformly) and fires each of its
ops with the op's probability, per image; magnitudes are in [0, 1] and mapped through the op
table (``OPS``).  JSON (version 1)::

    {"version": 1,
     "sub_policies": [[{"op": "ShearX", "probability": 0.9, "magnitude": 0.3},
                       {"op": "Invert", "probability": 0.2, "magnitude": 0.0}], ...],
     "metadata": {...}}            # optional, free-form (provenance), kept on round-trip
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from pipeline.augment.batch import check_batch, default_generator
from pipeline.augment.engine import NO_OP, run_plan
from pipeline.augment.errors import PolicyError
from pipeline.augment.ops import OPS

POLICY_VERSION = 1

OP_FIELDS = ("op", "probability", "magnitude")


@dataclass(frozen=True)
class OpCall:
    """One entry of a sub-policy: apply ``op`` with ``probability`` at ``magnitude`` in [0, 1]."""

    op: str
    probability: float
    magnitude: float

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "probability": self.probability, "magnitude": self.magnitude}


OpLike = OpCall | Mapping[str, Any] | Sequence[Any]


@dataclass(frozen=True, init=False)
class SubPolicy:
    """Ops applied in order, each firing independently with its probability."""

    ops: tuple[OpCall, ...]

    def __init__(self, ops: Iterable[OpLike]) -> None:
        object.__setattr__(self, "ops", tuple(_op_call(op, None, i) for i, op in enumerate(ops)))

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[OpCall]:
        return iter(self.ops)


SubPolicyLike = SubPolicy | Iterable[OpLike]


@dataclass(frozen=True, init=False)
class Policy:
    """A validated policy; calling it augments a uint8 batch (a batch transform).

    ``Policy([[("ShearX", 0.9, 0.3), ("Invert", 0.2, 0.0)], ...])`` or with SubPolicy/OpCall
    objects.  Raises PolicyError naming the sub-policy and op of the first problem.
    """

    sub_policies: tuple[SubPolicy, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __init__(
        self, sub_policies: Iterable[SubPolicyLike], metadata: Mapping[str, Any] | None = None
    ) -> None:
        subs = tuple(_sub_policy(sp, i) for i, sp in enumerate(_as_list(sub_policies, "policy")))
        if not subs:
            raise PolicyError("policy: has no sub-policies")
        object.__setattr__(self, "sub_policies", subs)
        object.__setattr__(self, "metadata", dict(metadata or {}))

    def __len__(self) -> int:
        return len(self.sub_policies)

    # -- applying -------------------------------------------------------------------------

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment uint8 [N, 3, H, W] (any device); same generator state -> same result."""
        check_batch(images)
        generator = default_generator(generator)
        op_table, probability, magnitude = self._tables
        n = images.shape[0]
        choice = torch.randint(len(self.sub_policies), (n,), generator=generator)
        fires = torch.rand(n, op_table.shape[1], generator=generator) < probability[choice]
        op_index = torch.where(fires, op_table[choice], NO_OP)
        return run_plan(images, op_index, magnitude[choice], list(OPS.values()), generator)

    @cached_property
    def _tables(self) -> tuple[Tensor, Tensor, Tensor]:
        """[n_sub, max_ops] op index / probability / magnitude, padded with NO_OP."""
        names = list(OPS)
        width = max(len(sp) for sp in self.sub_policies)
        op_table = torch.full((len(self), width), NO_OP, dtype=torch.int64)
        probability = torch.zeros(len(self), width, dtype=torch.float64)
        magnitude = torch.zeros(len(self), width, dtype=torch.float64)
        for i, sp in enumerate(self.sub_policies):
            for j, call in enumerate(sp.ops):
                op_table[i, j] = names.index(call.op)
                probability[i, j] = call.probability
                magnitude[i, j] = call.magnitude
        return op_table, probability, magnitude

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": POLICY_VERSION,
            "sub_policies": [[call.to_dict() for call in sp.ops] for sp in self.sub_policies],
        }
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> Policy:
        if not isinstance(data, Mapping):
            raise PolicyError(f"policy: expected a JSON object, got {_kind(data)}")
        unknown = sorted(set(data) - {"version", "sub_policies", "metadata"})
        if unknown:
            raise PolicyError(f"policy: unknown field {unknown[0]!r}")
        if "version" not in data:
            raise PolicyError("policy: missing field 'version'")
        version = data["version"]
        if version != POLICY_VERSION or isinstance(version, bool):
            raise PolicyError(
                f"policy: version {version!r} is not supported (expected {POLICY_VERSION})"
            )
        if "sub_policies" not in data:
            raise PolicyError("policy: missing field 'sub_policies'")
        metadata = data.get("metadata", {})
        if not isinstance(metadata, Mapping):
            raise PolicyError(f"policy: metadata must be an object, got {_kind(metadata)}")
        return cls(data["sub_policies"], metadata=metadata)

    @classmethod
    def from_json(cls, text: str | bytes) -> Policy:
        return cls.from_dict(parse_json(text))


def parse_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PolicyError(f"policy is not valid JSON: {error}") from None


# -- validation ------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _as_list(value: Any, where: str) -> list[Any]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise PolicyError(f"{where}: expected a list, got {_kind(value)}")
    return list(value)


def _sub_policy(value: SubPolicyLike, index: int) -> SubPolicy:
    """A SubPolicy from objects, dicts or triples; errors name sub-policy ``index``."""
    if isinstance(value, SubPolicy):
        sub = value  # validated when it was built
    else:
        where = f"sub-policy {index}"
        sub = SubPolicy(_op_call(op, index, j) for j, op in enumerate(_as_list(value, where)))
    if not sub.ops:
        raise PolicyError(f"sub-policy {index}: has no ops")
    return sub


def _op_call(value: OpLike, sub_index: int | None, op_index: int) -> OpCall:
    where = f"op {op_index}" if sub_index is None else f"sub-policy {sub_index}, op {op_index}"
    if isinstance(value, OpCall):
        call = value
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - set(OP_FIELDS))
        if unknown:
            raise PolicyError(f"{where}: unknown field {unknown[0]!r} (expected {list(OP_FIELDS)})")
        missing = [name for name in OP_FIELDS if name not in value]
        if missing:
            raise PolicyError(f"{where}: missing field {missing[0]!r}")
        call = OpCall(value["op"], value["probability"], value["magnitude"])
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if len(value) != 3:
            raise PolicyError(
                f"{where}: expected [op, probability, magnitude], got {list(value)!r}"
            )
        call = OpCall(value[0], value[1], value[2])
    else:
        raise PolicyError(f"{where}: expected an object or [op, probability, magnitude]")
    _check_call(call, where)
    return OpCall(call.op, float(call.probability), float(call.magnitude))


def _check_call(call: OpCall, where: str) -> None:
    if not isinstance(call.op, str):
        raise PolicyError(f"{where}: op must be a string, got {_kind(call.op)}")
    if call.op not in OPS:
        raise PolicyError(f"{where}: unknown op {call.op!r} (known: {', '.join(OPS)})")
    for name in ("probability", "magnitude"):
        value = getattr(call, name)
        if isinstance(value, bool) or not isinstance(value, Real):
            raise PolicyError(f"{where}: {name} must be a number, got {_kind(value)}")
        if not (math.isfinite(float(value)) and 0.0 <= float(value) <= 1.0):
            raise PolicyError(f"{where}: {name} {value!r} is outside [0, 1]")


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the policy file, e.g. for the HTTP service's docs."""
    unit = {"type": "number", "minimum": 0, "maximum": 1}
    op = {
        "type": "object",
        "properties": {"op": {"enum": list(OPS)}, "probability": unit, "magnitude": unit},
        "required": list(OP_FIELDS),
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "autoaug augmentation policy",
        "type": "object",
        "properties": {
            "version": {"const": POLICY_VERSION},
            "sub_policies": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "array", "minItems": 1, "items": op},
            },
            "metadata": {"type": "object"},
        },
        "required": ["version", "sub_policies"],
        "additionalProperties": False,
    }
