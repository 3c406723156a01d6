"""The `retrain` stage: the chosen configuration trained on every training image in the raw store
with the found policy and the long schedule; scored on the test split beside the @champion
(image by image, for publish's paired test); logged to MLflow and registered as a new version
of the project's registered model.

With ``retrain.warm_epochs`` and a registered ``@champion`` of the same architecture (and
classes), training starts from the champion's weights and runs ``warm_epochs`` epochs of the
recipe instead of all of them: after a data update the champion has already learned most of
what the new data holds (``pipeline.champion``).

Everything is checked before the long training (the chosen configuration still validates, the
policy parses, the MLflow store answers). The outputs are written only at the end, each
atomically, so an interrupted retrain leaves the previous outputs as they were and simply
starts again on the next `dvc repro`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline import champion, names
from pipeline.artifacts import NormalisedClassifier
from pipeline.augment import Policy
from pipeline.config import Params, TrainConfig
from pipeline.contracts import Chosen, FoundRecipeFile, RetrainLineage, RetrainMetrics
from pipeline.data import ImageSet, RawStore
from pipeline.device import pick_device
from pipeline.errors import DataError
from pipeline.evaluation import SplitScore, latency_ms, score, tta_name
from pipeline.files import Laps, atomic_path, write_text_atomic
from pipeline.hashing import json_digest
from pipeline.models import build_model, count_macs, count_params, normalise_config
from pipeline.report import figures, plot_confusion, save
from pipeline.stages.common import read_policy
from pipeline.tracking import RunLogger, Tracker
from pipeline.train import (
    EpochMetrics,
    TrainingDivergedError,
    TrainResult,
    predicted_minutes,
    train,
)

STAGE = "retrain"


def retrain_stage(params: Params, store_dir: str | os.PathLike[str], chosen_path: str | os.PathLike[str],
                  policy_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  progress: bool = True, recipe_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run the stage; returns the metrics written to ``out_dir/metrics.json``. ``recipe_path``:
    the recipe search's recipe.json, whose recipe replaces retrain.recipe."""
    chosen = Chosen.read(chosen_path)
    params = with_found_recipe(params, recipe_path, chosen, chosen_path)
    cfg, name = params.retrain, params.tracking.registered_model
    laps = Laps()
    policy = read_policy(policy_path) if cfg.augment == "policy" else None
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    store = RawStore(store_dir)
    train_set, test_set = store.split("train"), store.split("test")
    device = pick_device()
    laps.lap("load")
    plan = plan_training(params, chosen, tracker, train_set.classes)
    laps.lap("plan")
    lineage = RetrainLineage(search_model_run=chosen.mlflow_run_id, search_model_study=chosen.study,
                             policy_studies=(policy.metadata.get("studies") if policy else None) or [],
                             warm_start_from_version=plan.warm_from)
    tags = {names.FINGERPRINT: chosen.fingerprint, names.DEVICE: device.type,
            names.SEARCH_MODEL_RUN: chosen.mlflow_run_id or "",
            **({names.WARM_START_FROM: f"{name}@{plan.warm_from}"} if plan.warm_from else {})}
    logged = {"retrain": cfg.model_dump(), "config": chosen.config, "train_images": len(train_set)}
    content_hash = store.content_hash()
    with tracker.stage_run(STAGE, resume_key=resume_key(chosen, params, content_hash, policy, plan.warm_from),
                           tags=tags, params=logged) as run:
        minutes = predicted(chosen, plan.recipe, len(train_set))
        limit = time_limit_minutes(minutes, params.retrain.max_overrun)
        plan, result, restarts = train_or_halve(params, plan, chosen, tracker, train_set, policy, device, run,
                                                progress, limit)
        laps.lap("train")
        scored = score(plan.model, test_set, plan.recipe, device)
        laps.lap("score")
        rescored, paired = champion.score_champion(tracker, name, test_set, plan.recipe, device, scored)
        laps.lap("rescore_champion")
        model = plan.model.to("cpu")
        metrics = measure(model, scored, test_set, plan.recipe, result, len(train_set)).model_copy(update={
            "warm_start_from_version": plan.warm_from, "champion_rescored": rescored, "champion_paired": paired,
            "fingerprint": chosen.fingerprint, "store_content_hash": content_hash,
            "device": device.type, "mlflow_run_id": run.run_id, "lineage": lineage,
            "predicted_minutes": minutes, "diverged_restarts": restarts,
            "planned_epochs": plan.recipe.epochs, "time_limit_minutes": limit})
        laps.lap("measure")
        out = write_outputs(Path(out_dir), model, chosen.config, train_set.classes, result.history)
        plot(scored, test_set, metrics, out, run)
        champion.store_predictions(run, champion.predictions_key(test_set, plan.recipe, device, model.state_dict()),
                                   scored.predictions)
        laps.lap("write")
        version = register(run, model, metrics, policy, chosen.config, train_set.classes, test_set, out, name)
        laps.lap("register")
        run.log_metrics({f"{names.STEP_PREFIX}{step}": s for step, s in laps.seconds.items()})
        metrics = metrics.model_copy(update={"registered_model": name, "model_version": version,
                                             "step_seconds": laps.seconds})
        run.log_dict(metrics.to_json(), "weights/metrics.json")  # publish restores a champion from it
        metrics.write(out / "metrics.json")
    return metrics.to_json()


