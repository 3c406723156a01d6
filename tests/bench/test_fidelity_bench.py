"""bench/fidelity.py: the candidates picked over the proxy ranks, the agreement per proxy epoch and
the epoch picked from it, and a --quick run on a fake finished project that resumes from --out."""

from __future__ import annotations

import copy
import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.study import StudyDirection

from bench import fidelity
from bench.common import read_out
from bench.handmade import read_champion
from pipeline.models import SPACE_POINTS
from pipeline.names import HISTORY_ATTR, TRAIN_SECONDS_ATTR, VAL_ACCURACY_CURVE
from pipeline.search.model import config_from_params, params_from_config

from ..data.trees import write_tree
from .test_handmade_bench import REPO, make_project, small_resnet


def trial(config: dict, curve: list[float], params: int, **attrs: object) -> optuna.trial.FrozenTrial:
    values = params_from_config(config)
    return optuna.trial.create_trial(
        params=values, distributions={k: DISTRIBUTIONS[k] for k in values},
        values=[curve[-1], params], user_attrs={VAL_ACCURACY_CURVE: curve, TRAIN_SECONDS_ATTR: 20.0, **attrs})


CONFIGS = [copy.deepcopy(SPACE_POINTS[name]) for name in ("airbench_like", "airbench_small", "resnet20")] + [small_resnet()]
# one distribution per parameter over every value the study's configurations take (Optuna keeps it fixed)
DISTRIBUTIONS = {k: CategoricalDistribution(sorted({params_from_config(c)[k] for c in CONFIGS}, key=repr))
                 for k in params_from_config(CONFIGS[0])}


def a_study(storage: str) -> optuna.Study:
    """Study "s" (the fake project's pareto.json names it): four candidates of two proxy epochs, and a
    copied prior trial that is not the study's own."""
    study = optuna.create_study(study_name="s", storage=storage,
                                directions=[StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE])
    for config, curve, params in zip(CONFIGS, ([0.5, 0.70], [0.45, 0.60], [0.40, 0.55], [0.20, 0.30]),
                                     (640_000, 829_000, 270_000, 78_000), strict=True):
        study.add_trial(trial(config, curve, params))
    study.add_trial(trial(CONFIGS[3], [0.9, 0.95], 78_000, **{HISTORY_ATTR: "prior"}))
    return study


def test_the_candidates_are_spread_over_the_ranks_with_the_chosen_one() -> None:
    trials = [optuna.trial.create_trial(values=[v, 1.0]) for v in (0.1, 0.5, 0.3, 0.7, 0.6, 0.2)]
    for number, t in enumerate(trials):
        t.number = number
    picked = fidelity.spread(trials, 3, keep=2)  # 0.3 kept; the others spread: the worst and the best
    assert [t.values[0] for t in picked] == [0.1, 0.3, 0.7]
    assert [t.values[0] for t in fidelity.spread(trials, 4, keep=None)] == [0.1, 0.3, 0.5, 0.7]
    assert len(fidelity.spread(trials, 10, keep=None)) == 6


def test_the_agreement_per_epoch_and_the_epoch_picked() -> None:
    curves = [[0.3, 0.5], [0.4, 0.6], [0.5, 0.4]]
    tests = [0.80, 0.85, 0.70]  # ranked as epoch 2 ranks them, not as epoch 1
    rho = fidelity.agreement(curves, tests)
    assert rho[2] == pytest.approx(1.0) and rho[1] == pytest.approx(-0.5)
    assert fidelity.pick_epoch(rho) == 2
    assert fidelity.pick_epoch({1: 0.93, 2: 0.95, 3: 0.90}) == 1  # within 0.05 of the best: the earliest
    assert fidelity.pick_epoch({1: float("nan")}) is None


def test_a_warm_studys_copied_history_is_not_a_candidate(tmp_path: Path) -> None:
    study = a_study(f"sqlite:///{tmp_path}/optuna.db")
    assert [t.number for t in fidelity.own_candidates(study)] == [0, 1, 2, 3]


