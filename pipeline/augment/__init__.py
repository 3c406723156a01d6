"""Batched augmentation: Fast AutoAugment ops on uint8 tensors, policies, importers.

from pipeline.augment import Policy, OPS, RandAugment, TrivialAugment, load_policy
policy = load_policy("policy.json")           # or "torchvision:CIFAR10", an FAA archive
augmented = policy(images_uint8_nchw, torch.Generator().manual_seed(0))
"""

from pipeline.augment.adapter import ImageTransform
from pipeline.augment.batch import BatchTransform
from pipeline.augment.errors import PolicyError
from pipeline.augment.grid import policy_grid
from pipeline.augment.importers import from_faa_archive, from_torchvision, load_policy
from pipeline.augment.ops import (
    OPS,
    RANDAUGMENT_OPS,
    TRIVIALAUGMENT_OPS,
    OpSpec,
    OpTable,
    apply_op,
)
from pipeline.augment.policy import POLICY_VERSION, OpCall, Policy, SubPolicy, policy_json_schema
from pipeline.augment.random_augment import RandAugment, TrivialAugment

__all__ = [
    "OPS",
    "POLICY_VERSION",
    "RANDAUGMENT_OPS",
    "TRIVIALAUGMENT_OPS",
    "BatchTransform",
    "ImageTransform",
    "OpCall",
    "OpSpec",
    "OpTable",
    "Policy",
    "PolicyError",
    "RandAugment",
    "SubPolicy",
    "TrivialAugment",
    "apply_op",
    "from_faa_archive",
    "from_torchvision",
    "load_policy",
    "policy_grid",
    "policy_json_schema",
]
