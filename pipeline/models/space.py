"""The model search space as data: a stem, seven blocks and a head.

``SPACE`` lists, per field, the allowed values. A configuration is a plain JSON
dict holding one value per field::

    {"stem": {"type": "conv", "channels": 32, "activation": "relu6"},
     "blocks": [{"type": "mbconv2", "repeats": 1, "channels": 16, "kernel": 3,
                 "stride": 1, "expansion": 1, "activation": "relu6", "se": False}, ...],  # 7 blocks
     "head": {"type": "avgpool", "channels": 1280, "dropout": 0.0}}

Every block always carries every field, so the Optuna search space is static (what
TPE / NSGA-II sample best); fields a part does not use are ignored (``conv``, ``convpool``,
``convgroup`` and ``res`` ignore expansion and se, ``mbconv2`` ignores se, ``identity``
ignores everything; the ``whiten`` stem ignores channels).

Stem types: ``conv`` (3x3 conv-BN-act at ``channels``) and ``whiten`` (airbench's: a frozen
2x2 conv without padding, 24 channels, set from data by the network's ``init_from_data``,
then the activation).

Block types: ``conv`` (conv-BN-act, strided), ``convpool`` (airbench's conv, 2x2 max-pool,
BN, act), ``convgroup`` (airbench's conv group: Dirac-initialised conv, 2x2 max-pool,
frozen-scale BN, act, Dirac conv, frozen-scale BN, act), ``res`` (a ResNet basic block),
``dsconv`` (MobileNetV1), ``mbconv2`` / ``mbconv3`` (MobileNetV2 / V3 inverted residuals),
``identity``. The dense ones (conv, convpool, convgroup, res) train 2-4x faster per MAC on a
CPU than the depthwise ones (BENCHMARKS.md: training cost).

Head types: ``avgpool`` (optional 1x1 conv to ``channels``, global average pool, dropout,
linear with bias) and ``maxpool`` (airbench's: the same with a global max-pool, a linear
without bias and the logits scaled by 1/9).

Activations: relu, relu6, hswish, swish, gelu.

Fields added after configurations were stored (MLflow champions, chosen.json files) are in
``ADDED_FIELDS`` with the value that builds what those configurations built before;
``validate_config`` (and so ``SpaceNet``) fills them in when missing (``normalise_config``).

Valid by construction: stride 2 is only offered at three fixed positions (blocks 2, 3
and 5, as in MobileNetV2 for CIFAR), so a 32x32 input is downsampled at most 8x and
never goes below 3x3 (4x4 after a ``conv`` stem; the ``whiten`` stem gives 31x31 and
``convgroup`` pools as airbench does, 31 -> 15 -> 7 -> 3), whatever is sampled;
``identity`` skips a block entirely, which only lowers the downsampling.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pipeline.models.blocks import (
    BasicResidual,
    ClassifierHead,
    ConvBNAct,
    ConvGroup,
    ConvPool,
    DepthwiseSeparable,
    InvertedResidual,
    WhiteningStem,
)

NUM_BLOCKS = 7
STEM_TYPES = ["conv", "whiten"]
BLOCK_TYPES = ["conv", "convpool", "convgroup", "res", "dsconv", "mbconv2", "mbconv3", "identity"]
HEAD_TYPES = ["avgpool", "maxpool"]
_ACTS = ["relu", "relu6", "hswish", "swish", "gelu"]
# Widths up to 256 at the three downsampling positions (2, 3, 5): airbench94 is 64 / 256 / 256.
_BLOCK_CHANNELS = [
    [16, 24, 32],
    [16, 24, 32, 48],
    [24, 32, 48, 64],
    [48, 64, 96, 128, 192, 256],
    [64, 96, 128, 160],
    [128, 160, 192, 256],
    [192, 256, 320],
]
_WHITEN_KERNEL = 2  # airbench's: 2 * 3 * 2 * 2 = 24 whitened channels
_HEAD_SCALE = 1 / 9  # airbench's output scale: small early logits at its high learning rate
_DOWNSAMPLING_BLOCKS = (2, 3, 5)


def _block_space(index: int) -> dict[str, list[Any]]:
    return {
        "type": list(BLOCK_TYPES),
        "repeats": [1, 2, 3, 4],
        "channels": list(_BLOCK_CHANNELS[index]),
        "kernel": [3, 5, 7],
        "stride": [1, 2] if index in _DOWNSAMPLING_BLOCKS else [1],
        "expansion": [1, 3, 4, 6],
        "activation": list(_ACTS),
        "se": [False, True],
    }


SPACE: dict[str, Any] = {
    "stem": {"type": list(STEM_TYPES), "channels": [16, 24, 32, 48, 64], "activation": list(_ACTS)},
    "blocks": [_block_space(i) for i in range(NUM_BLOCKS)],
    # head channels 0 = no 1x1 feature conv before pooling.
    "head": {"type": list(HEAD_TYPES), "channels": [0, 512, 1024, 1280], "dropout": [0.0, 0.1, 0.2, 0.3]},
}
"""Allowed values per field; JSON-serialisable (hash it to name an Optuna study)."""

ADDED_FIELDS: dict[str, dict[str, Any]] = {
    "stem": {"type": "conv"},
    "block": {},
    "head": {"type": "avgpool"},
}
"""Fields added to ``SPACE`` after configurations were stored, per part (``block``: each of the
seven), with the value that builds the network such a configuration built before the field
existed. ``normalise_config`` fills them in."""


class ModelConfigError(ValueError):
    """A model configuration outside ``SPACE``; the message names the part and field."""


def normalise_config(cfg: Any) -> Any:
    """``cfg`` with every field of ``ADDED_FIELDS`` it lacks filled in with its "as before" value:
    a configuration stored before a field existed builds the same network as then. Returns
    ``cfg`` itself when nothing is missing, else a completed copy (``cfg`` is never changed);
    anything not shaped like a configuration comes back as it is, for ``validate_config``."""
    if not isinstance(cfg, dict):
        return cfg
    completed = copy.deepcopy(cfg)
    sections = [(completed.get(part), ADDED_FIELDS[part]) for part in ("stem", "head")]
    if isinstance(completed.get("blocks"), list):
        sections += [(block, ADDED_FIELDS["block"]) for block in completed["blocks"]]
    filled = False
    for section, added in sections:
        if isinstance(section, dict):
            for field, value in added.items():
                if field not in section:
                    section[field] = value
                    filled = True
    return completed if filled else cfg


def _check_section(where: str, section: Any, allowed: dict[str, list[Any]]) -> None:
    if not isinstance(section, dict):
        raise ModelConfigError(f"{where}: expected a mapping, got {type(section).__name__}")
    missing = sorted(set(allowed) - set(section))
    unknown = sorted(set(section) - set(allowed))
    if missing:
        raise ModelConfigError(f"{where}: missing field(s) {missing}")
    if unknown:
        raise ModelConfigError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    for field, choices in allowed.items():
        value = section[field]
        # bool is an int subclass: keep True from passing as 1 (and 1 as True).
        if not any(value == c and type(value) is type(c) for c in choices):
            raise ModelConfigError(f"{where}: {field} {value!r} not in {choices}")


def validate_config(cfg: Any) -> dict[str, Any]:
    """Check ``cfg`` against ``SPACE``; return it or raise ``ModelConfigError``.

    A configuration that lacks fields added since it was stored (``ADDED_FIELDS``) comes back
    as a completed copy (``normalise_config``; ``cfg`` itself is not changed); a complete one
    comes back as it is. Messages name the part and field, e.g.
    ``"block 4: kernel 4 not in [3, 5, 7]"``.
    """
    cfg = normalise_config(cfg)
    if not isinstance(cfg, dict):
        raise ModelConfigError(f"config: expected a mapping, got {type(cfg).__name__}")
    expected = {"stem", "blocks", "head"}
    if set(cfg) != expected:
        raise ModelConfigError(f"config: expected keys {sorted(expected)}, got {sorted(cfg)}")
    _check_section("stem", cfg["stem"], SPACE["stem"])
    blocks = cfg["blocks"]
    if not isinstance(blocks, list) or len(blocks) != NUM_BLOCKS:
        count = len(blocks) if isinstance(blocks, list) else type(blocks).__name__
        raise ModelConfigError(f"blocks: expected a list of {NUM_BLOCKS} blocks, got {count}")
    for index, (block, allowed) in enumerate(zip(blocks, SPACE["blocks"], strict=True)):
        _check_section(f"block {index}", block, allowed)
    _check_section("head", cfg["head"], SPACE["head"])
    return cfg


def _make_block(block: dict[str, Any], in_channels: int, out_channels: int, stride: int) -> nn.Module:
    kind, kernel, act = block["type"], block["kernel"], block["activation"]
    if kind == "conv":
        return ConvBNAct(in_channels, out_channels, kernel, stride, activation=act)
    if kind == "convpool":
        return ConvPool(in_channels, out_channels, kernel, stride, activation=act)
    if kind == "convgroup":
        return ConvGroup(in_channels, out_channels, kernel, stride, activation=act)
    if kind == "res":
        return BasicResidual(in_channels, out_channels, stride, kernel, activation=act)
    if kind == "dsconv":
        return DepthwiseSeparable(in_channels, out_channels, kernel, stride, activation=act)
    if kind == "mbconv2":
        return InvertedResidual(in_channels, out_channels, kernel, stride, block["expansion"], act, se=False)
    if kind == "mbconv3":
        return InvertedResidual(in_channels, out_channels, kernel, stride, block["expansion"], act, se=block["se"])
    raise ModelConfigError(f"unknown block type {kind!r}")  # unreachable after validation


class SpaceNet(nn.Module):
    """A network built from a search-space configuration (validated and completed here).

    ``init_from_data(images)``: with the ``whiten`` stem, sets the stem from normalised images
    (what the trainer calls when ``data_init``, as for ``AirbenchNet``); None with a plain stem,
    which has nothing to learn from data.
    """

    init_from_data: Callable[..., None] | None = None

    def __init__(self, cfg: dict[str, Any], num_classes: int = 10) -> None:
        super().__init__()
        cfg = validate_config(cfg)
        self.config = copy.deepcopy(cfg)
        stem = cfg["stem"]
        self.stem: nn.Module
        if stem["type"] == "whiten":
            whiten = WhiteningStem(3, _WHITEN_KERNEL, activation=stem["activation"])
            self.stem, channels = whiten, whiten.out_channels
            self.init_from_data = whiten.init_from_data
        else:
            channels = stem["channels"]
            self.stem = ConvBNAct(3, channels, 3, activation=stem["activation"])
        stages: list[nn.Module] = []
        for block in cfg["blocks"]:
            if block["type"] == "identity":
                continue  # pass-through: the block is skipped, channels and size unchanged
            for repeat in range(block["repeats"]):
                stride = block["stride"] if repeat == 0 else 1
                stages.append(_make_block(block, channels, block["channels"], stride))
                channels = block["channels"]
        self.blocks = nn.Sequential(*stages)
        head = cfg["head"]
        airbench = head["type"] == "maxpool"
        self.head = ClassifierHead(channels, num_classes, head["channels"], head["dropout"], activation="relu",
                                   pool="max" if airbench else "avg", bias=not airbench,
                                   scale=_HEAD_SCALE if airbench else 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _choice(generator: torch.Generator, choices: list[Any]) -> Any:
    return choices[int(torch.randint(len(choices), (1,), generator=generator))]


def sample_config(generator: torch.Generator | int = 0) -> dict[str, Any]:
    """A uniformly random configuration from ``SPACE`` (a seed or a torch.Generator)."""
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    return {
        "stem": {k: _choice(generator, v) for k, v in SPACE["stem"].items()},
        "blocks": [{k: _choice(generator, v) for k, v in b.items()} for b in SPACE["blocks"]],
        "head": {k: _choice(generator, v) for k, v in SPACE["head"].items()},
    }


def suggest_config(trial: Any) -> dict[str, Any]:
    """Sample a configuration from an ``optuna.Trial``; parameter names are ``block3.kernel`` etc."""

    def section(prefix: str, allowed: dict[str, list[Any]]) -> dict[str, Any]:
        return {k: trial.suggest_categorical(f"{prefix}.{k}", v) for k, v in allowed.items()}

    return {
        "stem": section("stem", SPACE["stem"]),
        "blocks": [section(f"block{i}", b) for i, b in enumerate(SPACE["blocks"])],
        "head": section("head", SPACE["head"]),
    }


NARROW_SUFFIX = "-narrow"  # a narrowed seed point is named <seed>-narrow<k>


def narrowed_name(name: str, times: int) -> str:
    """The name of seed point ``name``'s design (itself possibly narrowed) narrowed ``times`` times."""
    return f"{seed_design(name)}{NARROW_SUFFIX}{times}"


