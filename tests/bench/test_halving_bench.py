"""bench/halving.py: the rule replayed over a finished study's curves, with the rank agreement."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.study import StudyDirection

from bench import halving as bench
from pipeline.config import HalvingConfig
from pipeline.names import TRAIN_SECONDS_ATTR, VAL_ACCURACY_CURVE

from . import result_of

# (curve over 3 epochs, parameters): trial 3 is behind two smaller ones after epoch 1; trial 4 is
# the least accurate but the smallest, so it is on the front and never stopped
CANDIDATES = [([0.50, 0.60, 0.70], 100), ([0.45, 0.55, 0.65], 200), ([0.40, 0.58, 0.69], 150),
              ([0.30, 0.50, 0.60], 300), ([0.10, 0.20, 0.30], 10)]


def a_study(storage: str) -> optuna.Study:
    study = optuna.create_study(study_name="search_model-00aa-ff00", storage=storage,
                                directions=[StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE])
    for curve, params in CANDIDATES:
        study.add_trial(optuna.trial.create_trial(values=[curve[-1], params],
                                                  user_attrs={VAL_ACCURACY_CURVE: curve, TRAIN_SECONDS_ATTR: 30.0}))
    return study


def test_the_replay_stops_the_dominated_and_keeps_the_front(tmp_path: Path) -> None:
    study = a_study(f"sqlite:///{tmp_path}/optuna.db")
    trials = bench.full_candidates(study)
    assert len(trials) == 5
    agreement = bench.rank_agreement(trials)
    assert set(agreement) == {1, 2} and agreement[2] == pytest.approx(1.0)
    stopped = bench.replay(trials, HalvingConfig(rungs=[1, 2], dominated_by=2, min_trials=3))
    assert stopped == {3: 1}  # trial 4 is the smallest: non-dominated at every rung
    # with one dominator enough and two earlier candidates, trial 2 goes at epoch 1 too
    assert bench.replay(trials, HalvingConfig(rungs=[1], dominated_by=1, min_trials=2)) == {2: 1, 3: 1}


def test_the_bench_prints_the_result_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    a_study(f"sqlite:///{tmp_path}/optuna.db")
    fields = result_of(bench.main, ["halving", "--storage", str(tmp_path / "optuna.db"), "--min-trials", "3"],
                       monkeypatch, capsys)
    assert (fields["candidates"], fields["stopped"], fields["front_stopped"]) == ("5", "1", "0")
    assert float(fields["train_min_before"]) == pytest.approx(2.5)
    assert float(fields["train_min_after"]) == pytest.approx(2.5 - 20 / 60, abs=1e-3)  # 2 of 3 epochs of 30 s saved
