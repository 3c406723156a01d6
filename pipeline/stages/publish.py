"""The `publish` stage: promote the retrained model to the registry's `@champion` alias only when
it beats the current champion by `publish.margin`, and write what the service reads into
`published/` (pipeline/artifacts.py: versioned, atomic, history kept).

The found policy is published whenever it differs from the published one (training jobs poll
the latest policy); the model only when promoted. The decision, with its reason, is the
stage's output (`decision.json`) and a tag on the MLflow runs, so "why is the old model still
served?" has an answer.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from pipeline import artifacts
from pipeline.config import Params
from pipeline.errors import DataError
from pipeline.files import write_text_atomic
from pipeline.models import build_model
from pipeline.stages.common import read_policy
from pipeline.tracking import Tracker

STAGE = "publish"


def _read_json(path: Path, what: str, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: no {what}; run `dvc repro {stage}` first")
    return dict(json.loads(path.read_text()))


def decide(new_accuracy: float, champion_accuracy: float | None, margin: float) -> tuple[bool, str]:
    """Promote only a strictly better model: by more than ``margin`` (accuracy, 0-1)."""
    if champion_accuracy is None:
        return True, f"no champion yet: promoted with test accuracy {new_accuracy:.4f}"
    if new_accuracy > champion_accuracy + margin:
        return True, (f"test accuracy {new_accuracy:.4f} beats the champion's {champion_accuracy:.4f} "
                      f"by more than the margin {margin:.4f}")
    return False, (f"kept the champion: test accuracy {new_accuracy:.4f} does not beat the champion's "
                   f"{champion_accuracy:.4f} by more than the margin {margin:.4f}")


def champion_score(champion: Any, rescored: dict[str, Any] | None) -> tuple[float | None, str]:
    """(the champion's accuracy to beat, where it comes from).

    Retrain re-scores the champion on its own test split and TTA (``champion_rescored``); that
    figure is used when it is for the champion of now. Otherwise the accuracy tagged on the
    registered version, which was measured on the test split of its day. A champion with
    neither (registered by hand) counts as none: never let a NaN make every new model look worse.
    """
    if champion is None:
        return None, "no champion"
    if rescored and str(rescored.get("version")) == str(champion.version) and rescored.get("test_accuracy") is not None:
        return float(rescored["test_accuracy"]), f"champion version {champion.version} re-scored on this test split"
    recorded = float(champion.tags.get("test_accuracy", "nan"))
    if math.isnan(recorded):
        return None, f"champion version {champion.version} has no test_accuracy tag and was not re-scored"
    return recorded, f"champion version {champion.version}'s accuracy as registered, on the test split of its day"


def publish_stage(params: Params, retrain_dir: str | os.PathLike[str], policy_dir: str | os.PathLike[str],
                  published_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Run the stage; returns the decision written to ``out_dir/decision.json``."""
    retrain_dir, policy_dir, out = Path(retrain_dir), Path(policy_dir), Path(out_dir)
    metrics = _read_json(retrain_dir / "metrics.json", "retrain metrics", "retrain")
    policy = read_policy(policy_dir / "policy.json")
    policy_summary = _read_json(policy_dir / "summary.json", "policy search summary", "search_policy")
    name = params.tracking.registered_model
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    version = metrics.get("model_version")
    accuracy = float(metrics["test_accuracy"])
    champion = tracker.champion(name)
    champion_accuracy, basis = champion_score(champion, metrics.get("champion_rescored"))
    already = champion is not None and version is not None and str(champion.version) == str(version)
    if already:
        promote, reason = False, f"version {version} is already the champion"
    else:
        promote, reason = decide(accuracy, champion_accuracy, params.publish.margin)
        if champion is not None:
            reason += f" ({basis})"
    if promote and version is None:
        promote, reason = False, "the retrain registered no model version: nothing to promote"
    # What published/ must serve: the champion after this stage (this version when promoted or
    # already champion, else the kept one).
    serve = str(version) if (promote or already) else (str(champion.version) if champion is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = str(metrics.get("fingerprint", ""))
    lineage = dict(metrics.get("lineage", {}))
    run_ids = {"search_policy": policy_summary.get("mlflow_run_id"), "search_model": lineage.get("search_model_run"),
               "retrain": metrics.get("mlflow_run_id")}
    tags = {"autoaug.fingerprint": fingerprint, "autoaug.model_version": version}
    with tracker.stage_run(STAGE, resume_key=f"{STAGE}-{name}-{version}-{policy_summary.get('mlflow_run_id')}",
                           tags=tags, params={"publish": params.publish.model_dump()}) as run:
        run_ids["publish"] = run.run_id
        policy_record = _publish_policy_if_new(Path(published_dir), policy, policy_dir, policy_summary, fingerprint)
        model_record = None
        # (Re)written whenever published/ holds another model, e.g. on a new volume.
        if serve is not None and _published_registry_version(Path(published_dir)) != (name, serve):
            if serve == str(version):
                saved, served_metrics, served_fp = _local_weights(retrain_dir), metrics, fingerprint
            else:
                assert champion is not None
                saved, served_metrics, served_fp = tracker.champion_weights(champion)
            model = build_model(saved["config"], num_classes=len(saved["classes"]))
            model.load_state_dict(saved["state_dict"])
            model_record = artifacts.publish_model(
                published_dir, model, config=saved["config"], classes=saved["classes"], fingerprint=served_fp,
                metrics={k: served_metrics[k] for k in PUBLISHED_METRICS if k in served_metrics},
                lineage=(_lineage(run_ids, name, serve, policy_record.version if policy_record else None,
                                  policy.metadata.get("studies", []), lineage)
                         if serve == str(version) else _restored_lineage(champion, name, served_metrics)),
            )
        if promote:  # after published/ is written: an interrupted publish is simply decided again
            tracker.promote(name, str(version))
        if metrics.get("mlflow_run_id"):
            tracker.client.set_tag(str(metrics["mlflow_run_id"]), "autoaug.promoted", str(promote))
        decision = {"promoted": promote, "reason": reason, "test_accuracy": accuracy,
                    "champion_accuracy_before": champion_accuracy, "registered_model": name,
                    "model_version": version, "champion_version": serve, "is_champion": promote or already,
                    "published_model_version": model_record.version if model_record else None,
                    "published_policy_version": policy_record.version if policy_record else None,
                    "fingerprint": fingerprint, "mlflow_run_ids": run_ids}
        run.set_tags({"autoaug.promoted": promote, "autoaug.reason": reason,
                      "autoaug.champion": decision["is_champion"]})
        run.log_dict(decision, "decision.json")
        write_text_atomic(out / "decision.json", json.dumps(decision, indent=2) + "\n")
    return decision


def _lineage(run_ids: dict[str, Any], name: str, version: str, policy_version: int | None,
             policy_studies: list[Any], retrain_lineage: dict[str, Any]) -> dict[str, Any]:
    return {"mlflow_run_ids": run_ids, "registry": {"name": name, "version": version},
            "policy_version": policy_version,
            "studies": {"search_policy": policy_studies, "search_model": retrain_lineage.get("search_model_study")}}


def _restored_lineage(champion: Any, name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The kept champion's own lineage (from its retrain run), not this run's: its policy may
    never have been published here, so no policy version is claimed."""
    own = dict(metrics.get("lineage") or {})
    run_ids = {"search_model": own.get("search_model_run"), "retrain": champion.run_id}
    return {**_lineage(run_ids, name, str(champion.version), None, own.get("policy_studies", []), own),
            "restored_from_registry": True}


PUBLISHED_METRICS = ("test_accuracy", "per_class_accuracy", "tta", "latency_ms_batch1", "latency_ms_batch256",
                     "train_minutes", "epochs", "train_images")


def _published_registry_version(root: Path) -> tuple[str, str] | None:
    """(registered model name, version) of the model published/ serves: version 3 of another
    registered model (tracking.registered_model renamed, a folder shared by two pipelines) is
    another model."""
    record = artifacts.current_model(root)
    if record is None:
        return None
    registry = record.meta.get("lineage", {}).get("registry", {})
    if registry.get("version") is None:
        return None
    return str(registry.get("name")), str(registry["version"])


def _local_weights(retrain_dir: Path) -> dict[str, Any]:
    return dict(torch.load(retrain_dir / "model.pt", map_location="cpu", weights_only=True))


def _publish_policy_if_new(root: Path, policy: Any, policy_dir: Path, summary: dict[str, Any],
                           fingerprint: str) -> artifacts.PolicyRecord | None:
    """Publish the policy unless the current published policy is the same one."""
    current = artifacts.current_policy(root)
    if current is not None and current.policy() == policy:
        return current
    grid = policy_dir / "grid.png"
    return artifacts.publish_policy(
        root, policy, fingerprint=fingerprint, mlflow_run_id=summary.get("mlflow_run_id"),
        summary={k: v for k, v in summary.items() if isinstance(v, (int, float, str)) or v is None},
        grid_png=grid.read_bytes() if grid.is_file() else None, studies=policy.metadata.get("studies", []),
    )
