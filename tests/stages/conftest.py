"""Shared set-up of the retrain and publish stage tests: a tiny raw store (3 classes, 20 training
and 5 test images each), a found policy, a chosen configuration, one MLflow store per session
(each test keeps to its own experiment prefix and registered model name) and one real retrain."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.augment import Policy
from pipeline.config import Params, parse_params
from pipeline.data import RawStore
from pipeline.stages.retrain import retrain_stage

from ..data.trees import write_tree
from ..publishing import tiny_config

TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 5


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def stage_params(tmp: Path, mlflow_uri: str, **sections: Any) -> Params:
    """Tiny stage params; every call gets its own experiment prefix and registered model."""
    tag = uuid.uuid4().hex[:8]
    return parse_params({
        # no time limit: a loaded machine must not shorten the tests' retrains
        "retrain": {"recipe": {"epochs": 2, "batch_size": 16, "tta": True, "eval_every": 0}, "max_overrun": None},
        "tracking": {"mlflow_uri": mlflow_uri, "experiment_prefix": f"test-{tag}",
                     "registered_model": f"test-model-{tag}", "optuna_storage": f"sqlite:///{tmp}/optuna.db"},
        **sections,
    })


def make_store(root: Path) -> Path:
    tree = write_tree(root / "src", TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS)
    RawStore(root / "raw").ingest(str(tree))
    return root / "raw"


def write_policy_dir(folder: Path, policy: Policy | None = None) -> Path:
    """What search_policy leaves for retrain and publish: policy.json and summary.json."""
    folder.mkdir(parents=True, exist_ok=True)
    policy = policy or Policy([[("Rotate", 0.5, 0.3)], [("Invert", 0.2, 0.0), ("Color", 0.9, 0.6)]],
                              metadata={"studies": ["search_policy-0000aaaa-f1ngerpr1nt-fold0"]})
    (folder / "policy.json").write_text(policy.to_json())
    (folder / "summary.json").write_text(json.dumps({"mlflow_run_id": None, "trials": 4, "score": 0.5}))
    return folder


def write_chosen(path: Path, config: dict[str, Any] | str, **fields: Any) -> Path:
    """What search_model leaves for retrain (its lineage fields included; ``fields`` added)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config, "accuracy": 0.5, "params": 1, "macs": 1, "trial": 3,
                                "fingerprint": "f1ngerpr1nt", "study": "search_model-0000bbbb-f1ngerpr1nt",
                                "mlflow_run_id": None, **fields}))
    return path


def skip_requirements_inference(patch: pytest.MonkeyPatch) -> None:
    """MLflow infers a logged model's pip requirements by loading it in a subprocess (~15 s
    here); the tests never install the model, so the flavour's default requirements do."""
    import mlflow.models

    patch.setattr(mlflow.models, "infer_pip_requirements",
                  lambda model_uri, flavor, fallback=None, **kwargs: fallback or [])


@pytest.fixture(scope="session")
def retrained(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> dict[str, Any]:
    """One real retrain of a tiny configuration (shared by the retrain and publish tests)."""
    tmp = tmp_path_factory.mktemp("retrain")
    params = stage_params(tmp, mlflow_uri)
    store = make_store(tmp)
    policy_dir = write_policy_dir(tmp / "search_policy")
    # the search's prediction: a 0.3 s step at retrain.recipe, 2 epochs of ceil(60 / 16) = 4 steps
    chosen = write_chosen(tmp / "search_model" / "chosen.json", tiny_config(), retrain_step_seconds=0.3,
                          predicted_retrain_minutes=0.3 * 2 * 4 / 60)
    with pytest.MonkeyPatch.context() as patch:
        skip_requirements_inference(patch)
        metrics = retrain_stage(params, store, chosen, policy_dir / "policy.json", tmp / "retrain", progress=False)
    return {"tmp": tmp, "params": params, "store": store, "policy_dir": policy_dir, "chosen": chosen,
            "out": tmp / "retrain", "metrics": metrics, "config": tiny_config()}