@pytest.mark.slow
def test_quick_run_prints_the_agreement_and_resumes_from_out(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    a_study(f"sqlite:///{project}/optuna.db")
    data = write_tree(tmp_path / "tree", 8, test_per_class=4)
    out = tmp_path / "fidelity.json"
    command = [sys.executable, "-m", "bench.fidelity", "--quick", "--data", str(data), "--project", str(project),
               "--networks", "3", "--out", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    kept = json.loads(out.read_text())
    done = kept["retrains"]
    assert sorted(v["trial"] for v in done.values()) == [0, 2, 3]  # trial 3 (chosen.json's), then the best and the worst of the rest
    plan = kept["plan"]  # what a later session needs without the project: networks, recipe, policy
    assert [n["trial"] for n in plan["networks"]] == [3, 2, 0] and plan["study"] == "s" and plan["chosen_trial"] == 3
    assert plan["networks"][2]["config"] == config_from_params(params_from_config(CONFIGS[0]))
    assert plan["networks"][2]["curve"] == [0.5, 0.70] and plan["policy"] is not None
    assert len(plan["candidate_seconds"]) == 4 and plan["recipe"]["epochs"] == 2
    # the project's own retrain of the chosen network (2 epochs, seed 0) is in the plan, but --quick
    # trains 1 epoch on other images, so it was trained here
    assert plan["networks"][0]["pipeline_retrain"]["epochs"] == 2 and not any("source" in v for v in done.values())
    lines = result.stdout.strip().splitlines()
    fields = dict(item.split("=", 1) for item in shlex.split(lines[-1])[1:])
    assert fields["bench"] == "fidelity" and fields["networks"] == "3" and fields["candidates"] == "4"
    assert fields["proxy_epochs"] == "2" and "spearman_epoch1" in fields and "spearman_epoch2" in fields
    assert fields["pick_epoch"] in {"1", "2", "none"} and fields["reduced"] == "True"  # 1 epoch of the recipe's 2
    assert float(fields["candidates_per_min_full"]) == pytest.approx(4 / (4 * 20 / 60), rel=1e-3)
    # another project's study against this plan: one line, exit 2
    other = make_project(tmp_path / "other")
    pareto = other / "outputs/search_model/pareto.json"
    pareto.write_text(pareto.read_text().replace('"study": "s"', '"study": "t"'))
    mixed = subprocess.run([*command[:6], "--project", str(other), "--out", str(out)], cwd=REPO,
                           capture_output=True, text=True, timeout=300, check=False)
    assert mixed.returncode == 2 and "holds the plan of s" in mixed.stderr, mixed.stderr[-2000:]
    # a second run, without the project (another session's), trains nothing: the plan and every
    # retrain are read back from --out
    shutil.rmtree(project)
    alone = [a for a in command if a not in ("--project", str(project))]
    again = subprocess.run(alone, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("from " + str(out)) == 3
    assert again.stdout.strip().splitlines()[-1] == lines[-1]
    # another --networks than the plan's, or no plan and no project: one line, exit 2
    wrong = subprocess.run([*alone[:-4], "--networks", "4", "--out", str(out)], cwd=REPO, capture_output=True,
                           text=True, timeout=300, check=False)
    assert wrong.returncode == 2 and "plan has 3" in wrong.stderr
    none = subprocess.run([*alone[:-2], "--out", str(tmp_path / "new.json")], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
    assert none.returncode == 2 and "--project: needed to make the plan" in none.stderr


def test_a_seed_point_over_the_budget_is_retrained_for_the_epochs_that_fit() -> None:
    # the pipeline retrains such a network for the epochs chosen.json says (at most the recipe's);
    # --epochs only lowers them
    fits, full = {"retrain_epochs": 34}, {"retrain_epochs": None}
    assert fidelity.retrain_epochs(fits, 40, None, quick=False) == (34, 34)
    assert fidelity.retrain_epochs(full, 40, None, quick=False) == (40, 40)
    assert fidelity.retrain_epochs(fits, 40, 10, quick=False) == (10, 34)
    assert fidelity.retrain_epochs(full, 40, 50, quick=False) == (40, 40)
    assert fidelity.retrain_epochs(full, 40, None, quick=True) == (1, 40)
    # the chosen network's recipe (recipe.json) at fewer epochs than fit: its retrain's epochs
    assert fidelity.retrain_epochs(fits, 30, None, quick=False) == (30, 30)


def test_an_out_file_without_a_plan_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"3:2:0:2048": {"trial": 3}}))
    with pytest.raises(SystemExit, match="holds no bench/fidelity plan"):
        read_out(old, fidelity.PLAN_FORMAT, "fidelity")
    assert read_out(tmp_path / "absent.json", fidelity.PLAN_FORMAT, "fidelity") == {}
    broken = tmp_path / "broken.json"  # an interrupted write by an older bench
    broken.write_text('{"plan": {"format": 1')
    with pytest.raises(SystemExit, match="not a JSON object"):
        read_out(broken, fidelity.PLAN_FORMAT, "fidelity")


def test_the_chosen_networks_own_retrain_is_reused_only_when_it_is_the_retrain_the_bench_runs(tmp_path: Path) -> None:
    champion = read_champion(make_project(tmp_path / "proj"))  # metrics.json: 2 epochs from scratch, 24 images
    own = fidelity.pipeline_retrain(champion, 2)
    assert own is not None and (own["test_accuracy"], own["epochs"], own["seed"], own["train_images"]) == (0.5, 2, 0, 24)
    assert fidelity.pipeline_retrain(dataclasses.replace(champion, retrain_seed=5), 2)["seed"] == 5  # retrain.seed's
    assert fidelity.pipeline_retrain(champion, 3) is None  # another number of epochs
    for change in ({"planned_epochs": 3}, {"warm_start_from_version": "1"}, {"diverged_restarts": 1}, {"params": None}):
        # cut short by the time limit, fine-tuned from the champion, restarted at half the lr: another
        # retrain; without its parameter count, the table could not show it
        other = dataclasses.replace(champion, metrics=champion.metrics.model_copy(update=change))
        assert fidelity.pipeline_retrain(other, 2) is None, change
    network = {"trial": 3, "pipeline_retrain": own}
    assert fidelity.reusable(network, 2, 0, 24)["source"] == "the project's retrain"
    for other_run in ((1, 0, 24), (2, 1, 24), (2, 0, 2048)):  # --epochs, --seed, --quick's images
        assert fidelity.reusable(network, *other_run) is None
    assert fidelity.reusable({"trial": 2}, 2, 0, 24) is None  # not the chosen network
