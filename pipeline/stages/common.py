"""What every search stage (and ``autoaug worker``) does first: open both stores before any
compute, so an unreachable URL fails in seconds, not after an hour of training; and read the
policy a stage trains with."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna

from pipeline.augment import Policy, PolicyError
from pipeline.config import Params
from pipeline.contracts import StageFile
from pipeline.data import ImageSet, read_manifest
from pipeline.errors import DataError, first_line
from pipeline.files import Laps
from pipeline.names import STEP_PREFIX
from pipeline.search.studies import open_storage
from pipeline.tracking import RunLogger, Tracker


@dataclass
class StageInputs:
    sample: ImageSet
    manifest: dict[str, Any]
    storage: optuna.storages.BaseStorage
    tracker: Tracker

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def pool_size(self) -> int:
        """Training images in the store the sample was drawn from: what the retrain trains on."""
        return int(self.manifest["pool_size"])


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


def search_input_policy(uses_policy: bool, path: str | os.PathLike[str], fingerprint: str | None = None) -> Policy | None:
    """The policy a search trains with (None when ``uses_policy`` is false). With
    ``fingerprint`` (a worker joining a running search), a policy found on other data is an
    error to wait out: the policy search has not written the new one yet."""
    if not uses_policy:
        return None
    policy = read_policy(path)
    found_on = policy.metadata.get("fingerprint")
    if fingerprint is not None and found_on not in (None, fingerprint):
        raise DataError(f"{path} was found on sample {found_on}, not on this sample ({fingerprint}); "
                        f"waiting for search_policy to write the new one")
    return policy


Summary = TypeVar("Summary", bound=StageFile)


def record_steps(laps: Laps, run: RunLogger, summary: Summary, path: Path) -> Summary:
    """A search stage's step profile, its last lap (write) included: ``step_seconds.<step>``
    metrics on the stage run and ``step_seconds`` in its summary file (rewritten at ``path``)."""
    laps.lap("write")
    run.log_metrics({f"{STEP_PREFIX}{step}": s for step, s in laps.seconds.items()})
    profiled = summary.model_copy(update={"step_seconds": dict(laps.seconds)})
    profiled.write(path)
    return profiled
