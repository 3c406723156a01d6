"""`dvc repro` re-runs exactly the stages whose declared deps or params changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .data.trees import write_tree
from .projects import BIN, REPO, make_project, run


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


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
    assert stages == {"sample", "search_policy", "search_model", "search_recipe", "retrain", "publish"}
    assert _ran(run([dvc, "repro"], project)) == stages
    outputs = project / "outputs"
    for path in ("search_policy/policy.json", "search_model/chosen.json", "search_model/pareto.json",
                 "search_recipe/recipe.json", "retrain/model.pt", "retrain/metrics.json", "publish/decision.json"):
        assert (outputs / path).exists(), path
    assert json.loads((outputs / "publish" / "decision.json").read_text())["promoted"] is True
    first = _published(project)
    assert {"current.json", "policies/0001/policy.json", "models/0001/meta.json"} <= set(first)
    assert _ran(run([dvc, "repro"], project)) == set()

    # a key of the policy search's space re-runs it and everything downstream of the policy
    _set(project, "policy_search", "n_sub", 3)
    assert _ran(run([dvc, "repro"], project)) == {"search_policy", "search_model", "search_recipe", "retrain",
                                                   "publish"}

    # a model-search key re-runs the model search and what follows, not the policy search
    _set(project, "model_search", "choose", {"rule": "most_accurate", "within_points": 1.0, "reference": None,
                                             "budget_params": None})
    assert _ran(run([dvc, "repro"], project)) == {"search_model", "search_recipe", "retrain", "publish"}

    # published/ is persistent: versions written by earlier runs are still there, unchanged
    later = _published(project)
    assert {k: v for k, v in later.items() if k != "current.json" and k in first} == \
        {k: v for k, v in first.items() if k != "current.json"}
    assert "policies/0002/policy.json" in later  # the new policy was added, not swapped in place

    # a sample key re-runs the sample and, since the sample changes, everything after it
    _set(project, "sample", "size", 12)
    assert _ran(run([dvc, "repro"], project)) == stages

    # a data update (new images appended by ingest) re-runs the sample; an unchanged sample stops there
    run([str(BIN / "autoaug"), "ingest", str(write_tree(project.parent / "more", 3, seed=7)), "--store", "data/raw"], project)
    assert "sample" in _ran(run([dvc, "repro"], project))

    # the same update again: every image a duplicate, the store unchanged, nothing re-runs
    run([str(BIN / "autoaug"), "ingest", str(project.parent / "more"), "--store", "data/raw"], project)
    assert _ran(run([dvc, "repro"], project)) == set()
