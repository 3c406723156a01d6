"""Policy search: Fast AutoAugment with Optuna TPE (and a RandAugment-style baseline).

FAA: on each of K stratified splits, train a child model on D_M with flip/crop only; then let
TPE propose policies (``n_sub`` sub-policies x ``ops_per_sub`` ops: op categorical, probability
and magnitude in [0, 1]) scored by the child's accuracy (or loss) on D_A augmented by the
candidate with a fixed seed. The top-N candidates of every split are merged (duplicates
dropped) into the final policy. No child is retrained during the search: that is what makes
FAA cheap.

RandAugment: candidates are (N, M); a candidate is RandAugment on the FAA op table (N ops drawn
uniformly, probability 1, magnitude M), expressed as a Policy of all N-op sequences so the
served format is the same. Each candidate trains a child on D_M with it and is scored on clean
D_A, as in the RandAugment paper's grid search.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from tqdm.auto import tqdm

from pipeline.augment import Policy
from pipeline.config import PolicySearchConfig, TrainConfig
from pipeline.data import ImageSet
from pipeline.models import build_model
from pipeline.search.folds import stratified_splits
from pipeline.search.studies import completed, prior_study, space_hash, study_name, warm_start
from pipeline.tracking import RunLogger
from pipeline.train import evaluate, train

STAGE = "search_policy"
TRIAL_TAG = "autoaug.trial"
FOLD_TAG = "autoaug.fold"


# ------------------------------------------------------------------ candidates


def suggest_policy(trial: optuna.Trial, cfg: PolicySearchConfig) -> Policy:
    """A candidate policy from the trial: the FAA search space, as data."""
    subs = []
    for i in range(cfg.n_sub):
        sub = []
        for j in range(cfg.ops_per_sub):
            op = trial.suggest_categorical(f"op_{i}_{j}", list(cfg.ops))
            prob = trial.suggest_float(f"prob_{i}_{j}", 0.0, 1.0)
            mag = trial.suggest_float(f"mag_{i}_{j}", 0.0, 1.0)
            sub.append((op, prob, mag))
        subs.append(sub)
    return Policy(subs)


def policy_from_params(params: dict[str, Any], cfg: PolicySearchConfig) -> Policy:
    return Policy(
        [
            [(params[f"op_{i}_{j}"], params[f"prob_{i}_{j}"], params[f"mag_{i}_{j}"]) for j in range(cfg.ops_per_sub)]
            for i in range(cfg.n_sub)
        ]
    )


def randaugment_policy(num_ops: int, magnitude: float, ops: list[str]) -> Policy:
    """RandAugment(N, M) on the FAA op table as an explicit policy (every N-op sequence)."""
    names = [op for op in ops if op != "Identity"]
    return Policy([[(op, 1.0, magnitude) for op in seq] for seq in itertools.product(names, repeat=num_ops)],
                  metadata={"randaugment": {"num_ops": num_ops, "magnitude": magnitude}})


def merge_policies(policies: list[Policy], decimals: int = 4) -> Policy:
    """All sub-policies of ``policies``, in order, without duplicates (after rounding)."""
    seen: set[tuple] = set()
    subs = []
    for policy in policies:
        for sp in policy.sub_policies:
            key = tuple((c.op, round(c.probability, decimals), round(c.magnitude, decimals)) for c in sp.ops)
            if key not in seen:
                seen.add(key)
                subs.append(list(key))
    return Policy(subs)


def search_space(cfg: PolicySearchConfig) -> dict[str, Any]:
    """What defines the study's space (its hash is part of the study name)."""
    if cfg.method == "faa":
        return {"method": "faa", "n_sub": cfg.n_sub, "ops_per_sub": cfg.ops_per_sub, "ops": sorted(cfg.ops),
                "objective": cfg.objective, "held_out": cfg.held_out, "folds": cfg.folds,
                "child_model": cfg.child_model, "child": cfg.child.model_dump()}
    return {"method": "randaugment", "max_ops": cfg.randaugment.max_ops, "ops": sorted(cfg.ops),
            "held_out": cfg.held_out, "child_model": cfg.child_model,
            "child": cfg.child.model_copy(update={"epochs": cfg.randaugment.epochs}).model_dump()}


# ------------------------------------------------------------------ children


def _cache_key(*parts: Any) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


def train_child(train_set: ImageSet, model_name: str, recipe: TrainConfig, *, seed: int, device: torch.device,
                cache: Path | None, key: str, augment: Callable | None = None,
                progress: bool = True) -> tuple[torch.nn.Module, float]:
    """Train (or load from ``cache``) a child; returns it and the training seconds (0 if cached)."""
    model = build_model(model_name, num_classes=len(train_set.classes))
    path = cache / f"{key}.pt" if cache else None
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.to(device), 0.0
    t0 = time.perf_counter()
    train(model, train_set, recipe, augment=augment, device=device, seed=seed, progress=progress)
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    return model, seconds


