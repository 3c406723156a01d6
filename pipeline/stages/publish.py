"""The `publish` stage: promote the retrained model to the registry's `@champion` alias only when
the promotion gate says so (``pipeline.champion.judge``: better at ``publish.alpha`` on the same
test images, or not worse and smaller/faster with ``publish.prefer``), and write what the
service reads into `published/` (pipeline/artifacts.py: versioned, atomic, history kept).

The found policy is published whenever it differs from the published one (training jobs poll
the latest policy); the model only when promoted. The decision, with its reason, the accuracy
difference, its interval and the p-value, is the stage's output (`decision.json`) and tags and
metrics on the MLflow runs, so "why is the old model still served?" has an answer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pipeline import artifacts, champion, names
from pipeline.augment import Policy
from pipeline.champion import Verdict
from pipeline.config import Params
from pipeline.contracts import (
    Decision,
    PolicySummary,
    RetrainLineage,
    RetrainMetrics,
    from_document,
)
from pipeline.models import build_model
from pipeline.stages.common import read_policy
from pipeline.tracking import Tracker

STAGE = "publish"


def publish_stage(params: Params, retrain_dir: str | os.PathLike[str], policy_dir: str | os.PathLike[str],
                  published_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Run the stage; returns the decision written to ``out_dir/decision.json``."""
    retrain_dir, policy_dir, root = Path(retrain_dir), Path(policy_dir), Path(published_dir)
    metrics = RetrainMetrics.read(retrain_dir / "metrics.json")
    policy = read_policy(policy_dir / "policy.json")
    summary = PolicySummary.read(policy_dir / "summary.json")
    name = params.tracking.registered_model
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    current = champion.find(tracker, name)
    verdict = champion.judge(metrics, current, params.publish)
    # what published/ must serve: the champion after this stage (this version when promoted or
    # already champion, else the kept one)
    kept = str(current.version) if current is not None else None
    serve = metrics.model_version if verdict.promote or verdict.gate == "already_champion" else kept
    run_ids = {"search_policy": summary.mlflow_run_id, "search_model": metrics.lineage.search_model_run,
               "retrain": metrics.mlflow_run_id}
    tags = {names.FINGERPRINT: metrics.fingerprint, names.MODEL_VERSION: metrics.model_version}
    with tracker.stage_run(STAGE, resume_key=f"{STAGE}-{name}-{metrics.model_version}-{summary.mlflow_run_id}",
                           tags=tags, params={"publish": params.publish.model_dump()}) as run:
        run_ids["publish"] = run.run_id
        policy_record = publish_policy_if_new(root, policy, policy_dir, summary, metrics.fingerprint)
        model_record = None
        # (re)written whenever published/ holds another model, e.g. on a new volume
        if serve is not None and published_registry_version(root) != (name, serve):
            model_record = publish_served(tracker, root, retrain_dir, metrics, current, serve, name, run_ids,
                                          policy_record, policy)
        if verdict.promote:  # after published/ is written: an interrupted publish is simply decided again
            champion.promote(tracker, name, str(metrics.model_version))
        if metrics.mlflow_run_id:
            tracker.client.set_tag(metrics.mlflow_run_id, names.PROMOTED, str(verdict.promote))
        decision = decide_record(verdict, metrics, name, serve, model_record, policy_record, run_ids)
        run.set_tags({names.PROMOTED: decision.promoted, names.REASON: decision.reason,
                      names.CHAMPION: decision.is_champion, names.GATE: verdict.gate})
        run.log_metrics(champion.gate_metrics(verdict.comparison))
        run.log_dict(decision.to_json(), "decision.json")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        decision.write(Path(out_dir) / "decision.json")
    return decision.to_json()


def decide_record(verdict: Verdict, metrics: RetrainMetrics, name: str, serve: str | None,
                  model_record: artifacts.ModelRecord | None, policy_record: artifacts.PolicyRecord | None,
                  run_ids: dict[str, str | None]) -> Decision:
    """decision.json: the verdict, what is served after it and where everything was logged."""
    return Decision(promoted=verdict.promote, reason=verdict.reason, test_accuracy=metrics.test_accuracy,
                    champion_accuracy_before=verdict.champion_accuracy, registered_model=name,
                    model_version=metrics.model_version, champion_version=serve,
                    is_champion=verdict.promote or verdict.gate == "already_champion",
                    published_model_version=model_record.version if model_record else None,
                    published_policy_version=policy_record.version if policy_record else None,
                    fingerprint=metrics.fingerprint, mlflow_run_ids=run_ids, gate=verdict.gate,
                    comparison=verdict.comparison)


def publish_served(tracker: Tracker, root: Path, retrain_dir: Path, metrics: RetrainMetrics, current: Any,
                   serve: str, name: str, run_ids: dict[str, str | None],
                   policy_record: artifacts.PolicyRecord | None, policy: Policy) -> artifacts.ModelRecord:
    """Publish the model to serve: this retrain's (from its folder) or the kept champion's (from
    the registry, with its own metrics and lineage)."""
    if serve == metrics.model_version:
        saved = dict(torch.load(retrain_dir / "model.pt", map_location="cpu", weights_only=True))
        served, fingerprint = metrics, metrics.fingerprint
        lineage = _lineage(run_ids, name, serve, policy_record.version if policy_record else None,
                           policy.metadata.get("studies", []), metrics.lineage)
    else:
        assert current is not None
        saved, served_doc, fingerprint = champion.weights(tracker, current)
        served = from_document(RetrainMetrics, served_doc, f"{name} version {current.version}'s metrics.json",
                               "retrain a model to replace it (`dvc repro retrain publish`)")
        lineage = _restored_lineage(current, name, served.lineage)
    model = build_model(saved["config"], num_classes=len(saved["classes"]))
    model.load_state_dict(saved["state_dict"])
    return artifacts.publish_model(root, model, config=saved["config"], classes=saved["classes"],
                                   fingerprint=fingerprint, metrics=served.published(), lineage=lineage)


def _lineage(run_ids: dict[str, str | None], name: str, version: str, policy_version: int | None,
             policy_studies: list[Any], retrain_lineage: RetrainLineage) -> dict[str, Any]:
    return {"mlflow_run_ids": run_ids, "registry": {"name": name, "version": version},
            "policy_version": policy_version,
            "studies": {"search_policy": policy_studies, "search_model": retrain_lineage.search_model_study}}


def _restored_lineage(current: Any, name: str, own: RetrainLineage) -> dict[str, Any]:
    """The kept champion's own lineage (from its retrain run), not this run's: its policy may
    never have been published here, so no policy version is claimed."""
    run_ids = {"search_model": own.search_model_run, "retrain": current.run_id}
    return {**_lineage(run_ids, name, str(current.version), None, own.policy_studies, own),
            "restored_from_registry": True}


def published_registry_version(root: Path) -> tuple[str, str] | None:
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


def publish_policy_if_new(root: Path, policy: Policy, policy_dir: Path, summary: PolicySummary,
                          fingerprint: str) -> artifacts.PolicyRecord | None:
    """Publish the policy unless the current published policy is the same one."""
    current = artifacts.current_policy(root)
    if current is not None and current.policy() == policy:
        return current
    grid = policy_dir / "grid.png"
    return artifacts.publish_policy(
        root, policy, fingerprint=fingerprint, mlflow_run_id=summary.mlflow_run_id, summary=summary.figures(),
        grid_png=grid.read_bytes() if grid.is_file() else None, studies=policy.metadata.get("studies", []),
    )
