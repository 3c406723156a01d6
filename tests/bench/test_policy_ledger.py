"""bench/policy.py's ledger: finished runs are kept, found again by setting, variant, policy file
and seed, and a truncated line (a run killed while appending) does not stop the next invocation; the
per-epoch progress line."""

from __future__ import annotations

import json
from pathlib import Path

from bench.policy import Ledger, epoch_line, file_hash, plot_runs
from pipeline.train import EpochMetrics

SETTING = {"recipe": "retrain", "model": "airbench_like", "epochs": 30, "train_images": 50000,
           "test_images": 10000, "quick": False}


def entry(variant: str, seed: int, acc: float, policy_hash: str | None = None, **setting: object) -> dict:
    return {"setting": {**SETTING, **setting}, "variant": variant, "policy_hash": policy_hash, "seed": seed,
            "accuracy": acc, "minutes": 30.0}


def test_a_finished_run_is_found_again_by_a_new_ledger_on_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "results" / "policy.jsonl"
    Ledger(path).add(entry("flipcrop", 0, 0.88))
    Ledger(path).add(entry("flipcrop", 1, 0.87))
    again = Ledger(path)
    assert again.find(SETTING, "flipcrop", None, 1)["accuracy"] == 0.87
    assert again.find(SETTING, "flipcrop", None, 0)["accuracy"] == 0.88
    assert again.find(SETTING, "flipcrop", None, 2) is None
    assert again.find({**SETTING, "epochs": 15}, "flipcrop", None, 0) is None  # another recipe is another run
    assert again.find(SETTING, "randaugment", None, 0) is None


def test_a_found_policy_is_matched_by_its_file_content_not_its_name(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"sub_policies": [[["Invert", 0.5, 0.0]]]}))
    b.write_text(json.dumps({"sub_policies": [[["Invert", 0.6, 0.0]]]}))
    ledger = Ledger(tmp_path / "l.jsonl")
    ledger.add(entry("found", 0, 0.89, policy_hash=file_hash(a)))
    assert Ledger(tmp_path / "l.jsonl").find(SETTING, "found", file_hash(a), 0)["accuracy"] == 0.89
    assert Ledger(tmp_path / "l.jsonl").find(SETTING, "found", file_hash(b), 0) is None  # a re-searched policy


def test_a_truncated_last_line_is_reported_and_skipped(tmp_path: Path, capsys) -> None:
    path = tmp_path / "l.jsonl"
    Ledger(path).add(entry("flipcrop", 0, 0.88))
    with path.open("a") as fh:
        fh.write('{"setting": {"recipe": "ret')  # killed mid-write
    ledger = Ledger(path)
    assert "l.jsonl:2: not JSON, ignored" in capsys.readouterr().out
    assert len(ledger.entries) == 1
    ledger.add(entry("flipcrop", 1, 0.87))
    assert Ledger(path).find(SETTING, "flipcrop", None, 1)["accuracy"] == 0.87


def test_without_a_file_the_ledger_keeps_runs_in_memory_only(tmp_path: Path) -> None:
    ledger = Ledger(None)
    ledger.add(entry("flipcrop", 0, 0.88))
    assert ledger.find(SETTING, "flipcrop", None, 0)["accuracy"] == 0.88
    assert not list(tmp_path.iterdir())


def test_the_epoch_line_names_the_run_and_estimates_the_time_left(capsys) -> None:
    epoch_line("found", 2)(EpochMetrics(epoch=3, epochs=30, train_loss=1.25, train_accuracy=0.5, eval_loss=None,
                                        eval_accuracy=None, images_per_s=900.0, lr=0.1, elapsed_s=360.0))
    out = capsys.readouterr().out
    assert "found seed 2: epoch 3/30" in out
    assert "6.0 min, ~54 min left" in out  # 2 min per epoch, 27 epochs to go


def test_the_plot_shows_every_seed_and_each_mean(tmp_path: Path) -> None:
    import matplotlib.image

    path = tmp_path / "plots" / "policy.png"
    plot_runs({"flipcrop": [0.885, 0.888], "found": [0.889], "randaugment": [0.884, 0.886, 0.889]}, "retrain", path)
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 400
    assert pixels[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_report_without_a_ledger_is_refused_before_loading_data(monkeypatch, capsys) -> None:
    import sys

    import pytest

    import bench.policy

    monkeypatch.setattr(sys, "argv", ["policy", "--data", "/nonexistent", "--report"])
    monkeypatch.setattr(bench.policy, "run", lambda args: pytest.fail("ran without a ledger"))
    with pytest.raises(SystemExit):
        bench.policy.main()
    assert "--report reads the runs from --ledger FILE" in capsys.readouterr().err
