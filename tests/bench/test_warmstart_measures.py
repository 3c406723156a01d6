"""bench/warmstart.py's measures: the incumbent after each trial, and "warm reached cold's best"
on one scale (each study's incumbents re-scored by one scorer), which a lucky cold maximum does
not decide."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from bench import warmstart
from bench.warmstart import champions_paired, common_reach, incumbents, memo, reach
from pipeline.config import load_params
from pipeline.data import RawStore
from pipeline.evaluation import score
from pipeline.models import build_model
from pipeline.paired import mcnemar_p

from ..data.trees import CLASSES, write_tree
from ..publishing import tiny_config


def trial(x: float, value: float) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(params={"x": x}, distributions={"x": optuna.distributions.FloatDistribution(0, 10)},
                                     value=value)


def test_the_incumbent_is_the_best_so_far_and_the_earlier_one_on_ties() -> None:
    trials = [trial(1, 0.5), trial(2, 0.7), trial(3, 0.6), trial(4, 0.7), trial(5, 0.8)]
    assert [t.params["x"] for t in incumbents(trials)] == [1, 2, 2, 2, 5]
    assert incumbents([]) == []


def test_a_lucky_cold_maximum_is_re_scored_and_the_same_configuration_scores_the_same() -> None:
    # Cold's own best (x=7, 0.72) was a lucky draw: re-scored it is 0.69. Warm's own scores are
    # all lower than 0.72, so the strict measure says it never reached cold; on one scale, warm's
    # second incumbent (x=5, the best configuration) re-scores above cold's final one.
    truth = {1.0: 0.60, 5.0: 0.70, 7.0: 0.69, 9.0: 0.65}
    cold = [trial(9, 0.66), trial(7, 0.72), trial(1, 0.61)]
    warm = [trial(1, 0.60), trial(5, 0.705), trial(9, 0.64)]
    assert reach([t.value for t in warm], [t.value for t in cold])[0] == math.inf
    fraction, cold_final, warm_final = common_reach(warm, cold, lambda p: truth[p["x"]])
    assert (fraction, cold_final, warm_final) == (2 / 3, 0.69, 0.70)


def test_warm_that_never_finds_as_good_a_configuration_does_not_reach_on_one_scale() -> None:
    truth = {1.0: 0.60, 5.0: 0.70, 9.0: 0.65}
    cold = [trial(1, 0.61), trial(5, 0.70)]
    warm = [trial(1, 0.60), trial(9, 0.71)]  # a lucky draw for a worse configuration
    assert reach([t.value for t in warm], [t.value for t in cold])[0] == 1.0  # strictly: "reached"
    fraction, cold_final, warm_final = common_reach(warm, cold, lambda p: truth[p["x"]])
    assert fraction == math.inf and (cold_final, warm_final) == (0.70, 0.65)


def test_memo_scores_each_configuration_once() -> None:
    calls: list[float] = []

    def score(params: dict) -> float:
        calls.append(params["x"])
        return params["x"] / 10

    cached = memo(score)
    assert [cached({"x": 3.0}), cached({"x": 3.0}), cached({"x": 4.0})] == [0.3, 0.3, 0.4]
    assert calls == [3.0, 4.0]


def _project(root: Path, store: Path, seed: int) -> Path:
    """What champions_paired reads of a finished project: params.yaml, the raw store, model.pt."""
    (root / "outputs" / "retrain").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "raw").symlink_to(store)
    (root / "params.yaml").write_text(yaml.safe_dump({"retrain": {"recipe": {"tta": True, "tta_translate": False}}}))
    torch.manual_seed(seed)
    model = build_model(tiny_config(), num_classes=len(CLASSES))
    torch.save({"config": tiny_config(), "classes": sorted(CLASSES), "state_dict": model.state_dict()},
               root / "outputs" / "retrain" / "model.pt")
    return root


def test_the_warm_and_cold_champions_are_paired_on_the_same_test_images(tmp_path: Path) -> None:
    RawStore(tmp_path / "raw").ingest(str(write_tree(tmp_path / "src", 2, test_per_class=40)))
    test_set = RawStore(tmp_path / "raw").split("test")
    cold = _project(tmp_path / "cold", tmp_path / "raw", seed=0)
    same = champions_paired(_project(tmp_path / "same", tmp_path / "raw", seed=0), cold)
    assert (same["paired_n"], same["paired_warm_only"], same["paired_cold_only"]) == (len(test_set), 0, 0)
    assert same["paired_diff"] == 0 and same["p_warm_not_better"] == same["p_warm_not_worse"] == 1.0

    warm = _project(tmp_path / "warm", tmp_path / "raw", seed=1)
    pair = champions_paired(warm, cold)
    recipe = load_params(cold / "params.yaml").retrain.recipe
    accuracy = {}
    for name, project in (("warm", warm), ("cold", cold)):
        saved = torch.load(project / "outputs" / "retrain" / "model.pt", weights_only=False)
        model = build_model(saved["config"], num_classes=len(CLASSES))
        model.load_state_dict(saved["state_dict"])
        accuracy[name] = score(model, test_set, recipe, torch.device("cpu")).accuracy
    # the paired difference is the difference of the two accuracies, and the p-values are McNemar's
    assert pair["paired_diff"] == pytest.approx(accuracy["warm"] - accuracy["cold"])
    assert pair["paired_warm_only"] + pair["paired_cold_only"] > 0  # two random networks disagree somewhere
    assert pair["p_warm_not_better"] == mcnemar_p(pair["paired_warm_only"], pair["paired_cold_only"])
    assert pair["p_warm_not_worse"] == mcnemar_p(pair["paired_cold_only"], pair["paired_warm_only"])
    assert pair["paired_low"] <= pair["paired_diff"] <= pair["paired_high"]


def test_resume_keeps_the_finished_steps_and_reruns_the_interrupted_repro(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupted run continues where it stopped: ingests and repros already saved in steps.json
    are not run again, the interrupted ``dvc repro`` is, and it is named as resumed."""
    calls: list[str] = []
    interrupt = {"cold": True}

    def fake_sh(cmd: list[str], cwd: Path, log: Path) -> float:
        calls.append(f"{cwd.name}:{Path(cmd[0]).name}:{cmd[1]}")
        if cwd.name == "cold" and cmd[1] == "repro" and interrupt["cold"]:
            interrupt["cold"] = False
            raise KeyboardInterrupt
        if cmd[1] == "repro":
            out = cwd / "outputs" / "retrain"
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
            (cwd / "outputs" / "search_model" / "metrics.json").parent.mkdir(parents=True, exist_ok=True)
            (cwd / "outputs" / "search_model" / "metrics.json").write_text("{}")
        return 1.0

    monkeypatch.setattr(warmstart, "load_data", lambda path: {"train": type("S", (), {"classes": ["a"]})()})
    monkeypatch.setattr(warmstart, "split_versions", lambda *a, **k: ({"train": [], "test": []}, {"train": []}))
    monkeypatch.setattr(warmstart, "write_archive", lambda folder, sets, classes: folder)
    monkeypatch.setattr(warmstart, "copy_storage", lambda src, dst: None)
    monkeypatch.setattr(warmstart, "sh", fake_sh)
    args = argparse.Namespace(data="x", v1_share=0.9, quick=False, resume=False)
    with pytest.raises(KeyboardInterrupt):
        warmstart.run_projects(args, tmp_path, {})
    first = list(calls)
    assert [c for c in first if c.startswith("cold:")][-1] == "cold:dvc:repro"
    calls.clear()
    args.resume = True
    steps = warmstart.run_projects(args, tmp_path, {})
    assert calls == ["cold:dvc:repro"]  # v1, the update, the no-op and the cold ingests are kept
    assert steps[warmstart.RESUMED] == ["t_cold"] and steps["t_cold"] == 1.0
    assert json.loads((tmp_path / "steps.json").read_text())[warmstart.RESUMED] == ["t_cold"]
