"""`dvc repro` re-runs exactly the stages whose declared deps or params changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .data.trees import write_tree

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> str:
    # MLflow infers a logged model's pip requirements in a ~15 s subprocess; one second and it
    # falls back to the flavour's defaults (what retrain registers is otherwise unchanged)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, proj / name)
    (proj / "pipeline").symlink_to(REPO / "pipeline")
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["sample"]["size"] = 15
    # the smallest search that still exercises every code path
    params["policy_search"].update(folds=2, trials_per_fold=2, top_n=1, startup_trials=1, n_sub=2, warm_start=1,
                                   child_model="resnet20", child={"epochs": 1, "batch_size": 8})
    # seeded random candidates (startup_trials covers them all): seed 4's first draws are 410k
    # and 233k parameters, so the 500k budget trains small models and rejects one or two
    params["model_search"].update(trials=2, startup_trials=50, seed=4, train_images=10, val_images=10,
                                  max_params=500_000, max_macs=None, references=["resnet20"], warm_start=1)
    params["model_search"]["recipe"].update(epochs=1, batch_size=8)
    params["retrain"]["recipe"].update(epochs=1, batch_size=8)
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], proj)
    _run([str(BIN / "dvc"), "init", "-q"], proj)
    tree = write_tree(tmp_path / "src", 8, test_per_class=2)
    _run([str(BIN / "autoaug"), "ingest", str(tree), "--store", "data/raw"], proj)
    return proj


def _set(project: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def _published(project: Path) -> dict[str, bytes]:
    """Every file under published/, by path."""
    root = project / "published"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_repro_reruns_only_what_changed(project: Path) -> None:
    dvc = str(BIN / "dvc")
    stages = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert stages == {"sample", "search_policy", "search_model", "retrain", "publish"}
    assert _ran(_run([dvc, "repro"], project)) == stages
    outputs = project / "outputs"
    for path in ("search_policy/policy.json", "search_model/chosen.json", "search_model/pareto.json",
                 "retrain/model.pt", "retrain/metrics.json", "publish/decision.json"):
        assert (outputs / path).exists(), path
    assert json.loads((outputs / "publish" / "decision.json").read_text())["promoted"] is True
    first = _published(project)
    assert {"current.json", "policies/0001/policy.json", "models/0001/meta.json"} <= set(first)
    assert _ran(_run([dvc, "repro"], project)) == set()

    # a key of the policy search's space re-runs it and everything downstream of the policy
    _set(project, "policy_search", "n_sub", 3)
    assert _ran(_run([dvc, "repro"], project)) == {"search_policy", "search_model", "retrain", "publish"}

    # a model-search key re-runs the model search and what follows, not the policy search
    _set(project, "model_search", "choose", {"rule": "most_accurate", "within_points": 1.0, "reference": None,
                                             "budget_params": None})
    assert _ran(_run([dvc, "repro"], project)) == {"search_model", "retrain", "publish"}

    # published/ is persistent: versions written by earlier runs are still there, unchanged
    later = _published(project)
    assert {k: v for k, v in later.items() if k != "current.json" and k in first} == \
        {k: v for k, v in first.items() if k != "current.json"}
    assert "policies/0002/policy.json" in later  # the new policy was added, not swapped in place

    # a sample key re-runs the sample and, since the sample changes, everything after it
    _set(project, "sample", "size", 12)
    assert _ran(_run([dvc, "repro"], project)) == stages

    # a data update (new images appended by ingest) re-runs the sample; an unchanged sample stops there
    _run([str(BIN / "autoaug"), "ingest", str(write_tree(project.parent / "more", 3, seed=7)), "--store", "data/raw"], project)
    assert "sample" in _ran(_run([dvc, "repro"], project))
