"""A tiny DVC project around this checkout's dvc.yaml and params.yaml, for tests that run the
pipeline end to end in subprocesses (`dvc repro`, `autoaug ...`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from .data.trees import write_tree

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def stop_process_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Stop a server a test started in its own process group (``start_new_session=True``):
    SIGTERM to the whole group (uvicorn's or mlflow's workers too), SIGKILL after 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(cmd: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
    """Run ``cmd`` with this venv's console scripts first on PATH; its output, or a failed assert."""
    # MLflow infers a logged model's pip requirements in a ~15 s subprocess; one second and it
    # falls back to the flavour's defaults (what retrain registers is otherwise unchanged)
    full = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT": "1", **(env or {})}
    done = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def make_project(root: Path, policy_search: Mapping[str, Any] | None = None) -> Path:
    """``root/proj``: git + DVC initialised, a small image tree ingested, params cut to the
    smallest search that still exercises every code path (``policy_search`` on top)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    proj = root / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, proj / name)
    (proj / "pipeline").symlink_to(REPO / "pipeline")
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["sample"]["size"] = 15
    params["policy_search"].update({**dict(folds=2, trials_per_fold=2, top_n=1, startup_trials=1, n_sub=2,
                                           warm_start=1, child_model="resnet20",
                                           child={"epochs": 1, "batch_size": 8}), **(policy_search or {})})
    # seeded random candidates (startup_trials covers them all): seed 25's first draws are 347k,
    # 1.4M, 6.4M and 496k parameters, so the 500k budget trains small models and rejects two
    params["model_search"].update(trials=2, startup_trials=50, seed=25, train_images=10, val_images=10,
                                  max_params=500_000, max_macs=None, max_train_cost=None, references=["resnet20"],
                                  warm_start=1, seed_points=["resnet20"])
    # resnet20 (0.27 M) as a seed point: a candidate within max_params whatever the sampler draws
    # (only a few % of the space's random draws fit 500 k, and the draws change with the space)
    params["model_search"]["recipe"].update(epochs=1, batch_size=8)
    params["model_search"]["halving"] = None  # one proxy epoch: no rung before its end
    params["retrain"]["recipe"].update(epochs=1, batch_size=8)
    params["recipe_search"].update(trials=2, startup_trials=1, epochs=[1, 2], fidelity=1.0, batch_size=8,
                                   train_images=10, val_images=10, warm_start=1)
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "init", "-q"], proj)
    run([str(BIN / "dvc"), "init", "-q"], proj)
    tree = write_tree(root / "src", 8, test_per_class=2)
    run([str(BIN / "autoaug"), "ingest", str(tree), "--store", "data/raw"], proj)
    return proj
