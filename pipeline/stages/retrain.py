"""The `retrain` stage: the chosen configuration trained on every training image in the raw
store with the found policy and the long schedule; scored on the test split; logged to MLflow
and registered as a new version of the project's registered model.

With ``retrain.warm_epochs`` and a registered ``@champion`` of the same architecture (and
classes), training starts from the champion's weights and runs ``warm_epochs`` epochs of the
recipe instead of all of them: after a data update the champion has already learned most of
what the new data holds.

Everything is checked before the long training (the chosen configuration still validates, the
policy parses, the MLflow store answers). The outputs are written only at the end, each
atomically, so an interrupted retrain leaves the previous outputs as they were and simply
starts again on the next `dvc repro`.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from pipeline.artifacts import NormalisedClassifier
from pipeline.config import Params
from pipeline.data import ImageSet, RawStore
from pipeline.device import pick_device
from pipeline.errors import DataError, first_line
from pipeline.files import atomic_path, write_text_atomic
from pipeline.hashing import json_digest
from pipeline.models import ModelConfigError, build_model, count_macs, count_params, validate_config
from pipeline.report import figures, plot_confusion, save
from pipeline.stages.common import read_policy
from pipeline.tracking import Tracker
from pipeline.train import EpochMetrics, evaluate, normalise, train

STAGE = "retrain"


def read_chosen(path: str | os.PathLike[str]) -> dict[str, Any]:
    """chosen.json, with its configuration validated against today's search space."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no chosen model; run `dvc repro search_model` first")
    chosen = json.loads(path.read_text())
    config = chosen.get("config")
    if not isinstance(config, str):
        try:
            validate_config(config)
        except ModelConfigError as exc:
            raise DataError(f"{path}: the chosen configuration no longer fits the search space ({exc}); "
                            "re-run `dvc repro search_model`") from None
    return chosen


