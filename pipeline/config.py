"""One typed schema for params.yaml.

Every section is a pydantic model with ``extra="forbid"``, so a typo in a key is an error, not a
silently ignored setting. ``load_params`` validates the whole file before any compute and turns
pydantic's report into one line per problem: the key, the value and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


class StrictModel(BaseModel):
    """Base for every params section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SampleConfig(StrictModel):
    """The stable stratified sample the searches run on."""

    size: int = Field(10_000, gt=0, description="images in the sample (equal per class when the pool allows)")
    seed: int = Field(0, ge=0, description="seed of the content hash that ranks images")


# Where the stores are is a property of the deployment, not of the experiment: these variables
# override params.yaml's tracking section (the compose services point every process at the
# shared PostgreSQL and MLflow server with them, without editing params.yaml).
TRACKING_ENV = {"mlflow_uri": "AUTOAUG_MLFLOW_URI", "optuna_storage": "AUTOAUG_OPTUNA_STORAGE"}


class TrackingConfig(StrictModel):
    """Where studies and runs are kept; both survive `dvc repro`. ``AUTOAUG_MLFLOW_URI`` and
    ``AUTOAUG_OPTUNA_STORAGE`` in the environment override the two locations."""

    mlflow_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI")
    optuna_storage: str = Field("sqlite:///optuna.db", description="Optuna RDB storage URL")
    experiment_prefix: str = Field("autoaug", min_length=1)
    registered_model: str = Field("autoaug-classifier", min_length=1,
                                  description="MLflow registered model of the retrained models (@champion alias)")




def _format_error(err: Any) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; see params.yaml in the README)"
    if err["type"] == "value_error":  # a cross-field rule: the message names the values
        return f"{key}: {str(err['msg']).removeprefix('Value error, ')}"
    return f"{key} = {err.get('input')!r}: {err['msg']}"


def _tracking_from_env(raw: dict[str, Any]) -> dict[str, Any]:
    overrides = {key: os.environ[var] for key, var in TRACKING_ENV.items() if os.environ.get(var)}
    if not overrides:
        return raw
    tracking = raw.get("tracking")
    return {**raw, "tracking": {**(tracking if isinstance(tracking, dict) else {}), **overrides}}


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping (the tracking locations overridden from the environment)."""
    try:
        return Params.model_validate(_tracking_from_env(raw))
    except ValidationError as exc:
        problems = "; ".join(_format_error(e) for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> Params:
    """Read and validate ``path``; a missing file means all defaults."""
    path = Path(path)
    if not path.exists():
        return parse_params({}, str(path))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, str(path))


class TrainConfig(StrictModel):
    """How `pipeline.train.train` trains a network (one schema for every stage)."""

    epochs: int = Field(default=10, ge=1, description="passes over the training set")
    batch_size: int = Field(default=512, ge=1, description="images per SGD step")
    lr: float = Field(default=0.4, gt=0, description="peak learning rate (mean loss over the batch)")
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(default=5e-4, ge=0, description="L2 on conv/linear weights only; never on BN or biases")
    bias_lr_scale: float = Field(default=1.0, gt=0, description="lr multiplier for BN and bias parameters")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    schedule: Literal["onecycle", "cosine"] = Field(
        default="onecycle", description="per-step lr: linear warm-up then linear (onecycle) or cosine decay"
    )
    warmup: float = Field(default=0.2, ge=0, lt=1, description="fraction of all steps spent warming up")
    final_lr_fraction: float = Field(default=0.0, ge=0, le=1, description="lr at the last step / peak lr")
    flip: Literal["none", "random", "alternating"] = Field(
        default="random", description="horizontal flip; alternating = a fixed random half, all flipped every other epoch"
    )
    crop_padding: int = Field(default=4, ge=0, le=16, description="random-crop translation in pixels; 0 disables")
    crop_mode: Literal["zeros", "reflect"] = "zeros"
    lookahead: bool = Field(default=False, description="airbench-style lookahead/EMA of the weights in the last 70 %")
    tta: bool = Field(default=False, description="evaluate with horizontal-flip test-time augmentation")
    tta_translate: bool = Field(
        default=False, description="also average 1-pixel translations at evaluation (airbench's TTA level 2)"
    )
    eval_every: int = Field(default=1, ge=0, description="evaluate eval_set every N epochs (0 = only after the last)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto",
        description="auto = bf16 autocast on CPUs with native bf16 (AVX-512 BF16 / AMX), else fp32; "
        "bf16 (fp16 without bf16 support) AMP on CUDA",
    )
    channels_last: bool = True
    data_init: bool = Field(default=True, description="let a model initialise itself from data (airbench whitening)")


def _airbench_fields(batch_size: int) -> dict[str, Any]:
    """airbench94's hyper-parameters in the trainer's (mean-loss) parametrisation.

    airbench94 states lr 11.5 and weight decay 0.0153 'per 1024 examples' for a summed loss
    with momentum 0.85; for a mean loss that is a peak lr of 1.5 * batch/1024 and an L2
    coefficient of 1.33e-3; BN biases get 64x the lr.
    """
    return dict(
        batch_size=batch_size, lr=1.5 * batch_size / 1024, momentum=0.85, nesterov=True,
        weight_decay=1.33e-3, bias_lr_scale=64.0, label_smoothing=0.2, schedule="onecycle",
        warmup=0.23, final_lr_fraction=0.07, flip="alternating", crop_padding=2,
        crop_mode="reflect", lookahead=True, tta=True, tta_translate=True, eval_every=0,
    )


def airbench_recipe(batch_size: int, **overrides: Any) -> TrainConfig:
    """airbench94's recipe at ``batch_size`` (the learning rate scales with it), with
    ``overrides`` (any TrainConfig field) on top. The accuracy benchmark and the policy
    search's child recipe both start from it."""
    return TrainConfig(**{**_airbench_fields(batch_size), **overrides})


