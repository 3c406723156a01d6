"""bench/refusals.py: the refused draws of a cold and a warm model search, with and without the
prior's refused draws as sampler history (the real objective and warm start; training stood in)."""

from __future__ import annotations

import math

import pytest

from bench import refusals as bench


def test_the_sampler_rows_count_draws_until_the_trainable_budget_and_the_history_is_the_colds_refusals() -> None:
    row = bench.sampler_rows(seed=0, trials=4, warm_budget=0.5, top_k=1)
    # the cold search stops at 4 trainable: every draw is trainable or refused
    assert row["cold_draws"] >= 4 and row["cold_refused"] == row["cold_draws"] - 4
    assert row["history"] == row["cold_refused"] > 0  # the shipped budgets refuse most of the space
    for label in ("plain", "refused"):  # 2 trainable each (ceil(4 x 0.5)), one of them the prior's best
        assert row[f"{label}_draws"] >= 2 and row[f"{label}_refused"] == row[f"{label}_draws"] - 2


def test_the_result_line_reports_the_medians_and_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--seeds", "1", "--timed", "0", "--trials", "3"])
    out = capsys.readouterr().out
    result = dict(f.split("=", 1) for f in out.split("RESULT ", 1)[1].split() if "=" in f)
    assert result["bench"] == "refusals" and result["seeds"] == "1"
    assert float(result["cold_draws"]) >= 3 and math.isfinite(float(result["refused_ratio"]))
