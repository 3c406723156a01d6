"""The retrain stage: the chosen configuration trained on the whole raw store, scored on its test
split, saved, and registered in MLflow so that it loads back without autoaug's code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial

import pipeline.stages.retrain as retrain
from pipeline.artifacts import NormalisedClassifier
from pipeline.augment import Policy
from pipeline.champion import STORED_NOTE, architecture, promote
from pipeline.config import Params
from pipeline.errors import ConfigError, DataError
from pipeline.models import build_model, count_macs, count_params, suggest_config
from pipeline.search.model import Candidate
from pipeline.stages.retrain import retrain_stage
from pipeline.tracking import EXPERIMENT_KIND, MODEL_DEVELOPMENT, Tracker

from ..data.trees import CLASSES
from ..publishing import tiny_config
from .conftest import TEST_PER_CLASS, TRAIN_PER_CLASS, stage_params, write_chosen, write_policy_dir


def no_training(*args: Any, **kwargs: Any) -> None:
    pytest.fail("trained before checking the inputs")


def test_metrics_describe_the_trained_model(retrained: dict[str, Any]) -> None:
    metrics, params, out = retrained["metrics"], retrained["params"], retrained["out"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_images"] == TEST_PER_CLASS * len(CLASSES)
    assert metrics["train_images"] == TRAIN_PER_CLASS * len(CLASSES)
    assert set(metrics["per_class_accuracy"]) == set(CLASSES)
    assert all(0.0 <= a <= 1.0 for a in metrics["per_class_accuracy"].values())
    # the test split is balanced: overall accuracy is the mean of the per-class ones
    assert metrics["test_accuracy"] == pytest.approx(sum(metrics["per_class_accuracy"].values()) / len(CLASSES))
    model = build_model(retrained["config"], len(CLASSES))
    assert metrics["params"] == count_params(model) and metrics["macs"] == count_macs(model)
    assert metrics["latency_ms_batch1"] > 0 and metrics["latency_ms_batch256"] > 0
    assert metrics["tta"] == "flip+translate"  # the retrain recipe: airbench's flip + 1-pixel translations
    assert metrics["epochs"] == metrics["planned_epochs"] == params.retrain.recipe.epochs
    assert metrics["time_limit_minutes"] is None  # the tests' params turn the limit off
    # the search's prediction (chosen.json: from scratch, the same recipe and images) beside the time it took
    assert metrics["predicted_minutes"] == pytest.approx(0.3 * 2 * 4 / 60)
    assert metrics["train_minutes"] > 0
    assert metrics["registered_model"] == params.tracking.registered_model
    assert metrics["model_version"] == "1"
    assert metrics["fingerprint"] == "f1ngerpr1nt"  # carried over from chosen.json
    assert metrics["lineage"]["search_model_study"] == "search_model-0000bbbb-f1ngerpr1nt"
    assert metrics["lineage"]["policy_studies"] == ["search_policy-0000aaaa-f1ngerpr1nt-fold0"]


def test_outputs_are_the_weights_the_curve_and_the_confusion_matrix(retrained: dict[str, Any]) -> None:
    out, params = retrained["out"], retrained["params"]
    saved = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert saved["config"] == retrained["config"] and saved["classes"] == list(CLASSES)
    model = build_model(saved["config"], len(saved["classes"]))
    model.load_state_dict(saved["state_dict"])  # strict: every weight present, nothing extra
    curve = json.loads((out / "curve.json").read_text())
    assert [c["epoch"] for c in curve] == list(range(1, params.retrain.recipe.epochs + 1))
    assert all(c["train_loss"] > 0 and 0 <= c["train_accuracy"] <= 1 for c in curve)
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_run_is_logged_and_the_version_carries_its_accuracy(retrained: dict[str, Any]) -> None:
    metrics, params = retrained["metrics"], retrained["params"]
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    run = tracker.client.get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run.data.metrics["predicted_minutes"] == pytest.approx(metrics["predicted_minutes"])
    assert run.data.metrics["train_minutes"] == pytest.approx(metrics["train_minutes"])
    # the stage's steps, in order, on the run and in metrics.json: what it spends beyond training
    steps = metrics["step_seconds"]
    assert list(steps) == ["load", "plan", "train", "score", "rescore_champion", "measure", "write", "register"]
    assert all(v >= 0 for v in steps.values()) and steps["train"] > 0
    assert {f"step_seconds.{k}": v for k, v in steps.items()}.items() <= run.data.metrics.items()
    assert run.data.tags["autoaug.fingerprint"] == "f1ngerpr1nt"
    version = tracker.client.get_model_version(params.tracking.registered_model, "1")
    assert float(version.tags["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
    assert version.run_id == metrics["mlflow_run_id"]
    experiment = tracker.client.get_experiment(run.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_DEVELOPMENT


def test_the_registered_model_loads_in_a_fresh_process_without_autoaug(retrained: dict[str, Any]) -> None:
    params, out, tmp = retrained["params"], retrained["out"], retrained["tmp"]
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(images, tmp / "images.pt")
    script = textwrap.dedent(f"""
        import sys
        import mlflow, mlflow.pytorch, torch
        mlflow.set_tracking_uri({params.tracking.mlflow_uri!r})
        mlflow.set_registry_uri({params.tracking.mlflow_uri!r})
        model = mlflow.pytorch.load_model("models:/{params.tracking.registered_model}/1")
        with torch.no_grad():
            logits = model(torch.load({str(tmp / "images.pt")!r}))
        torch.save(logits, {str(tmp / "logits.pt")!r})
        print("autoaug imported:", any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "autoaug imported: False" in done.stdout
    saved = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    model = build_model(saved["config"], len(saved["classes"]))
    model.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        expected = NormalisedClassifier(model).eval()(images)
    logits = torch.load(tmp / "logits.pt")
    assert logits.shape == (5, len(CLASSES))
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_a_chosen_config_outside_the_space_fails_before_training(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retrain, "train", no_training)
    config = tiny_config()
    config["blocks"][0]["kernel"] = 4
    chosen = write_chosen(tmp_path / "chosen.json", config)
    params = stage_params(tmp_path, mlflow_uri)
    with pytest.raises(DataError, match=r"block 0: kernel 4.*dvc repro search_model") as caught:
        retrain_stage(params, tmp_path / "no-store", chosen, write_policy_dir(tmp_path / "sp") / "policy.json",
                      tmp_path / "out", progress=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_missing_chosen_json_names_the_stage_to_run(tmp_path: Path, mlflow_uri: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrain, "train", no_training)
    params = stage_params(tmp_path, mlflow_uri)
    with pytest.raises(DataError, match=r"chosen.json: no chosen model; run `dvc repro search_model` first"):
        retrain_stage(params, tmp_path / "no-store", tmp_path / "chosen.json",
                      write_policy_dir(tmp_path / "sp") / "policy.json", tmp_path / "out", progress=False)


def test_a_missing_policy_is_a_data_error(tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrain, "train", no_training)
    params = stage_params(tmp_path, mlflow_uri)
    with pytest.raises(DataError, match="dvc repro search_policy"):
        retrain_stage(params, tmp_path / "no-store", write_chosen(tmp_path / "chosen.json", "resnet20"),
                      tmp_path / "policy.json", tmp_path / "out", progress=False)


def _unreachable(tmp_path: Path, mlflow_uri: str) -> Any:
    params = stage_params(tmp_path, mlflow_uri)
    return params.model_copy(update={"tracking": params.tracking.model_copy(
        update={"mlflow_uri": "http://127.0.0.1:1"})})


def test_an_unreachable_mlflow_store_fails_before_training(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retrain, "train", no_training)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # MLflow's HTTP retries back off for minutes
    with pytest.raises(ConfigError, match=r"tracking.mlflow_uri = 'http://127.0.0.1:1'"):
        retrain_stage(_unreachable(tmp_path, mlflow_uri), tmp_path / "no-store", write_chosen(tmp_path / "chosen.json", "resnet20"),
                      write_policy_dir(tmp_path / "sp") / "policy.json", tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "model.pt").exists()


def test_an_unreachable_mlflow_server_is_reported_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    with pytest.raises(ConfigError):
        Tracker("http://127.0.0.1:1")
    assert sum(slept) < 10, f"backed off {sum(slept):.0f} s before giving up"


def test_with_warm_epochs_retrain_starts_from_a_champion_of_the_same_architecture(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    from .conftest import make_store, skip_requirements_inference

    skip_requirements_inference(monkeypatch)
    params = stage_params(tmp_path, mlflow_uri, retrain={"recipe": {"epochs": 2, "batch_size": 16, "eval_every": 0},
                                                         "warm_epochs": 1})
    store, policy = make_store(tmp_path), write_policy_dir(tmp_path / "policy") / "policy.json"
    chosen = write_chosen(tmp_path / "chosen.json", tiny_config(), retrain_step_seconds=0.3,
                          predicted_retrain_minutes=0.3 * 2 * 4 / 60)  # 2 epochs of 4 steps
    starts: list[dict[str, torch.Tensor]] = []
    lrs: list[float] = []
    real_train = retrain.train

    def spy(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        lrs.append(args[1].lr)
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(retrain, "train", spy)
    first = retrain_stage(params, store, chosen, policy, tmp_path / "r1", progress=False)
    assert "no @champion" in capsys.readouterr().out
    assert first["epochs"] == 2 and first["warm_start_from_version"] is None
    assert first["champion_rescored"] is None

    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    assert architecture(tracker, params.tracking.registered_model) is None
    promote(tracker, params.tracking.registered_model, str(first["model_version"]))
    assert architecture(tracker, params.tracking.registered_model) == \
        (str(first["model_version"]), {"config": tiny_config(), "classes": list(CLASSES)})
    second = retrain_stage(params, store, chosen, policy, tmp_path / "r2", progress=False)
    assert "starting from the champion's weights" in capsys.readouterr().out
    assert second["epochs"] == 1 and second["warm_start_from_version"] == str(first["model_version"])
    # the prediction was for the full recipe: a 1-epoch fine-tune is predicted half of it
    assert first["predicted_minutes"] == pytest.approx(0.3 * 2 * 4 / 60)
    assert second["predicted_minutes"] == pytest.approx(first["predicted_minutes"] / 2)
    # publish compares with the champion re-scored on this test split: the same weights, the same
    # score, read from the predictions its own retrain stored (same test images, TTA, precision)
    assert second["champion_rescored"] == {"version": str(first["model_version"]),
                                           "test_accuracy": pytest.approx(first["test_accuracy"], abs=1e-9),
                                           "note": STORED_NOTE}
    # ... image by image beside the candidate: the discordant counts publish's paired test reads
    paired = second["champion_paired"]
    assert paired["version"] == str(first["model_version"]) and paired["n"] == second["test_images"]
    assert (paired["candidate_only"] - paired["champion_only"]) / paired["n"] == \
        pytest.approx(second["test_accuracy"] - first["test_accuracy"], abs=1e-9)
    assert paired["champion_params"] == first["params"] and paired["champion_latency_ms_batch1"] > 0
    assert first["champion_paired"] is None
    champion = torch.load(tmp_path / "r1" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(starts[1][k], v) for k, v in champion.items())  # trained on from its weights
    assert lrs == [pytest.approx(params.retrain.recipe.lr), pytest.approx(params.retrain.recipe.lr * 0.1)]
    run = tracker.client.get_run(second["mlflow_run_id"])
    assert run.data.tags["autoaug.warm_start_from"] == f"{params.tracking.registered_model}@{first['model_version']}"
    assert run.info.run_id != first["mlflow_run_id"]

    # another TTA than the champion was scored at: its stored predictions do not apply, it is scored again
    other_tta = params.model_copy(update={"retrain": params.retrain.model_copy(update={
        "recipe": params.retrain.recipe.model_copy(update={"tta_translate": not params.retrain.recipe.tta_translate})})})
    rescored = retrain_stage(other_tta, store, chosen, policy, tmp_path / "r2b", progress=False)["champion_rescored"]
    assert rescored["version"] == str(first["model_version"]) and "note" not in rescored
    assert 0 <= rescored["test_accuracy"] <= 1

    # another architecture: from scratch, the full recipe
    other = write_chosen(tmp_path / "other.json", tiny_config(stem_channels=24))
    third = retrain_stage(params, store, other, policy, tmp_path / "r3", progress=False)
    assert "not the champion's" in capsys.readouterr().out
    assert third["epochs"] == 2 and third["warm_start_from_version"] is None
    assert third["predicted_minutes"] is None and third["train_minutes"] > 0  # chosen.json predicted nothing



def search_trial(config: dict[str, Any], number: int, accuracy: float) -> FrozenTrial:
    """A finished model-search trial that trained ``config``."""
    fixed = {**{f"stem.{k}": v for k, v in config["stem"].items()},
             **{f"block{i}.{k}": v for i, block in enumerate(config["blocks"]) for k, v in block.items()},
             **{f"head.{k}": v for k, v in config["head"].items()}}
    study = optuna.create_study()
    study.enqueue_trial(fixed)
    trial = study.ask()
    assert suggest_config(trial) == config
    done = optuna.trial.create_trial(values=[accuracy, 1000.0], params=trial.params, distributions=trial.distributions,
                                     user_attrs={"accuracy": accuracy, "params": 1000, "macs": 1})
    done.number = number
    return done


def test_search_model_keeps_the_champions_architecture_within_keep_champion_points(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    from pipeline.champion import champion_architecture, keep_or_choose

    from .conftest import make_store, skip_requirements_inference

    skip_requirements_inference(monkeypatch)
    params = stage_params(tmp_path, mlflow_uri, retrain={"recipe": {"epochs": 1, "batch_size": 16, "eval_every": 0},
                                                         "warm_epochs": 1},
                          model_search={"choose": {"keep_champion_points": 1.0}})
    store, policy = make_store(tmp_path), write_policy_dir(tmp_path / "policy") / "policy.json"
    champion_cfg, new_cfg = tiny_config(), tiny_config(stem_channels=24)
    trials = [search_trial(champion_cfg, 0, 0.500), search_trial(new_cfg, 5, 0.508)]
    pick = Candidate.from_trial(trials[1])
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    assert champion_architecture(tracker, params, CLASSES) is None  # no champion yet

    first = retrain_stage(params, store, write_chosen(tmp_path / "chosen.json", champion_cfg), policy,
                          tmp_path / "r1", progress=False)
    promote(tracker, params.tracking.registered_model, str(first["model_version"]))
    champion = champion_architecture(tracker, params, CLASSES)
    assert champion == (str(first["model_version"]), champion_cfg)
    capsys.readouterr()
    kept = keep_or_choose(params, pick, champion, trials)
    assert kept is not None and kept.trial == 0 and kept.config == champion_cfg
    assert "keeping the @champion's architecture" in capsys.readouterr().out

    # 1.2 points below the pick: the pick stands, and the stage says why
    assert keep_or_choose(params, pick, champion, [search_trial(champion_cfg, 0, 0.496), trials[1]]) is None
    assert "choosing trial 5" in capsys.readouterr().out
    # no warm retrain to gain, or other classes: the champion's architecture is not considered
    cold = params.model_copy(update={"retrain": params.retrain.model_copy(update={"warm_epochs": 0})})
    assert champion_architecture(tracker, cold, CLASSES) is None
    assert "retrain.warm_epochs = 0" in capsys.readouterr().out
    assert champion_architecture(tracker, params, list(CLASSES)[:-1]) is None
    assert "are not the sample's" in capsys.readouterr().out
    off = params.model_copy(update={"model_search": params.model_search.model_copy(
        update={"choose": params.model_search.choose.model_copy(update={"keep_champion_points": None})})})
    assert keep_or_choose(off, pick, champion, trials) is None


def test_an_interrupted_retrain_resumes_its_run_only_for_the_same_training(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A resumed run keeps its first attempt's params: a rerun with another recipe or policy must
    # get its own run, or MLflow would show the old epochs/policy beside the new run's metrics.
    from .conftest import make_store

    params = stage_params(tmp_path, mlflow_uri)
    store, chosen = make_store(tmp_path), write_chosen(tmp_path / "chosen.json", tiny_config())
    policy = write_policy_dir(tmp_path / "policy") / "policy.json"

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(retrain, "train", interrupted)
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)

    def attempt(p: Any, policy_path: Path) -> str:
        with pytest.raises(KeyboardInterrupt):
            retrain_stage(p, store, chosen, policy_path, tmp_path / "out", progress=False)
        runs = tracker.client.search_runs([tracker.experiment_id("retrain")], order_by=["attributes.start_time DESC"])
        return runs[0].info.run_id

    first = attempt(params, policy)
    assert attempt(params, policy) == first  # the same training: the interrupted run goes on
    longer = params.model_copy(update={"retrain": params.retrain.model_copy(
        update={"recipe": params.retrain.recipe.model_copy(update={"epochs": 3})})})
    second = attempt(longer, policy)
    assert second != first and attempt(longer, policy) == second
    other_policy = write_policy_dir(tmp_path / "other", Policy([[("Rotate", 0.9, 0.9)]])) / "policy.json"
    assert attempt(params, other_policy) not in (first, second)
    assert tracker.client.get_run(first).data.params["retrain.recipe.epochs"] == "2"


def _restarted_once(tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
                    error: Exception | None = None) -> tuple[Params, dict[str, Any], Path, Path, Path]:
    """A retrain whose first training raises ``error`` (a divergence by default): (its params, its
    metrics, the store, the policy, chosen.json), after checking it trained again at half the lr."""
    from ..fakes import diverging
    from .conftest import make_store, skip_requirements_inference

    lrs: list[float] = []
    monkeypatch.setattr(retrain, "train", diverging(retrain.train, on_call=1, lrs=lrs, error=error))
    skip_requirements_inference(monkeypatch)
    store, policy = make_store(tmp_path), write_policy_dir(tmp_path / "sp") / "policy.json"
    chosen = write_chosen(tmp_path / "chosen.json", tiny_config())
    params = stage_params(tmp_path, mlflow_uri)
    metrics = retrain_stage(params, store, chosen, policy, tmp_path / "out", progress=False)
    assert lrs == [params.retrain.recipe.lr, params.retrain.recipe.lr / 2]
    return params, metrics, store, policy, chosen


def test_a_diverged_retrain_starts_again_at_half_the_lr_and_says_so(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.train import TrainingDivergedError

    params, metrics, store, policy, chosen = _restarted_once(tmp_path, mlflow_uri, monkeypatch)
    assert metrics["diverged_restarts"] == 1 and 0 <= metrics["test_accuracy"] <= 1
    run = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix).client.get_run(metrics["mlflow_run_id"])
    assert run.data.metrics["diverged_restarts"] == 1

    # with no retries left, the divergence is the stage's error
    monkeypatch.setattr(retrain, "train", lambda *a, **k: (_ for _ in ()).throw(
        TrainingDivergedError(epoch=1, step=2, loss=float("nan"))))
    strict = stage_params(tmp_path, mlflow_uri, retrain={"recipe": {"epochs": 2, "batch_size": 16}, "diverged_retries": 0})
    with pytest.raises(TrainingDivergedError):
        retrain_stage(strict, store, chosen, policy, tmp_path / "out2", progress=False)


def test_a_collapsed_retrain_starts_again_at_half_the_lr_too(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # A collapse (accuracy back to chance, the loss finite) is a divergence the loss check cannot see
    from ..fakes import collapsed

    metrics = _restarted_once(tmp_path, mlflow_uri, monkeypatch, collapsed(4, 392))[1]
    assert metrics["diverged_restarts"] == 1
    assert "training collapsed: training accuracy 0.100 at epoch 4" in capsys.readouterr().out


def test_a_retrain_slower_than_its_prediction_trains_the_epochs_that_fit(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from .conftest import make_store, skip_requirements_inference

    skip_requirements_inference(monkeypatch)
    store, policy = make_store(tmp_path), write_policy_dir(tmp_path / "sp") / "policy.json"
    # a step predicted at a microsecond: every epoch is far past the limit
    chosen = write_chosen(tmp_path / "chosen.json", tiny_config(), retrain_step_seconds=1e-6)
    params = stage_params(tmp_path, mlflow_uri, retrain={"recipe": {"epochs": 3, "batch_size": 16, "eval_every": 0},
                                                         "max_overrun": 1.5})
    metrics = retrain_stage(params, store, chosen, policy, tmp_path / "out", progress=False)
    assert "time limit" in capsys.readouterr().out
    assert metrics["planned_epochs"] == 3 and metrics["epochs"] == 2  # one epoch more than the first, to decay on
    assert metrics["predicted_minutes"] == pytest.approx(1e-6 * 3 * 4 / 60)
    assert metrics["time_limit_minutes"] == pytest.approx(metrics["predicted_minutes"] * 1.5)
    assert len(json.loads((tmp_path / "out" / "curve.json").read_text())) == 2
    run = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix).client.get_run(metrics["mlflow_run_id"])
    assert run.data.metrics["planned_epochs"] == 3 and run.data.metrics["epochs"] == 2

    # off: the recipe's epochs whatever they take
    off = stage_params(tmp_path, mlflow_uri, retrain={"recipe": {"epochs": 3, "batch_size": 16, "eval_every": 0},
                                                      "max_overrun": None})
    metrics = retrain_stage(off, store, chosen, policy, tmp_path / "out2", progress=False)
    assert metrics["epochs"] == metrics["planned_epochs"] == 3 and metrics["time_limit_minutes"] is None


def test_stored_test_predictions_are_read_only_under_the_key_they_were_made_at(mlflow_uri: str) -> None:
    # the champion's re-score reads them when the weights, the test images, TTA and precision
    # are the same; anything else (other weights, a grown test split, another TTA) or a
    # malformed file scores it again
    from pipeline.champion import (
        PREDICTIONS_ARTIFACT,
        predictions_key,
        store_predictions,
        stored_predictions,
    )
    from pipeline.config import TrainConfig
    from pipeline.data import ImageSet

    images = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    test_set = ImageSet(images, torch.tensor([0, 1, 2]), ["a", "b", "c"], ["i0", "i1", "i2"])
    recipe, cpu = TrainConfig(), torch.device("cpu")
    weights = build_model(tiny_config(), num_classes=3).state_dict()
    tracker = Tracker(mlflow_uri, f"test-{uuid.uuid4().hex[:8]}")
    key = predictions_key(test_set, recipe, cpu, weights)
    with tracker.stage_run("retrain", resume_key="k") as run:
        assert stored_predictions(tracker, run.run_id, key, 3) is None  # a run without them
        store_predictions(run, key, torch.tensor([0, 2, 2]))
    assert torch.equal(stored_predictions(tracker, run.run_id, key, 3), torch.tensor([0, 2, 2]))
    grown = ImageSet(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 2, 0]), test_set.classes,
                     [*test_set.ids, "i3"])
    other_tta = recipe.model_copy(update={"tta_translate": not recipe.tta_translate})
    other_weights = {k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}
    for changed in (predictions_key(grown, recipe, cpu, weights), predictions_key(test_set, other_tta, cpu, weights),
                    predictions_key(test_set, recipe, cpu, other_weights)):
        assert changed != key and stored_predictions(tracker, run.run_id, changed, 3) is None
    for bad in ([0, 2], [0, 2, 3], [0, 2, -1], "x", None):  # short, out of range, not a list of classes
        with tracker.stage_run("retrain", resume_key=f"bad-{bad}") as broken:
            broken.log_dict({**key, "predictions": bad}, PREDICTIONS_ARTIFACT)
        assert stored_predictions(tracker, broken.run_id, key, 3) is None
