"""bench/retrainpred.py with --quick on a tiny image tree: it times each network's step and the
batch once, trains what it predicted, and prints both ratios (step alone, step + batch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import retrainpred
from pipeline.augment import Policy
from pipeline.contracts import Chosen

from ..data.trees import write_tree
from . import result_of
from .test_handmade_bench import small_resnet

REPO = Path(__file__).resolve().parents[2]


def test_the_quick_run_predicts_trains_and_reports_both_ratios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    data = write_tree(tmp_path / "tree", 90)  # 270 images: the quick run takes 256
    policy = tmp_path / "policy.json"
    policy.write_text(Policy([[("Rotate", 0.5, 0.3)], [("Invert", 0.2, 0.0), ("Color", 0.9, 0.6)]]).to_json())
    chosen = tmp_path / "chosen.json"
    Chosen(config=small_resnet(), accuracy=0.5, params=1, macs=1).write(chosen)
    result = result_of(retrainpred.main, ["retrainpred", "--quick", "--data", str(data), "--policy", str(policy),
                                          "--params", str(REPO / "params.yaml"), "--chosen", str(chosen)],
                       monkeypatch, capsys)
    # the first seed point, the chosen network and one draw
    assert result["bench"] == "retrainpred" and result["networks"] == "3" and result["policy"] == "True"
    assert result["images"] == "256" and float(result["batch_s"]) > 0
    before, after = float(result["median_ratio_step_alone"]), float(result["median_ratio_with_batch"])
    # the batch's time is added to every prediction: each ratio with it is the smaller
    assert 0 < after < before
