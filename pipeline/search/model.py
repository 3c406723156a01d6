"""Multi-objective architecture search over the 7-block space, as a SearchMethod.

A trial samples a configuration from ``pipeline.models.SPACE`` (every field categorical, so
the space is static and TPE / NSGA-II model it directly), builds it, and, when it fits the
parameter (and MACs) budget, trains it on the search split of the sample with the found
policy for a short schedule and scores it on the validation split. Objectives: maximise
validation accuracy, minimise parameters (and optionally MACs and the training cost).

The training cost is measured, not counted: a few of the trainer's own SGD steps on the
candidate, each over a ResNet-20 step taken just before it on the same machine (the median of
the ratios; ``pipeline.train.step_times``), so that a busier moment slows both.
MACs understate what depthwise and squeeze-excite blocks cost on a CPU several-fold, so
``max_train_cost`` is the budget that bounds a candidate's (and the retrained model's)
training time. Being a timing, it moves a little between runs and between machines: a
candidate right at the limit may fall either side.

The retrain's budget is time: ``max_retrain_minutes`` bounds a candidate's predicted retrain
minutes, its training step at the retrain recipe's batch size (``pipeline.train.step_seconds``,
on a copy, on the machine that runs the trial) x ``retrain.recipe.epochs`` x the steps of an
epoch over the retrain's training images (the sample's pool) / 60. Only a candidate within the
counted budgets (and ``max_train_cost``) is timed; one over the minutes is never trained, so a
wider network is chosen only when its retrain fits.

Budgets are Optuna constraints, not score penalties: the objective records each budget's
violation (``value - limit``; <= 0 is feasible) with ``Trial.set_constraint`` (Optuna 5's
mechanism; TPE and NSGA-II read it), and an over-budget candidate is never trained (its
accuracy is recorded as 0 in the study and it is excluded from every ranking; it gets no MLflow
trial run, and the stage run counts the draws each budget refused: ``refused``).

The search split reuses the policy search's first fold (same held-out share and seed), so
both searches see the same D_M / D_A partition of the sample.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from pipeline.augment import BatchTransform
from pipeline.config import ChooseConfig, HalvingConfig, ModelSearchConfig, TrainConfig
from pipeline.data import ImageSet
from pipeline.errors import AutoaugError
from pipeline.files import write_text_atomic
from pipeline.hashing import json_digest
from pipeline.models import (
    SPACE,
    SPACE_POINTS,
    build_model,
    count_activations,
    count_macs,
    count_params,
    narrowed,
    narrowed_name,
    normalise_config,
    suggest_config,
    validate_config,
)
from pipeline.names import (
    ACCURACY_ATTR,
    ACTIVATIONS_ATTR,
    FINE_TUNE_EPOCHS_ATTR,
    FULL_RETRAIN_MINUTES_ATTR,
    HALVING_CONSTRAINT,
    HISTORY_ATTR,
    MACS_ATTR,
    NARROWED_ATTR,
    PARAMS_ATTR,
    PREDICTED_RETRAIN_MINUTES_ATTR,
    REFERENCE_ATTR_PREFIX,
    REFUSED_PREFIX,
    RETRAIN_BATCH_SECONDS_ATTR,
    RETRAIN_EPOCHS_ATTR,
    RETRAIN_MINUTES_BOUND_ATTR,
    RETRAIN_STEP_SECONDS_ATTR,
    RETRAIN_TIMINGS_ATTR,
    SEEDED_ATTR,
    SKIPPED_ATTR,
    STEP_SECONDS_ATTR,
    STOPPED_AT_ATTR,
    TRAIN_COST_ATTR,
    TRAIN_SECONDS_ATTR,
    VAL_ACCURACY_CURVE,
    WARM_FROM_ATTR,
)
from pipeline.search.folds import search_split
from pipeline.search.method import (
    Budget,
    Direction,
    MethodSpec,
    PreparedPart,
    TrialRecord,
    WarmStart,
)
from pipeline.search.studies import feasible, mark_diverged, pareto_front, trained
from pipeline.train import (
    EpochMetrics,
    StopTraining,
    TrainingDivergedError,
    batch_seconds,
    evaluate,
    predicted_minutes,
    step_seconds,
    step_times,
    train,
)

STAGE = "search_model"
OBJECTIVES: dict[str, Direction] = {"accuracy": "maximize", "params": "minimize",
                                                          "macs": "minimize", "train_cost": "minimize"}
COST_REFERENCE = "resnet20"  # the unit of the training cost


class NoFeasibleTrialError(AutoaugError):
    """Every trial broke a budget (parameters, MACs, training cost, retrain minutes)."""




# the constraints a draw can break: max_<name> in params
BUDGETS = ("params", "macs", "train_cost", "retrain_minutes")


def rung_records(trials: Sequence[FrozenTrial], epoch: int, eval_every: int) -> list[tuple[float, list[float]]]:
    """Successive halving's record of ``trials`` at ``epoch``: (validation accuracy at that
    epoch, the other objectives' values: accuracy is the first) of each that reached it, in
    order. A prior data version's trial copied as sampler history is no record."""
    index = epoch // eval_every - 1
    records = []
    for t in trials:
        curve = t.user_attrs.get(VAL_ACCURACY_CURVE) or []
        if HISTORY_ATTR in t.user_attrs or t.values is None or index >= len(curve):
            continue
        records.append((float(curve[index]), list(t.values[1:])))
    return records


def dominated_at_rung(records: Sequence[tuple[float, Sequence[float]]], accuracy: float, others: Sequence[float],
                      halving: HalvingConfig) -> bool:
    """Whether a candidate with ``accuracy`` at a rung and ``others`` (its other objectives,
    minimised) stops there: at least ``halving.dominated_by`` of the ``records`` were at least
    as accurate and no worse in each other objective, once ``halving.min_trials`` reached it."""
    if len(records) < halving.min_trials:
        return False
    dominating = sum(1 for acc, values in records
                     if acc >= accuracy and all(v <= m for v, m in zip(values, others, strict=True)))
    return dominating >= halving.dominated_by


