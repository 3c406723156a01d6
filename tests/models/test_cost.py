from __future__ import annotations

from torch import nn

from pipeline.models import (
    MOBILENETV2_CONFIG,
    build_model,
    count_activations,
    count_macs,
    count_params,
    sample_config,
)


def _tiny() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    )


def test_count_macs_matches_a_hand_calculation() -> None:
    # conv: 8 out x 3 in x 3x3 kernel x 8x8 positions; linear: 512 in x 10 out
    assert count_macs(_tiny(), input_size=(1, 3, 8, 8)) == 8 * 3 * 9 * 64 + 512 * 10
    # MACs scale with the batch
    assert count_macs(_tiny(), input_size=(4, 3, 8, 8)) == 4 * (8 * 3 * 9 * 64 + 512 * 10)


def test_count_params_matches_a_hand_calculation() -> None:
    model = _tiny()
    assert count_params(model) == 8 * 3 * 9 + 2 * 8 + 512 * 10 + 10
    model[0].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 2 * 8 + 512 * 10 + 10


def test_count_macs_accepts_configs_and_names_and_keeps_the_mode() -> None:
    cfg = sample_config(1)
    assert count_macs(cfg) == count_macs(build_model(cfg)) > 0
    assert count_macs("mobilenetv2") == count_macs(MOBILENETV2_CONFIG)
    model = build_model("resnet20").train()
    count_macs(model)
    assert model.training


def test_count_activations_sums_what_the_layers_write_and_keeps_the_mode() -> None:
    # conv, BN and ReLU each write 8 x 8 x 8; Flatten is a view (not counted); the linear writes 10
    model = _tiny().train()
    assert count_activations(model, input_size=(1, 3, 8, 8)) == 3 * 512 + 10
    assert model.training
    with_identity = nn.Sequential(*_tiny()[:3], nn.Identity(), nn.Dropout(0.2), *_tiny()[3:])
    assert count_activations(with_identity, input_size=(1, 3, 8, 8)) == 3 * 512 + 10
    # a depthwise network moves far more activations per MAC than airbench's wide convolutions
    ratio = {name: count_macs(name) / count_activations(build_model(name)) for name in ("mobilenetv2", "airbench94")}
    assert ratio["mobilenetv2"] * 5 < ratio["airbench94"]