# The policy search's child: airbench's recipe with the usual 4-pixel crop, scored once per
# epoch without test-time augmentation (the search compares children, it does not report them).
CHILD_BATCH_SIZE = 256
CHILD_OVERRIDES: dict[str, Any] = {"epochs": 10, "crop_padding": 4, "tta": False, "tta_translate": False,
                                   "eval_every": 1}


def _lr_batch_size(given: Mapping[Any, Any], default: int) -> int:
    """The batch size a recipe's learning rate is scaled to: ``given``'s when it is a positive
    integer, else ``default`` (a bad value stays in ``given``, for TrainConfig to report with its key)."""
    batch_size = given.get("batch_size", default)
    valid = isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0
    return batch_size if valid else default


def _child_fields(given: Mapping[Any, Any]) -> dict[Any, Any]:
    """The child recipe's fields with the ``given`` ones on top: ``airbench_recipe(batch_size,
    **CHILD_OVERRIDES, **given)``, so the learning rate follows ``batch_size`` unless ``lr`` is
    given."""
    return {**_airbench_fields(_lr_batch_size(given, CHILD_BATCH_SIZE)), **CHILD_OVERRIDES, **given}


# Fast AutoAugment's ops: the op table (pipeline.augment.ops.OPS) without Identity, in its order.
# Written out rather than imported so that reading params.yaml does not import torch (the CLI
# answers in a fraction of a second) and the stages' code deps stay narrow; a test keeps the two
# lists equal.
FAA_OPS = (
    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "AutoContrast", "Invert", "Equalize",
    "Solarize", "Posterize", "Contrast", "Color", "Brightness", "Sharpness", "Cutout", "SamplePairing",
)


class RandAugmentSearchConfig(StrictModel):
    """`method: randaugment`: N ops per image at magnitude M, chosen by training a child per trial."""

    trials: int = Field(6, ge=1, description="(N, M) candidates tried")
    max_ops: int = Field(2, ge=1, le=3, description="largest N tried")
    epochs: int = Field(6, ge=1, description="child epochs per candidate")


