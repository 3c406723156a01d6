"""The space holds airbench94 exactly (issue 32, item 1), and configurations stored before the
airbench options existed still build the networks they built."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from pipeline.models import (
    SPACE_POINTS,
    AirbenchNet,
    SpaceNet,
    build_model,
    count_macs,
    count_params,
    normalise_config,
    sample_config,
    validate_config,
)
from pipeline.models.blocks import WhiteningStem
from pipeline.models.space import ADDED_FIELDS


def _stripped(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` as it was stored before the fields of ``ADDED_FIELDS`` existed."""
    old = copy.deepcopy(cfg)
    for part in ("stem", "head"):
        for field in ADDED_FIELDS[part]:
            del old[part][field]
    for block in old["blocks"]:
        for field in ADDED_FIELDS["block"]:
            del block[field]
    return old


def _correlated_images(n: int = 64, size: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, 1, size, size, generator=gen)
    return torch.cat([base, base + 0.3 * torch.randn(n, 2, size, size, generator=gen)], 1)


def _exercised_port() -> AirbenchNet:
    """The port with every tensor away from its initial value: whitened from data, random BN
    shifts and a few training-mode passes (running statistics moved)."""
    port = build_model("airbench94", seed=0)
    assert isinstance(port, AirbenchNet)
    gen = torch.Generator().manual_seed(1)
    port.init_from_data(torch.randn(32, 3, 32, 32, generator=gen))
    with torch.no_grad():
        for module in port.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        assert port.whiten.bias is not None
        port.whiten.bias.copy_(0.1 * torch.randn(port.whiten.bias.shape, generator=gen))
        port.train()
        for _ in range(2):
            port(torch.randn(8, 3, 32, 32, generator=gen))
    return port.eval()


def test_the_airbench94_point_is_the_port() -> None:
    ours, port = _space_net(SPACE_POINTS["airbench94"]), _exercised_port()
    assert count_params(ours) == count_params(port) == 1_972_792
    assert count_params(ours, trainable_only=True) == count_params(port, trainable_only=True)
    assert count_macs(ours) == count_macs(port)
    theirs, mine = port.state_dict(), ours.state_dict()
    assert [v.shape for v in theirs.values()] == [v.shape for v in mine.values()]
    ours.load_state_dict(dict(zip(mine, theirs.values(), strict=True)))  # the port's tensors, in order
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours.eval()
        assert torch.equal(ours(x), port(x))
        ours.train(), port.train()
        assert torch.equal(ours(x), port(x))  # batch statistics, and the same running-stat update
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), port.state_dict().values(), strict=True))
    # the same parameters are frozen (whitening weight, BN scales)
    assert [p.requires_grad for p in ours.parameters()] == [p.requires_grad for p in port.parameters()]


def _space_net(cfg: dict[str, Any] | str, seed: int | None = None) -> SpaceNet:
    net = build_model(cfg, seed=seed)
    assert isinstance(net, SpaceNet)
    return net


def _whitening_conv(net: SpaceNet) -> nn.Conv2d:
    assert isinstance(net.stem, WhiteningStem)
    return net.stem.conv


def test_the_airbench94_point_initialises_as_the_port() -> None:
    ours, port = _space_net(SPACE_POINTS["airbench94"], seed=5), build_model("airbench94", seed=5)
    assert isinstance(port, AirbenchNet)
    # the same layers in the same order draw the same initial weights
    same = zip(ours.state_dict().values(), port.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in same)
    images = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert ours.init_from_data is not None
    ours.init_from_data(images)
    port.init_from_data(images)
    assert torch.equal(_whitening_conv(ours).weight, port.whiten.weight)