@torch.no_grad()
def latency_ms(model: torch.nn.Module, device: torch.device, batch: int, repeats: int = 30) -> float:
    """Median milliseconds per image of the forward pass at ``batch`` images per call."""
    model.eval()
    x = normalise(torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device))
    for _ in range(3):
        model(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / batch


def champion_start(tracker: Tracker, model_name: str, config: Any, classes: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(version, state dict) of the @champion to fine-tune, or None (said why) when there is
    none or its architecture or classes differ from the chosen model's."""
    champion = tracker.champion(model_name)
    if champion is None:
        print(f"{STAGE}: no @champion of {model_name} yet: training from scratch", flush=True)
        return None
    saved, _, _ = tracker.champion_weights(champion)
    if saved.get("config") != config or list(saved.get("classes", [])) != list(classes):
        print(f"{STAGE}: the chosen architecture is not the champion's (version {champion.version}): "
              "training from scratch", flush=True)
        return None
    print(f"{STAGE}: starting from the champion's weights ({model_name} version {champion.version})", flush=True)
    return str(champion.version), saved["state_dict"]


def score_champion(tracker: Tracker, model_name: str, test_set: ImageSet, recipe: Any,
                   device: torch.device) -> dict[str, Any] | None:
    """The @champion's accuracy on today's test split with today's TTA, or None (no champion).

    The accuracy tagged on a registered version was measured on the test split of its day; after
    a data update (more test images) or a TTA change it is not comparable, so publish compares
    the new model with this re-score. ``test_accuracy`` is None (said why) when the champion's
    weights cannot be read or its classes are not today's.
    """
    from mlflow.exceptions import MlflowException

    champion = tracker.champion(model_name)
    if champion is None:
        return None
    version = str(champion.version)
    try:
        saved, _, _ = tracker.champion_weights(champion)
    except (MlflowException, OSError) as exc:
        print(f"{STAGE}: cannot re-score the champion (version {version}): its weights are unreadable "
              f"({first_line(exc)})", flush=True)
        return {"version": version, "test_accuracy": None, "note": "weights unreadable"}
    if list(saved.get("classes", [])) != list(test_set.classes):
        return {"version": version, "test_accuracy": None, "note": "other classes"}
    model = build_model(saved["config"], num_classes=len(saved["classes"]))
    model.load_state_dict(saved["state_dict"])
    scored = evaluate(model.to(device), test_set, tta_flip=recipe.tta, tta_translate=recipe.tta_translate,
                      precision=recipe.precision)
    print(f"{STAGE}: the champion (version {version}) scores {scored.accuracy:.4f} on this test split", flush=True)
    return {"version": version, "test_accuracy": scored.accuracy}


def retrain_stage(params: Params, store_dir: str | os.PathLike[str], chosen_path: str | os.PathLike[str],
                  policy_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  progress: bool = True) -> dict[str, Any]:
    """Run the stage; returns the metrics written to ``out_dir/metrics.json``."""
    cfg = params.retrain
    chosen = read_chosen(chosen_path)
    policy = read_policy(policy_path) if cfg.augment == "policy" else None
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    store = RawStore(store_dir)
    train_set, test_set = store.split("train"), store.split("test")
    device = pick_device()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = chosen["config"]
    model = build_model(config, num_classes=len(train_set.classes), seed=cfg.seed)
    start = champion_start(tracker, params.tracking.registered_model, config, train_set.classes) \
        if cfg.warm_epochs else None
    recipe, warm_from = cfg.recipe, None  # warm_from: the champion version training starts from
    if start is not None:
        warm_from, state = start
        model.load_state_dict(state)
        recipe = recipe.model_copy(update={"epochs": min(cfg.warm_epochs, recipe.epochs),
                                           "lr": recipe.lr * cfg.warm_lr_scale})
    fingerprint = chosen.get("fingerprint", "")
    lineage = {"search_model_run": chosen.get("mlflow_run_id"), "search_model_study": chosen.get("study"),
               "policy_studies": (policy.metadata.get("studies") if policy is not None else None) or [],
               "warm_start_from_version": warm_from}
    tags = {"autoaug.fingerprint": fingerprint, "autoaug.device": device.type,
            "autoaug.search_model_run": lineage["search_model_run"] or "",
            **({"autoaug.warm_start_from": f"{params.tracking.registered_model}@{warm_from}"} if warm_from else {})}
    # An interrupted run is resumed only by the same training: the same architecture, recipe, policy
    # and data (a resumed run keeps its first attempt's params, so they must still be true).
    retrain_params, content_hash = cfg.model_dump(), store.content_hash()
    what = {"config": config, "retrain": retrain_params, "store": content_hash,
            "policy": policy.to_dict() if policy is not None else None}
    resume_key = f"{STAGE}-{fingerprint}-{json_digest(what)}" + (f"-from{warm_from}" if warm_from else "")
    with tracker.stage_run(STAGE, resume_key=resume_key, tags=tags,
                           params={"retrain": retrain_params, "config": config,
                                   "train_images": len(train_set)}) as run:
        history: list[EpochMetrics] = []

        def on_epoch(m: EpochMetrics) -> None:
            history.append(m)
            run.log_metrics({"train_loss": m.train_loss, "train_accuracy": m.train_accuracy,
                             "images_per_s": m.images_per_s}, step=m.epoch)

        result = train(model, train_set, recipe, augment=policy, device=device, seed=cfg.seed,
                       callback=on_epoch, progress=progress)
        scored = evaluate(model, test_set, tta_flip=recipe.tta, tta_translate=recipe.tta_translate,
                          precision=recipe.precision, keep_predictions=True)
        assert scored.predictions is not None
        confusion = confusion_matrix(test_set, scored.predictions)
        per_class = {c: float(confusion[i, i] / max(int(confusion[i].sum()), 1))
                     for i, c in enumerate(test_set.classes)}
        rescored = score_champion(tracker, params.tracking.registered_model, test_set, recipe, device)
        model_cpu = model.to("cpu")
        metrics = {
            "test_accuracy": scored.accuracy,
            "test_loss": scored.loss,
            "test_images": len(test_set),
            "tta": "flip+translate" if recipe.tta and recipe.tta_translate else "flip" if recipe.tta else "none",
            "per_class_accuracy": per_class,
            "params": count_params(model_cpu),
            "macs": count_macs(model_cpu),
            "latency_ms_batch1": latency_ms(model_cpu, torch.device("cpu"), 1),
            "latency_ms_batch256": latency_ms(model_cpu, torch.device("cpu"), 256, repeats=5),
            "train_minutes": result.train_seconds / 60,
            "train_images": len(train_set),
            "epochs": recipe.epochs,
            "warm_start_from_version": warm_from,
            "champion_rescored": rescored,
            "fingerprint": fingerprint,
            "store_content_hash": content_hash,
            "device": device.type,
            "mlflow_run_id": run.run_id,
        }
        # Outputs: each written atomically, the weights first (metrics.json names a run whose
        # weights exist).
        with atomic_path(out / "model.pt") as tmp:
            torch.save({"config": config, "classes": train_set.classes, "state_dict": model_cpu.state_dict()}, tmp)
        curve = [{"epoch": m.epoch, "train_loss": m.train_loss, "train_accuracy": m.train_accuracy}
                 for m in history]
        write_text_atomic(out / "curve.json", json.dumps(curve, indent=1) + "\n")
        with figures():
            save(plot_confusion(confusion, test_set.classes,
                                f"test set, accuracy {scored.accuracy:.4f} ({metrics['tta']} TTA)"),
                 out / "confusion.png", run, "plots/confusion.png")
        run.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        run.log_metrics({f"class_accuracy.{c}": a for c, a in per_class.items()})
        if policy is not None:
            run.log_dict(policy.to_dict(), "policy.json")
        run.log_dict({"config": config, "classes": train_set.classes}, "model_config.json")
        run.log_artifact(out / "model.pt", "weights")  # publish restores a champion from it
        run.log_dict({**metrics, "lineage": lineage}, "weights/metrics.json")  # and its metrics and lineage
        version = run.log_model(NormalisedClassifier(model_cpu).eval(), name="model", example=test_set.images[:4],
                                registered_model=params.tracking.registered_model,
                                tags={"test_accuracy": scored.accuracy, "fingerprint": fingerprint})
        metrics["registered_model"] = params.tracking.registered_model
        metrics["model_version"] = version
        metrics["lineage"] = lineage
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def confusion_matrix(data: ImageSet, predictions: torch.Tensor) -> torch.Tensor:
    """[classes x classes] counts, true class by row."""
    k = len(data.classes)
    index = data.labels.cpu() * k + predictions.cpu()
    return torch.bincount(index, minlength=k * k).reshape(k, k)
