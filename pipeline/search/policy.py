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

import itertools
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from pipeline.augment import BatchTransform, Policy
from pipeline.config import PolicySearchConfig, TrainConfig
from pipeline.data import ImageSet
from pipeline.files import atomic_path
from pipeline.hashing import json_digest
from pipeline.models import build_model
from pipeline.names import ACCURACY_ATTR, LOSS_ATTR
from pipeline.search.folds import stratified_splits
from pipeline.search.method import (
    Budget,
    Direction,
    MethodSpec,
    PreparedPart,
    TrialRecord,
    WarmStart,
)
from pipeline.search.studies import fingerprint_of
from pipeline.train import EvalResult, evaluate, place_model, train

STAGE = "search_policy"


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


def policy_from_params(params: Mapping[str, Any], cfg: PolicySearchConfig) -> Policy:
    return Policy(
        [
            [(params[f"op_{i}_{j}"], params[f"prob_{i}_{j}"], params[f"mag_{i}_{j}"]) for j in range(cfg.ops_per_sub)]
            for i in range(cfg.n_sub)
        ]
    )


def uniform_policy(num_ops: int, magnitude: float, ops: list[str]) -> Policy:
    """RandAugment(N, M) on the FAA op table as an explicit policy: every N-op sequence at
    probability 1 and magnitude M, so one sub-policy drawn uniformly per image is exactly
    RandAugment's "N ops drawn uniformly". (``pipeline.augment.RandAugment`` is torchvision's
    RandAugment on its own op table; this is the search's baseline on the FAA table.)"""
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


# ------------------------------------------------------------------ children


def train_child(train_set: ImageSet, model_name: str, recipe: TrainConfig, *, seed: int, device: torch.device,
                cache: Path | None, key: str, augment: BatchTransform | None = None,
                progress: bool = True, start: Path | None = None) -> tuple[torch.nn.Module, float]:
    """Train (or load from ``cache``) a child; returns it and the training seconds (0 if cached).
    ``start``: saved weights to train from (fine-tuning) instead of a fresh initialisation."""
    model = build_model(model_name, num_classes=len(train_set.classes), seed=seed)
    path = cache / f"{key}.pt" if cache else None
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return place_model(model, device, recipe), 0.0  # as train() leaves a freshly trained child
    if start is not None:
        model.load_state_dict(torch.load(start, map_location="cpu", weights_only=True))
    t0 = time.perf_counter()
    train(model, train_set, recipe, augment=augment, device=device, seed=seed, progress=progress)
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(model.state_dict(), tmp)
    return model, seconds


def _score(result: EvalResult, objective: str) -> float:
    return float(result.accuracy if objective == "accuracy" else result.loss)


# ------------------------------------------------------------------ methods


