"""Shared bits of the benchmarks: timing, machine description, the RESULT line."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch

from pipeline.device import cpu_has_fast_bf16


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", required=True,
                   help="CIFAR-10 tarball, image-folder tree, python archive or ingested store (data/raw)")
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    return p


def read_out(path: Path | None, plan_format: int, bench: str) -> dict[str, Any]:
    """A resumable bench's ``--out`` as far as it got: {"plan": ..., and the results so far} (empty
    when there is none yet); exits with one line when the file holds no plan of ``bench`` at ``plan_format``."""
    if path is None or not path.is_file():
        return {}
    try:
        out = dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"bench/{bench}: {path} is not a JSON object ({exc}); give another --out") from None
    plan = out.get("plan")
    if not isinstance(plan, dict) or plan.get("format") != plan_format or plan.get("bench") != bench:
        raise SystemExit(f"bench/{bench}: {path} holds no bench/{bench} plan of format {plan_format}; "
                         "give another --out")
    return out


def write_out(path: Path | None, out: dict[str, Any]) -> None:
    """Keep a resumable bench's plan and results in ``path`` (nothing without one), whole: written
    to a sibling file and renamed, so an interrupted write leaves the last good one."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(out, indent=1))
    part.replace(path)


def storage_url(storage: str) -> str:
    """An Optuna storage given as a path (an SQLite file) or an SQLAlchemy URL, as a URL."""
    return storage if "://" in storage else f"sqlite:///{storage}"


def model_search_study(storage: str, name: str | None = None) -> optuna.Study:
    """A finished ``search_model`` study: ``name``, else the last one in ``storage`` (a path or a URL)."""
    url = storage_url(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(url) if s.study_name.startswith("search_model-")]
    name = name or (names[-1] if names else None)
    if name is None:
        raise SystemExit(f"{storage}: no search_model study")
    return optuna.load_study(study_name=name, storage=url)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    # Family/model tell apart CPUs that share a marketing name ('AMD EPYC' spans Zen 1 to 4,
    # and FP throughput per core doubles from Zen 1 to Zen 2).
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in info:
                    info[key] = value.strip()
                if not line.strip():  # the first processor's block is enough
                    break
    except OSError:
        pass
    cpu = info.get("model name", cpu)
    if "cpu family" in info and "model" in info:
        cpu += f" family {info['cpu family']} model {info['model']}"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    # The SIMD level and native bf16 decide the trainer's precision and speed on a CPU.
    simd = torch.backends.cpu.get_cpu_capability()
    bf16 = "native" if cpu_has_fast_bf16() else "none"
    return f"cpu='{cpu}' simd={simd} bf16={bf16} threads={torch.get_num_threads()} gpu='{gpu}'"


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` (CUDA-synchronised) and the last result."""
    times, out = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times, out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def result_line(**fields: Any) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    return "RESULT " + " ".join(f"{k}={fmt(v)}" for k, v in fields.items())
