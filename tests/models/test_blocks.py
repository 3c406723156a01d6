from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models.blocks import (
    ACTIVATIONS,
    BasicResidual,
    ClassifierHead,
    ConvBNAct,
    ConvGroup,
    ConvPool,
    DepthwiseSeparable,
    DiracConv,
    FrozenScaleBatchNorm,
    InvertedResidual,
    SqueezeExcite,
    WhiteningStem,
    make_divisible,
)

BLOCKS = {
    "conv": lambda cin, cout, s: ConvBNAct(cin, cout, 3, s),
    "conv_k5_gelu": lambda cin, cout, s: ConvBNAct(cin, cout, 5, s, activation="gelu"),
    "dsconv": lambda cin, cout, s: DepthwiseSeparable(cin, cout, 3, s),
    "mbconv2": lambda cin, cout, s: InvertedResidual(cin, cout, 3, s, expansion=6, activation="relu6"),
    "mbconv3_se_hswish": lambda cin, cout, s: InvertedResidual(cin, cout, 5, s, 4, "hswish", se=True),
    "mbconv_expansion1": lambda cin, cout, s: InvertedResidual(cin, cout, 7, s, expansion=1),
    "basic_residual": lambda cin, cout, s: BasicResidual(cin, cout, s),
    "basic_residual_k5_swish": lambda cin, cout, s: BasicResidual(cin, cout, s, 5, "swish"),
    "convpool": lambda cin, cout, s: ConvPool(cin, cout, 3, s),
    "convpool_k5_gelu": lambda cin, cout, s: ConvPool(cin, cout, 5, s, activation="gelu"),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize(("cin", "cout", "stride"), [(8, 8, 1), (8, 16, 2), (16, 8, 1)])
def test_every_block_maps_shapes(name: str, cin: int, cout: int, stride: int) -> None:
    block = BLOCKS[name](cin, cout, stride)
    out = block(torch.randn(2, cin, 9, 9))
    expected = (9 + stride - 1) // stride  # ceil: odd sizes are not truncated twice
    assert out.shape == (2, cout, expected, expected)
    assert torch.isfinite(out).all()


def test_inverted_residual_uses_the_skip_only_when_shapes_match() -> None:
    assert InvertedResidual(8, 8, stride=1).use_residual
    assert not InvertedResidual(8, 8, stride=2).use_residual
    assert not InvertedResidual(8, 16, stride=1).use_residual


def test_convpool_pools_after_a_full_resolution_conv() -> None:
    block = ConvPool(3, 8, 3, stride=2)
    kinds = [type(m) for m in block]
    assert kinds[:2] == [nn.Conv2d, nn.MaxPool2d] and block[0].stride == (1, 1)
    assert nn.MaxPool2d not in [type(m) for m in ConvPool(3, 8, 3, stride=1)]
    with pytest.raises(ValueError, match="stride 3"):
        ConvPool(3, 8, 3, stride=3)


def test_squeeze_excite_gates_channels_between_0_and_1() -> None:
    se = SqueezeExcite(16)
    x = torch.rand(2, 16, 4, 4) + 0.1
    out = se(x)
    ratio = out / x
    assert out.shape == x.shape
    assert (ratio >= 0).all() and (ratio <= 1).all()
    # one gate per (image, channel): constant over space
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_are_fresh_modules(name: str) -> None:
    a, b = ACTIVATIONS[name](), ACTIVATIONS[name]()
    assert isinstance(a, nn.Module) and a is not b


def test_classifier_head_with_and_without_feature_conv() -> None:
    x = torch.randn(3, 24, 4, 4)
    assert ClassifierHead(24, 10)(x).shape == (3, 10)
    assert ClassifierHead(24, 10, channels=64, dropout=0.2)(x).shape == (3, 10)


def test_make_divisible_rounds_to_multiples_without_shrinking_much() -> None:
    assert make_divisible(16) == 16
    assert make_divisible(20) == 24
    assert make_divisible(3) == 8
    for v in range(1, 200):
        assert make_divisible(v) % 8 == 0 and make_divisible(v) >= 0.9 * v


def test_classifier_head_airbench_style_max_pool_no_bias_scaled() -> None:
    x = torch.randn(3, 24, 4, 4)
    head = ClassifierHead(24, 10, pool="max", bias=False, scale=1 / 9)
    assert head.linear.bias is None
    expected = nn.functional.linear(x.amax((2, 3)), head.linear.weight) / 9
    assert torch.allclose(head(x), expected)
    with pytest.raises(ValueError, match="pool 'median'"):
        ClassifierHead(24, 10, pool="median")


def test_frozen_scale_batchnorm_is_airbenchs() -> None:
    bn = FrozenScaleBatchNorm(8)
    assert (bn.momentum, bn.eps) == (0.4, 1e-12)
    assert not bn.weight.requires_grad and bn.bias.requires_grad
    assert torch.equal(bn.weight, torch.ones(8))


@pytest.mark.parametrize(("cin", "cout"), [(4, 8), (8, 8), (8, 4)])
def test_dirac_conv_starts_as_the_identity_on_the_shared_channels(cin: int, cout: int) -> None:
    conv = DiracConv(cin, cout, kernel=5)
    x = torch.randn(2, cin, 7, 7)
    shared = min(cin, cout)
    with torch.no_grad():
        assert torch.equal(conv(x)[:, :shared], x[:, :shared])
    assert conv.bias is None and conv.padding == (2, 2)


@pytest.mark.parametrize(("size", "stride", "expected"), [(31, 2, 15), (9, 2, 4), (8, 2, 4), (9, 1, 9)])
def test_conv_group_pools_as_airbench_floor(size: int, stride: int, expected: int) -> None:
    group = ConvGroup(8, 16, 3, stride, activation="gelu")
    out = group(torch.randn(2, 8, size, size))
    assert out.shape == (2, 16, expected, expected)
    kinds = [type(m) for m in group]
    assert kinds.count(DiracConv) == 2 and kinds.count(FrozenScaleBatchNorm) == 2
    assert (nn.MaxPool2d in kinds) == (stride == 2) and kinds.count(nn.GELU) == 2
    with pytest.raises(ValueError, match="stride 3"):
        ConvGroup(8, 16, 3, stride=3)


def test_whitening_stem_is_frozen_unpadded_and_twice_the_patch_size() -> None:
    stem = WhiteningStem(3, kernel=2, activation="gelu")
    assert stem.out_channels == 24
    assert stem(torch.randn(2, 3, 32, 32)).shape == (2, 24, 31, 31)
    assert not stem.conv.weight.requires_grad and stem.conv.bias is not None and stem.conv.bias.requires_grad
