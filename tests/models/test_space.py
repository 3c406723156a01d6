from __future__ import annotations

import copy
import json
from typing import Any

import optuna
import pytest
import torch

from pipeline.models import (
    MOBILENETV2_CONFIG,
    SPACE,
    SPACE_POINTS,
    ModelConfigError,
    SpaceNet,
    build_model,
    count_params,
    narrowed,
    sample_config,
    suggest_config,
    validate_config,
)
from pipeline.models.space import BLOCK_TYPES, NUM_BLOCKS


def _config(**block4: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(MOBILENETV2_CONFIG)
    cfg["blocks"][4].update(block4)
    return cfg


def _part(part: str, **fields: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(MOBILENETV2_CONFIG)
    cfg[part].update(fields)
    return cfg


def test_space_is_json_and_has_seven_blocks_with_every_type() -> None:
    assert json.loads(json.dumps(SPACE)) == SPACE
    assert len(SPACE["blocks"]) == NUM_BLOCKS == 7
    for block in SPACE["blocks"]:
        assert set(block["type"]) == set(BLOCK_TYPES)
        assert set(block) == {"type", "repeats", "channels", "kernel", "stride", "expansion", "activation", "se"}
    assert {"conv", "convpool", "convgroup", "res", "dsconv", "mbconv2", "mbconv3", "identity"} <= set(BLOCK_TYPES)
    assert set(SPACE["stem"]) == {"type", "channels", "activation"}
    assert set(SPACE["head"]) == {"type", "channels", "dropout"}
    assert "gelu" in SPACE["stem"]["activation"] and all("gelu" in b["activation"] for b in SPACE["blocks"])
    # airbench94's widths are offered at the three downsampling positions
    assert [max(SPACE["blocks"][i]["channels"]) for i in (2, 3, 5)] == [64, 256, 256]


def test_downsampling_is_bounded_by_the_table() -> None:
    stride2_blocks = [i for i, b in enumerate(SPACE["blocks"]) if 2 in b["stride"]]
    assert len(stride2_blocks) <= 3  # 32x32 never goes below 4x4


@pytest.mark.parametrize("seed", range(12))
def test_random_configs_build_and_classify(seed: int) -> None:
    cfg = sample_config(seed)
    assert validate_config(cfg) is cfg
    assert json.loads(json.dumps(cfg)) == cfg
    model = build_model(cfg).eval()
    assert isinstance(model, SpaceNet)
    pooled_sizes: list[int] = []
    model.head.register_forward_pre_hook(lambda _m, args: pooled_sizes.append(args[0].shape[-1]))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    # 4x4 after a conv stem; the whitening stem (31x31) and airbench's flooring pools: 3x3
    assert pooled_sizes[0] >= (4 if cfg["stem"]["type"] == "conv" else 3)
    assert callable(model.init_from_data) == (cfg["stem"]["type"] == "whiten")


def test_sample_config_is_seeded() -> None:
    assert sample_config(3) == sample_config(torch.Generator().manual_seed(3))
    assert sample_config(3) != sample_config(4)


def test_suggest_config_from_an_optuna_trial() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    cfg = suggest_config(trial)
    validate_config(cfg)
    assert trial.params["block3.kernel"] == cfg["blocks"][3]["kernel"]
    assert len(trial.params) == 3 + 8 * NUM_BLOCKS + 3
    # the names of the fields that predate the new ones are unchanged; the new ones add names
    before = {"stem.channels", "stem.activation", "head.channels", "head.dropout"} | {
        f"block{i}.{k}" for i in range(NUM_BLOCKS)
        for k in ("type", "repeats", "channels", "kernel", "stride", "expansion", "activation", "se")}
    assert set(trial.params) == before | {"stem.type", "head.type"}
    assert build_model(cfg, num_classes=4)(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_identity_blocks_are_skipped() -> None:
    cfg = sample_config(0)
    for block in cfg["blocks"]:
        block["type"] = "identity"
    model = build_model(cfg)
    assert isinstance(model, SpaceNet)
    assert len(model.blocks) == 0
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (_config(kernel=4), "block 4: kernel 4 not in [3, 5, 7]"),
        (_config(type="resnet"), "block 4: type 'resnet' not in"),
        (_config(stride=2, channels=7), "block 4: channels 7 not in"),
        (_config(se=1), "block 4: se 1 not in [False, True]"),
        (_config(repeats=True), "block 4: repeats True not in"),
        (_config(width=3), "block 4: unknown field(s) ['width']"),
        (_config(type="airbench"), "block 4: type 'airbench' not in"),
        (_config(activation="GELU"), "block 4: activation 'GELU' not in"),
        (_config(stride=2, channels=512), "block 4: channels 512 not in"),
        (_part("stem", type="whitening"), "stem: type 'whitening' not in ['conv', 'whiten']"),
        (_part("stem", type=None), "stem: type None not in ['conv', 'whiten']"),
        (_part("head", type="max"), "head: type 'max' not in ['avgpool', 'maxpool']"),
        (_part("head", pool="max"), "head: unknown field(s) ['pool']"),
    ],
)
def test_invalid_block_fields_name_block_and_field(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)
    with pytest.raises(ValueError):  # ModelConfigError is a ValueError
        build_model(cfg)


def test_other_invalid_configs() -> None:
    cfg = copy.deepcopy(MOBILENETV2_CONFIG)
    cfg["blocks"][0]["stride"] = 2
    with pytest.raises(ModelConfigError, match=r"block 0: stride 2 not in \[1\]"):
        validate_config(cfg)
    cfg = copy.deepcopy(MOBILENETV2_CONFIG)
    del cfg["blocks"][6]["kernel"]
    with pytest.raises(ModelConfigError, match=r"block 6: missing field\(s\) \['kernel'\]"):
        validate_config(cfg)
    cfg = copy.deepcopy(MOBILENETV2_CONFIG)
    cfg["blocks"] = cfg["blocks"][:6]
    with pytest.raises(ModelConfigError, match="expected a list of 7 blocks, got 6"):
        validate_config(cfg)
    cfg = copy.deepcopy(MOBILENETV2_CONFIG)
    cfg["head"]["dropout"] = 0.5
    with pytest.raises(ModelConfigError, match="head: dropout 0.5 not in"):
        validate_config(cfg)
    with pytest.raises(ModelConfigError, match="expected a mapping"):
        validate_config([1, 2])


def test_a_seed_fixes_the_initial_weights_in_any_process_and_leaves_the_global_rng() -> None:
    from pipeline.models import MOBILENETV2_CONFIG, build_model

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(MOBILENETV2_CONFIG, seed=7).state_dict()
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    b = build_model(MOBILENETV2_CONFIG, seed=7).state_dict()
    c = build_model(MOBILENETV2_CONFIG, seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resnet20_is_a_point_of_the_space() -> None:
    """The residual block type expresses ResNet-20 exactly: the same layers, the same parameters
    (the point the model search is seeded with, ``SPACE_POINTS["resnet20"]``)."""
    cfg = validate_config(SPACE_POINTS["resnet20"])
    ours, theirs = build_model(cfg), build_model("resnet20")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == 272_474
    def leaves(model: torch.nn.Module) -> list[str]:
        skip = (torch.nn.Identity, torch.nn.Dropout)  # the head's: no layer, no parameter
        return [type(m).__name__ for m in model.modules() if not list(m.children()) and not isinstance(m, skip)]

    assert leaves(ours) == leaves(theirs)


def test_narrowed_keeps_the_design_at_the_space_widths_below_the_factor() -> None:
    small = SPACE_POINTS["airbench_small"]  # whitening stem, conv groups at 64 / 128 / 192
    narrow = narrowed(small, 0.6)
    assert narrow is not None
    widths = [b["channels"] for b in narrow["blocks"] if b["type"] != "identity"]
    assert widths == [32, 64, 128]  # 38.4 -> 32, 76.8 -> 64, 115.2 -> under 128, the narrowest allowed
    assert narrow["stem"] == small["stem"]  # the whitening's width is the whitening's
    for kept, was in zip(narrow["blocks"], small["blocks"], strict=True):  # only the widths move
        assert {k: v for k, v in kept.items() if k != "channels"} == {k: v for k, v in was.items() if k != "channels"}
    assert count_params(build_model(narrow)) < count_params(build_model(small)) / 2
    like = narrowed(SPACE_POINTS["airbench_like"], 0.75)  # a conv stem narrows too: 32 -> 24
    assert like is not None and like["stem"]["channels"] == 24
    narrowest = narrowed(narrow, 0.1)  # every width at the narrowest the space allows
    assert narrowest is not None and narrowed(narrowest, 0.1) is None
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="factor"):
            narrowed(small, bad)
