"""The `search_recipe` stage's search: the retrain recipe (lr, weight decay, label smoothing,
epochs) on the model search's chosen architecture, summarised as recipe.json's choice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import Params
from pipeline.contracts import Chosen, FoundRecipeFile, RecipeSearchSummary
from pipeline.errors import DataError
from pipeline.hashing import json_digest
from pipeline.search.recipe import STAGE, FoundRecipe, RecipeSearch, feasible
from pipeline.search.registry import BuildContext, SearchStage
from pipeline.search.runner import SearchOutcome
from pipeline.search.studies import completed


@dataclass
class RecipeResult:
    """What the stage writes (recipe.json, metrics.json) and plots."""

    found: FoundRecipe
    document: FoundRecipeFile
    summary: RecipeSearchSummary
    outcome: SearchOutcome


def space(params: Params) -> dict[str, Any]:
    return RecipeSearch.space_of(params.recipe_search, params.retrain.recipe)


def uses_policy(params: Params) -> bool:
    return params.recipe_search.augment == "policy"


def uses_chosen(params: Params) -> bool:
    return True


def the_chosen(chosen: Chosen | None) -> Chosen:
    if chosen is None:
        raise DataError("search_recipe: no chosen model to search a recipe for; run `dvc repro search_model` first")
    return chosen


def fine_tune_epochs(params: Params, chosen: Chosen) -> int | None:
    """For the @champion's architecture, the epochs of the fine-tune the retrain gives it
    (``retrain.warm_epochs``): what a recipe's minutes are predicted for."""
    return (params.retrain.warm_epochs or None) if chosen.champion_architecture_version is not None else None


def build(context: BuildContext) -> RecipeSearch:
    """The search on chosen.json's architecture; the retrain-minutes budget when the model
    search measured the architecture's step at the retrain's batch size (for the @champion's
    architecture, of the fine-tune the retrain gives it); the epochs choices scaled to
    chosen.json's ``retrain_epochs`` when the search fitted those."""
    chosen, params = the_chosen(context.chosen), context.params
    step = chosen.retrain_step_seconds
    return RecipeSearch(params.recipe_search, context.sample, retrain=params.retrain.recipe,
                        architecture=chosen.config, policy=context.policy, device=context.device,
                        progress=context.progress, step_seconds=step, retrain_images=context.retrain_images,
                        max_minutes=params.model_search.max_retrain_minutes if step is not None else None,
                        fine_tune_epochs=fine_tune_epochs(params, chosen),
                        retrain_epochs=chosen.retrain_recipe(params.retrain.recipe).epochs)


def summarise(method: RecipeSearch, outcome: SearchOutcome, context: BuildContext, run_id: str) -> RecipeResult:
    found: FoundRecipe = outcome.result
    trials = completed(outcome.studies[0])
    study = outcome.study_names[0]
    document = FoundRecipeFile(searched=True, values=found.values, recipe=found.recipe.model_dump(),
                               architecture=method.architecture, trial=found.trial, accuracy=found.accuracy,
                               best_accuracy=found.best_accuracy, predicted_minutes=found.predicted_minutes,
                               kept_params_recipe=found.kept_params_recipe,
                               fingerprint=context.fingerprint, study=study, mlflow_run_id=run_id)
    summary = RecipeSearchSummary(
        fingerprint=context.fingerprint, trials=outcome.trials, trained_trials=sum(1 for t in trials if feasible(t)),
        warm_started_trials=outcome.warm_started, chosen_trial=found.trial, chosen_accuracy=found.accuracy,
        best_accuracy=found.best_accuracy, chosen_epochs=int(found.values["epochs"]),
        chosen_lr=float(found.values["lr"]), chosen_weight_decay=float(found.values["weight_decay"]),
        chosen_label_smoothing=float(found.values["label_smoothing"]), predicted_minutes=found.predicted_minutes,
        kept_params_recipe=found.kept_params_recipe,
        refused_max_retrain_minutes=sum(1 for t in trials if not feasible(t)), wall_seconds=outcome.wall_seconds,
        mlflow_run_id=run_id)
    return RecipeResult(found, document, summary, outcome)


def variant(params: Params, chosen: Chosen | None) -> str:
    """The architecture the trials train, with what changes a trial's epochs and budget (the
    fitted epochs' scale, a champion's fine-tune), as ``build`` gives them to the search: a
    search per such variant of the data (its studies and its stage run), so that a model search
    that chose another network on the same data (model_search params changed, or another
    machine's timings) gets a new study, warm-started from the other, instead of the one whose
    recipes were scored on another network, finished or interrupted."""
    chosen = the_chosen(chosen)
    retrain = params.retrain.recipe
    return json_digest({"architecture": chosen.config,
                        "epochs_scale": chosen.retrain_recipe(retrain).epochs / retrain.epochs,
                        "fine_tune_epochs": fine_tune_epochs(params, chosen)})


SPEC: SearchStage[RecipeSearch, RecipeResult] = SearchStage(
    name=STAGE, space=space, build=build, summarise=summarise, log_every=1, uses_policy=uses_policy,
    uses_chosen=uses_chosen, variant=variant)