class PolicySearchConfig(StrictModel):
    """Fast AutoAugment (or RandAugment-style) policy search on the sample.

    The defaults finish in about 10 minutes on 2 CPU cores; the paper's settings are
    folds=5, trials_per_fold=200, top_n=10 (see the README).
    """

    method: Literal["faa", "randaugment"] = "faa"
    folds: int = Field(3, ge=2, description="K stratified splits of the sample")
    held_out: float = Field(0.4, gt=0, lt=1, description="share of each split held out as D_A")
    trials_per_fold: int = Field(80, ge=1, description="B: TPE trials per split")
    top_n: int = Field(5, ge=1, description="N: best candidates kept per split")
    n_sub: int = Field(5, ge=1, description="sub-policies per candidate policy")
    ops_per_sub: int = Field(2, ge=1, le=4, description="ops per sub-policy")
    ops: list[str] = Field(default_factory=lambda: list(FAA_OPS), min_length=1,
                           description="ops the search may choose (names of the op table)")
    objective: Literal["accuracy", "loss"] = Field("accuracy", description="score of a candidate on augmented D_A")
    draws: int = Field(1, ge=1, le=32, description="augmented draws per D_A image: 1 = one draw each; more = "
                       "Fast AutoAugment's objective (correct if any draw is, loss = the lowest; the paper: n_sub)")
    startup_trials: int = Field(10, ge=0, description="random trials before TPE takes over")
    warm_start: int = Field(5, ge=0, description="best configurations of a prior study re-evaluated first")
    warm_budget: float = Field(0.3, gt=0, le=1, description="share of trials_per_fold a warm-started fold runs")
    warm_all_folds: bool = Field(True, description="a warm-started fold re-evaluates the best of every prior "
                                 "fold's study in turn, its own fold's first (the folds search one problem)")
    patience: int = Field(0, ge=0, description="a warm-started fold stops after this many trials without a "
                          "better one (0 = runs its budget)")
    warm_history: bool = Field(False, description="a warm-started fold's TPE also models the prior study's "
                               "trials (scored on the prior data) from its first trial")
    warm_child_epochs: int = Field(3, ge=0, description="a warm-started fold fine-tunes the prior data's child "
                                   "for this many epochs (at most child.epochs) instead of training one from scratch (0 = from scratch)")
    seed: int = Field(0, ge=0)
    eval_seed: int = Field(0, ge=0, description="fixed seed of the augmentation of D_A, so scores compare")
    child_model: str = Field("airbench_half", description="network of the child models (a baseline name)")
    child: TrainConfig = Field(
        default_factory=lambda: airbench_recipe(CHILD_BATCH_SIZE, **CHILD_OVERRIDES),
        description="child training recipe: airbench's (config.airbench_recipe) at batch 256, 10 epochs, "
        "crop 4, no TTA; the keys given replace its values (lr follows batch_size unless given)",
    )
    randaugment: RandAugmentSearchConfig = Field(default_factory=RandAugmentSearchConfig)

    @field_validator("child", mode="before")
    @classmethod
    def _child_over_the_recipe(cls, value: Any) -> Any:
        """A partial child section (``{epochs: 4}``) means the recipe with those keys changed, not
        TrainConfig's generic defaults for the rest."""
        return _child_fields(value) if isinstance(value, Mapping) else value

    @model_validator(mode="after")
    def _check_combinations(self) -> PolicySearchConfig:
        unknown = [op for op in self.ops if op not in FAA_OPS and op != "Identity"]
        if unknown:
            raise ValueError(f"unknown op {unknown[0]!r} in ops; allowed: {', '.join(FAA_OPS)}, Identity")
        distinct = len(set(self.ops)) ** self.ops_per_sub
        if self.n_sub > distinct:
            raise ValueError(
                f"n_sub = {self.n_sub} sub-policies cannot be distinct with {len(set(self.ops))} ops and "
                f"ops_per_sub = {self.ops_per_sub} (at most {distinct})"
            )
        if self.top_n > self.trials_per_fold:
            raise ValueError(f"top_n = {self.top_n} exceeds trials_per_fold = {self.trials_per_fold}")
        return self


class ChooseConfig(StrictModel):
    """Which Pareto member becomes the model (search_model's chosen.json)."""

    rule: Literal["most_accurate", "smallest_within", "cheapest_within", "under_budget"] = Field(
        "smallest_within", description="most_accurate | smallest_within (the fewest parameters within X points "
        "of the best or of a reference) | cheapest_within (the lowest measured training cost within X points) | "
        "under_budget (most accurate with at most budget_params)")
    within_points: float = Field(1.0, ge=0, le=100, description="smallest_within / cheapest_within: accuracy "
                                 "points allowed below")
    reference: str | None = Field(None, description="smallest_within / cheapest_within: compare with this "
                                  "reference model (e.g. mobilenetv2) instead of the best found")
    budget_params: int | None = Field(None, gt=0, description="under_budget: parameter budget")
    keep_champion_points: float | None = Field(
        3.0, ge=0, le=100, description="keep the @champion's architecture when this search trained it (a warm "
        "search re-trains the prior Pareto members first) and it scored within this many points of the rule's "
        "pick, so that retrain can start from the champion's weights (null: off)")

    @property
    def name(self) -> str:
        if self.reference and self.rule == "smallest_within":
            return f"within_{self.reference}"
        if self.reference and self.rule == "cheapest_within":
            return f"cheapest_within_{self.reference}"
        return self.rule

    @model_validator(mode="after")
    def _check(self) -> ChooseConfig:
        if self.rule == "under_budget" and self.budget_params is None:
            raise ValueError("rule = under_budget needs budget_params")
        return self


