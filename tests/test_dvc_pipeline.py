"""`dvc repro` re-runs exactly the stages whose declared deps or params changed."""

from __future__ import annotations

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
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
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
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], proj)
    _run([str(BIN / "dvc"), "init", "-q"], proj)
    _run([str(BIN / "autoaug"), "ingest", str(write_tree(tmp_path / "src", 8)), "--store", "data/raw"], proj)
    return proj


def _set(project: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def test_repro_reruns_only_what_changed(project: Path) -> None:
    dvc = str(BIN / "dvc")
    stages = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert _ran(_run([dvc, "repro"], project)) == stages
    assert (project / "outputs" / "search_policy" / "policy.json").exists()
    assert _ran(_run([dvc, "repro"], project)) == set()

    # a key only the search reads re-runs the search only
    _set(project, "policy_search", "trials_per_fold", 3)
    assert _ran(_run([dvc, "repro"], project)) == {"search_policy"}

    # a sample key re-runs the sample and, since the sample changes, what depends on it
    _set(project, "sample", "size", 12)
    assert _ran(_run([dvc, "repro"], project)) == {"sample", "search_policy"}

    # a data update (new images appended by ingest) re-runs the sample; an unchanged sample stops there
    _run([str(BIN / "autoaug"), "ingest", str(write_tree(project.parent / "more", 3, seed=7)), "--store", "data/raw"], project)
    assert "sample" in _ran(_run([dvc, "repro"], project))
