"""Successive halving in the model search (model_search.halving): the rung rule stops a candidate
only when enough earlier candidates dominated it at that epoch, so the Pareto front keeps every
candidate still non-dominated there; a stopped candidate is trained, logged, counted and never
on the front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.study import StudyDirection

from pipeline.config import parse_params
from pipeline.errors import AutoaugError
from pipeline.models import build_model
from pipeline.names import HALVING_CONSTRAINT, HISTORY_ATTR, STOPPED_AT_ATTR, VAL_ACCURACY_CURVE
from pipeline.search.model import ModelSearch
from pipeline.search.studies import feasible, trained
from pipeline.stages.search_model import search_model_stage

from .conftest import tiny_sample
from .test_model_search import (
    TINY_SEARCH,
    search_params,
    stage_runs,
    the_study,
    write_policy,
    write_tiny_sample,
)

HALVING = {"rungs": [1, 2], "dominated_by": 2, "min_trials": 3}
RECIPE = {"epochs": 3, "batch_size": 16, "eval_every": 1}


def a_search(**halving: Any) -> ModelSearch:
    cfg = parse_params({"model_search": {**TINY_SEARCH, "recipe": RECIPE,
                                         "halving": {**HALVING, **halving}}}).model_search
    return ModelSearch(cfg, tiny_sample(), policy=None, device=torch.device("cpu"), progress=False)


def study_with(*earlier: tuple[list[float], int], history: bool = False) -> optuna.Study:
    """A study whose finished candidates have these (validation curve, parameters)."""
    study = optuna.create_study(directions=[StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE])
    for curve, params in earlier:
        study.add_trial(optuna.trial.create_trial(
            values=[curve[-1], params], user_attrs={VAL_ACCURACY_CURVE: curve, **({HISTORY_ATTR: 1} if history else {})}))
    return study


def rule(search: ModelSearch, study: optuna.Study, params: int) -> Any:
    stop = search.rung_rule(study.ask(), {"accuracy": 0.0, "params": float(params)})
    assert stop is not None
    return stop


def test_a_candidate_stops_at_a_rung_only_when_enough_earlier_ones_dominated_it_there() -> None:
    search = a_search()
    # three earlier candidates: two were more accurate after epoch 1 with fewer parameters
    study = study_with(([0.50, 0.60, 0.70], 100), ([0.45, 0.55, 0.65], 200), ([0.20, 0.30, 0.40], 50))
    stop = rule(search, study, params=300)
    assert stop(1, 0.40)  # dominated by the first two at epoch 1
    assert not stop(1, 0.47)  # only the first was as accurate: dominated once, trains on
    assert not stop(3, 0.10)  # not a rung (the last epoch is never one)
    # the smallest candidate is non-dominated at the rung however low it scores: it trains on
    assert not rule(search, study, params=10)(1, 0.05)
    # the rung reads the curve at that epoch, not the final accuracy
    assert stop(2, 0.54) and not stop(2, 0.56)


def test_no_candidate_stops_before_min_trials_reached_the_rung_and_history_does_not_count() -> None:
    search = a_search()
    two = study_with(([0.50, 0.60, 0.70], 100), ([0.45, 0.55, 0.65], 200))
    assert not rule(search, two, params=300)(1, 0.01)  # only 2 earlier candidates reached the rung
    copied = study_with(([0.50, 0.60, 0.70], 100), ([0.45, 0.55, 0.65], 200), ([0.4, 0.5, 0.6], 10), history=True)
    assert not rule(search, copied, params=300)(1, 0.01)  # prior data's trials are no rung record
    stopped_early = study_with(([0.5], 100), ([0.5], 100), ([0.5], 100))  # curves that end at epoch 1
    stop = rule(search, stopped_early, params=300)
    assert stop(1, 0.4) and not stop(2, 0.4)  # they reached rung 1, not rung 2
    assert a_search().cfg.halving is not None
    off = parse_params({"model_search": {**TINY_SEARCH}}).model_search
    assert ModelSearch(off, tiny_sample(), policy=None, device=torch.device("cpu")).rung_rule(
        study_with().ask(), {"params": 1.0}) is None


def test_fit_until_stops_after_the_epoch_the_rule_names() -> None:
    search = a_search()
    model = build_model("resnet20", num_classes=3, seed=0)
    asked: list[int] = []

    def stop(epoch: int, accuracy: float) -> bool:
        asked.append(epoch)
        return epoch == 2

    accuracy, _, curve, stopped = search.fit_until(model, seed=0, stop=stop)
    assert (stopped, len(curve), asked) == (2, 2, [1, 2]) and accuracy == curve[-1]
    _, _, curve, stopped = search.fit_until(build_model("resnet20", num_classes=3, seed=0), seed=0)
    assert (stopped, len(curve)) == (None, 3)


@pytest.mark.parametrize(("halving", "recipe", "fragment"), [
    ({"rungs": [3]}, RECIPE, "below recipe.epochs"),
    ({"rungs": [2, 1]}, RECIPE, "increasing epochs"),
    ({"rungs": [1]}, {**RECIPE, "eval_every": 2}, "not after [1]"),
])
def test_impossible_rungs_are_refused(halving: dict, recipe: dict, fragment: str) -> None:
    with pytest.raises((AutoaugError, ValueError), match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_params({"model_search": {**TINY_SEARCH, "recipe": recipe, "halving": halving}})


def test_the_default_rung_applies_only_to_a_recipe_longer_than_it() -> None:
    """The shipped halving (rung 1, 4 dominators) stops candidates after the proxy's first epoch; a
    recipe of one epoch has no rung before its end, so left at its default halving does nothing (and
    stays out of the study's identity), while set in params.yaml it is refused with the way out."""
    default = parse_params({"model_search": {**TINY_SEARCH, "recipe": RECIPE}}).model_search
    assert default.halving_applied is not None and default.halving_applied.rungs == [1]
    assert (default.halving_applied.dominated_by, default.halving_applied.min_trials) == (4, 4)
    one_epoch = parse_params({"model_search": TINY_SEARCH}).model_search
    assert one_epoch.recipe.epochs == 1 and one_epoch.halving is not None and one_epoch.halving_applied is None
    every_other = parse_params({"model_search": {**TINY_SEARCH, "recipe": {**RECIPE, "eval_every": 2}}}).model_search
    assert every_other.halving_applied is None  # never scored after epoch 1
    with pytest.raises((AutoaugError, ValueError), match="set model_search.halving to null"):
        parse_params({"model_search": {**TINY_SEARCH, "halving": {"rungs": [1], "dominated_by": 4}}})
    assert parse_params({"model_search": {**TINY_SEARCH, "halving": None}}).model_search.halving_applied is None


def test_a_stopped_candidate_is_logged_and_counted_but_never_on_the_front(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # every candidate after the first is stopped at rung 1 (the rule itself is tested above)
    monkeypatch.setattr(ModelSearch, "rung_rule", lambda self, trial, own: lambda epoch, accuracy: trial.number > 0)
    params = search_params(tmp_path, mlflow_uri, recipe={"epochs": 2, "batch_size": 16, "eval_every": 1},
                           halving={"rungs": [1], "min_trials": 1, "dominated_by": 1})
    sample = write_tiny_sample(tmp_path / "sample")
    summary = search_model_stage(params, sample, write_policy(tmp_path / "policy.json"), tmp_path / "out", None,
                                 progress=False)
    study = the_study(params, summary["fingerprint"])
    ran = [t for t in study.trials if trained(t)]
    stopped = [t for t in ran if STOPPED_AT_ATTR in t.user_attrs]
    assert len(ran) == params.model_search.trials == 2 and len(stopped) == 1
    (cut,) = stopped
    assert cut.user_attrs[STOPPED_AT_ATTR] == 1 and len(cut.user_attrs[VAL_ACCURACY_CURVE]) == 1
    assert cut.constraints[HALVING_CONSTRAINT] > 0 and not feasible(cut)
    assert (summary["trained_trials"], summary["stopped_trials"]) == (2, 1)
    front = json.loads((tmp_path / "out" / "pareto.json").read_text())["front"]
    assert cut.number not in {m["trial"] for m in front}
    logged = {r.data.tags.get("autoaug.trial") for r in stage_runs(params) if "mlflow.parentRunId" in r.data.tags}
    assert str(cut.number) in logged  # trained for an epoch: its run shows its curve