def test_a_whitening_stem_draws_on_the_data() -> None:
    cfg = copy.deepcopy(SPACE_POINTS["airbench_small"])
    cfg["blocks"][2]["type"] = "conv"  # any network with the stem, not only airbench's layout
    net = _space_net(cfg)
    stem = _whitening_conv(net)
    before = stem.weight.clone()
    images = _correlated_images()
    assert net.init_from_data is not None
    net.init_from_data(images, eps=1e-8)
    assert not torch.equal(stem.weight, before)
    out = nn.functional.conv2d(images, stem.weight)[:, :12]  # the + half of the filters
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    assert torch.allclose(flat.T @ flat / len(flat), torch.eye(12), atol=0.05)  # whitened
    assert not stem.weight.requires_grad and stem.bias is not None and stem.bias.requires_grad
    other = _space_net(cfg)
    assert other.init_from_data is not None
    other.init_from_data(images.flip(1))
    assert not torch.equal(_whitening_conv(other).weight, stem.weight)  # other data, other filters
    # a plain stem has nothing to learn from data: the trainer finds no init_from_data to call
    assert _space_net(SPACE_POINTS["airbench_like"]).init_from_data is None


@pytest.mark.parametrize("name", ["airbench_like", "resnet20", "mobilenetv2"])
def test_configs_stored_before_the_new_fields_build_the_same_network(name: str) -> None:
    full = SPACE_POINTS[name]
    old = _stripped(full)
    kept = copy.deepcopy(old)
    completed = validate_config(old)
    assert completed == full and old == kept  # completed as a copy; what was passed stays as it was
    assert validate_config(full) is full and normalise_config(full) is full
    assert completed["stem"]["type"] == "conv" and completed["head"]["type"] == "avgpool"
    a, b = build_model(old, seed=0), build_model(full, seed=0)
    expected = {"airbench_like": 640_010, "resnet20": 272_474, "mobilenetv2": 2_236_682}[name]
    assert count_params(a) == count_params(b) == expected
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))
    assert isinstance(a, SpaceNet) and a.init_from_data is None


def test_an_old_sampled_config_keeps_its_head_and_stem() -> None:
    cfg = sample_config(0)
    cfg["stem"]["type"], cfg["head"]["type"] = "conv", "avgpool"
    old = _stripped(cfg)
    model = _space_net(old)
    assert model.config == cfg
    assert isinstance(model.head.linear, nn.Linear) and model.head.linear.bias is not None
    assert model.head.pool == "avg" and model.head.scale == 1.0


def test_the_small_airbench_point_is_under_a_million_parameters() -> None:
    cfg = SPACE_POINTS["airbench_small"]
    model = build_model(cfg)
    assert count_params(model) == 828_600 < 1_000_000
    assert count_macs(cfg) == 59_496_096 < 60_000_000  # within model_search.max_macs' default too
    assert [b["channels"] for b in cfg["blocks"] if b["type"] == "convgroup"] == [64, 128, 192]
    assert cfg["stem"]["type"] == "whiten" and cfg["head"]["type"] == "maxpool"


def test_airbench_widths_beside_the_port() -> None:
    # the port's half-width variant is the space's airbench layout at 32 / 128 / 128 as well
    cfg = copy.deepcopy(SPACE_POINTS["airbench94"])
    for index, width in zip((2, 3, 5), (32, 128, 128), strict=True):
        cfg["blocks"][index]["channels"] = width
    assert count_params(build_model(cfg)) == count_params(build_model("airbench_half"))


@pytest.mark.parametrize("data_init", [True, False])
def test_the_trainer_whitens_a_space_network_with_the_whitening_stem(data_init: bool) -> None:
    from pipeline.config import TrainConfig
    from pipeline.data import ImageSet
    from pipeline.train import train

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(8)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen)
    data = ImageSet(images, labels, ["a", "b"], [str(i) for i in range(16)])
    net = _space_net(SPACE_POINTS["airbench_small"], seed=0)
    before = _whitening_conv(net).weight.clone()
    train(net, data, TrainConfig(epochs=1, batch_size=8, data_init=data_init, eval_every=0), device="cpu",
          progress=False)
    assert torch.equal(_whitening_conv(net).weight, before) != data_init  # set from data, then frozen