# ------------------------------------------------------------------ result


@dataclass
class SearchResult:
    policy: Policy
    studies: list[str]
    summary: dict[str, Any] = field(default_factory=dict)
    fold_studies: list[optuna.Study] = field(default_factory=list)


def _score(result: Any, objective: str) -> float:
    return float(result.accuracy if objective == "accuracy" else result.loss)


def _sync_trials(study: optuna.Study, fold_run: RunLogger, fold: int,
                 to_policy: Callable[[dict[str, Any]], Policy], tags: dict[str, str]) -> None:
    """Give every finished trial its nested MLflow run, once (idempotent: safe after a restart)."""
    logged = fold_run.children(TRIAL_TAG)
    for t in completed(study):
        if str(t.number) in logged or t.value is None:
            continue
        policy = to_policy(t.params)
        metrics = {"score": t.value, **{k: v for k, v in t.user_attrs.items() if isinstance(v, (int, float))}}
        fold_run.log_finished_child(
            f"fold{fold}-trial{t.number:03d}", key_tag=TRIAL_TAG, key=str(t.number),
            params={**t.params, "fold": fold}, metrics=metrics,
            tags={**tags, "optuna.study": study.study_name, "optuna.trial": t.number},
            dicts={"policy.json": policy.to_dict()},
        )


@dataclass
class FoldTask:
    """What one split contributes to the search: how to score a trial, how to read one back."""

    objective: Callable[[optuna.Trial], float]
    to_policy: Callable[[dict[str, Any]], Policy]
    child_seconds: float = 0.0
    clean_accuracy: float | None = None


def faa_task(fingerprint: str, k: int, d_m: ImageSet, d_a: ImageSet, cfg: PolicySearchConfig, *,
             device: torch.device, cache: Path | None, progress: bool) -> FoldTask:
    """Train (or load) the split's child once; trials only evaluate it on augmented D_A."""
    key = _cache_key(fingerprint, k, cfg.seed, cfg.held_out, cfg.folds, cfg.child_model, cfg.child.model_dump())
    child, seconds = train_child(d_m, cfg.child_model, cfg.child, seed=cfg.seed + k, device=device,
                                 cache=cache, key=key, progress=progress)
    clean = evaluate(child, d_a)

    def objective(trial: optuna.Trial) -> float:
        policy = suggest_policy(trial, cfg)
        res = evaluate(child, d_a, augment=policy, generator=torch.Generator().manual_seed(cfg.eval_seed))
        trial.set_user_attr("accuracy", res.accuracy)
        trial.set_user_attr("loss", res.loss)
        return _score(res, cfg.objective)

    return FoldTask(objective, lambda params: policy_from_params(params, cfg), seconds, clean.accuracy)


def randaugment_task(d_m: ImageSet, d_a: ImageSet, cfg: PolicySearchConfig, *, device: torch.device) -> FoldTask:
    """Each trial trains a child with RandAugment(N, M) and scores it on clean D_A."""
    recipe = cfg.child.model_copy(update={"epochs": cfg.randaugment.epochs})

    def to_policy(params: dict[str, Any]) -> Policy:
        return randaugment_policy(int(params["num_ops"]), float(params["magnitude"]), cfg.ops)

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_int("num_ops", 1, cfg.randaugment.max_ops)
        trial.suggest_float("magnitude", 0.0, 1.0)
        child, _ = train_child(d_m, cfg.child_model, recipe, seed=cfg.seed, device=device, cache=None,
                               key="", augment=to_policy(trial.params), progress=False)
        res = evaluate(child, d_a)
        trial.set_user_attr("accuracy", res.accuracy)
        trial.set_user_attr("loss", res.loss)
        return res.accuracy

    return FoldTask(objective, to_policy)


