"""What every search stage does first: open both stores before any compute, so an unreachable
URL fails in seconds, not after an hour of training."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from pipeline.augment import Policy, PolicyError
from pipeline.config import Params
from pipeline.data import ImageSet, read_manifest
from pipeline.errors import DataError, first_line
from pipeline.search.studies import open_storage
from pipeline.tracking import Tracker


@dataclass
class StageInputs:
    sample: ImageSet
    manifest: dict[str, Any]
    storage: optuna.storages.BaseStorage
    tracker: Tracker

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])


def open_inputs(params: Params, sample_dir: str | os.PathLike[str]) -> StageInputs:
    """The sample's manifest, the Optuna storage, the MLflow store, then the sample's images."""
    manifest = read_manifest(sample_dir)
    storage = open_storage(params.tracking.optuna_storage)
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    sample = ImageSet.load(Path(sample_dir) / "images.pt")
    return StageInputs(sample, manifest, storage, tracker)


def read_policy(path: str | os.PathLike[str]) -> Policy:
    """The found policy, or one line saying which file is missing or malformed and what to run."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no policy file; run `dvc repro search_policy` first")
    try:
        return Policy.from_json(path.read_text())
    except (PolicyError, ValueError) as exc:
        raise DataError(f"{path}: not a valid policy ({first_line(exc)}); re-run `dvc repro search_policy`") from None
