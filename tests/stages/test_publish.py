"""The publish stage: @champion moves only to a better model; published/ follows it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.artifacts import (
    NormalisedClassifier,
    current_model,
    current_policy,
    model_history,
    policy_history,
    read_current,
)
from pipeline.augment import Policy
from pipeline.champion import champion_score, decide, find
from pipeline.config import Params
from pipeline.errors import DataError
from pipeline.stages.publish import publish_stage
from pipeline.tracking import EXPERIMENT_KIND, MODEL_DEVELOPMENT, Tracker

from ..data.trees import CLASSES
from ..publishing import demo_images, tiny_config, tiny_model
from .conftest import skip_requirements_inference, stage_params, write_policy_dir


@pytest.mark.parametrize(
    "new,champion,margin,promote,fragment",
    [
        (0.40, None, 0.0, True, "no champion yet"),
        (0.60, 0.50, 0.0, True, "beats the champion's 0.5000"),
        (0.50, 0.50, 0.0, False, "kept the champion"),  # equal is not better
        (0.45, 0.50, 0.0, False, "kept the champion"),
        (0.52, 0.50, 0.05, False, "by more than the margin 0.0500"),  # better, but within the margin
        (0.56, 0.50, 0.05, True, "by more than the margin 0.0500"),
    ],
)
def test_decide(new: float, champion: float | None, margin: float, promote: bool, fragment: str) -> None:
    promoted, reason = decide(new, champion, margin)
    assert promoted is promote
    assert fragment in reason


def test_the_champion_is_judged_on_todays_test_split_when_retrain_rescored_it() -> None:
    from types import SimpleNamespace

    champion = SimpleNamespace(version=3, tags={"test_accuracy": "0.91"})  # measured on an older split
    assert champion_score(None, None) == (None, "no champion")
    accuracy, basis = champion_score(champion, {"version": "3", "test_accuracy": 0.87})
    assert accuracy == 0.87 and "re-scored on this test split" in basis
    # a re-score of another version (the alias moved since), or none possible: the registered tag
    for rescored in ({"version": "2", "test_accuracy": 0.5}, {"version": "3", "test_accuracy": None}, None):
        accuracy, basis = champion_score(champion, rescored)
        assert accuracy == 0.91 and "as registered, on the test split of its day" in basis
    untagged = SimpleNamespace(version=3, tags={})
    assert champion_score(untagged, None) == (None, "champion version 3 has no test_accuracy tag and was not re-scored")


def fake_retrain(folder: Path, params: Params, *, accuracy: float, seed: int, like: dict[str, Any]) -> dict[str, Any]:
    """What retrain leaves behind for a model of the given test accuracy: a registered version
    (through RunLogger.log_model, as retrain does), model.pt and metrics.json."""
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    model = tiny_model(seed, num_classes=len(CLASSES))
    with tracker.stage_run("retrain", resume_key=f"fake-{uuid.uuid4().hex}") as run:
        version = run.log_model(NormalisedClassifier(model).eval(), name="model", example=demo_images(4),
                                registered_model=params.tracking.registered_model,
                                tags={"test_accuracy": accuracy})
    folder.mkdir(parents=True)
    torch.save({"config": tiny_config(), "classes": list(CLASSES), "state_dict": model.state_dict()},
               folder / "model.pt")
    metrics = {**like, "test_accuracy": accuracy, "model_version": version, "mlflow_run_id": run.run_id}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def same_weights(published: torch.nn.Module, model_pt: Path) -> bool:
    saved = torch.load(model_pt, map_location="cpu", weights_only=True)["state_dict"]
    state = published.state_dict()
    return state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)


def test_the_champion_moves_only_to_a_better_model(
    retrained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    skip_requirements_inference(monkeypatch)
    params, policy_dir, first = retrained["params"], retrained["policy_dir"], retrained["metrics"]
    name = params.tracking.registered_model
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    root = tmp_path / "published"
    accuracy = first["test_accuracy"]

    # 1. no champion yet: the real retrain result is promoted and published
    decision = publish_stage(params, retrained["out"], policy_dir, root, tmp_path / "p1")
    assert decision["promoted"] is True and "no champion yet" in decision["reason"]
    assert json.loads((tmp_path / "p1" / "decision.json").read_text()) == decision
    assert str(find(tracker, name).version) == "1"
    assert (read_current(root).policy, read_current(root).model) == (1, 1)
    assert decision["published_model_version"] == 1 and decision["published_policy_version"] == 1
    published = current_model(root)
    assert published.meta["lineage"]["registry"] == {"name": name, "version": "1"}
    assert published.meta["metrics"]["test_accuracy"] == accuracy
    assert published.classes == list(CLASSES) and published.config == retrained["config"]
    assert same_weights(published.load(), retrained["out"] / "model.pt")
    assert current_policy(root).policy() == Policy.from_json((policy_dir / "policy.json").read_text())
    assert tracker.client.get_run(first["mlflow_run_id"]).data.tags["autoaug.promoted"] == "True"

    # 2. the same result again: already the champion, nothing new published
    decision = publish_stage(params, retrained["out"], policy_dir, root, tmp_path / "p2")
    assert decision["promoted"] is False and "version 1 is already the champion" in decision["reason"]
    assert (read_current(root).policy, read_current(root).model) == (1, 1)
    assert len(policy_history(root)) == 1 and len(model_history(root)) == 1

    # 3. a worse model (version 2): the champion stays, and decision.json says why
    worse = fake_retrain(tmp_path / "r2", params, accuracy=accuracy / 2, seed=1, like=first)
    assert worse["model_version"] == "2"
    decision = publish_stage(params, tmp_path / "r2", policy_dir, root, tmp_path / "p3")
    assert decision["promoted"] is False and "kept the champion" in decision["reason"]
    assert decision["champion_accuracy_before"] == pytest.approx(accuracy)
    assert "as registered, on the test split of its day" in decision["reason"]  # the fake did not re-score
    assert str(decision["champion_version"]) == "1" and decision["model_version"] == "2"
    assert json.loads((tmp_path / "p3" / "decision.json").read_text()) == decision
    assert str(find(tracker, name).version) == "1"
    assert read_current(root).model == 1 and len(model_history(root)) == 1
    assert read_current(root).policy == 1 and len(policy_history(root)) == 1  # same policy: not re-published
    assert tracker.client.get_run(worse["mlflow_run_id"]).data.tags["autoaug.promoted"] == "False"

    # 4. a better model (version 3): promoted, published as model 2
    better = fake_retrain(tmp_path / "r3", params, accuracy=(1 + accuracy) / 2, seed=2, like=first)
    decision = publish_stage(params, tmp_path / "r3", policy_dir, root, tmp_path / "p4")
    assert decision["promoted"] is True and "beats the champion's" in decision["reason"]
    assert str(find(tracker, name).version) == better["model_version"] == "3"
    assert (read_current(root).policy, read_current(root).model) == (1, 2)
    assert current_model(root).meta["lineage"]["registry"]["version"] == "3"
    assert same_weights(current_model(root).load(), tmp_path / "r3" / "model.pt")
    assert [r.version for r in model_history(root)] == [2, 1]  # the history is kept

    # 5. a new policy is published even when the model is not
    new_policy = Policy([[("Posterize", 0.7, 0.4)]], metadata={"studies": ["search_policy-1111cccc-other-fold0"]})
    decision = publish_stage(params, tmp_path / "r3", write_policy_dir(tmp_path / "sp2", new_policy), root,
                             tmp_path / "p5")
    assert decision["promoted"] is False and "already the champion" in decision["reason"]
    assert (read_current(root).policy, read_current(root).model) == (2, 2)
    assert current_policy(root).policy() == new_policy

    # every experiment the stages made opens on its training runs in the MLflow UI
    for stage in ("retrain", "publish"):
        experiment = tracker.client.get_experiment_by_name(f"{params.tracking.experiment_prefix}-{stage}")
        assert experiment.tags[EXPERIMENT_KIND] == MODEL_DEVELOPMENT


def test_publish_without_a_retrain_result_names_the_stage_to_run(tmp_path: Path, mlflow_uri: str) -> None:
    params = stage_params(tmp_path, mlflow_uri)
    with pytest.raises(DataError, match=r"no retrain metrics; run `dvc repro retrain` first"):
        publish_stage(params, tmp_path / "retrain", write_policy_dir(tmp_path / "sp"), tmp_path / "published",
                      tmp_path / "out")
    assert not (tmp_path / "published").exists()


def test_decision_versions_have_one_type(tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    skip_requirements_inference(monkeypatch)
    params = stage_params(tmp_path, mlflow_uri)
    policy_dir = write_policy_dir(tmp_path / "sp")
    like = {"fingerprint": "f1ngerpr1nt", "test_accuracy": 0.0}
    fake_retrain(tmp_path / "r1", params, accuracy=0.6, seed=1, like=like)
    promoted = publish_stage(params, tmp_path / "r1", policy_dir, tmp_path / "published", tmp_path / "p1")
    fake_retrain(tmp_path / "r2", params, accuracy=0.4, seed=2, like=like)
    kept = publish_stage(params, tmp_path / "r2", policy_dir, tmp_path / "published", tmp_path / "p2")
    assert promoted["promoted"] and not kept["promoted"]
    assert promoted["champion_version"] == "1"
    assert kept["champion_version"] == "1"


def test_publishing_the_champion_into_an_empty_folder_writes_it(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    skip_requirements_inference(monkeypatch)
    params = stage_params(tmp_path, mlflow_uri)
    policy_dir = write_policy_dir(tmp_path / "sp")
    fake_retrain(tmp_path / "r1", params, accuracy=0.6, seed=1, like={"fingerprint": "f1ngerpr1nt"})
    assert publish_stage(params, tmp_path / "r1", policy_dir, tmp_path / "old", tmp_path / "p1")["promoted"]
    publish_stage(params, tmp_path / "r1", policy_dir, tmp_path / "new", tmp_path / "p2")
    assert current_policy(tmp_path / "new") is not None
    assert current_model(tmp_path / "new") is not None, "published/ lacks the registry's champion"


def test_another_registered_models_champion_with_the_same_version_number_is_published(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    skip_requirements_inference(monkeypatch)
    first, second = stage_params(tmp_path, mlflow_uri), stage_params(tmp_path, mlflow_uri)  # two registered models
    policy_dir = write_policy_dir(tmp_path / "sp")
    fake_retrain(tmp_path / "r1", first, accuracy=0.6, seed=1, like={"fingerprint": "f1ngerpr1nt"})
    fake_retrain(tmp_path / "r2", second, accuracy=0.5, seed=2, like={"fingerprint": "f1ngerpr1nt"})
    assert publish_stage(first, tmp_path / "r1", policy_dir, tmp_path / "published", tmp_path / "p1")["promoted"]
    decision = publish_stage(second, tmp_path / "r2", policy_dir, tmp_path / "published", tmp_path / "p2")
    assert decision["promoted"] and decision["champion_version"] == "1"  # version 1 again, of the other model
    served = current_model(tmp_path / "published")
    assert served is not None and served.meta["lineage"]["registry"] == {
        "name": second.tracking.registered_model, "version": "1"}
    assert same_weights(served.load(), tmp_path / "r2" / "model.pt")


def test_a_kept_champion_restored_from_the_registry_keeps_its_own_metrics_and_lineage(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.stages.retrain import retrain_stage

    from .conftest import make_store, write_chosen

    skip_requirements_inference(monkeypatch)
    params = stage_params(tmp_path, mlflow_uri)
    policy_dir = write_policy_dir(tmp_path / "sp")
    first = retrain_stage(params, make_store(tmp_path), write_chosen(tmp_path / "chosen.json", tiny_config()),
                          policy_dir / "policy.json", tmp_path / "r1", progress=False)
    assert publish_stage(params, tmp_path / "r1", policy_dir, tmp_path / "old", tmp_path / "p1")["promoted"]
    # a worse model, published into an empty folder (a new volume): the champion comes from the registry
    fake_retrain(tmp_path / "r2", params, accuracy=first["test_accuracy"] / 2, seed=3, like=first)
    decision = publish_stage(params, tmp_path / "r2", policy_dir, tmp_path / "new", tmp_path / "p2")
    assert decision["promoted"] is False and decision["champion_version"] == str(first["model_version"])
    restored, original = current_model(tmp_path / "new"), current_model(tmp_path / "old")
    assert restored is not None and original is not None
    assert restored.meta["metrics"] == original.meta["metrics"]  # per-class accuracies, TTA name, integer counts
    assert restored.meta["metrics"]["tta"] == "flip+translate" and isinstance(restored.meta["metrics"]["epochs"], int)
    lineage = restored.meta["lineage"]
    assert lineage["registry"] == {"name": params.tracking.registered_model, "version": str(first["model_version"])}
    assert lineage["mlflow_run_ids"]["retrain"] == first["mlflow_run_id"]  # its own run, not the worse model's
    assert lineage["studies"]["search_policy"] == first["lineage"]["policy_studies"]
    assert lineage["policy_version"] is None and lineage["restored_from_registry"] is True
    assert same_weights(restored.load(), tmp_path / "r1" / "model.pt")


def test_a_run_without_metrics_json_has_them_rebuilt_from_mlflow() -> None:
    from types import SimpleNamespace

    from pipeline.champion import metrics_of_run

    run = SimpleNamespace(data=SimpleNamespace(
        metrics={"test_accuracy": 0.9, "epochs": 30.0, "train_images": 50000.0, "class_accuracy.cat": 0.8,
                 "class_accuracy.dog": 0.85},
        params={"retrain.recipe.tta": "True", "retrain.recipe.tta_translate": "False"}))
    assert metrics_of_run(run) == {"test_accuracy": 0.9, "epochs": 30, "train_images": 50000, "tta": "flip",
                                    "per_class_accuracy": {"cat": 0.8, "dog": 0.85}}


def test_the_gate_compares_on_the_same_test_images_and_shows_its_statistics(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline import names
    from pipeline.history import data_versions

    skip_requirements_inference(monkeypatch)
    params = stage_params(tmp_path, mlflow_uri)
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    policy_dir = write_policy_dir(tmp_path / "sp")
    like = {"fingerprint": "f1ngerpr1nt"}
    fake_retrain(tmp_path / "r1", params, accuracy=0.88, seed=1, like=like)
    assert publish_stage(params, tmp_path / "r1", policy_dir, tmp_path / "published", tmp_path / "p1")["promoted"]

    def beside_the_champion(candidate_only: int, champion_only: int) -> dict[str, Any]:
        """What retrain records after scoring the candidate beside champion version 1."""
        return {**like, "champion_rescored": {"version": "1", "test_accuracy": 0.88},
                "champion_paired": {"version": "1", "n": 10_000, "candidate_only": candidate_only,
                                    "champion_only": champion_only, "champion_params": 1000,
                                    "champion_latency_ms_batch1": 1.0}}

    # better by one image: noise, not promoted, and decision.json and the run say why
    fake_retrain(tmp_path / "r2", params, accuracy=0.8801, seed=2, like=beside_the_champion(1, 0))
    decision = publish_stage(params, tmp_path / "r2", policy_dir, tmp_path / "published", tmp_path / "p2")
    assert decision["promoted"] is False and decision["gate"] == "kept"
    assert decision["comparison"]["p_value"] == 0.5
    assert decision["comparison"]["difference_points"] == pytest.approx(0.01)
    assert json.loads((tmp_path / "p2" / "decision.json").read_text()) == decision
    run = tracker.client.get_run(decision["mlflow_run_ids"]["publish"])
    assert run.data.metrics[names.P_VALUE] == 0.5 and run.data.tags[names.GATE] == "kept"
    assert str(find(tracker, params.tracking.registered_model).version) == "1"

    # 60 against 10 of 10,000: promoted, with its interval and p-value
    fake_retrain(tmp_path / "r3", params, accuracy=0.885, seed=3, like=beside_the_champion(60, 10))
    decision = publish_stage(params, tmp_path / "r3", policy_dir, tmp_path / "published", tmp_path / "p3")
    assert decision["promoted"] is True and decision["gate"] == "better"
    low, high = decision["comparison"]["interval_points"]
    assert 0.3 < low < 0.5 < high < 0.7
    assert str(find(tracker, params.tracking.registered_model).version) == "3"
    run = tracker.client.get_run(decision["mlflow_run_ids"]["publish"])
    assert run.data.metrics[names.DIFFERENCE_POINTS] == pytest.approx(0.5)
    # `autoaug history` shows the difference, its interval and the p-value
    row = [v.row() for v in data_versions(tracker)][-1]
    assert row["vs champion"] == "+0.50 [+0.34,+0.66] p=4e-10" and row["champion"] == "yes"