def _open_study(storage: optuna.storages.BaseStorage, name: str, cfg: PolicySearchConfig, k: int,
                maximize: bool, prior: optuna.Study | None) -> tuple[optuna.Study, int]:
    """Create or resume the split's study; warm-start a new one from ``prior``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate + group: the op, probability and magnitude of a slot are modelled jointly.
        sampler = optuna.samplers.TPESampler(seed=cfg.seed + k, n_startup_trials=cfg.startup_trials,
                                             multivariate=True, group=True)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, load_if_exists=True,
                                direction="maximize" if maximize else "minimize")
    warm = 0
    if prior is not None and cfg.warm_start:
        warm = warm_start(study, prior, cfg.warm_start, maximize)
        if warm:
            study.set_user_attr("warm_started_from", prior.study_name)
    return study, warm


def run_search(sample: ImageSet, fingerprint: str, cfg: PolicySearchConfig, storage: optuna.storages.BaseStorage,
               stage_run: RunLogger, *, device: torch.device, cache: Path | None = None,
               progress: bool = True, log_every: int = 10) -> SearchResult:
    """The whole search; resumable: finished trials live in ``storage``, children in ``cache``."""
    space = search_space(cfg)
    shash = space_hash(space)
    splits = stratified_splits(sample, cfg.folds, cfg.held_out, cfg.seed)
    maximize = cfg.method == "randaugment" or cfg.objective == "accuracy"
    n_trials = cfg.trials_per_fold if cfg.method == "faa" else cfg.randaugment.trials
    n_folds = cfg.folds if cfg.method == "faa" else 1
    tags = {"autoaug.fingerprint": fingerprint}
    picked: list[Policy] = []
    studies: list[optuna.Study] = []
    tasks: list[FoldTask] = []
    warm = 0
    t_start = time.perf_counter()
    bar = tqdm(total=n_folds * n_trials, desc=f"{STAGE} ({cfg.method})", unit="trial", disable=not progress)
    try:
        for k in range(n_folds):
            d_m, d_a = sample.subset(splits[k][0]).to(device), sample.subset(splits[k][1]).to(device)
            name = study_name(STAGE, shash, fingerprint, f"fold{k}")
            fold_run = stage_run.child(f"fold{k}", key_tag=FOLD_TAG, key=str(k), tags={**tags, "optuna.study": name})
            prior = prior_study(storage, STAGE, shash, fingerprint, f"fold{k}")
            study, n_warm = _open_study(storage, name, cfg, k, maximize, prior)
            warm += n_warm
            studies.append(study)
            done = len(completed(study))
            bar.update(min(done, n_trials))
            if cfg.method == "faa":
                task = faa_task(fingerprint, k, d_m, d_a, cfg, device=device, cache=cache, progress=progress)
                fold_run.log_metrics({"child_clean_accuracy": task.clean_accuracy or 0.0,
                                      "child_train_seconds": task.child_seconds})
            else:
                task = randaugment_task(d_m, d_a, cfg, device=device)
            tasks.append(task)
            _optimise(study, task, fold_run, k, max(0, n_trials - done), bar, tags, log_every)
            ranked = sorted(completed(study), key=lambda t: t.value or 0.0, reverse=maximize)
            picked.extend(task.to_policy(t.params) for t in ranked[: cfg.top_n if cfg.method == "faa" else 1])
            fold_run.log_metrics({"best_score": ranked[0].value or 0.0, "trials": len(ranked)})
            fold_run.finish()
    finally:
        bar.close()
    policy = picked[0] if cfg.method == "randaugment" else merge_policies(picked)
    cleans = [t.clean_accuracy for t in tasks if t.clean_accuracy is not None]
    summary = {
        "method": cfg.method,
        "fingerprint": fingerprint,
        "space_hash": shash,
        "folds": n_folds,
        "trials": sum(len(completed(s)) for s in studies),
        "warm_started_trials": warm,
        "sub_policies": len(policy),
        "best_score_mean": sum(s.best_value for s in studies) / len(studies),
        "child_clean_accuracy_mean": sum(cleans) / len(cleans) if cleans else None,
        "child_train_seconds": sum(t.child_seconds for t in tasks),
        "wall_seconds": time.perf_counter() - t_start,
    }
    metadata = {**policy.metadata, "stage": STAGE, "method": cfg.method, "fingerprint": fingerprint,
                "studies": [s.study_name for s in studies]}
    return SearchResult(policy=Policy(policy.sub_policies, metadata=metadata),
                        studies=[s.study_name for s in studies], summary=summary, fold_studies=studies)


def _optimise(study: optuna.Study, task: FoldTask, fold_run: RunLogger, k: int, n_trials: int, bar: tqdm,
              tags: dict[str, str], log_every: int) -> None:
    """Run ``n_trials`` more trials; finished trials reach MLflow every ``log_every`` and on exit."""
    since_sync = 0

    def on_trial(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        nonlocal since_sync
        bar.update()
        bar.set_postfix(best=f"{study.best_value:.4f}")
        since_sync += 1
        if since_sync >= log_every:
            _sync_trials(study, fold_run, k, task.to_policy, tags)
            since_sync = 0

    try:
        if n_trials:
            study.optimize(task.objective, n_trials=n_trials, callbacks=[on_trial])
    finally:
        _sync_trials(study, fold_run, k, task.to_policy, tags)
