from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from pipeline.config import Params, parse_params
from pipeline.data import ImageSet, write_sample


def tiny_sample(n_per_class: int = 20, classes: int = 3, seed: int = 0) -> ImageSet:
    """Classes that a child can tell apart: each class has its own mean colour."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    base = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])[:classes]
    noise = torch.randint(-30, 30, (len(labels), 3, 32, 32), generator=g)
    images = (base[labels][:, :, None, None] + noise).clamp(0, 255).to(torch.uint8)
    ids = [f"{seed:02d}{i:014x}" for i in range(len(labels))]
    return ImageSet(images, labels, [f"c{i}" for i in range(classes)], ids)


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    data = tiny_sample()
    write_sample(data, tmp_path / "sample", seed=0, pool=data)
    return tmp_path / "sample"


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the session: creating one runs ~6 s of schema migrations.
    Tests stay isolated through their own experiment prefix."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def params(tmp_path: Path, mlflow_uri: str) -> Params:
    return parse_params({
        "policy_search": {
            "folds": 2, "trials_per_fold": 5, "top_n": 2, "startup_trials": 2, "n_sub": 3, "warm_budget": 1.0,
            "child_model": "resnet20", "child": {"epochs": 1, "batch_size": 16},
        },
        "tracking": {"mlflow_uri": mlflow_uri, "experiment_prefix": f"test-{uuid.uuid4().hex[:8]}",
                     "optuna_storage": f"sqlite:///{tmp_path}/optuna.db"},
    })
