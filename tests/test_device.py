from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import pipeline.device as device_module
import pipeline.train
from pipeline.device import (
    KEEP_FREED_MEMORY_ENV,
    autocast,
    model_device,
    parameter_device,
    pick_device,
)


@pytest.mark.parametrize("cuda", [True, False])
def test_pick_device_prefers_an_explicit_choice_then_cuda_then_the_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: bool
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert pick_device() == torch.device("cuda" if cuda else "cpu")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("meta")) == torch.device("meta")


@pytest.mark.parametrize("cuda", [True, False])
def test_model_device_keeps_an_accelerator_model_where_it_is_and_moves_a_cpu_one_to_the_best(
    monkeypatch: pytest.MonkeyPatch, cuda: bool
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cpu_model = nn.Linear(2, 2)
    assert model_device(cpu_model) == torch.device("cuda" if cuda else "cpu")
    assert model_device(cpu_model, "cpu") == torch.device("cpu")
    assert model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")  # not the CPU: stays
    assert model_device(nn.ReLU()) == pick_device()  # no parameters


def test_parameter_device_is_where_the_weights_are() -> None:
    assert parameter_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert parameter_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert parameter_device(nn.ReLU()) == torch.device("cpu")


def test_autocast_without_a_dtype_is_plain_fp32() -> None:
    x = torch.ones(2, 2)
    with autocast(torch.device("cpu"), None):
        assert (x @ x).dtype == torch.float32
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16


def test_the_trainer_re_exports_the_precision_rule() -> None:
    assert pipeline.train.autocast_dtype is device_module.autocast_dtype
    assert pipeline.train.cpu_has_fast_bf16 is device_module.cpu_has_fast_bf16


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_precision_uses_bf16_on_cpu_only_where_it_is_native(
    monkeypatch: pytest.MonkeyPatch, native_bf16: bool
) -> None:
    # Without AVX-512 BF16 / AMX, bf16 convolutions fall back to slow reference kernels.
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: native_bf16)
    cpu = torch.device("cpu")
    assert device_module.autocast_dtype("auto", cpu) == (torch.bfloat16 if native_bf16 else None)
    assert device_module.autocast_dtype("fp32", cpu) is None


def test_explicit_bf16_on_a_cpu_without_native_bf16_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(device_module, "_warned_slow_bf16", False)
    cpu = torch.device("cpu")
    with pytest.warns(RuntimeWarning, match="without native bf16"):
        assert device_module.autocast_dtype("bf16", cpu) == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device_module.autocast_dtype("bf16", cpu) == torch.bfloat16


@pytest.mark.parametrize(("avx512_bf16", "amx", "native"), [(False, False, False), (True, False, True), (False, True, True)])
def test_on_x86_native_bf16_means_the_bf16_extension_or_amx_not_onednns_emulation(
    monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, native: bool
) -> None:
    # oneDNN says bf16 is supported on any AVX-512 CPU (it emulates it there, ~3.5x slower than fp32).
    monkeypatch.setattr(device_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert device_module.cpu_has_fast_bf16() is native


def test_off_x86_native_bf16_is_onednns_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module.platform, "machine", lambda: "aarch64")
    for answer in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda a=answer: a, raising=False)
        assert device_module.cpu_has_fast_bf16() is answer


def test_missing_device_names_what_the_machine_has() -> None:
    from pipeline.device import missing_device

    assert missing_device("cpu") is None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert missing_device(f"cuda:{count}") is not None  # one past the last device never exists
    if count:
        assert missing_device("cuda") is None and missing_device(f"cuda:{count - 1}") is None
    else:
        assert missing_device("cuda") == "no CUDA device"


# A 64 MiB tensor allocated and freed again and again, as a training step's activations are: over
# glibc's 32 MiB ceiling, where malloc maps (and on free unmaps) each allocation by default. The
# first rounds grow the heap (small allocations land in the freed block); the last three count.
_FAULTS = """
import resource, torch
from pipeline.device import keep_freed_memory
kept = keep_freed_memory()
for _ in range(9):
    x = torch.ones(64 * 2**20, dtype=torch.uint8); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    x = torch.ones(64 * 2**20, dtype=torch.uint8); del x
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


def _faults(keep: str) -> tuple[bool, int]:
    env = {**os.environ, KEEP_FREED_MEMORY_ENV: keep}
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, check=True, capture_output=True, text=True)
    kept, faults = out.stdout.split()
    return kept == "True", int(faults)


def _huge_pages_always() -> bool:
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="keep_freed_memory sets glibc's malloc; this is not Linux with glibc")
@pytest.mark.skipif(_huge_pages_always(), reason="transparent huge pages are 'always' here: a fresh 64 MiB "
                    "mapping faults ~32 times, so the default's faults cannot be told from the kept memory's")
def test_kept_memory_is_reused_without_page_faults_and_the_environment_turns_it_off() -> None:
    pages = 64 * 2**20 // resource.getpagesize()
    kept, faults = _faults("1")
    assert kept and faults < pages // 8, (kept, faults, pages)  # served from the heap the first tensor left
    kept, faults = _faults("0")
    assert not kept and faults > pages // 2, (kept, faults, pages)  # glibc's default: a fresh mapping


def test_keep_freed_memory_is_off_outside_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    device_module.keep_freed_memory.cache_clear()
    try:
        assert device_module.keep_freed_memory() is False
    finally:
        device_module.keep_freed_memory.cache_clear()