def refused(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """How many of ``trials`` each budget refused (``refused_max_params`` ...): a draw over a
    budget is never trained. A draw over several counts for each it broke."""
    return {f"{REFUSED_PREFIX}{name}": sum(1 for t in trials if t.constraints.get(name, 0) > 0) for name in BUDGETS}


def refused_untimed_trial(trial: FrozenTrial) -> bool:
    """A draw the minutes budget refused from its counts alone (``untimed_bound``): never timed,
    let alone trained (one kind of ``refused_before_timing``)."""
    return RETRAIN_MINUTES_BOUND_ATTR in trial.user_attrs


def refused_before_timing(trial: FrozenTrial) -> bool:
    """A draw refused before anything was timed or trained: over ``max_params`` or ``max_macs``
    (counted from the built network), or over the minutes from its counts alone
    (``refused_untimed_trial``). Each costs a build and a count, next to nothing: on an AVX-512
    Xeon without bf16, 0.15-0.17 s (median) against 2.0 s for a draw timed and then refused. So
    these are the runner's ``Budget.free``: once params and MACs refusals shared the cap of timed
    ones, a search there ended with 5 of its 24 candidates trained, the cap of 480 costly
    refusals reached by 371 such draws and 109 timings (BENCHMARKS.md, machine K)."""
    return was_refused(trial) and not any(k in trial.user_attrs for k in (PREDICTED_RETRAIN_MINUTES_ATTR, TRAIN_COST_ATTR))


def refused_untimed(trials: Sequence[FrozenTrial]) -> int:
    """How many of ``trials`` were refused from their counts alone (``refused_untimed_trial``)."""
    return sum(1 for t in trials if refused_untimed_trial(t))


def known_design(trial: FrozenTrial | optuna.Trial) -> bool:
    """A seed point (a hand design, or one narrowed) or a prior front member a warm search
    re-trains: timed rather than bounded from its MACs, timed again while over the minutes
    budget, and retrained for fewer epochs when that fits (``shorten_seed_points``)."""
    return SEEDED_ATTR in trial.user_attrs or WARM_FROM_ATTR in trial.user_attrs


def minutes_per_mac(trial: FrozenTrial, count: str = MACS_ATTR) -> float | None:
    """A timed draw's predicted retrain minutes of SGD steps per MAC (or per ``count``, the
    trial attribute of another count: ``ACTIVATIONS_ATTR``) at the retrain recipe itself, not
    the champion's fine-tune; the batches' share (``RETRAIN_BATCH_SECONDS_ATTR``) left out; for
    ``untimed_bound``. A design retrained for fewer epochs (``RETRAIN_EPOCHS_ATTR``) counts at its
    minutes for the whole recipe (``FULL_RETRAIN_MINUTES_ATTR``), as the search counted it when it
    timed it. None for any other trial (a prior study's copy, one not timed, the champion's
    fine-tune, a shortened one from before that record, or without the count)."""
    a = trial.user_attrs
    amount = a.get(count, -1)
    full = a.get(FULL_RETRAIN_MINUTES_ATTR) if RETRAIN_EPOCHS_ATTR in a else a.get(PREDICTED_RETRAIN_MINUTES_ATTR)
    if (HISTORY_ATTR in a or FINE_TUNE_EPOCHS_ATTR in a or not isinstance(full, (int, float))
            or not isinstance(amount, (int, float)) or amount <= 0):
        return None
    minutes = float(full)
    step, batch = a.get(RETRAIN_STEP_SECONDS_ATTR), a.get(RETRAIN_BATCH_SECONDS_ATTR)
    if isinstance(step, (int, float)) and isinstance(batch, (int, float)) and step > 0:
        minutes *= (step - batch) / step
    return minutes / float(amount)


BOUND_COUNTS = (MACS_ATTR, ACTIVATIONS_ATTR)
"""What ``untimed_bound`` bounds a draw's minutes from: its MACs (compute) and its activations
(memory traffic). A step takes at least as long as each at the best rate seen, so the larger of
the two bounds holds; a network of narrow, full-resolution or depthwise layers, cheap in MACs,
is caught by its activations."""


# A seed point or the champion's architecture the minutes budget refuses is timed again, up to this many
# times in all while still over (``standing``). These designs decide the choice, and one slow moment
# can refuse one: on an Intel Xeon with AMX, airbench_small, timed first in a make run's search,
# predicted 31.5 retrain minutes, where the same code in a quiet process predicted 21.6-23.7 (and its
# retrain took 21.9 on another day).
SEED_POINT_TIMINGS = 3


def standing(taken: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The (step seconds, predicted minutes) that stand for a design timed ``taken`` times: the
    lower median by minutes, i.e. the one timing, the faster of two (a second timing within the
    budget outvotes a slow first), the middle of three. Not the fastest of three: a VM's speed
    also moves fast, and a design over the budget at every timing (a seed point then retrained
    for the epochs that fit) would be predicted at its fastest moment; its retrain takes the
    average. On an AVX-512 Xeon without bf16 such a seed point's retrain took 27.5 minutes
    against the 24.5 its fastest of three timings predicted; nine timings of it later spanned
    0.58-0.67 s a step, their fastest 8 % under their median."""
    ordered = sorted(taken, key=lambda timed: timed[1])
    return ordered[(len(ordered) - 1) // 2]


UNTIMED_AFTER = 3  # draws timed (the seed points, at the defaults) before the MAC bound refuses any


def mac_bound(per_mac: Sequence[float], macs: float, factor: float | None) -> float | None:
    """``untimed_bound``'s lower bound of a draw's retrain minutes from one count: its ``macs``
    (or activations) at the fewest minutes per MAC (per activation) of the draws timed so far
    (``per_mac``), times ``factor``. None when off, before ``UNTIMED_AFTER`` draws were timed,
    or without the count. A step's time grows with the MACs it computes and the activations it
    moves; what each costs varies several-fold over the space, so the fewest minutes per unit
    seen bounds the rest from below."""
    if factor is None or macs <= 0 or len(per_mac) < UNTIMED_AFTER:
        return None
    return min(per_mac) * macs * factor


def counts_bound(records: Mapping[str, Sequence[float]], counts: Mapping[str, float],
                 factor: float | None) -> float | None:
    """The larger of ``mac_bound`` over each of ``BOUND_COUNTS`` (a draw's ``counts``, the
    timed draws' ``records`` per unit of each); None when neither bounds."""
    bounds = [b for name in BOUND_COUNTS
              if (b := mac_bound(records.get(name, ()), float(counts.get(name, -1)), factor)) is not None]
    return max(bounds) if bounds else None


def was_refused(trial: FrozenTrial) -> bool:
    """A draw a budget refused: never trained, so its record (parameters, MACs, the budgets'
    violations) does not depend on the data it was drawn for."""
    return SKIPPED_ATTR in trial.user_attrs


def refused_seed_points(trials: Sequence[FrozenTrial], cfg: ModelSearchConfig) -> dict[str, dict[str, str]]:
    """The seed points a budget refused: for each, every budget it broke with its value against
    the limit (``{"airbench_small": {"retrain_minutes": "97 retrain minutes > 25 retrain
    minutes"}}``). On a slower machine (a CPU without native bf16 trains in fp32, 3-5x slower)
    the minutes budget can refuse every seed point, and the choice is then among the search's
    own draws; the stage says so rather than leave a weaker champion unexplained."""
    limits = {"params": cfg.max_params, "macs": cfg.max_macs, "train_cost": cfg.max_train_cost,
              "retrain_minutes": cfg.max_retrain_minutes}
    measured = {"params": PARAMS_ATTR, "macs": MACS_ATTR, "train_cost": TRAIN_COST_ATTR,
                "retrain_minutes": PREDICTED_RETRAIN_MINUTES_ATTR}
    shown: dict[str, Callable[[float], str]] = {
        "params": lambda v: f"{int(v):,} parameters", "macs": lambda v: f"{v / 1e6:.1f} M MACs",
        "train_cost": lambda v: f"training cost {v:.2f}", "retrain_minutes": lambda v: f"{v:.3g} retrain minutes"}
    return {
        str(t.user_attrs[SEEDED_ATTR]): {
            b: f"{shown[b](float(t.user_attrs[measured[b]]))} > {shown[b](float(limit))}"
            for b in BUDGETS if t.constraints.get(b, 0) > 0 and (limit := limits[b]) is not None
            and measured[b] in t.user_attrs}
        for t in trials if SEEDED_ATTR in t.user_attrs and was_refused(t)
    }


def config_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's parameters (``block3.kernel`` ...) read back as a validated configuration
    (the names are ``suggest_config``'s; a value outside the space fails with the block named;
    a field added to the space after the trial ran takes its "as before" value)."""

    def section(prefix: str, allowed: Mapping[str, Any]) -> dict[str, Any]:
        return {k: params[f"{prefix}.{k}"] for k in allowed if f"{prefix}.{k}" in params}

    cfg = {
        "stem": section("stem", SPACE["stem"]),
        "blocks": [section(f"block{i}", b) for i, b in enumerate(SPACE["blocks"])],
        "head": section("head", SPACE["head"]),
    }
    return validate_config(cfg)


def params_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``config_from_params``: a configuration as a trial's parameters."""
    validate_config(dict(cfg))
    params = {f"stem.{k}": v for k, v in cfg["stem"].items()}
    for i, block in enumerate(cfg["blocks"]):
        params.update({f"block{i}.{k}": v for k, v in block.items()})
    params.update({f"head.{k}": v for k, v in cfg["head"].items()})
    return params


@dataclass(frozen=True)
class Candidate:
    """A scored model: a search-space configuration or a reference baseline's name."""

    config: dict[str, Any] | str
    accuracy: float
    params: int
    macs: int
    trial: int | None = None
    train_seconds: float = 0.0
    train_cost: float | None = None  # measured training step / ResNet-20's (when the search measured it)
    seed_point: str | None = None  # the SPACE_POINTS name, for a hand-designed point the search started from
    # the retrain's training minutes, predicted from the step at the retrain recipe (max_retrain_minutes set)
    predicted_retrain_minutes: float | None = None
    retrain_step_seconds: float | None = None  # that step, measured on the machine that ran the trial
    # the epochs the retrain trains when fewer than retrain.recipe's fit the minutes (shorten_seed_points)
    retrain_epochs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "accuracy": self.accuracy, "params": self.params, "macs": self.macs,
                "trial": self.trial, "train_seconds": self.train_seconds, "train_cost": self.train_cost,
                "seed_point": self.seed_point, "predicted_retrain_minutes": self.predicted_retrain_minutes,
                "retrain_step_seconds": self.retrain_step_seconds, "retrain_epochs": self.retrain_epochs}

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> Candidate:
        attrs = trial.user_attrs

        def number(key: str) -> float | None:
            value = attrs.get(key)
            return None if value is None else float(value)

        return cls(config_from_params(trial.params), float(attrs[ACCURACY_ATTR]), int(attrs[PARAMS_ATTR]),
                   int(attrs[MACS_ATTR]), trial.number, float(attrs.get(TRAIN_SECONDS_ATTR, 0.0)),
                   number(TRAIN_COST_ATTR), attrs.get(SEEDED_ATTR), number(PREDICTED_RETRAIN_MINUTES_ATTR),
                   number(RETRAIN_STEP_SECONDS_ATTR),
                   None if attrs.get(RETRAIN_EPOCHS_ATTR) is None else int(attrs[RETRAIN_EPOCHS_ATTR]))


def choose(front: Sequence[Candidate], rule: ChooseConfig, references: Mapping[str, Candidate]) -> Candidate:
    """The configuration a team asked for, from the feasible Pareto front.

    most_accurate      the highest validation accuracy
    smallest_within    the fewest parameters within ``within_points`` accuracy points of the
                       best found (or of ``reference``: "as good as MobileNetV2 but smaller")
    cheapest_within    the lowest predicted retrain minutes within ``within_points`` (the same
                       anchor), or, when the minutes were not measured (max_retrain_minutes
                       off), the lowest measured training cost: the model that is cheapest to
                       retrain and to keep retraining
    under_budget       the most accurate with at most ``budget_params`` parameters
    """
    if not front:
        raise NoFeasibleTrialError("search_model: no feasible trial to choose from")
    best = max(front, key=lambda c: (c.accuracy, -c.params))
    if rule.rule == "most_accurate":
        return best
    if rule.rule in ("smallest_within", "cheapest_within"):
        anchor = best.accuracy
        if rule.reference is not None:
            if rule.reference not in references:
                raise AutoaugError(f"model_search.choose.reference = {rule.reference!r} is not among the "
                                   f"trained references {sorted(references)}")
            anchor = references[rule.reference].accuracy
        close = [c for c in front if c.accuracy >= anchor - rule.within_points / 100]
        if not close:
            return best
        if rule.rule == "cheapest_within":
            if any(c.predicted_retrain_minutes is not None for c in close):
                return min(close, key=lambda c: (math.inf if c.predicted_retrain_minutes is None
                                                 else c.predicted_retrain_minutes, c.params))
            return min(close, key=lambda c: (math.inf if c.train_cost is None else c.train_cost, c.params))
        return min(close, key=lambda c: (c.params, -c.accuracy))
    small = [c for c in front if rule.budget_params is not None and c.params <= rule.budget_params]
    if not small:
        raise NoFeasibleTrialError(
            f"model_search.choose.budget_params = {rule.budget_params}: no Pareto member is that small "
            f"(smallest: {min(c.params for c in front)} parameters); raise the budget or run more trials")
    return max(small, key=lambda c: (c.accuracy, -c.params))


class ModelSearch:
    """The architecture search as a SearchMethod (one study, trials nested under the stage run).

    Seeds (``ModelSearchConfig.seeds``): the search / validation split and its cuts draw from
    ``split_seed``; candidate ``n`` is initialised and trained from ``train_seed + n`` (the
    references and the cost unit from ``train_seed``); the sampler samples from ``sampler_seed``.

    ``retrain_recipe`` and ``retrain_images`` (the retrain's recipe and training images: the
    sample's pool) predict a candidate's retrain minutes for ``max_retrain_minutes``; the recipe
    is needed when that is set, the images default to the sample's own (a bench's search, with
    no manifest at hand). ``retrain_policy``: the policy the retrain augments with, whose cost
    per batch is part of every candidate's retrain step (``retrain_minutes``).
    """

    label = "multi-objective"

    def __init__(self, cfg: ModelSearchConfig, sample: ImageSet, *, policy: BatchTransform | None,
                 device: torch.device, progress: bool = True, champion: Mapping[str, Any] | None = None,
                 champion_version: str | None = None, retrain_recipe: TrainConfig | None = None,
                 retrain_images: int | None = None, champion_recipe: TrainConfig | None = None,
                 retrain_policy: BatchTransform | None = None) -> None:
        if cfg.max_retrain_minutes is not None and retrain_recipe is None:
            raise AutoaugError("model_search.max_retrain_minutes needs the retrain recipe to predict a "
                               "candidate's retrain minutes")
        self.cfg = cfg
        self.retrain_recipe = retrain_recipe
        self.retrain_images = retrain_images if retrain_images is not None else len(sample)
        # the @champion's architecture (normalised: stored before the space's newer fields?),
        # re-trained first on a warm start
        self.champion = normalise_config(champion) if champion is not None else None
        self.champion_version = champion_version  # its registry version (said in chosen.json)
        # The retrain's recipe for the @champion's architecture: chosen, it is fine-tuned from the
        # champion's weights (``champion.warm_recipe``), so its predicted retrain minutes are those of
        # the fine-tune (None: the full recipe's, as for every other candidate). Budgeted at the full
        # recipe, a champion near max_retrain_minutes falls out of it when the data grows (+10 %
        # images: +10 % minutes) or a timing runs slow, and a warm update retrains from scratch.
        self.champion_recipe = champion_recipe if champion is not None else None
        self.policy = policy
        self.retrain_policy = retrain_policy
        self._batch_seconds: dict[tuple[Any, ...], float] = {}  # batch_seconds per batch recipe, measured once
        self.device = device
        self.progress = progress
        self.train_set, self.val_set = self.split(sample, cfg)
        self._cost_unit: torch.nn.Module | None = None  # ResNet-20, built on first need
        # untimed_bound's record: the retrain minutes per MAC and per activation of each draw this
        # study timed (read from the study on first need, so a resumed search keeps its own; then
        # this process's)
        self._per_unit: dict[str, list[float]] | None = None
        self.spec = MethodSpec(stage=STAGE, label=self.label,
                               objectives=tuple((o, OBJECTIVES[o]) for o in cfg.objectives),
                               budget=Budget(cfg.trials, counts=trained, free=refused_before_timing),
                               warm=WarmStart.from_config(cfg, first=self.is_champion,
                                                          history_of=was_refused if cfg.warm_refused else None))

    # ------------------------------------------------------------------ data

    @staticmethod
    def split(sample: ImageSet, cfg: ModelSearchConfig) -> tuple[ImageSet, ImageSet]:
        """The policy search's first fold (D_M for training, D_A for validation), each cut to
        the configured size by the same stable content-hash sampler as the sample itself."""
        return search_split(sample, cfg.held_out, cfg.split_seed, cfg.train_images, cfg.val_images)

    # ------------------------------------------------------------------ SearchMethod

    def space(self) -> dict[str, Any]:
        return self.space_of(self.cfg, self.retrain_recipe)

    @staticmethod
    def space_of(cfg: ModelSearchConfig, retrain_recipe: TrainConfig | None) -> dict[str, Any]:
        """Everything that changes what a trial's values mean (budgets included: a trial's
        feasibility is part of its record; with ``max_retrain_minutes``, the retrain recipe the
        minutes are predicted for)."""
        space = {"space": SPACE, "objectives": cfg.objectives, "recipe": cfg.recipe.model_dump(),
                 "train_images": cfg.train_images, "val_images": cfg.val_images, "held_out": cfg.held_out,
                 "max_params": cfg.max_params, "max_macs": cfg.max_macs, "augment": cfg.augment}
        if cfg.max_train_cost is not None:  # only when set: studies from before the key keep their identity
            space["max_train_cost"] = cfg.max_train_cost
        if cfg.halving_applied is not None:  # likewise
            space["halving"] = cfg.halving_applied.model_dump()
        if cfg.max_retrain_minutes is not None:  # likewise
            if retrain_recipe is None:
                raise AutoaugError("model_search.max_retrain_minutes needs the retrain recipe")
            space["max_retrain_minutes"] = cfg.max_retrain_minutes
            space["retrain_recipe"] = retrain_recipe.model_dump()
        return space

    def parts(self) -> list[str | None]:
        return [None]

    def sampler(self, part: int, salt: int = 0) -> optuna.samplers.BaseSampler:
        seed = self.cfg.sampler_seed + salt
        if self.cfg.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, self.cfg.startup_trials))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.cfg.startup_trials,
                                          multivariate=True)

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return config_from_params(params)

    def record(self, part: int, trial: FrozenTrial) -> TrialRecord | None:
        """A trained candidate's run: its parameters and configuration. A draw a budget refused
        was never trained: it has no accuracy to show, so it gets no run (``refused`` counts it
        on the stage run)."""
        if not trained(trial):
            return None
        return TrialRecord(dict(trial.params), {"config.json": self.decode(trial.params)})

    def seed_points(self, part: int) -> list[tuple[str, dict[str, Any]]]:
        """``seed_points`` of params as trial parameters (the names ``suggest_config`` gives)."""
        return [(name, params_from_config(SPACE_POINTS[name])) for name in self.cfg.seed_points]

    def is_champion(self, trial: FrozenTrial | optuna.Trial) -> bool:
        """Whether a trial (a prior one, re-evaluated first on a warm start: ``WarmStart.first``;
        or one running) is of the @champion's architecture."""
        return self.champion is not None and config_from_params(trial.params) == self.champion

    def prepare(self, part: int, prior: str | None = None) -> PreparedPart:
        return PreparedPart(self.objective)

    def objective(self, trial: optuna.Trial) -> tuple[float, ...]:
        config = suggest_config(trial)
        model = build_model(config, num_classes=len(self.train_set.classes), seed=self.cfg.train_seed + trial.number)
        params = count_params(model)
        violation = {"params": params - self.cfg.max_params if self.cfg.max_params else 0.0}
        # Counting MACs runs the model (~1 s): skip it for a candidate the parameter budget
        # already rules out, unless MACs are an objective.
        need_macs = violation["params"] <= 0 or "macs" in self.cfg.objectives or self.cfg.max_macs
        macs = count_macs(model) if need_macs else -1
        if self.cfg.max_macs:
            violation["macs"] = macs - self.cfg.max_macs
        # Timing a few training steps costs seconds: only for a candidate within the counted
        # budgets (unless the cost is an objective, which every trial must report).
        cost = -1.0
        wants_cost = self.cfg.max_train_cost is not None or "train_cost" in self.cfg.objectives
        if wants_cost and (all(v <= 0 for v in violation.values()) or "train_cost" in self.cfg.objectives):
            cost, step = self.train_cost(model)
            trial.set_user_attr(STEP_SECONDS_ATTR, step)
            trial.set_user_attr(TRAIN_COST_ATTR, cost)
            if self.cfg.max_train_cost is not None:
                violation["train_cost"] = cost - self.cfg.max_train_cost
        # The retrain's minutes, predicted from a few steps at the retrain recipe's batch size:
        # only for a candidate within every budget so far.
        if self.cfg.max_retrain_minutes is not None and all(v <= 0 for v in violation.values()):
            fine_tune = self.champion_recipe if self.is_champion(trial) else None
            known = known_design(trial)
            counts = {MACS_ATTR: float(macs)}
            # the bound's counts, kept only when on; never for the champion's fine-tune, which neither
            # the bound nor its record reads (minutes_per_mac)
            if self.cfg.untimed_bound is not None and macs > 0 and fine_tune is None:
                counts[ACTIVATIONS_ATTR] = float(count_activations(model))
                trial.set_user_attr(ACTIVATIONS_ATTR, int(counts[ACTIVATIONS_ATTR]))
            bound = self.minutes_bound(trial.study, counts) if fine_tune is None and not known else None
            if bound is not None and bound > self.cfg.max_retrain_minutes:
                # over the budget even as MAC-efficient as the best timed draw: refused untimed
                trial.set_user_attr(RETRAIN_MINUTES_BOUND_ATTR, bound)
                violation["retrain_minutes"] = bound - self.cfg.max_retrain_minutes
            else:
                taken = [self.retrain_minutes(model, recipe=fine_tune)]
                if known or fine_tune is not None:
                    while standing(taken)[1] > self.cfg.max_retrain_minutes and len(taken) < SEED_POINT_TIMINGS:
                        taken.append(self.retrain_minutes(model, recipe=fine_tune))
                step, minutes = standing(taken)
                timings = len(taken)
                trial.set_user_attr(RETRAIN_TIMINGS_ATTR, timings)
                assert self.retrain_recipe is not None  # checked on construction under max_retrain_minutes
                batch = self.batch_step(fine_tune or self.retrain_recipe)  # timed once: what the step holds
                if fine_tune is not None:
                    trial.set_user_attr(FINE_TUNE_EPOCHS_ATTR, fine_tune.epochs)
                elif macs > 0 and self.cfg.untimed_bound is not None:  # the bound's record, kept only when on
                    record = self.timed_per_unit(trial.study)
                    for name, amount in counts.items():
                        record[name].append(minutes * (step - batch) / step / amount)
                if known and fine_tune is None and minutes > self.cfg.max_retrain_minutes:
                    epochs = self.epochs_that_fit(step)
                    if epochs is not None:  # kept at its widths, retrained for fewer epochs
                        trial.set_user_attr(RETRAIN_EPOCHS_ATTR, epochs)
                        trial.set_user_attr(FULL_RETRAIN_MINUTES_ATTR, minutes)  # what the bound's record holds
                        minutes = predicted_minutes(step, self.retrain_recipe.model_copy(update={"epochs": epochs}),
                                                    self.retrain_images)
                        tqdm.write(f"{trial.user_attrs.get(SEEDED_ATTR) or f'trial {trial.number}'} is over the "
                                   f"retrain minutes at {self.retrain_recipe.epochs} epochs: retrained for {epochs} "
                                   f"({minutes:.1f} predicted minutes) at its widths", file=sys.stderr)
                trial.set_user_attr(RETRAIN_STEP_SECONDS_ATTR, step)
                trial.set_user_attr(RETRAIN_BATCH_SECONDS_ATTR, batch)
                trial.set_user_attr(PREDICTED_RETRAIN_MINUTES_ATTR, minutes)
                violation["retrain_minutes"] = minutes - self.cfg.max_retrain_minutes
        if SEEDED_ATTR in trial.user_attrs and any(v > 0 for v in violation.values()):
            self.narrow_seed_point(trial, config, violation)
        for key, value in violation.items():
            trial.set_constraint(key, value)
        trial.set_user_attr(PARAMS_ATTR, params)
        trial.set_user_attr(MACS_ATTR, macs)
        values = {"accuracy": 0.0, "params": float(params), "macs": float(macs), "train_cost": cost}
        if all(v <= 0 for v in violation.values()):
            seed = self.cfg.train_seed + trial.number
            stop = self.rung_rule(trial, values)
            start = time.perf_counter()
            try:
                if stop is None:  # no halving: the whole recipe
                    (accuracy, seconds, curve), stopped = self.fit(model, seed), None
                else:
                    accuracy, seconds, curve, stopped = self.fit_until(model, seed, stop=stop)
            except TrainingDivergedError as exc:  # this network at this recipe: a bad candidate, not a crash
                mark_diverged(trial, exc)
                trial.set_user_attr(TRAIN_SECONDS_ATTR, time.perf_counter() - start)
            else:
                trial.set_user_attr(TRAIN_SECONDS_ATTR, seconds)
                trial.set_user_attr(VAL_ACCURACY_CURVE, curve)
                if stopped is not None:  # trained, scored at the rung, never on the front
                    trial.set_user_attr(STOPPED_AT_ATTR, stopped)
                    trial.set_constraint(HALVING_CONSTRAINT, 1.0)
                values["accuracy"] = accuracy
        else:
            trial.set_user_attr(SKIPPED_ATTR, "over budget: not trained")
        trial.set_user_attr(ACCURACY_ATTR, values["accuracy"])
        return tuple(values[o] for o in self.cfg.objectives)

    def epochs_that_fit(self, step: float) -> int | None:
        """The most retrain epochs within ``max_retrain_minutes`` at ``step`` seconds a step, when
        they are fewer than retrain.recipe.epochs and at least ``shorten_seed_points`` of them
        (rounded up); else None (never shortened: narrowed, or refused)."""
        share, limit, recipe = self.cfg.shorten_seed_points, self.cfg.max_retrain_minutes, self.retrain_recipe
        if share is None or limit is None or recipe is None:
            return None
        per_epoch = predicted_minutes(step, recipe.model_copy(update={"epochs": 1}), self.retrain_images)
        epochs = math.floor(limit / per_epoch * (1 + 1e-9)) if per_epoch > 0 else recipe.epochs
        return epochs if math.ceil(share * recipe.epochs - 1e-9) <= epochs < recipe.epochs else None

    def narrow_seed_point(self, trial: optuna.Trial, config: dict[str, Any], violation: Mapping[str, float]) -> None:
        """A seed point over a budget: enqueue the same design narrower (``narrowed``), so that a
        slower CPU, whose minutes budget refuses every shipped seed point, still trains a known
        design rather than only the sampler's draws. The factor is 0.95 x sqrt(limit / value) of
        the tightest budget it broke (a step's cost, its parameters and MACs grow about with the
        square of the widths; the minutes without the batches' share, which no width changes).
        At most ``narrow_seed_points`` times per seed point; the narrower one is a seed point
        too (timed whatever ``untimed_bound``), named ``<seed>-narrow<k>``."""
        done = int(trial.user_attrs.get(NARROWED_ATTR, 0))
        if done >= self.cfg.narrow_seed_points:
            return
        cfg = self.cfg
        limits = {"params": cfg.max_params, "macs": cfg.max_macs, "train_cost": cfg.max_train_cost,
                  "retrain_minutes": cfg.max_retrain_minutes}
        fixed = self.batch_minutes() if "retrain_minutes" in violation else 0.0  # the same at any width
        ratios = []
        for key, over in violation.items():
            limit = limits.get(key)
            if over > 0 and limit:
                extra = fixed if key == "retrain_minutes" else 0.0
                ratios.append(max(limit - extra, 1e-9) / (limit + over - extra))
        factor = 0.95 * math.sqrt(min(ratios)) if ratios else 1.0
        narrow = narrowed(config, factor) if factor < 1 else None
        if narrow is None:
            return
        seed = str(trial.user_attrs[SEEDED_ATTR])
        name = narrowed_name(seed, done + 1)
        trial.study.enqueue_trial(params_from_config(narrow), user_attrs={SEEDED_ATTR: name, NARROWED_ATTR: done + 1},
                                  skip_if_exists=True)
        broken = ", ".join(k for k, v in violation.items() if v > 0)
        tqdm.write(f"seed point {seed} is over a budget ({broken}): drawn again at {factor:.2f} of its widths, "
                   f"as {name}", file=sys.stderr)

    def train_cost(self, model: torch.nn.Module, timed: int = 5) -> tuple[float, float]:
        """(cost, step seconds): ``model``'s training step over ResNet-20's, the median of the
        ratios of ``timed`` step pairs (after one untimed pair; at the candidate recipe, on
        copies). The two take their steps in turn, so each ratio compares two steps taken a
        moment apart: on a machine whose speed jumps between steps (a shared VM), the ratio of
        adjacent steps holds where either's time alone moves by half."""
        if self._cost_unit is None:
            self._cost_unit = build_model(COST_REFERENCE, num_classes=len(self.train_set.classes),
                                          seed=self.cfg.train_seed)
        unit, own = step_times([self._cost_unit, model], self.cfg.recipe, num_classes=len(self.train_set.classes),
                               image_size=int(self.train_set.images.shape[-1]), device=self.device, steps=timed + 1)
        ratios = [a / b for a, b in zip(own[1:], unit[1:], strict=True)]
        return statistics.median(ratios), statistics.median(own[1:])

    def timed_per_unit(self, study: optuna.Study) -> dict[str, list[float]]:
        """For each of ``BOUND_COUNTS``, the retrain minutes per unit of the draws this study
        timed (``minutes_per_mac``)."""
        if self._per_unit is None:
            own = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._per_unit = {name: [r for t in own if (r := minutes_per_mac(t, name)) is not None]
                              for name in BOUND_COUNTS}
        return self._per_unit

    def minutes_bound(self, study: optuna.Study, counts: Mapping[str, float]) -> float | None:
        """``counts_bound`` over the draws this study timed (the study is read only when the
        bound is on), plus the retrain's minutes of batches (``batch_step``), which no count of
        the network bounds."""
        if self.cfg.untimed_bound is None:
            return None
        bound = counts_bound(self.timed_per_unit(study), counts, self.cfg.untimed_bound)
        if bound is None:
            return None
        return bound + self.batch_minutes()

    def batch_minutes(self) -> float:
        """The retrain's minutes of batches (``batch_step`` x its steps): the same for every
        candidate, bounded by no MAC count and changed by no width."""
        assert self.retrain_recipe is not None  # asked for only under max_retrain_minutes
        return predicted_minutes(self.batch_step(self.retrain_recipe), self.retrain_recipe, self.retrain_images)

    def batch_step(self, recipe: TrainConfig) -> float:
        """Seconds the retrain spends on a batch before its SGD step at ``recipe`` (gather, flip,
        crop and ``retrain_policy``: ``pipeline.train.batch_seconds`` on the search's images),
        measured once per batch recipe in a process: the same for every candidate."""
        key = (recipe.batch_size, recipe.flip, recipe.crop_mode, recipe.crop_padding)
        if key not in self._batch_seconds:
            self._batch_seconds[key] = batch_seconds(self.train_set, recipe, augment=self.retrain_policy,
                                                     device=self.device)
        return self._batch_seconds[key]

    def retrain_minutes(self, model: torch.nn.Module, recipe: TrainConfig | None = None) -> tuple[float, float]:
        """(step seconds, predicted minutes): the retrain's step of ``model`` on this machine, its
        SGD step at the retrain recipe (the median of 3 after an untimed one, on a copy) plus the
        batch's flip, crop and policy before it (``batch_step``), and the retrain's training
        minutes at that step (``pipeline.train.predicted_minutes``), for ``recipe`` (the
        champion's fine-tune) or the retrain recipe itself. The timing stops after two steps
        over the budget's step (the median is over it then): a refused network costs one slow
        step less."""
        assert self.retrain_recipe is not None  # checked on construction when max_retrain_minutes is set
        recipe = recipe or self.retrain_recipe
        batch = self.batch_step(recipe)
        per_step = predicted_minutes(1.0, recipe, self.retrain_images)  # minutes a step-second
        limit = self.cfg.max_retrain_minutes / per_step - batch if self.cfg.max_retrain_minutes is not None else None
        step = batch + step_seconds(model, recipe, num_classes=len(self.train_set.classes),
                                    image_size=int(self.train_set.images.shape[-1]), device=self.device, limit=limit)
        return step, predicted_minutes(step, recipe, self.retrain_images)

    def fit(self, model: torch.nn.Module, seed: int) -> tuple[float, float, list[float]]:
        """Train on the search split, score on the validation split: (accuracy, seconds, curve)."""
        accuracy, seconds, curve, _ = self.fit_until(model, seed)
        return accuracy, seconds, curve

    def fit_until(self, model: torch.nn.Module, seed: int,
                  stop: Callable[[int, float], bool] | None = None) -> tuple[float, float, list[float], int | None]:
        """``fit``, asking ``stop(epoch, validation accuracy)`` after each scored epoch whether to
        end there: (accuracy at the last scored epoch, seconds, curve, the epoch it stopped at or None)."""
        stopped: list[int] = []

        def check(metrics: EpochMetrics) -> None:
            if stop is not None and metrics.eval_accuracy is not None and metrics.epoch < metrics.epochs \
                    and stop(metrics.epoch, metrics.eval_accuracy):
                stopped.append(metrics.epoch)
                raise StopTraining

        t0 = time.perf_counter()
        result = train(model, self.train_set, self.cfg.recipe, augment=self.policy if self.cfg.augment == "policy"
                       else None, eval_set=self.val_set, device=self.device, seed=seed, progress=False,
                       callback=check if stop is not None else None)
        seconds = time.perf_counter() - t0
        accuracy = result.eval.accuracy if result.eval is not None else evaluate(model, self.val_set).accuracy
        return accuracy, seconds, result.eval_curve, stopped[0] if stopped else None

    def rung_rule(self, trial: optuna.Trial, own: Mapping[str, float]) -> Callable[[int, float], bool] | None:
        """Successive halving's stop rule for ``trial`` (None without ``halving``): at a rung, stop
        when at least ``dominated_by`` earlier candidates of this study were at least as accurate
        at that epoch and no worse in each other objective (``own``: this candidate's values),
        once ``min_trials`` of them reached the rung. Read from the study when the rung comes, so
        a worker sees the other workers' finished candidates."""
        halving = self.cfg.halving_applied
        if halving is None:
            return None
        others = self.cfg.objectives[1:]
        every = self.cfg.recipe.eval_every

        def stop(epoch: int, accuracy: float) -> bool:
            if epoch not in halving.rungs:
                return False
            earlier = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            records = rung_records(earlier, epoch, every)
            return dominated_at_rung(records, accuracy, [own[o] for o in others], halving)

        return stop

    def combine(self, ranked: list[list[FrozenTrial]], prepared: list[PreparedPart]) -> list[Candidate]:
        """The feasible Pareto front, most accurate first."""
        trials = [t for t in ranked[0] if feasible(t)]
        if not trials:
            broken = {k for t in ranked[0] for k, v in t.constraints.items() if v > 0 and k in BUDGETS}
            # A draw meets the budgets in BUDGETS' order, each only when within the ones before: the
            # last one that refused any refuses what the others let through (raising max_macs when
            # every network within it is over the minutes only draws more networks over the minutes).
            binds = next((f"max_{b}" for b in reversed(BUDGETS) if b in broken), "max_params")
            raise NoFeasibleTrialError(
                f"search_model: none of {len(ranked[0])} trials fits the budget (max_params = "
                f"{self.cfg.max_params}, max_macs = {self.cfg.max_macs}, max_train_cost = "
                f"{self.cfg.max_train_cost}, max_retrain_minutes = {self.cfg.max_retrain_minutes}); "
                f"raise model_search.{binds}")
        directions = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
                      for d in self.spec.directions]
        front = pareto_front(trials, directions)
        return [Candidate.from_trial(t) for t in front]

    # ------------------------------------------------------------------ references

    def reference(self, name: str, cache: Path | None, fingerprint: str,
                  study: optuna.Study | None = None) -> tuple[Candidate, str]:
        """A reference network trained and scored exactly like a candidate, and the sample
        fingerprint it was trained on. Cached by data and recipe, so a re-run or a changed budget
        does not retrain it. With ``study``: its score is kept on the study (a carried attribute,
        which a study warm-started from it copies) and reused for the same recipe: on the same
        data always, on a prior study's data with ``references_on_update: carry``."""
        cfg = self.cfg
        # one seed where split and train seeds agree: the key references were cached under
        # before the seeds were separate
        seeds: int | list[int] = cfg.split_seed if cfg.split_seed == cfg.train_seed else [cfg.split_seed,
                                                                                           cfg.train_seed]
        recipe = [cfg.recipe.model_dump(), cfg.train_images, cfg.val_images, cfg.held_out, seeds, cfg.augment]
        key = json_digest([STAGE, name, fingerprint, *recipe])
        attr = REFERENCE_ATTR_PREFIX + name
        kept = study.user_attrs.get(attr) if study is not None else None
        if (kept is not None and kept.get("recipe") == json_digest(recipe)
                and (kept.get("fingerprint") == fingerprint or cfg.references_on_update == "carry")):
            return Candidate(name, kept["accuracy"], kept["params"], kept["macs"], None, kept["train_seconds"]), \
                str(kept["fingerprint"])
        path = cache / f"reference-{name}-{key}.json" if cache else None
        if path is not None and path.exists():
            data = json.loads(path.read_text())
            found = Candidate(name, data["accuracy"], data["params"], data["macs"], None, data["train_seconds"])
        else:
            model = build_model(name, num_classes=len(self.train_set.classes), seed=self.cfg.train_seed)
            params, macs = count_params(model), count_macs(model)
            accuracy, seconds, _ = self.fit(model, seed=self.cfg.train_seed)
            found = Candidate(name, accuracy, params, macs, None, seconds)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(path, json.dumps(found.to_dict()))
        if study is not None:
            study.set_user_attr(attr, {**found.to_dict(), "fingerprint": fingerprint, "recipe": json_digest(recipe)})
        return found, fingerprint

