"""Warm start from several prior studies: the best of each in turn, the own study's first."""

from __future__ import annotations

import optuna

from pipeline.names import HISTORY_ATTR
from pipeline.search.studies import add_history, find_prior, warm_start

X = optuna.distributions.FloatDistribution(0, 10)


def prior(name: str, scores: dict[float, float]) -> optuna.Study:
    study = optuna.create_study(study_name=name, direction="maximize")
    study.add_trials([optuna.trial.create_trial(params={"x": x}, distributions={"x": X}, value=v)
                      for x, v in scores.items()])
    return study


def queued(study: optuna.Study) -> list[tuple[float, str]]:
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    return [(t.system_attrs["fixed_params"]["x"], t.user_attrs["warm_start_from"]) for t in waiting]


def test_the_priors_best_are_taken_in_turn_and_a_configuration_only_once() -> None:
    own = prior("fold1", {1.0: 0.9, 2.0: 0.8, 3.0: 0.7})
    other = prior("fold0", {1.0: 0.95, 4.0: 0.85, 5.0: 0.6})  # its best is own's best: taken once
    new = optuna.create_study(direction="maximize")
    assert warm_start(new, own, 4, others=[other]) == 4
    assert queued(new) == [(1.0, "fold1"), (2.0, "fold1"), (4.0, "fold0"), (3.0, "fold1")]


def test_without_others_it_is_the_own_studys_top_k() -> None:
    own = prior("fold1", {1.0: 0.9, 2.0: 0.8, 3.0: 0.7})
    new = optuna.create_study(direction="maximize")
    assert warm_start(new, own, 2) == 2
    assert queued(new) == [(1.0, "fold1"), (2.0, "fold1")]


def test_a_study_that_has_trials_is_not_warm_started_again() -> None:
    own = prior("fold1", {1.0: 0.9})
    new = optuna.create_study(direction="maximize")
    warm_start(new, own, 1)
    assert warm_start(new, own, 1, others=[prior("fold0", {4.0: 0.5})]) == 0


def test_a_prior_holding_only_sampler_history_gives_way_to_the_study_before_it() -> None:
    # a warm start interrupted before its first trial holds only the history it was given: the
    # next update warm-starts from the last study that finished trials of its own
    storage = optuna.storages.InMemoryStorage()
    older = optuna.create_study(study_name="search_model-aaaa-f1", storage=storage, direction="maximize")
    older.add_trial(optuna.trial.create_trial(params={"x": 1.0}, distributions={"x": X}, value=0.5))
    newer = optuna.create_study(study_name="search_model-aaaa-f2", storage=storage, direction="maximize")
    assert add_history(newer, older) == 1
    found = find_prior(storage, "search_model", "aaaa", "f3")
    assert found.study is not None and found.study.study_name == "search_model-aaaa-f1"
    # with nothing usable before it, the newest's reason is said
    alone = optuna.storages.InMemoryStorage()
    empty = optuna.create_study(study_name="search_model-aaaa-f2", storage=alone, direction="maximize")
    empty.add_trial(optuna.trial.create_trial(params={"x": 1.0}, distributions={"x": X}, value=0.5,
                                              user_attrs={HISTORY_ATTR: "elsewhere"}))
    lone = find_prior(alone, "search_model", "aaaa", "f3")
    assert lone.study is None and lone.empty and "has no finished trial" in (lone.cold_reason or "")