class _PolicyMethod:
    """What both policy searches share: stage, folds, trial runs, the study identity, seeds.

    Seeds (``PolicySearchConfig.seeds``): the splits draw from ``split_seed``, the children
    train from ``train_seed`` (+ the fold), TPE samples from ``sampler_seed`` (+ the fold).
    """

    label = "policy"

    def __init__(self, cfg: PolicySearchConfig, sample: ImageSet, fingerprint: str, *, device: torch.device,
                 cache: Path | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.sample = sample
        self.fingerprint = fingerprint
        self.device = device
        self.cache = cache
        self.progress = progress
        self._splits: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.spec = MethodSpec(stage=STAGE, label=self.label, objectives=(("score", self.direction()),),
                               budget=Budget(self.trials_per_part()), warm=WarmStart.from_config(cfg))

    def direction(self) -> Direction:
        return "maximize"

    def trials_per_part(self) -> int:
        raise NotImplementedError

    def split(self, k: int) -> tuple[ImageSet, ImageSet]:
        """(D_M, D_A) of split ``k``, on the device."""
        if self._splits is None:
            self._splits = stratified_splits(self.sample, self.cfg.folds, self.cfg.held_out, self.cfg.split_seed)
        d_m, d_a = self._splits[k]
        return self.sample.subset(d_m).to(self.device), self.sample.subset(d_a).to(self.device)

    def sampler(self, part: int, salt: int = 0) -> optuna.samplers.BaseSampler:
        # multivariate + group: the op, probability and magnitude of a slot are modelled jointly.
        return optuna.samplers.TPESampler(seed=self.cfg.sampler_seed + part + salt,
                                          n_startup_trials=self.cfg.startup_trials, multivariate=True, group=True)

    def seed_points(self, part: int) -> list[tuple[str, dict[str, Any]]]:
        return []  # no hand-designed policies: a cold fold starts from the sampler's draws

    def record(self, part: int, trial: FrozenTrial) -> TrialRecord:
        """Every trial scored a policy: its run holds the parameters, the fold and the policy."""
        return TrialRecord({**trial.params, "fold": part}, {"policy.json": self.decode(trial.params).to_dict()})

    def space(self) -> dict[str, Any]:
        return self.space_of(self.cfg)

    @classmethod
    def space_of(cls, cfg: PolicySearchConfig) -> dict[str, Any]:
        """What defines the study's space, from the config alone (the stage names its MLflow
        run after it before anything is loaded)."""
        raise NotImplementedError

    def decode(self, params: Mapping[str, Any]) -> Policy:
        raise NotImplementedError


class FastAutoAugment(_PolicyMethod):
    """FAA: one child per split trained once on D_M; a trial scores a candidate policy by the
    child's accuracy (or loss) on D_A augmented by it, with a fixed augmentation seed."""

    label = "faa"

    def direction(self) -> Direction:
        return "maximize" if self.cfg.objective == "accuracy" else "minimize"

    def trials_per_part(self) -> int:
        return self.cfg.trials_per_fold

    @classmethod
    def space_of(cls, cfg: PolicySearchConfig) -> dict[str, Any]:
        return {"method": "faa", "n_sub": cfg.n_sub, "ops_per_sub": cfg.ops_per_sub, "ops": sorted(cfg.ops),
                "objective": cfg.objective, "held_out": cfg.held_out, "folds": cfg.folds,
                **({"draws": cfg.draws} if cfg.draws != 1 else {}),
                "child_model": cfg.child_model, "child": cfg.child.model_dump()}

    def parts(self) -> list[str | None]:
        return [f"fold{k}" for k in range(self.cfg.folds)]

    def decode(self, params: Mapping[str, Any]) -> Policy:
        return policy_from_params(params, self.cfg)

    def child_key(self, fingerprint: str, part: int) -> str:
        """The cache key of the child trained from scratch on split ``part`` of that sample."""
        cfg = self.cfg
        # one seed where split and train seeds agree: the key children were cached under before
        # the seeds were separate
        seeds: int | list[int] = cfg.split_seed if cfg.split_seed == cfg.train_seed else [cfg.split_seed,
                                                                                           cfg.train_seed]
        return json_digest([fingerprint, part, seeds, cfg.held_out, cfg.folds, cfg.child_model,
                            cfg.child.model_dump()])

    def prepare(self, part: int, prior: str | None = None) -> PreparedPart:
        """Train (or load) the split's child once; trials only evaluate it on augmented D_A.

        With ``warm_child_epochs`` and a warm start, the child of the prior data's split (still in
        the cache) is fine-tuned on this split's D_M for that many epochs instead. The stable
        sample and splits keep most of D_A held out from it: only images that moved from the
        prior D_M to this D_A (when prior D_A members left the sample) were seen, by every
        candidate's score alike."""
        cfg = self.cfg
        d_m, d_a = self.split(part)
        key = self.child_key(self.fingerprint, part)
        base = self._prior_child(part, prior)
        metrics: dict[str, float] = {}
        if base is None:
            child, seconds = self.scratch_child(part, d_m)
        else:
            epochs = min(cfg.warm_child_epochs, cfg.child.epochs)
            recipe = cfg.child.model_copy(update={"epochs": epochs})
            child, seconds = train_child(d_m, cfg.child_model, recipe, seed=cfg.train_seed + part, device=self.device,
                                         cache=self.cache, key=json_digest([key, "finetuned", base.stem, epochs]),
                                         progress=self.progress, start=base)
            metrics["child_finetuned_epochs"] = float(epochs)
        clean = evaluate(child, d_a)

        def objective(trial: optuna.Trial) -> float:
            res = self.score(child, d_a, suggest_policy(trial, cfg), cfg.eval_seed)
            trial.set_user_attr(ACCURACY_ATTR, res.accuracy)
            trial.set_user_attr(LOSS_ATTR, res.loss)
            return _score(res, cfg.objective)

        return PreparedPart(objective, {"child_clean_accuracy": clean.accuracy, "child_train_seconds": seconds,
                                        **metrics})

    def scratch_child(self, part: int, d_m: ImageSet) -> tuple[torch.nn.Module, float]:
        """Split ``part``'s child trained from scratch on ``d_m`` (or read from the cache)."""
        cfg = self.cfg
        return train_child(d_m, cfg.child_model, cfg.child, seed=cfg.train_seed + part, device=self.device,
                           cache=self.cache, key=self.child_key(self.fingerprint, part), progress=self.progress)

    def score(self, child: torch.nn.Module, d_a: ImageSet, policy: Policy, seed: int) -> EvalResult:
        """How a trial scores a candidate: ``child`` on ``d_a`` augmented by ``policy`` (``draws``
        draws per image) with the augmentation seed ``seed``."""
        return evaluate(child, d_a, augment=policy, generator=torch.Generator().manual_seed(seed),
                        draws=self.cfg.draws, batch_size=max(100, 1000 // self.cfg.draws))  # draws x batch per pass

    def _prior_child(self, part: int, prior: str | None) -> Path | None:
        """The cached child of the prior data's split ``part`` to fine-tune, if asked for and there."""
        if not (self.cfg.warm_child_epochs and prior and self.cache is not None):
            return None
        path = self.cache / f"{self.child_key(fingerprint_of(prior, STAGE), part)}.pt"
        if not path.exists():
            print(f"{STAGE}: fold{part}: no cached child of {prior} to fine-tune; training one from scratch",
                  file=sys.stderr, flush=True)
            return None
        return path

    def combine(self, ranked: list[list[FrozenTrial]], prepared: list[PreparedPart]) -> Policy:
        """The ``top_n`` candidates of every split, merged without duplicates."""
        return merge_policies([self.decode(t.params) for trials in ranked for t in trials[: self.cfg.top_n]])


class RandAugmentSearch(_PolicyMethod):
    """The cheap baseline: each trial trains a child with RandAugment(N, M) on the FAA op table
    and is scored on clean D_A, as in the RandAugment paper's grid search."""

    label = "randaugment"

    def trials_per_part(self) -> int:
        return self.cfg.randaugment.trials

    @property
    def recipe(self) -> TrainConfig:
        return self.recipe_of(self.cfg)

    @staticmethod
    def recipe_of(cfg: PolicySearchConfig) -> TrainConfig:
        return cfg.child.model_copy(update={"epochs": cfg.randaugment.epochs})

    @classmethod
    def space_of(cls, cfg: PolicySearchConfig) -> dict[str, Any]:
        return {"method": "randaugment", "max_ops": cfg.randaugment.max_ops, "ops": sorted(cfg.ops),
                "held_out": cfg.held_out, "child_model": cfg.child_model, "child": cls.recipe_of(cfg).model_dump()}

    def parts(self) -> list[str | None]:
        return ["fold0"]  # one split: every trial trains its own child

    def decode(self, params: Mapping[str, Any]) -> Policy:
        return uniform_policy(int(params["num_ops"]), float(params["magnitude"]), self.cfg.ops)

    def prepare(self, part: int, prior: str | None = None) -> PreparedPart:
        d_m, d_a = self.split(part)

        def objective(trial: optuna.Trial) -> float:
            trial.suggest_int("num_ops", 1, self.cfg.randaugment.max_ops)
            trial.suggest_float("magnitude", 0.0, 1.0)
            child, _ = train_child(d_m, self.cfg.child_model, self.recipe, seed=self.cfg.train_seed, device=self.device,
                                   cache=None, key="", augment=self.decode(trial.params), progress=False)
            res = evaluate(child, d_a)
            trial.set_user_attr(ACCURACY_ATTR, res.accuracy)
            trial.set_user_attr(LOSS_ATTR, res.loss)
            return res.accuracy

        return PreparedPart(objective)

    def combine(self, ranked: list[list[FrozenTrial]], prepared: list[PreparedPart]) -> Policy:
        return self.decode(ranked[0][0].params)


METHODS: dict[str, type[FastAutoAugment] | type[RandAugmentSearch]] = {"faa": FastAutoAugment, "randaugment": RandAugmentSearch}
"""``policy_search.method`` -> the search: the one place the method name is looked up."""
