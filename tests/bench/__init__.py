"""Tests of the benchmarks' own logic (bench/), on tiny data."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest


def result_of(main: Callable[[], None], argv: list[str], monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """Run a bench's ``main`` with ``argv``; its RESULT line's fields."""
    monkeypatch.setattr(sys, "argv", argv)
    main()
    result = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("RESULT"))
    return dict(item.split("=", 1) for item in result.split()[1:])
