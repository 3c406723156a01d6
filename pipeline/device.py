"""Where a computation runs and in what precision: the rules, defined once.

Every stage, benchmark and the trainer ask here instead of testing ``torch.cuda.is_available()``
themselves, so a new rule (another accelerator, a precision fallback) is one edit.

- ``pick_device``: an explicit choice, else CUDA when there is one, else the CPU.
- ``missing_device``: why an explicitly named accelerator is not on this machine (None when it is).
- ``model_device``: for training, an explicit choice, else where the model already is when that
  is an accelerator (a caller that moved it there meant it), else ``pick_device()``.
- ``parameter_device``: where a model's parameters are; ``evaluate`` measures a model there
  and never moves it to another device behind its caller's back.
- ``autocast_dtype`` / ``autocast``: the mixed precision a ``precision`` setting means on a
  device (bf16 on a CPU only where it runs natively).
- ``keep_freed_memory``: glibc's allocator keeps the memory a training step frees for the next
  step instead of handing it back to the kernel (whose fresh pages fault on first touch).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import warnings
from typing import Any

import torch
from torch import nn

__all__ = [
    "autocast",
    "autocast_dtype",
    "cpu_has_fast_bf16",
    "keep_freed_memory",
    "missing_device",
    "model_device",
    "parameter_device",
    "pick_device",
]


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """``preferred`` when given, else CUDA when available, else the CPU."""
    if preferred is not None:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def missing_device(name: str) -> str | None:
    """None when ``name`` (cpu, cuda, cuda:N, mps) exists here, else what this machine has instead."""
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            return f"{count} CUDA device(s) (cuda:0..cuda:{count - 1})" if count else "no CUDA device"
    elif device.type == "mps" and not torch.backends.mps.is_available():
        return "no MPS device"
    return None


def parameter_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def model_device(model: nn.Module, preferred: str | torch.device | None = None) -> torch.device:
    """Where to train ``model``: ``preferred``, else its own device if that is not the CPU,
    else ``pick_device()``. A freshly built model sits on the CPU, so by default it trains on
    the GPU when there is one."""
    if preferred is not None:
        return torch.device(preferred)
    here = parameter_device(model)
    return here if here.type != "cpu" else pick_device()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 natively: on x86, AVX-512 BF16 or AMX (asked of the CPU itself).

    Without it PyTorch falls back to slower kernels: on an AVX2-only CPU an airbench step under
    bf16 autocast runs ~16x slower than in fp32, and on an AVX-512 CPU without the BF16
    extension ~3.5x slower (BENCHMARKS.md). oneDNN's own check (``_is_mkldnn_bf16_supported``)
    is not the test: it also says yes for plain AVX-512, where it only emulates bf16.
    """
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "x86", "i686"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # e.g. Arm's BF16 extension
    except (AttributeError, RuntimeError):  # a build without these checks or without oneDNN
        return False


_warned_slow_bf16 = False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``train``/``evaluate`` use for ``precision`` on ``device``, or None for
    plain fp32."""
    global _warned_slow_bf16
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cpu" and not _warned_slow_bf16 and not cpu_has_fast_bf16():
            _warned_slow_bf16 = True
            warnings.warn(
                "precision=bf16 on a CPU without native bf16 (no AVX-512 BF16 / AMX): PyTorch "
                "falls back to slow reference kernels; precision=auto picks fp32 here",
                RuntimeWarning,
                stacklevel=3,
            )
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``; a no-op for ``dtype=None`` (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


KEEP_FREED_MEMORY_ENV = "AUTOAUG_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse the memory a training step frees instead of returning it to the
    kernel; True when that is now in force for this process.

    By default glibc serves every allocation over 32 MiB with its own ``mmap`` and unmaps it on
    free. A CPU training step allocates and frees its activations and gradients anew each time
    (at batch 512 the first block of an airbench network holds 63 MiB tensors), so every step
    touched fresh pages and paid a page fault per 4 KiB: a zeroed 63 MiB bf16 tensor took 17 ms
    against 1 ms in reused memory, and an ``airbench_small`` step took 1.12x as long
    (BENCHMARKS.md, "Freed memory kept for the next step"). Here mmap is turned off for the heap
    (``M_MMAP_MAX`` 0) and the heap's top is trimmed only above 2 GiB (``M_TRIM_THRESHOLD``), so a
    process keeps about its peak memory until it exits.

    Called by the trainer before it allocates (``pipeline.train``), once per process. A no-op
    (False) off Linux, with a C library without glibc's ``mallopt`` settings (musl accepts and
    ignores them), or when the environment sets ``AUTOAUG_KEEP_FREED_MEMORY=0``. Allocations made
    before the call keep their mmap; only later ones change.
    """
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1").strip() == "0" or platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1)