def seed_design(name: str) -> str:
    """The seed point a (possibly narrowed) seed point's name comes from: ``airbench_small-narrow1``
    -> ``airbench_small``."""
    return name.split(NARROW_SUFFIX)[0]


def narrowed(cfg: dict[str, Any], factor: float) -> dict[str, Any] | None:
    """The same design at ``factor`` (< 1) of its widths: every block's channels (and a conv
    stem's) times ``factor``, rounded down to the widths the space allows at its place, at
    least the narrowest. The whitening stem's width is the whitening's, and a head conv's stays.
    None when no width moves (the design is as narrow as the space holds it). A step's cost
    grows about with the square of the widths, so sqrt(limit / cost) is the factor that brings
    a network near a budget."""
    if not 0 < factor < 1:
        raise ValueError(f"narrowed: factor = {factor} must be in (0, 1)")

    def narrower(width: int, allowed: list[int]) -> int:
        fitting = [w for w in allowed if w <= width * factor]
        return max(fitting) if fitting else min(allowed)

    original = validate_config(copy.deepcopy(cfg))
    out = copy.deepcopy(original)
    if out["stem"]["type"] == "conv":
        out["stem"]["channels"] = narrower(out["stem"]["channels"], SPACE["stem"]["channels"])
    for block, allowed in zip(out["blocks"], SPACE["blocks"], strict=True):
        if block["type"] != "identity":
            block["channels"] = narrower(block["channels"], allowed["channels"])
    return out if out != original else None


