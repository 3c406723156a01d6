"""The `search_model` stage's search: the multi-objective architecture search with the found
policy, summarised as the feasible Pareto front, the references, each rule's pick and the
chosen model (the @champion's architecture when it is kept)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.champion import champion_architecture, keep_or_choose, keep_seed_point, warm_recipe
from pipeline.config import Params
from pipeline.contracts import Chosen, ModelSearchSummary, Pareto, ScoredModel
from pipeline.device import cpu_has_fast_bf16
from pipeline.names import STOPPED_AT_ATTR
from pipeline.search.model import (
    STAGE,
    Candidate,
    ModelSearch,
    choose,
    refused,
    refused_seed_points,
    refused_untimed,
)
from pipeline.search.registry import BuildContext, SearchStage
from pipeline.search.runner import SearchOutcome
from pipeline.search.studies import completed


@dataclass
class ModelResult:
    """What the stage writes (pareto.json, chosen.json, metrics.json) and plots."""

    front: list[Candidate]
    references: dict[str, Candidate]
    picks: dict[str, Candidate]
    chosen: Candidate
    pareto: Pareto
    chosen_doc: Chosen
    summary: ModelSearchSummary
    outcome: SearchOutcome


def minutes_hint(device: torch.device) -> str:
    """What to do when the minutes budget refused the seed points: the minutes are this machine's
    own step times, and CPUs differ several-fold (BENCHMARKS.md: airbench_small's 40-epoch
    retrain predicts 21.7 min on an Intel Xeon with AMX, 49.9 on a Zen 4 EPYC, both native bf16)."""
    why = ("this CPU has no native bf16, so training runs in fp32, 3-5x slower than on one with it"
           if device.type == "cpu" and not cpu_has_fast_bf16()
           else "retrain minutes are timed on this machine, and native-bf16 CPUs differ 2x or more")
    return (f"{why[0].upper()}{why[1:]}: raise model_search.max_retrain_minutes or lower retrain.recipe.epochs "
            "to let them in.")


def space(params: Params) -> dict[str, Any]:
    return ModelSearch.space_of(params.model_search, params.retrain.recipe)


def uses_policy(params: Params) -> bool:
    """The search trains with the policy, or predicts a retrain that augments with it (its cost
    per batch is part of each candidate's retrain minutes)."""
    cfg = params.model_search
    return cfg.augment == "policy" or (cfg.max_retrain_minutes is not None and params.retrain.augment == "policy")


def build(context: BuildContext) -> ModelSearch:
    """The search; on a warm start it re-trains the @champion's architecture first (when
    ``choose.keep_champion_points`` may keep it), in the stage and in every worker alike. The
    retrain's recipe and training images (the sample's pool) predict each candidate's retrain
    minutes (``max_retrain_minutes``); the champion's architecture's at ``retrain.warm_epochs``,
    the fine-tune the retrain gives it when it is chosen."""
    champion = None
    if context.tracker is not None:
        champion = champion_architecture(context.tracker, context.params, context.sample.classes)
    retrain = context.params.retrain
    return ModelSearch(context.params.model_search, context.sample, policy=context.policy, device=context.device,
                       progress=context.progress, champion=champion[1] if champion else None,
                       champion_version=champion[0] if champion else None,
                       retrain_recipe=context.params.retrain.recipe, retrain_images=context.retrain_images,
                       champion_recipe=warm_recipe(retrain.recipe, retrain.warm_epochs, retrain.warm_lr_scale)
                       if retrain.warm_epochs else None,
                       retrain_policy=context.policy if retrain.augment == "policy" else None)


def summarise(method: ModelSearch, outcome: SearchOutcome, context: BuildContext, run_id: str) -> ModelResult:
    """References trained after the search (an impossible budget fails before any trains), the
    rules' picks from the front, the champion kept or not, and the stage's three documents."""
    cfg, fingerprint = context.params.model_search, context.fingerprint
    trained_on = {name: method.reference(name, context.cache, fingerprint, outcome.studies[0])
                  for name in cfg.references}
    references = {name: candidate for name, (candidate, _) in trained_on.items()}
    sources = {name: source for name, (_, source) in trained_on.items()}
    front: list[Candidate] = outcome.result
    picks = {rule.name: choose(front, rule, references) for rule in cfg.rules()}
    chosen = picks[cfg.choose.name]
    trials = completed(outcome.studies[0])
    seeds_refused = refused_seed_points(trials, cfg)
    if seeds_refused:  # said, so that a weaker choice on a slower machine is not a mystery
        hint = (" " + minutes_hint(method.device)
                if any("retrain_minutes" in broken for broken in seeds_refused.values()) else "")
        listed = "; ".join(f"{name} ({', '.join(broken.values()) or 'over a budget'})"
                           for name, broken in seeds_refused.items())
        print(f"search_model: seed points over a budget on this machine, never trained: {listed}."
              + hint, file=sys.stderr, flush=True)
    seed_kept = keep_seed_point(cfg.choose, chosen, trials, cfg.seed_points)
    if seed_kept is not None:
        chosen = picks["seed_point"] = seed_kept[1]
    champion = (method.champion_version, method.champion) if method.champion_version is not None else None
    kept = keep_or_choose(context.params, chosen, champion, trials)
    if kept is not None:
        chosen = picks["champion"] = kept
    # the champion's version when the model is its architecture (kept, or picked by the rule)
    version = int(champion[0]) if champion is not None and champion[1] == chosen.config else None
    study = outcome.study_names[0]
    pareto = Pareto(fingerprint=fingerprint, study=study, objectives=list(cfg.objectives), max_params=cfg.max_params,
                    max_macs=cfg.max_macs, max_train_cost=cfg.max_train_cost,
                    max_retrain_minutes=cfg.max_retrain_minutes,
                    front=[ScoredModel(**c.to_dict()) for c in front],
                    references={n: ScoredModel(**c.to_dict()) for n, c in references.items()},
                    reference_sources=sources, picks={n: c.trial for n, c in picks.items()})
    chosen_doc = Chosen(**chosen.to_dict(), rule=cfg.choose.model_dump(), fingerprint=fingerprint, study=study,
                        mlflow_run_id=run_id, champion_architecture_version=version, kept_champion=kept is not None)
    per_reference = {**{f"{n}_accuracy": c.accuracy for n, c in references.items()},
                     **{f"{n}_params": c.params for n, c in references.items()}}  # the file's free-form keys
    summary = ModelSearchSummary(
        fingerprint=fingerprint, trials=outcome.trials,
        trained_trials=sum(1 for t in trials if method.spec.budget.counts(t)),
        stopped_trials=sum(1 for t in trials if STOPPED_AT_ATTR in t.user_attrs),
        warm_started_trials=outcome.warm_started, history_trials=outcome.history_trials, pareto_size=len(front),
        chosen_trial=chosen.trial, chosen_accuracy=chosen.accuracy, chosen_params=chosen.params,
        chosen_macs=chosen.macs, chosen_train_cost=chosen.train_cost,
        chosen_predicted_retrain_minutes=chosen.predicted_retrain_minutes,
        chosen_retrain_epochs=chosen.retrain_epochs, best_accuracy=front[0].accuracy,
        champion_architecture_version=version, kept_champion=kept is not None, **refused(trials),
        refused_untimed=refused_untimed(trials),
        references_carried=sum(source != fingerprint for source in sources.values()),
        kept_seed_point=seed_kept[0] if seed_kept is not None else None,
        seed_points_refused=list(seeds_refused),
        wall_seconds=outcome.wall_seconds, mlflow_run_id=run_id, **per_reference)
    return ModelResult(front, references, picks, chosen, pareto, chosen_doc, summary, outcome)


SPEC: SearchStage[ModelSearch, ModelResult] = SearchStage(
    name=STAGE, space=space, build=build, summarise=summarise, log_every=1, uses_policy=uses_policy)
