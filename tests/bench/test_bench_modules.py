"""Every benchmark runs as a module (``python -m bench.x`` from the repository root), so none
edits ``sys.path`` to find the packages, and each imports as ``bench.x``."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(path.stem for path in BENCH.glob("*.py") if path.stem != "__init__")


def test_there_are_benchmarks_to_check() -> None:
    assert {"accuracy", "augment", "train", "workers"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_a_bench_module_does_not_edit_sys_path(name: str) -> None:
    assert "sys.path" not in (BENCH / f"{name}.py").read_text(), (
        f"bench/{name}.py edits sys.path: run it as `python -m bench.{name}` from the repository root instead")


@pytest.mark.parametrize("name", MODULES)
def test_a_bench_module_imports_as_part_of_the_bench_package(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert module.__name__ == f"bench.{name}"