def _mobilenetv2_config() -> dict[str, Any]:
    # (expansion, channels, repeats, stride) of MobileNetV2, strides adapted to 32x32 inputs.
    table = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    blocks = [
        {"type": "mbconv2", "repeats": n, "channels": c, "kernel": 3, "stride": s,
         "expansion": t, "activation": "relu6", "se": False}
        for t, c, n, s in table
    ]
    return {"stem": {"type": "conv", "channels": 32, "activation": "relu6"}, "blocks": blocks,
            "head": {"type": "avgpool", "channels": 1280, "dropout": 0.0}}


MOBILENETV2_CONFIG: dict[str, Any] = validate_config(_mobilenetv2_config())
"""MobileNetV2 for 32x32 inputs expressed in the search space (about 2.2 M parameters)."""


def _point(stem: int, blocks: dict[int, tuple[str, int, int, int]], *, stem_type: str = "conv",
           activation: str = "relu", head: str = "avgpool") -> dict[str, Any]:
    """A configuration from ``{block index: (type, channels, repeats, stride)}``; the other
    blocks are ``identity``. Kernel 3, one ``activation`` throughout, no head conv, no dropout."""
    layers = []
    for i in range(NUM_BLOCKS):
        kind, channels, repeats, stride = blocks.get(i, ("identity", SPACE["blocks"][i]["channels"][0], 1, 1))
        layers.append({"type": kind, "repeats": repeats, "channels": channels, "kernel": 3, "stride": stride,
                       "expansion": 1, "activation": activation, "se": False})
    return validate_config({"stem": {"type": stem_type, "channels": stem, "activation": activation},
                            "blocks": layers, "head": {"type": head, "channels": 0, "dropout": 0.0}})