SPACE_BATCH_SIZE = 64
SPACE_LR_PER_IMAGE = 0.05 / SPACE_BATCH_SIZE
# The retrain stage's long schedule, on top of the space recipe (lr 0.2 at batch 256: the same lr per image).
RETRAIN_OVERRIDES: dict[str, Any] = {"epochs": 30, "batch_size": 256, "eval_every": 0, "tta": True}


def _space_fields(given: Mapping[Any, Any]) -> dict[Any, Any]:
    """The recipe for search-space networks (plain BN nets, not airbench's): SGD + nesterov,
    one-cycle, label smoothing 0.1; lr 0.05 at batch 64 (a short schedule needs steps: 4 epochs
    of 4000 images at batch 256 left some candidates at chance for two epochs). The ``given``
    fields replace its values; the learning rate follows ``batch_size`` unless ``lr`` is given."""
    fields: dict[Any, Any] = dict(epochs=4, batch_size=SPACE_BATCH_SIZE, momentum=0.9, weight_decay=5e-4,
                                  label_smoothing=0.1, warmup=0.15, crop_padding=4, flip="random", eval_every=1,
                                  lr=SPACE_LR_PER_IMAGE * _lr_batch_size(given, SPACE_BATCH_SIZE))
    return {**fields, **given}


def _space_recipe(**overrides: Any) -> TrainConfig:
    return TrainConfig(**_space_fields(overrides))


SpacePoint = Literal["airbench_like", "resnet20", "mobilenetv2", "airbench94", "airbench_small"]
"""The names of ``pipeline.models.SPACE_POINTS`` (spelled out here: this module does not import torch)."""
DEFAULT_SEED_POINTS: tuple[SpacePoint, ...] = ("airbench_like", "resnet20")


