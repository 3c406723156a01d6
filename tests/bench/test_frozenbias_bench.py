"""bench/frozenbias.py with --quick: both settings timed in turn, and the RESULT line."""

from __future__ import annotations

import pytest

from bench import frozenbias

from . import result_of


def test_the_quick_run_times_the_step_with_the_stem_bias_training_and_frozen(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    result = result_of(frozenbias.main, ["frozenbias", "--quick"], monkeypatch, capsys)
    assert result["bench"] == "frozenbias" and result["quick"] == "True"
    assert float(result["airbench_small_step_training_s"]) > 0 and float(result["airbench_small_step_frozen_s"]) > 0
    assert float(result["airbench_small_ratio"]) > 0
