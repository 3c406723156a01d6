"""bench/untimed.py: model_search.untimed_bound replayed over a finished study's timed draws."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from bench import untimed as bench

from . import result_of

T0 = datetime(2026, 1, 1)
# (MACs, predicted minutes or None (not timed), seed point, seconds): three seed points at 1 minute
# per million MACs; a 40 M draw (bound 30 at 0.75: skipped); a 30 M draw less efficient (bound 22.5:
# timed); a 35 M draw more efficient than any seen (20 minutes: fits, but bound 26.25 at 0.75 and 35 at
# 1.0 refuse it, 21 at 0.6 does not); one over the parameter budget (never timed, 1 s)
DRAWS: list[tuple[int, float | None, bool, float]] = [
    (10_000_000, 10.0, True, 30.0), (12_000_000, 12.0, True, 30.0), (20_000_000, 20.0, True, 30.0),
    (40_000_000, 40.0, False, 7.0), (30_000_000, 45.0, False, 7.0), (35_000_000, 20.0, False, 30.0),
    (90_000_000, None, False, 1.0),
]


def a_study(storage: str) -> optuna.Study:
    study = optuna.create_study(study_name="search_model-00aa-ff00", storage=storage,
                                directions=[StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE])
    start = T0
    for i, (macs, minutes, seeded, secs) in enumerate(DRAWS):
        attrs: dict[str, Any] = {"macs": macs, "params": 1000}
        if minutes is not None:
            attrs["predicted_retrain_minutes"] = minutes
        if seeded:
            attrs["seed_point"] = f"point{i}"
        if minutes is not None and minutes <= 25:
            attrs["train_seconds"] = secs
        study.add_trial(FrozenTrial(
            number=i, state=TrialState.COMPLETE, value=None, values=[0.5, 1000.0], datetime_start=start,
            datetime_complete=start + timedelta(seconds=secs), params={}, distributions={}, user_attrs=attrs,
            system_attrs={}, intermediate_values={}, trial_id=i))
        start += timedelta(seconds=secs)
    return study


def test_the_replay_skips_what_the_bound_refuses_and_names_a_fitting_draw_it_lost(tmp_path: Path) -> None:
    trials = a_study(f"sqlite:///{tmp_path}/optuna.db").get_trials()
    numbers = {f: tuple([t.number for t in part] for part in bench.replay(trials, f, 25.0)) for f in (1.0, 0.75, 0.6)}
    assert numbers[1.0] == ([3, 4, 5], [5])
    assert numbers[0.75] == ([3, 5], [5])  # 30 M: 22.5 under the budget, timed (and refused by its 45)
    assert numbers[0.6] == ([], [])  # 40 M x 0.6 = 24: every draw timed


def test_the_bench_prints_the_minutes_saved_against_the_study_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    a_study(f"sqlite:///{tmp_path}/optuna.db")
    fields = result_of(bench.main, ["untimed", "--storage", str(tmp_path / "optuna.db"), "--factors", "0.75",
                                       "--limit", "25"],  # the budget this study was searched at
                       monkeypatch, capsys)
    assert (fields["draws"], fields["timed"], fields["timed_refused"]) == ("7", "6", "2")
    assert (fields["skipped_075"], fields["lost_075"]) == ("2", "1")
    before = sum(secs for *_, secs in DRAWS) / 60
    assert float(fields["search_min_before"]) == pytest.approx(before)
    # the skipped refusal's 7 s less the untimed trial's 1 s (the lost draw trained: no saving)
    assert float(fields["saved_min_075"]) == pytest.approx(6 / 60, abs=1e-3)
    assert float(fields["ratio_075"]) == pytest.approx((before - 6 / 60) / before, abs=1e-3)


def test_a_study_already_run_with_the_bound_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = a_study(f"sqlite:///{tmp_path}/optuna.db")
    study.add_trial(optuna.trial.create_trial(values=[0.0, 1.0], user_attrs={"retrain_minutes_bound": 30.0}))
    monkeypatch.setattr(sys, "argv", ["untimed", "--storage", str(tmp_path / "optuna.db")])
    with pytest.raises(SystemExit, match="untimed_bound: null"):
        bench.main()


def test_the_replay_with_activations_also_skips_a_draw_heavy_in_them(tmp_path: Path) -> None:
    # the seed points move 1 M activations a minute; a draw cheap in MACs (bound 3 at 0.75: timed
    # by the MAC bound) but with 50 M activations (bound 37.5) is skipped with --activations
    study = a_study(f"sqlite:///{tmp_path}/optuna.db")
    trials = study.get_trials()
    for t, acts in zip(trials, [10e6, 12e6, 20e6, 40e6, 30e6, 20e6, 90e6], strict=True):
        t.user_attrs["activations"] = int(acts)
    cheap = optuna.trial.create_trial(values=[0.0, 1.0], user_attrs={
        "macs": 4_000_000, "params": 1000, "predicted_retrain_minutes": 60.0, "activations": 50_000_000})
    cheap.number = len(trials)
    assert [t.number for t in bench.replay([*trials, cheap], 0.75, 25.0)[0]] == [3, 5]
    skipped, lost = bench.replay([*trials, cheap], 0.75, 25.0, activations=True)
    assert [t.number for t in skipped] == [3, 5, 7] and [t.number for t in lost] == [5]