def _airbench(widths: tuple[int, int, int]) -> dict[str, Any]:
    """airbench94's network at ``widths``: whitening stem, three conv groups at the downsampling
    blocks (2, 3, 5), GELU, the max-pool head; the stem's 24 is what the whitening gives."""
    groups = {i: ("convgroup", width, 1, 2) for i, width in zip((2, 3, 5), widths, strict=True)}
    return _point(2 * 3 * _WHITEN_KERNEL**2, groups, stem_type="whiten", activation="gelu", head="maxpool")


SPACE_POINTS: dict[str, dict[str, Any]] = {
    # airbench's layout: conv at full resolution, max-pool, BN, act, at widths 48 / 96 / 192
    # (640,010 parameters, 46.9 M MACs; 87.4 % after 15 epochs at the retrain recipe, BENCHMARKS.md)
    "airbench_like": _point(32, {2: ("convpool", 48, 1, 2), 3: ("convpool", 96, 1, 2), 4: ("conv", 96, 1, 1),
                                 5: ("convpool", 192, 1, 2), 6: ("conv", 192, 1, 1)}),
    # ResNet-20 itself (272,474 parameters; the same layers as the reference network)
    "resnet20": _point(16, {0: ("res", 16, 3, 1), 2: ("res", 32, 3, 2), 3: ("res", 64, 3, 2)}),
    "mobilenetv2": MOBILENETV2_CONFIG,
    # airbench94 itself, the same network as build_model("airbench94") (1,972,792 parameters,
    # 118.1 M MACs): over the default budgets of 1 M parameters and 60 M MACs
    "airbench94": _airbench((64, 256, 256)),
    # airbench94 at widths 64 / 128 / 192: 828,600 parameters, 59.5 M MACs (within the defaults)
    "airbench_small": _airbench((64, 128, 192)),
}
"""Hand-designed networks that are points of the space, by name: ``model_search.seed_points``
are trained first in a cold search, so the sampler starts from known-good designs."""
