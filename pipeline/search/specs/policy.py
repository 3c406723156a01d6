"""The `search_policy` stage's search: Fast AutoAugment (or the RandAugment baseline) on the
sample, summarised as the policy (with its lineage) and ``summary.json``'s figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.augment import Policy
from pipeline.config import Params
from pipeline.contracts import PolicySummary
from pipeline.search.policy import METHODS, STAGE, FastAutoAugment, RandAugmentSearch
from pipeline.search.registry import BuildContext, SearchStage
from pipeline.search.runner import SearchOutcome
from pipeline.search.studies import own_best_value

PolicyMethod = FastAutoAugment | RandAugmentSearch


@dataclass
class PolicyResult:
    """What the stage writes: the merged policy (its metadata: stage, method, data, studies)
    and the figures of ``summary.json``."""

    policy: Policy
    summary: PolicySummary
    outcome: SearchOutcome


def space(params: Params) -> dict[str, Any]:
    cfg = params.policy_search
    return METHODS[cfg.method].space_of(cfg)


def build(context: BuildContext) -> PolicyMethod:
    cfg = context.params.policy_search
    return METHODS[cfg.method](cfg, context.sample, context.fingerprint, device=context.device,
                               cache=context.cache, progress=context.progress)


def summarise(method: PolicyMethod, outcome: SearchOutcome, context: BuildContext, run_id: str) -> PolicyResult:
    cfg, fingerprint = context.params.policy_search, context.fingerprint
    policy: Policy = outcome.result
    parts = [o.prepared.metrics for o in outcome.parts]
    cleans = [m["child_clean_accuracy"] for m in parts if "child_clean_accuracy" in m]
    summary = PolicySummary(
        method=cfg.method,
        fingerprint=fingerprint,
        space_hash=outcome.space_hash,
        folds=len(outcome.parts),
        trials=outcome.trials,
        warm_started_trials=outcome.warm_started,
        history_trials=outcome.history_trials,
        sub_policies=len(policy),
        best_score_mean=sum(own_best_value(s) for s in outcome.studies) / len(outcome.studies),
        child_clean_accuracy_mean=sum(cleans) / len(cleans) if cleans else None,
        child_train_seconds=sum(m.get("child_train_seconds", 0.0) for m in parts),
        wall_seconds=outcome.wall_seconds,
        mlflow_run_id=run_id,
    )
    metadata = {**policy.metadata, "stage": STAGE, "method": cfg.method, "fingerprint": fingerprint,
                "studies": outcome.study_names}
    return PolicyResult(Policy(policy.sub_policies, metadata=metadata), summary, outcome)


SPEC: SearchStage[PolicyMethod, PolicyResult] = SearchStage(
    name=STAGE, space=space, build=build, summarise=summarise, log_every=10)