def with_found_recipe(params: Params, recipe_path: str | os.PathLike[str] | None, chosen: Chosen,
                      chosen_path: str | os.PathLike[str] = "chosen.json") -> Params:
    """``params`` with retrain.recipe replaced by the recipe search's (recipe.json), which must
    have been found for the chosen architecture; without ``recipe_path``, retrain.recipe at the
    epochs the model search fitted (chosen.json's ``retrain_epochs``)."""
    def plain(config: Any) -> Any:
        return normalise_config(config) if isinstance(config, dict) else config

    if recipe_path is None:
        if chosen.retrain_epochs is None:
            return params
        recipe = chosen.retrain_recipe(params.retrain.recipe)
    else:
        found = FoundRecipeFile.read(recipe_path)
        if plain(found.architecture) != plain(chosen.config):
            raise DataError(f"{recipe_path} was found for another architecture than {chosen_path}'s; "
                            f"run `dvc repro search_recipe` first")
        recipe = TrainConfig(**found.recipe)
    retrain = params.retrain.model_copy(update={"recipe": recipe})
    return params.model_copy(update={"retrain": retrain})


@dataclass(frozen=True)
class TrainingPlan:
    """What retrain trains: the network (fresh, or the champion's weights) and the recipe."""

    model: torch.nn.Module
    recipe: TrainConfig
    warm_from: str | None  # the champion version training starts from


def plan_training(params: Params, chosen: Chosen, tracker: Tracker, classes: list[str]) -> TrainingPlan:
    """From the champion's weights with the short recipe when ``warm_epochs`` allows and the
    champion has the chosen architecture, else from scratch with the full recipe."""
    cfg = params.retrain
    model = build_model(chosen.config, num_classes=len(classes), seed=cfg.seed)
    start = champion.champion_start(tracker, params.tracking.registered_model, chosen.config, classes) \
        if cfg.warm_epochs else None
    if start is None:
        return TrainingPlan(model, cfg.recipe, None)
    warm_from, state = start
    model.load_state_dict(state)
    return TrainingPlan(model, champion.warm_recipe(cfg.recipe, cfg.warm_epochs, cfg.warm_lr_scale), warm_from)


def train_or_halve(params: Params, plan: TrainingPlan, chosen: Chosen, tracker: Tracker, train_set: ImageSet,
                   policy: Policy | None, device: torch.device, run: RunLogger,
                   progress: bool, limit_minutes: float | None = None) -> tuple[TrainingPlan, TrainResult, int]:
    """Train ``plan``; when the loss diverges or the training collapses (``TrainingCollapsedError``,
    a subclass), plan again (the same starting weights: fresh, or
    the champion's) at half the lr, at most ``retrain.diverged_retries`` times: (the plan that
    trained, its result, the restarts). Each restart is said on the console and counted on the
    run (``diverged_restarts``); the last divergence is the stage's error. ``limit_minutes``: the
    training's time limit (``time_limit_minutes``), for each attempt afresh."""
    cfg = params.retrain
    for restarts in range(cfg.diverged_retries + 1):
        try:
            result = train(plan.model, train_set, plan.recipe, augment=policy, device=device, seed=cfg.seed,
                           callback=epoch_logger(run), progress=progress,
                           time_limit_s=None if limit_minutes is None else limit_minutes * 60)
            return plan, result, restarts
        except TrainingDivergedError as exc:
            if restarts == cfg.diverged_retries:
                raise
            recipe = cfg.recipe.model_copy(update={"lr": cfg.recipe.lr / 2})
            params = params.model_copy(update={"retrain": cfg.model_copy(update={"recipe": recipe})})
            cfg = params.retrain
            print(f"retrain: {exc}; starting again at lr {recipe.lr:g} (restart {restarts + 1} of "
                  f"{cfg.diverged_retries})", flush=True)
            run.log_metrics({names.DIVERGED_RESTARTS: restarts + 1})
            plan = plan_training(params, chosen, tracker, train_set.classes)
    raise AssertionError("unreachable")  # the loop returns or raises


