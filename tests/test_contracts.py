"""The files stages hand to each other (pipeline.contracts): one model per file, read with one
clear error line, written atomically in the layout DVC has always seen."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.contracts import (
    ChampionRescore,
    Chosen,
    Decision,
    Pareto,
    PolicySummary,
    RetrainMetrics,
    SampleManifest,
    ScoredModel,
)
from pipeline.errors import DataError

from .publishing import tiny_config


def manifest() -> SampleManifest:
    return SampleManifest(size=2, seed=0, fingerprint="f1ngerpr1nt", classes=["cat", "dog"],
                          class_counts={"cat": 1, "dog": 1}, pool_size=4, pool_class_counts={"cat": 2, "dog": 2},
                          ids=["a", "b"], labels=[0, 1])


def test_a_file_round_trips_in_its_writers_layout(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    manifest().write(path)
    assert SampleManifest.read(path) == manifest()
    text = path.read_text()
    assert text.startswith('{\n "format": 1,\n "size": 2,') and text.endswith("}\n")  # indent 1, as always
    assert list(json.loads(text)) == ["format", "size", "seed", "fingerprint", "classes", "class_counts",
                                      "pool_size", "pool_class_counts", "ids", "labels"]


@pytest.mark.parametrize("model,fragment", [
    (SampleManifest, "no sample manifest; run `autoaug sample` (or `dvc repro sample`) first"),
    (PolicySummary, "no policy search summary; run `dvc repro search_policy` first"),
    (Pareto, "no Pareto front; run `dvc repro search_model` first"),
    (Chosen, "no chosen model; run `dvc repro search_model` first"),
    (RetrainMetrics, "no retrain metrics; run `dvc repro retrain` first"),
    (Decision, "no publish decision; run `dvc repro publish` first"),
])
def test_a_missing_file_names_the_stage_to_run(tmp_path: Path, model: type, fragment: str) -> None:
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'x.json'}: {fragment}")):
        model.read(tmp_path / "x.json")


def test_a_malformed_file_is_one_line_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text('{"test_accuracy": "high"}')
    with pytest.raises(DataError, match=r"not a valid retrain metrics \(test_accuracy: .*\); re-run `dvc repro "
                                        r"retrain`") as caught:
        RetrainMetrics.read(path)
    assert "\n" not in str(caught.value)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a valid retrain metrics"):
        RetrainMetrics.read(path)
    path.write_text(json.dumps({**manifest().to_json(), "surprise": 1}))  # a strict file: unknown keys refused
    with pytest.raises(DataError, match="surprise"):
        SampleManifest.read(path)


def test_free_form_files_keep_their_extra_keys(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"mlflow_run_id": None, "trials": 4, "score": 0.5, "nested": {"a": 1}}))
    summary = PolicySummary.read(path)
    assert summary.trials == 4 and summary.model_extra == {"score": 0.5, "nested": {"a": 1}}
    assert summary.figures() == {"mlflow_run_id": None, "trials": 4, "score": 0.5}  # scalars the file holds


def test_chosen_needs_only_a_configuration_that_fits_the_space(tmp_path: Path) -> None:
    path = tmp_path / "chosen.json"
    path.write_text(json.dumps({"config": tiny_config(), "params": 12}))  # what bench/results holds
    chosen = Chosen.read(path)
    assert chosen.config == tiny_config() and chosen.params == 12 and chosen.fingerprint == ""
    path.write_text(json.dumps({"config": "resnet20"}))
    assert Chosen.read(path).config == "resnet20"
    bad = tiny_config()
    bad["blocks"][0]["kernel"] = 4
    path.write_text(json.dumps({"config": bad}))
    with pytest.raises(DataError, match=r"no longer fits the search space \(block 0: kernel 4.*dvc repro search_model"):
        Chosen.read(path)


def test_retrain_metrics_say_what_is_logged_and_published() -> None:
    metrics = RetrainMetrics(test_accuracy=0.9, epochs=3, per_class_accuracy={"cat": 0.8, "dog": 1.0}, tta="flip",
                             champion_rescored=ChampionRescore(version="2", test_accuracy=0.85))
    assert metrics.mlflow_metrics() == {"test_accuracy": 0.9, "epochs": 3.0, "class_accuracy.cat": 0.8,
                                        "class_accuracy.dog": 1.0}
    assert metrics.published() == {"test_accuracy": 0.9, "per_class_accuracy": {"cat": 0.8, "dog": 1.0},
                                   "tta": "flip", "epochs": 3}
    # a re-score without a note is written as it always was: no "note" key
    assert metrics.to_json()["champion_rescored"] == {"version": "2", "test_accuracy": 0.85}
    unreadable = ChampionRescore(version="2", test_accuracy=None, note="weights unreadable")
    assert unreadable.model_dump() == {"version": "2", "test_accuracy": None, "note": "weights unreadable"}
    # a subset (metrics rebuilt from MLflow) publishes only what it has
    assert RetrainMetrics.model_validate({"test_accuracy": 0.7, "train_loss": 0.1}).published() == {"test_accuracy": 0.7}


def test_pareto_holds_scored_models() -> None:
    scored = ScoredModel(config="resnet20", accuracy=0.5, params=270_000, macs=40_000_000)
    pareto = Pareto(fingerprint="f", study="s", objectives=["accuracy", "params"], max_params=None, max_macs=None,
                    max_train_cost=None, front=[scored], references={"resnet20": scored}, picks={"most_accurate": None})
    assert Pareto.model_validate(pareto.to_json()) == pareto
