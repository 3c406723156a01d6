"""The `search_model` stage: multi-objective architecture search on the sample with the found
policy; writes pareto.json, chosen.json, the Pareto plot and a metrics file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from pipeline.config import Params
from pipeline.device import pick_device
from pipeline.files import write_text_atomic
from pipeline.report import figures, plot_history, plot_pareto, save
from pipeline.search.model import STAGE, Candidate, ModelSearch, choose, keep_champion
from pipeline.search.runner import StudyRunner
from pipeline.search.studies import completed, search_name
from pipeline.stages.common import open_inputs, read_policy
from pipeline.tracking import Tracker


def identity(params: Params, fingerprint: str) -> str:
    """The search's identity (the stage run is found again by it: a restarted stage, or a
    worker, joins the same run)."""
    return search_name(STAGE, ModelSearch.space_of(params.model_search), fingerprint)


def champion_architecture(tracker: Tracker, params: Params, classes: Sequence[str]) -> tuple[str, Any] | None:
    """(version, config) of the @champion's architecture when ``choose.keep_champion_points`` may
    keep it: set, a champion whose classes are the sample's, and a retrain that would start from
    its weights (``retrain.warm_epochs`` > 0). Says why not when a champion exists."""
    if params.model_search.choose.keep_champion_points is None:
        return None
    found = tracker.champion_config(params.tracking.registered_model)
    if found is None:
        return None
    version, doc = found
    if not params.retrain.warm_epochs:
        why = "retrain.warm_epochs = 0 (retrain would not start from its weights)"
    elif doc is None or "config" not in doc:
        why = "its run has no model_config.json"
    elif list(doc.get("classes", [])) != list(classes):
        why = f"its classes {doc.get('classes')} are not the sample's {list(classes)}"
    else:
        return version, doc["config"]
    print(f"{STAGE}: not keeping the @champion's architecture (version {version}): {why}", flush=True)
    return None


def keep_or_choose(params: Params, chosen: Candidate, champion: tuple[str, Any] | None,
                   trials: Sequence[FrozenTrial]) -> Candidate | None:
    """The @champion's candidate when ``choose.keep_champion_points`` keeps it over the rule's
    pick ``chosen`` (said either way), else None."""
    rule = params.model_search.choose
    points = rule.keep_champion_points
    if champion is None or points is None or champion[1] == chosen.config:
        return None
    version, config = champion
    kept = keep_champion(chosen, trials, config, points,
                         max_params=rule.budget_params if rule.rule == "under_budget" else None)
    if kept is None:
        print(f"{STAGE}: choosing trial {chosen.trial} ({chosen.accuracy:.4f}): the @champion's architecture "
              f"(version {version}) was not trained by this search, broke a budget, or scored more than "
              f"{points:g} points below", flush=True)
        return None
    print(f"{STAGE}: keeping the @champion's architecture (version {version}, trial {kept.trial}: "
          f"{kept.accuracy:.4f}) over trial {chosen.trial} ({chosen.accuracy:.4f}): within "
          f"choose.keep_champion_points = {points:g}", flush=True)
    return kept


def search_model_stage(params: Params, sample_dir: str | os.PathLike[str], policy_path: str | os.PathLike[str],
                       out_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = ".autoaug/cache",
                       progress: bool = True) -> dict[str, Any]:
    """Run the stage; returns the summary written to ``out_dir/metrics.json``."""
    cfg = params.model_search
    policy = read_policy(policy_path) if cfg.augment == "policy" else None
    inputs = open_inputs(params, sample_dir)
    fingerprint = inputs.fingerprint
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device()
    search = identity(params, fingerprint)
    policy_note = (policy.metadata.get("studies") if policy is not None else None) or []
    tags = {"autoaug.fingerprint": fingerprint, "optuna.study": search, "autoaug.device": device.type,
            "autoaug.policy_studies": ",".join(policy_note)}
    with inputs.tracker.stage_run(STAGE, resume_key=search, tags=tags,
                                  params={"model_search": cfg.model_dump(), "sample_size": len(inputs.sample)}) as run:
        if run.resumed:
            print(f"{STAGE}: resuming MLflow run {run.run_id} and its study")
        champion = champion_architecture(inputs.tracker, params, inputs.sample.classes)
        method = ModelSearch(cfg, inputs.sample, policy=policy, device=device, progress=progress,
                             champion=champion[1] if champion else None)
        runner = StudyRunner(method, inputs.storage, fingerprint, run, warm_start=cfg.warm_start,
                             progress=progress, log_every=1)
        cache = Path(cache_dir) / STAGE if cache_dir else None
        outcome = runner.run()  # first: an impossible budget fails before any reference trains
        references = {name: method.reference(name, cache, fingerprint) for name in cfg.references}
        front: list[Candidate] = outcome.result
        picks = {rule.name: choose(front, rule, references) for rule in cfg.rules()}
        chosen = picks[cfg.choose.name]
        kept = keep_or_choose(params, chosen, champion, completed(outcome.studies[0]))
        if kept is not None:
            chosen = picks["champion"] = kept
        # the champion's version when the model is its architecture (kept, or picked by the rule)
        champion_version = int(champion[0]) if champion is not None and champion[1] == chosen.config else None
        pareto = {"fingerprint": fingerprint, "study": outcome.study_names[0], "objectives": cfg.objectives,
                  "max_params": cfg.max_params, "max_macs": cfg.max_macs, "max_train_cost": cfg.max_train_cost,
                  "front": [c.to_dict() for c in front],
                  "references": {n: c.to_dict() for n, c in references.items()},
                  "picks": {n: c.trial for n, c in picks.items()}}
        chosen_doc = {**chosen.to_dict(), "rule": cfg.choose.model_dump(), "fingerprint": fingerprint,
                      "study": outcome.study_names[0], "mlflow_run_id": run.run_id,
                      "champion_architecture_version": champion_version, "kept_champion": kept is not None}
        summary = {"fingerprint": fingerprint, "trials": outcome.trials, "trained_trials": runner.counted(outcome.studies[0]),
                   "warm_started_trials": outcome.warm_started, "history_trials": outcome.history_trials,
                   "pareto_size": len(front), "chosen_trial": chosen.trial, "chosen_accuracy": chosen.accuracy,
                   "chosen_params": chosen.params, "chosen_macs": chosen.macs,
                   "chosen_train_cost": chosen.train_cost, "best_accuracy": front[0].accuracy,
                   "champion_architecture_version": champion_version, "kept_champion": kept is not None,
                   **{f"{n}_accuracy": c.accuracy for n, c in references.items()},
                   **{f"{n}_params": c.params for n, c in references.items()},
                   "wall_seconds": outcome.wall_seconds, "mlflow_run_id": run.run_id}
        write_text_atomic(out / "pareto.json", json.dumps(pareto, indent=1) + "\n")
        write_text_atomic(out / "chosen.json", json.dumps(chosen_doc, indent=1) + "\n")
        write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
        with figures():
            save(plot_pareto(outcome.studies[0], front, references, picks, cfg.objectives),
                 out / "pareto.png", run, "plots/pareto.png")
            save(plot_history(outcome.studies, ylabel="validation accuracy", title="model search: accuracy by trial",
                              objective=0), None, run, "plots/optimization_history.png")
        run.log_dict(pareto, "pareto.json")
        run.log_dict(chosen_doc, "chosen.json")
        run.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and v is not None})
        run.set_tags({"autoaug.studies": ",".join(outcome.study_names), "autoaug.chosen_trial": chosen.trial})
    return summary