def resume_key(chosen: Chosen, params: Params, content_hash: str, policy: Policy | None, warm_from: str | None) -> str:
    """An interrupted run is resumed only by the same training: the same architecture, recipe,
    policy and data (a resumed run keeps its first attempt's params, so they must still be true)."""
    what = {"config": chosen.config, "retrain": params.retrain.model_dump(), "store": content_hash,
            "policy": policy.to_dict() if policy is not None else None}
    return f"{STAGE}-{chosen.fingerprint}-{json_digest(what)}" + (f"-from{warm_from}" if warm_from else "")


def epoch_logger(run: RunLogger) -> Callable[[EpochMetrics], None]:
    """The trainer's callback: each epoch's figures logged to the run as they come."""

    def on_epoch(m: EpochMetrics) -> None:
        run.log_metrics({names.TRAIN_LOSS: m.train_loss, names.TRAIN_ACCURACY: m.train_accuracy,
                         names.IMAGES_PER_S: m.images_per_s}, step=m.epoch)

    return on_epoch


def predicted(chosen: Chosen, recipe: TrainConfig, train_images: int) -> float | None:
    """The model search's prediction of this run's training minutes (None: chosen.json has no
    measured step). The search predicted the full recipe from scratch, or the fine-tune
    (warm_epochs) for the champion's architecture (chosen.json's ``predicted_retrain_minutes``);
    a found recipe (recipe.json) may train another number of epochs, for which that figure does
    not apply. So the prediction is re-applied to the epochs this run trains: the step the search
    measured at the retrain's batch size x this recipe's steps (the same figure when the epochs
    are those the search predicted for)."""
    if chosen.retrain_step_seconds is None:
        return None
    return predicted_minutes(chosen.retrain_step_seconds, recipe, train_images)


def time_limit_minutes(predicted_minutes: float | None, max_overrun: float | None) -> float | None:
    """The training minutes the retrain keeps within: its predicted minutes (``predicted``) x
    ``retrain.max_overrun`` (None: no limit, when either is unknown or off)."""
    if predicted_minutes is None or max_overrun is None:
        return None
    return predicted_minutes * max_overrun


def measure(model: torch.nn.Module, scored: SplitScore, test_set: ImageSet, recipe: TrainConfig,
            result: TrainResult, train_images: int) -> RetrainMetrics:
    """The trained model's figures (``model`` on the CPU): test score, size, CPU latency, cost."""
    return RetrainMetrics(
        test_accuracy=scored.accuracy, test_loss=scored.loss, test_images=len(test_set), tta=tta_name(recipe),
        per_class_accuracy=scored.per_class(test_set.classes), params=count_params(model),
        macs=count_macs(model), latency_ms_batch1=latency_ms(model, torch.device("cpu"), 1),
        latency_ms_batch256=latency_ms(model, torch.device("cpu"), 256, repeats=5),
        train_minutes=result.train_seconds / 60, train_images=train_images, epochs=len(result.history))


def write_outputs(out: Path, model: torch.nn.Module, config: Any, classes: list[str],
                  history: list[EpochMetrics]) -> Path:
    """model.pt and curve.json (metrics.json last: it names a run whose weights exist)."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"config": config, "classes": classes, "state_dict": model.state_dict()}, tmp)
    curve = [{"epoch": m.epoch, "train_loss": m.train_loss, "train_accuracy": m.train_accuracy} for m in history]
    write_text_atomic(out / "curve.json", json.dumps(curve, indent=1) + "\n")
    return out


def plot(scored: SplitScore, test_set: ImageSet, metrics: RetrainMetrics, out: Path, run: RunLogger) -> None:
    with figures():
        save(plot_confusion(scored.confusion, test_set.classes,
                            f"test set, accuracy {scored.accuracy:.4f} ({metrics.tta} TTA)"),
             out / "confusion.png", run, "plots/confusion.png")


def register(run: RunLogger, model: torch.nn.Module, metrics: RetrainMetrics, policy: Policy | None, config: Any,
             classes: list[str], test_set: ImageSet, out: Path, name: str) -> str | None:
    """Log the run's metrics and files, and register the model; returns the registered version."""
    run.log_metrics(metrics.mlflow_metrics())
    if policy is not None:
        run.log_dict(policy.to_dict(), "policy.json")
    run.log_dict({"config": config, "classes": classes}, "model_config.json")
    run.log_artifact(out / "model.pt", "weights")  # publish restores a champion from it
    return run.log_model(NormalisedClassifier(model).eval(), name="model", example=test_set.images[:4],
                         registered_model=name, tags={names.TEST_ACCURACY: metrics.test_accuracy,
                                                      names.FINGERPRINT_VERSION_TAG: metrics.fingerprint})
