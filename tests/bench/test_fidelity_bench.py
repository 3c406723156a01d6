"""bench/fidelity.py: the candidates picked over the proxy ranks, the agreement per proxy epoch and
the epoch picked from it, and a --quick run on a fake finished project that resumes from --out."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.study import StudyDirection

from bench import fidelity
from pipeline.models import SPACE_POINTS
from pipeline.names import HISTORY_ATTR, TRAIN_SECONDS_ATTR, VAL_ACCURACY_CURVE
from pipeline.search.model import params_from_config

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
    done = json.loads(out.read_text())
    assert sorted(v["trial"] for v in done.values()) == [0, 2, 3]  # trial 3 (chosen.json's), then the best and the worst of the rest
    lines = result.stdout.strip().splitlines()
    fields = dict(item.split("=", 1) for item in shlex.split(lines[-1])[1:])
    assert fields["bench"] == "fidelity" and fields["networks"] == "3" and fields["candidates"] == "4"
    assert fields["proxy_epochs"] == "2" and "spearman_epoch1" in fields and "spearman_epoch2" in fields
    assert fields["pick_epoch"] in {"1", "2", "none"} and fields["reduced"] == "True"  # 1 epoch of the recipe's 2
    assert float(fields["candidates_per_min_full"]) == pytest.approx(4 / (4 * 20 / 60), rel=1e-3)
    # a second run trains nothing: every retrain is read back from --out
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("from " + str(out)) == 3
    assert again.stdout.strip().splitlines()[-1] == lines[-1]
