"""The `search_recipe` stage: the retrain recipe searched on the chosen architecture; writes
recipe.json (what retrain trains with), a metrics file and the search's history plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.config import Params
from pipeline.contracts import Chosen, FoundRecipeFile, RecipeSearchSummary
from pipeline.files import Laps
from pipeline.names import CHOSEN_TRIAL, DEVICE, FINGERPRINT, STUDIES, STUDY
from pipeline.report import figures, plot_history, save
from pipeline.search.recipe import SEARCHED
from pipeline.search.specs.recipe import SPEC, RecipeResult
from pipeline.stages.common import open_inputs, record_steps, search_input_policy
from pipeline.tracking import RunLogger


def search_recipe_stage(params: Params, sample_dir: str | os.PathLike[str], chosen_path: str | os.PathLike[str],
                        policy_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                        progress: bool = True) -> dict[str, Any]:
    """Run the stage; returns recipe.json's content. With ``recipe_search.trials: 0`` nothing
    is trained: recipe.json holds retrain.recipe as written."""
    chosen = Chosen.read(chosen_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if params.recipe_search.trials == 0:
        return not_searched(params, chosen, out).to_json()
    laps = Laps()
    policy = search_input_policy(SPEC.uses_policy(params), policy_path)  # before any work
    inputs = open_inputs(params, sample_dir)
    context = SPEC.context(params, inputs.sample, inputs.fingerprint, cache_root=None, progress=progress,
                           policy=policy, tracker=inputs.tracker, chosen=chosen,
                           retrain_images=int(inputs.manifest["pool_size"]))
    laps.lap("load")
    search = SPEC.identity(params, inputs.fingerprint, chosen)  # another architecture: another run
    tags = {FINGERPRINT: inputs.fingerprint, STUDY: search, DEVICE: context.device.type}
    logged = {"recipe_search": params.recipe_search.model_dump(), "chosen_trial": chosen.trial,
              "chosen_params": chosen.params}
    with inputs.tracker.stage_run(SPEC.name, resume_key=search, tags=tags, params=logged) as run:
        if run.resumed:
            print(f"{SPEC.name}: resuming MLflow run {run.run_id} and its study")
        result = SPEC.run(context, inputs.storage, run, laps)
        write_outputs(result, out, run)
        record_steps(laps, run, result.summary, out / "metrics.json")
    return result.document.to_json()


def not_searched(params: Params, chosen: Chosen, out: Path) -> FoundRecipeFile:
    """``recipe_search.trials: 0``: retrain.recipe as written (at the epochs the model search
    fitted, chosen.json's ``retrain_epochs``), and the stage's other outputs (the metrics file and
    the plot DVC expects) saying that nothing was searched."""
    recipe = chosen.retrain_recipe(params.retrain.recipe)
    document = FoundRecipeFile(searched=False, recipe=recipe.model_dump(), architecture=chosen.config,
                               values={k: getattr(recipe, k) for k in SEARCHED},
                               fingerprint=chosen.fingerprint)
    document.write(out / "recipe.json")
    RecipeSearchSummary(fingerprint=chosen.fingerprint, trials=0, trained_trials=0, warm_started_trials=0,
                        chosen_trial=None, chosen_accuracy=None, best_accuracy=None, chosen_epochs=recipe.epochs,
                        chosen_lr=recipe.lr, chosen_weight_decay=recipe.weight_decay,
                        chosen_label_smoothing=recipe.label_smoothing, predicted_minutes=None, wall_seconds=0.0,
                        mlflow_run_id=None).write(out / "metrics.json")
    with figures() as plt:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "recipe search off (recipe_search.trials: 0):\nretrain.recipe as written",
                ha="center", va="center")
        save(fig, out / "history.png", None, "plots/optimization_history.png")
    return document


def write_outputs(result: RecipeResult, out: Path, run: RunLogger) -> None:
    """recipe.json, metrics.json and the history plot; all logged to the stage run."""
    result.document.write(out / "recipe.json")
    result.summary.write(out / "metrics.json")
    with figures():
        save(plot_history(result.outcome.studies, ylabel="proxy validation accuracy",
                          title="recipe search: accuracy by trial", objective=0),
             out / "history.png", run, "plots/optimization_history.png")
    run.log_dict(result.document.to_json(), "recipe.json")
    summary = result.summary.to_json()
    run.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and v is not None})
    run.set_tags({STUDIES: ",".join(result.outcome.study_names), CHOSEN_TRIAL: result.found.trial})
