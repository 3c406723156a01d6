"""Model cost: parameters, multiply-accumulates (MACs) and activations, measured, not hand-counted."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all by default, including frozen ones such as airbench's whitening)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model_or_cfg: nn.Module | dict[str, Any] | str, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """MACs of one forward pass at ``input_size``, counted by torch's FlopCounterMode.

    MACs = FLOPs / 2. Only the ops the counter knows (convs, matmuls) count; BN,
    activations and pooling are memory-bound and left out, as is usual for MACs.
    """
    from pipeline.models import build_model  # late import: registry imports this module

    model = build_model(model_or_cfg) if isinstance(model_or_cfg, (dict, str)) else model_or_cfg
    counter = FlopCounterMode(display=False)
    _probe(model, input_size, counter)
    return counter.get_total_flops() // 2


PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Flatten)  # return their input (or a view): nothing moved


def count_activations(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Elements the model's leaf modules output in one forward pass at ``input_size``: what its
    memory-bound layers (BatchNorm, activations, pooling, depthwise convolutions) read and write.

    A CPU step's time follows this where MACs understate it: a network of narrow, full-resolution
    or depthwise layers moves many activations per MAC (the model search's ``untimed_bound``)."""
    total = 0

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [m for m in model.modules() if next(m.children(), None) is None and not isinstance(m, PASS_THROUGH)]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        _probe(model, input_size, contextlib.nullcontext())
    finally:
        for h in handles:
            h.remove()
    return total


def _probe(model: nn.Module, input_size: tuple[int, ...], within: contextlib.AbstractContextManager[Any]) -> None:
    """One forward pass of zeros at ``input_size`` inside ``within`` (a counter), on the model's
    device and dtype, without gradients, in eval mode (BN: no running-stat update from the dummy
    input); the model's mode is restored."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), within:
            model(torch.zeros(input_size, device=device, dtype=dtype))
    finally:
        model.train(was_training)
