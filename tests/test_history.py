"""`autoaug history`: one line per data version from the stage runs' tags and metrics."""

from __future__ import annotations

import uuid
from pathlib import Path

from pipeline.cli import main
from pipeline.history import data_versions, format_table
from pipeline.tracking import Tracker


def _stage(tracker: Tracker, stage: str, fingerprint: str, metrics: dict[str, float],
           tags: dict[str, str] | None = None) -> str:
    with tracker.stage_run(stage, resume_key=f"{stage}-{fingerprint}",
                           tags={"autoaug.fingerprint": fingerprint, **(tags or {})}) as run:
        run.log_metrics(metrics)
        run.child("fold0", key_tag="autoaug.fold", key="0").log_metrics({"best_score": 0.1})  # not a version
    return run.run_id


def test_one_line_per_data_version_with_its_lineage(tmp_path: Path, capsys) -> None:
    prefix = f"hist-{uuid.uuid4().hex[:6]}"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, prefix)
    _stage(tracker, "search_policy", "aaaa1111", {"best_score_mean": 0.61, "warm_started_trials": 0})
    _stage(tracker, "search_model", "aaaa1111", {"pareto_size": 4})
    _stage(tracker, "retrain", "aaaa1111", {"test_accuracy": 0.8, "train_images": 45000})
    _stage(tracker, "publish", "aaaa1111", {}, {"autoaug.champion": "True"})
    policy = _stage(tracker, "search_policy", "bbbb2222", {"best_score_mean": 0.63, "warm_started_trials": 15},
                    {"autoaug.warm_start_from": "search_policy-0f0f0f0f-aaaa1111-fold0,"
                                                "search_policy-0f0f0f0f-aaaa1111-fold1"})
    _stage(tracker, "search_model", "bbbb2222", {"pareto_size": 3, "champion_architecture_version": 1,
                                                 "kept_champion": 1})
    _stage(tracker, "retrain", "bbbb2222", {"test_accuracy": 0.79, "train_images": 50000})
    _stage(tracker, "publish", "bbbb2222", {}, {"autoaug.champion": "False"})

    rows = [v.row() for v in data_versions(tracker)]
    assert [r["fingerprint"] for r in rows] == ["aaaa1111", "bbbb2222"]  # oldest first
    first, second = rows
    assert (first["train images"], first["policy score"], first["pareto"], first["test acc"], first["champion"],
            first["warm from"]) == ("45000", "0.6100", "4", "0.8000", "yes", "-")
    assert (second["warm trials"], second["warm from"], second["pareto"], second["champion"]) == \
        ("15", "aaaa1111", "3", "no")
    assert (first["model"], second["model"]) == ("new", "v1 kept")  # v2 kept the champion's architecture
    assert first["vs champion"] == "-"  # no paired comparison recorded (tests/stages/test_publish.py has one)
    assert f"search_policy={policy[:8]}" in second["runs"]

    params = tmp_path / "params.yaml"
    params.write_text(f"tracking:\n  mlflow_uri: {uri}\n  experiment_prefix: {prefix}\n")
    assert main(["history", "--params", str(params)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["date", "fingerprint", "train"] and len(out) == 3
    assert out == format_table(rows).splitlines()


def test_history_before_any_run_says_what_to_do(tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"tracking:\n  mlflow_uri: sqlite:///{tmp_path}/m.db\n")
    assert main(["history", "--params", str(params)]) == 0
    assert "run `dvc repro` first" in capsys.readouterr().out
