"""The retrain recipe, searched on the chosen architecture, as a SearchMethod.

The model search compares architectures at one short recipe; the retrain then trains the chosen
one for minutes at ``retrain.recipe``. This search tunes that recipe for that network: lr,
weight decay, label smoothing and epochs. A trial is a proxy of the retrain: the chosen
architecture trained from scratch on the model search's split of the sample (the policy
search's first D_M) with the found policy, for ``fidelity`` x the trial's epochs, at the
proxy batch size (the lr follows ``retrain.recipe``'s lr_batch_size rule), and scored on the
split's D_A. Everything else is the retrain's own recipe (airbench's lookahead, flips,
translate, bias lr), so what is searched is what retrain will use.

Two objectives, accuracy (maximise) and epochs (minimise): more epochs nearly always score
higher, so the choice (``choose``) is the fewest epochs within ``within_points`` of the best
trial, the most accurate such trial. When the model search measured the architecture's step at
the retrain's batch size (chosen.json's ``retrain_step_seconds``) and
``model_search.max_retrain_minutes`` is set, epochs whose predicted retrain minutes exceed it
are a constraint: such a trial is never trained (like the model search's over-budget draws).

When the model search kept a known design at its widths by fitting fewer epochs into that budget
(chosen.json's ``retrain_epochs``, ``model_search.shorten_seed_points``), ``epochs`` are read
relative to ``retrain.recipe.epochs``: each choice is scaled by retrain_epochs / recipe epochs
(at the defaults, [30, 40, 50] of 40 become [14, 18, 23] for a design fitted at 18), so the params'
own recipe is trained at the fitted epochs and a trial's parameters mean the same in every study.

The study's first trial is the params' own recipe (a seed point), and it stays the choice unless
a trial beats it on the proxy by more than ``margin`` points: one seed of a short proxy on 4,000
validation images moves by about that much, and the first run at the defaults replaced airbench's
recipe (40 epochs, label smoothing 0.2) by one that led by 0.05 points (2 images); at a margin of
1.0 a 2.2-point lead did the same on another machine and retrained 0.7 points worse, so the
margin is 3.0, above the lead the best of the other trials takes by chance. After a data update (or when the
model search chose another architecture under the same params) the search warm-starts from the
prior study like the other searches: the prior best recipes are re-evaluated first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from pipeline.augment import BatchTransform
from pipeline.config import RecipeSearchConfig, TrainConfig
from pipeline.data import ImageSet
from pipeline.errors import AutoaugError
from pipeline.models import build_model
from pipeline.names import (
    ACCURACY_ATTR,
    PREDICTED_RETRAIN_MINUTES_ATTR,
    SKIPPED_ATTR,
    TRAIN_SECONDS_ATTR,
    VAL_ACCURACY_CURVE,
)
from pipeline.search.folds import search_split
from pipeline.search.method import Budget, MethodSpec, PreparedPart, TrialRecord, WarmStart
from pipeline.search.studies import feasible, mark_diverged, trained
from pipeline.train import TrainingDivergedError, predicted_minutes, train

STAGE = "search_recipe"
SEARCHED = ("lr", "weight_decay", "label_smoothing", "epochs")
"""The retrain.recipe keys the search sets (the trial parameters' names)."""


@dataclass(frozen=True)
class FoundRecipe:
    """The search's choice: the trial, its proxy accuracy and the retrain recipe it gives."""

    trial: int
    accuracy: float
    values: dict[str, Any]  # the SEARCHED keys
    recipe: TrainConfig  # retrain.recipe with ``values`` on top
    predicted_minutes: float | None
    best_accuracy: float  # the best trial's proxy accuracy (the choice may give a little for fewer epochs)
    kept_params_recipe: bool = False  # no trial beat the params' own recipe by more than the margin


class RecipeSearch:
    """The recipe search (one study, trials nested under the stage run).

    Seeds: the split from ``split_seed`` (the model search's split when both keep the default
    seeds), every proxy initialised and trained from ``train_seed`` (the same network each
    trial, so trials differ by their recipe only), the sampler from ``sampler_seed``.
    """

    label = "recipe"

    def __init__(self, cfg: RecipeSearchConfig, sample: ImageSet, *, retrain: TrainConfig,
                 architecture: Mapping[str, Any] | str, policy: BatchTransform | None, device: torch.device,
                 progress: bool = True, step_seconds: float | None = None, retrain_images: int | None = None,
                 max_minutes: float | None = None, fine_tune_epochs: int | None = None,
                 retrain_epochs: int | None = None) -> None:
        self.cfg = cfg
        self.retrain = retrain
        self.architecture = architecture
        self.policy = policy
        self.device = device
        self.progress = progress
        self.step_seconds = step_seconds
        self.retrain_images = retrain_images
        self.max_minutes = max_minutes
        # the architecture is the @champion's: the retrain fine-tunes it for these epochs (at most a
        # recipe's), so that is what a recipe's minutes are predicted (and budgeted) for
        self.fine_tune_epochs = fine_tune_epochs
        # the model search fitted the architecture into the minutes at these epochs: the epochs
        # choices are scaled by them over retrain.recipe's (``epochs_of``)
        self.epochs_scale = retrain_epochs / retrain.epochs if retrain_epochs else 1.0
        self.train_set, self.val_set = self.split(sample, cfg)
        self.spec = MethodSpec(stage=STAGE, label=self.label,
                               objectives=(("accuracy", "maximize"), ("epochs", "minimize")),
                               budget=Budget(cfg.trials, counts=trained),
                               warm=WarmStart.from_config(cfg, first=self.is_own))

    @staticmethod
    def split(sample: ImageSet, cfg: RecipeSearchConfig) -> tuple[ImageSet, ImageSet]:
        """The first D_M / D_A split of the sample (the model search's), cut to the sizes."""
        return search_split(sample, cfg.held_out, cfg.split_seed, cfg.train_images, cfg.val_images)

    # ------------------------------------------------------------------ SearchMethod

    def space(self) -> dict[str, Any]:
        return self.space_of(self.cfg, self.retrain)

    @staticmethod
    def space_of(cfg: RecipeSearchConfig, retrain: TrainConfig) -> dict[str, Any]:
        """What a trial's values mean: the ranges, the proxy and the recipe they modify. Not the
        architecture (known only after the model search ran): another architecture under the
        same params warm-starts from this study, as new data does."""
        keep = {"lr", "weight_decay", "label_smoothing", "epochs", "fidelity", "batch_size", "train_images",
                "val_images", "held_out", "augment"}
        return {"recipe_search": cfg.model_dump(include=keep), "retrain": retrain.model_dump()}

    def parts(self) -> list[str | None]:
        return [None]

    def sampler(self, part: int, salt: int = 0) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=self.cfg.sampler_seed + salt,
                                          n_startup_trials=self.cfg.startup_trials, multivariate=True)

    def seed_points(self, part: int) -> list[tuple[str, dict[str, Any]]]:
        """The params' own recipe first, when it lies within the ranges."""
        own = self.own_values()
        inside = all(low <= own[k] <= high for k, (low, high) in
                     (("lr", self.cfg.lr), ("weight_decay", self.cfg.weight_decay),
                      ("label_smoothing", self.cfg.label_smoothing)))
        own_params = {**own, "epochs": int(self.retrain.epochs)}  # the choice, before epochs_of
        return [("retrain.recipe", own_params)] if inside and self.retrain.epochs in self.cfg.epochs else []

    def is_own(self, trial: FrozenTrial) -> bool:
        """Whether a prior trial trained the params' own recipe: a warm start re-evaluates it
        first, so the margin rule (``choose``) still has the params' recipe to keep."""
        return self.decode(trial.params) == self.own_values()

    def own_values(self) -> dict[str, Any]:
        """retrain.recipe's values of the searched keys (the params' own recipe)."""
        return {"lr": float(self.retrain.lr), "weight_decay": float(self.retrain.weight_decay),
                "label_smoothing": float(self.retrain.label_smoothing), "epochs": self.epochs_of(self.retrain.epochs)}

    def epochs_of(self, choice: int) -> int:
        """The retrain epochs an ``epochs`` choice means for this architecture: the choice, scaled
        when the model search fitted the architecture at fewer epochs than retrain.recipe's."""
        return max(1, math.floor(choice * self.epochs_scale + 0.5))  # half up: 22.5 -> 23

    def prepare(self, part: int, prior: str | None = None) -> PreparedPart:
        return PreparedPart(self.objective)

    def record(self, part: int, trial: FrozenTrial) -> TrialRecord | None:
        if not trained(trial):
            return None
        return TrialRecord(dict(trial.params), {"recipe.json": self.decode(trial.params)})

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's parameters as retrain.recipe keys (the epochs as ``epochs_of`` reads them)."""
        return {"lr": float(params["lr"]), "weight_decay": float(params["weight_decay"]),
                "label_smoothing": float(params["label_smoothing"]), "epochs": self.epochs_of(int(params["epochs"]))}

    def combine(self, ranked: list[list[FrozenTrial]], prepared: list[PreparedPart]) -> FoundRecipe:
        return self.choose(ranked[0])

    # ------------------------------------------------------------------ the trial

    def recipe(self, values: Mapping[str, Any]) -> TrainConfig:
        """retrain.recipe with the searched values on top (lr stays stated at its lr_batch_size)."""
        return self.retrain.model_copy(update=dict(values))

    def proxy(self, recipe: TrainConfig) -> TrainConfig:
        """The proxy of ``recipe``: fidelity x its epochs at the proxy batch size, scored every
        epoch without test-time augmentation. The lr per image is the recipe's."""
        lr_batch_size = recipe.lr_batch_size or recipe.batch_size
        return recipe.model_copy(update={"epochs": max(1, round(recipe.epochs * self.cfg.fidelity)),
                                         "batch_size": self.cfg.batch_size, "lr_batch_size": lr_batch_size,
                                         "tta": False, "tta_translate": False, "eval_every": 1})

    def minutes(self, recipe: TrainConfig) -> float | None:
        if self.step_seconds is None or self.retrain_images is None:
            return None
        if self.fine_tune_epochs is not None:
            recipe = recipe.model_copy(update={"epochs": min(self.fine_tune_epochs, recipe.epochs)})
        return predicted_minutes(self.step_seconds, recipe, self.retrain_images)

    def objective(self, trial: optuna.Trial) -> tuple[float, float]:
        values = {"lr": trial.suggest_float("lr", *self.cfg.lr, log=True),
                  "weight_decay": trial.suggest_float("weight_decay", *self.cfg.weight_decay, log=True),
                  "label_smoothing": trial.suggest_float("label_smoothing", *self.cfg.label_smoothing),
                  "epochs": self.epochs_of(trial.suggest_categorical("epochs", self.cfg.epochs))}
        recipe = self.recipe(values)
        minutes = self.minutes(recipe)
        if minutes is not None:
            trial.set_user_attr(PREDICTED_RETRAIN_MINUTES_ATTR, minutes)
            if self.max_minutes is not None:
                trial.set_constraint("retrain_minutes", minutes - self.max_minutes)
        accuracy = 0.0
        if minutes is None or self.max_minutes is None or minutes <= self.max_minutes:
            model = build_model(dict(self.architecture) if isinstance(self.architecture, Mapping)
                                else self.architecture, num_classes=len(self.train_set.classes),
                                seed=self.cfg.train_seed)
            start = time.perf_counter()
            try:
                result = train(model, self.train_set, self.proxy(recipe), augment=self.policy,
                               eval_set=self.val_set, device=self.device, seed=self.cfg.train_seed, progress=False)
            except TrainingDivergedError as exc:  # too high an lr for this network: a bad recipe, not a crash
                mark_diverged(trial, exc)
            else:
                trial.set_user_attr(VAL_ACCURACY_CURVE, result.eval_curve)
                accuracy = result.eval.accuracy if result.eval is not None else 0.0
            trial.set_user_attr(TRAIN_SECONDS_ATTR, time.perf_counter() - start)
        else:
            trial.set_user_attr(SKIPPED_ATTR, "over model_search.max_retrain_minutes: not trained")
        trial.set_user_attr(ACCURACY_ATTR, accuracy)
        return accuracy, float(values["epochs"])

    def choose(self, trials: Sequence[FrozenTrial]) -> FoundRecipe:
        """The fewest epochs within ``within_points`` of the best trial, the most accurate such;
        but the params' own recipe (retrain.recipe, the first trial) unless that pick beats it on
        the proxy by more than ``margin`` points: a lead within the proxy's noise changes nothing."""
        done = [t for t in trials if feasible(t) and t.values is not None]
        if not done:
            raise AutoaugError("search_recipe: no trial within model_search.max_retrain_minutes was trained; "
                               "raise it, or give recipe_search.epochs fewer epochs")
        best = max(t.values[0] for t in done)
        close = [t for t in done if t.values[0] >= best - self.cfg.within_points / 100]
        pick = min(close, key=lambda t: (t.values[1], -t.values[0], t.number))
        own = [t for t in done if self.decode(t.params) == self.own_values()]
        kept = bool(own) and pick.values[0] - max(t.values[0] for t in own) <= self.cfg.margin / 100
        if kept:
            pick = max(own, key=lambda t: (t.values[0], -t.number))
        values = self.decode(pick.params)
        recipe = self.recipe(values)
        return FoundRecipe(trial=pick.number, accuracy=float(pick.values[0]), values=values, recipe=recipe,
                           predicted_minutes=self.minutes(recipe), best_accuracy=float(best),
                           kept_params_recipe=kept)