class ModelSearchConfig(StrictModel):
    """Multi-objective architecture search over the 7-block space (stage search_model)."""

    trials: int = Field(24, ge=1, description="candidates trained (over-budget ones are not trained)")
    sampler: Literal["tpe", "nsga2"] = Field("tpe", description="Optuna's multi-objective TPE or NSGA-II")
    objectives: list[Literal["accuracy", "params", "macs", "train_cost"]] = Field(
        default_factory=lambda: ["accuracy", "params"],  # type: ignore[arg-type]  # literals, as listed
        description="accuracy first; macs and train_cost optional")
    max_params: int | None = Field(1_000_000, gt=0, description="parameter budget (an Optuna constraint)")
    max_macs: int | None = Field(60_000_000, gt=0, description="MACs budget per image (an Optuna constraint)")
    max_train_cost: float | None = Field(
        1.0, gt=0, description="training-cost budget (an Optuna constraint): a candidate's measured training "
        "step at recipe.batch_size as a multiple of ResNet-20's, both timed on the machine that runs the trial")
    train_images: int = Field(4000, ge=10, description="search-split images each candidate trains on")
    val_images: int = Field(2000, ge=10, description="validation images each candidate is scored on")
    held_out: float = Field(0.4, gt=0, lt=1, description="validation share of the sample (as the policy search)")
    augment: Literal["policy", "flipcrop"] = Field("policy", description="train candidates with the found policy")
    startup_trials: int = Field(8, ge=0, description="random trials before TPE models the front")
    warm_start: int = Field(5, ge=0, description="Pareto members of the prior study re-trained first")
    warm_budget: float = Field(0.5, gt=0, le=1, description="share of trials a warm-started search runs")
    patience: int = Field(0, ge=0, description="a warm-started search stops after this many trials that "
                          "leave the Pareto front unchanged (0 = runs its budget)")
    warm_history: bool = Field(False, description="a warm-started search's sampler also models the prior "
                               "study's trials (scored on the prior data) from its first trial")
    references: list[str] = Field(default_factory=lambda: ["resnet20", "mobilenetv2"],
                                  description="baselines trained with the same recipe, drawn on the Pareto plot")
    seed_points: list[SpacePoint] = Field(default_factory=lambda: list(DEFAULT_SEED_POINTS),
                                   description="named points of the space (pipeline.models.SPACE_POINTS) a cold "
                                   "search trains first; they count as trials and obey the budgets")
    seed: int = Field(0, ge=0)
    recipe: TrainConfig = Field(default_factory=_space_recipe, description="short schedule per candidate: the "
                                "space recipe (lr 0.05 at batch 64); the keys given replace its values (lr follows "
                                "batch_size unless given)")
    choose: ChooseConfig = Field(default_factory=ChooseConfig)

    @field_validator("recipe", mode="before")
    @classmethod
    def _recipe_over_the_space_recipe(cls, value: Any) -> Any:
        """A partial recipe section (``{epochs: 2}``) changes those keys of the space recipe, not
        TrainConfig's generic defaults for the rest."""
        return _space_fields(value) if isinstance(value, Mapping) else value

    def rules(self) -> list[ChooseConfig]:
        """The chosen rule plus the three standard ones, for the Pareto plot."""
        rules = {self.choose.name: self.choose}
        for rule in (ChooseConfig(rule="most_accurate"), ChooseConfig(rule="smallest_within")):
            rules.setdefault(rule.name, rule)
        return list(rules.values())

    @model_validator(mode="after")
    def _check(self) -> ModelSearchConfig:
        if not self.objectives or self.objectives[0] != "accuracy" or len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives = {self.objectives}: start with accuracy, then any of params, macs and "
                             "train_cost, each once")
        if self.choose.rule == "cheapest_within" and self.max_train_cost is None and "train_cost" not in self.objectives:
            raise ValueError("choose.rule = cheapest_within needs the training cost measured: add train_cost to "
                             "objectives (then the front holds the fast models) or set max_train_cost")
        if self.choose.reference is not None and self.choose.reference not in self.references:
            raise ValueError(f"choose.reference = {self.choose.reference!r} must be one of references "
                             f"{self.references}")
        return self


class RetrainConfig(StrictModel):
    """Training the chosen model on every training image (stage retrain)."""

    augment: Literal["policy", "flipcrop"] = Field("policy", description="train with the found policy")
    seed: int = Field(0, ge=0)
    recipe: TrainConfig = Field(default_factory=lambda: _space_recipe(**RETRAIN_OVERRIDES),
                                description="the long schedule: the space recipe at 30 epochs, batch 256 (lr 0.2), "
                                "flip test-time augmentation; the keys given replace its values (lr follows "
                                "batch_size unless given)")
    warm_epochs: int = Field(5, ge=0, description="when the chosen architecture is the @champion's, start from "
                             "the champion's weights and train this many epochs instead of recipe.epochs "
                             "(at most recipe.epochs; 0 = always from scratch)")
    warm_lr_scale: float = Field(0.1, gt=0, le=1, description="a fine-tune from the champion runs the recipe's "
                                 "schedule at this share of recipe.lr (1 = the recipe's peak, which un-learns "
                                 "an annealed model: BENCHMARKS.md, continuous AutoML, machine H)")

    @field_validator("recipe", mode="before")
    @classmethod
    def _recipe_over_the_long_schedule(cls, value: Any) -> Any:
        """A partial recipe section changes those keys of the long schedule (see ModelSearchConfig)."""
        return _space_fields({**RETRAIN_OVERRIDES, **value}) if isinstance(value, Mapping) else value


class PublishConfig(StrictModel):
    """Promotion to the registry's @champion alias (stage publish)."""

    margin: float = Field(0.0, ge=0, le=1, description="test accuracy the new model must beat the champion by")


class Params(StrictModel):
    sample: SampleConfig = Field(default_factory=SampleConfig)
    policy_search: PolicySearchConfig = Field(default_factory=PolicySearchConfig)
    model_search: ModelSearchConfig = Field(default_factory=ModelSearchConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
