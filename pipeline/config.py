"""One typed schema for params.yaml.

Every section is a pydantic model with ``extra="forbid"``, so a typo in a key is an error, not a
silently ignored setting. ``load_params`` validates the whole file before any compute and turns
pydantic's report into one line per problem: the key, the value and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from pipeline.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


class StrictModel(BaseModel):
    """Base for every params section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SampleConfig(StrictModel):
    """The stable stratified sample the searches run on."""

    size: int = Field(10_000, gt=0, description="images in the search sample (stratified: equal per class "
                      "when the pool allows)")
    seed: int = Field(0, ge=0, description="seed of the content hash that ranks images; membership is stable "
                      "when data is appended")


# Where the stores are is a property of the deployment, not of the experiment: these variables
# override params.yaml's tracking section (the compose services point every process at the
# shared PostgreSQL and MLflow server with them, without editing params.yaml).
TRACKING_ENV = {"mlflow_uri": "AUTOAUG_MLFLOW_URI", "optuna_storage": "AUTOAUG_OPTUNA_STORAGE"}


class TrackingConfig(StrictModel):
    """Where studies and runs are kept; both survive `dvc repro`. ``AUTOAUG_MLFLOW_URI`` and
    ``AUTOAUG_OPTUNA_STORAGE`` in the environment override the two locations."""

    mlflow_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking store (compose: "
                            "http://mlflow:5000)")
    optuna_storage: str = Field("sqlite:///optuna.db", description="Optuna study storage, an RDB URL (compose: "
                                "postgresql://...)")
    experiment_prefix: str = Field("autoaug", min_length=1, description="MLflow experiments are named "
                                   "<prefix>-<stage>")
    registered_model: str = Field("autoaug-classifier", min_length=1, description="MLflow registered model of "
                                  "the retrained models; publish moves its @champion alias")




def _format_error(err: Any) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; every key: docs/params.md)"
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
    lr: float = Field(default=0.4, gt=0, description="peak learning rate (mean loss over the batch) at "
                      "lr_batch_size images per step")
    lr_batch_size: int | None = Field(
        default=None, ge=1, description="the batch size lr is stated at: the trainer's peak lr is lr x batch_size "
        "/ lr_batch_size (the linear scaling rule), so changing batch_size alone scales it; null: lr at any "
        "batch size")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(default=True, description="Nesterov momentum")
    weight_decay: float = Field(default=5e-4, ge=0, description="L2 on conv/linear weights only; never on BN or biases")
    bias_lr_scale: float = Field(default=1.0, gt=0, description="lr multiplier for the biases of normalisation layers (BN shifts) and of a layer with a frozen weight (the whitening stem), as airbench; conv/linear biases of trained weights and a trainable BN scale keep the plain lr")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1, description="label smoothing of the cross-entropy loss")
    whiten_bias_epochs: int | None = Field(
        default=None, ge=0, description="epochs the bias of a layer with a frozen weight (the whitening stem's) "
        "trains; after them it is frozen too, so the backward pass stops at the first trained layer (airbench94: 3; "
        "an airbench_small step at batch 512 then takes about a tenth less); null: it trains throughout")
    schedule: Literal["onecycle", "cosine"] = Field(
        default="onecycle", description="per-step lr: linear warm-up then linear (onecycle) or cosine decay"
    )
    warmup: float = Field(default=0.2, ge=0, lt=1, description="fraction of all steps spent warming up")
    final_lr_fraction: float = Field(default=0.0, ge=0, le=1, description="lr at the last step / peak lr")
    flip: Literal["none", "random", "alternating"] = Field(
        default="random", description="horizontal flip; alternating = a fixed random half, all flipped every other epoch"
    )
    crop_padding: int = Field(default=4, ge=0, le=16, description="random-crop translation in pixels; 0 disables")
    crop_mode: Literal["zeros", "reflect"] = Field(default="zeros", description="what the random crop pads "
                                                   "with: zeros | reflect (airbench)")
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
    channels_last: bool = Field(default=True, description="train in the channels-last memory format")
    data_init: bool = Field(default=True, description="let a model initialise itself from data (airbench whitening)")

    @property
    def peak_lr(self) -> float:
        """The peak learning rate the trainer uses: ``lr`` scaled linearly from ``lr_batch_size``
        images per step to ``batch_size`` (Goyal et al., 2017). The one place the rule lives:
        everything that trains reads this, never ``lr`` alone."""
        if self.lr_batch_size is None or self.lr_batch_size == self.batch_size:
            return self.lr  # no arithmetic: the value given is the value used, bit for bit
        return self.lr * self.batch_size / self.lr_batch_size

    @model_serializer(mode="wrap")
    def _dump_lr_batch_size_where_it_scales(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A dump (MLflow params, study identities, resume and cache keys) names ``lr_batch_size``
        only where it changes the lr: a recipe at its reference batch size dumps as it did before
        the rule was explicit, so studies and runs recorded then still resume and warm-start.
        A dump records a training: ``TrainConfig(**dump)`` trains the same (``peak_lr`` is kept)."""
        data: dict[str, Any] = handler(self)
        if self.lr_batch_size in (None, self.batch_size):
            data.pop("lr_batch_size", None)
        return data


@dataclass(frozen=True)
class Recipe:
    """A named starting point of a TrainConfig params section (the child, the candidates' and
    the retrain recipe), and the one way such a section is built.

    ``values`` are the fields the recipe sets (the others keep TrainConfig's defaults); a params
    section's keys replace them one by one, so ``{epochs: 2}`` changes only the epochs and keeps
    the recipe's lr, stated at its ``lr_batch_size`` (see ``TrainConfig.peak_lr``). ``shown``:
    the keys params.yaml writes out, each with why it has its value (its comment there).
    """

    name: str
    values: Mapping[str, Any]
    shown: Mapping[str, str]

    def fields(self, given: Mapping[Any, Any]) -> dict[Any, Any]:
        """The recipe's values with ``given`` on top (a bad value stays for TrainConfig to report).
        An ``lr`` given without ``lr_batch_size`` is the lr at the batch size used (a params file
        written before lr_batch_size existed, and a dump: it names lr_batch_size only where it
        differs from batch_size), never the recipe's lr at its reference batch size."""
        if "lr" in given and "lr_batch_size" not in given:
            given = {**given, "lr_batch_size": None}
        return {**self.values, **given}

    def build(self, **given: Any) -> TrainConfig:
        return TrainConfig(**self.fields(given))

    def under(self, value: Any) -> Any:
        """For a section's ``mode="before"`` validator: a partial mapping means this recipe with
        those keys changed, not TrainConfig's generic defaults for the rest."""
        return self.fields(value) if isinstance(value, Mapping) else value


LR_BATCH_SIZE_NOTE = "lr is stated at this batch size: the peak lr is lr x batch_size / lr_batch_size"

# airbench94's hyper-parameters in the trainer's (mean-loss) parametrisation. airbench94 states
# lr 11.5 and weight decay 0.0153 'per 1024 examples' for a summed loss with momentum 0.85; for a
# mean loss that is a peak lr of 1.5 per 1024 images (0.375 at 256) and an L2 coefficient of
# 1.33e-3; BN biases get 64x the lr.
AIRBENCH = Recipe("airbench94", values=dict(
    batch_size=256, lr=0.375, lr_batch_size=256, momentum=0.85, nesterov=True, weight_decay=1.33e-3,
    bias_lr_scale=64.0, label_smoothing=0.2, whiten_bias_epochs=3, schedule="onecycle", warmup=0.23, final_lr_fraction=0.07,
    flip="alternating", crop_padding=2, crop_mode="reflect", lookahead=True, tta=True, tta_translate=True,
    eval_every=0,
), shown={})


def airbench_recipe(batch_size: int, **overrides: Any) -> TrainConfig:
    """airbench94's recipe at ``batch_size`` (the learning rate scales with it), with
    ``overrides`` (any TrainConfig field) on top. The accuracy benchmark and the policy
    search's child recipe both start from it."""
    return AIRBENCH.build(batch_size=batch_size, **overrides)


# The policy search's child: airbench's recipe with the usual 4-pixel crop, scored once per
# epoch without test-time augmentation (the search compares children, it does not report them).
CHILD = Recipe("child", values={**AIRBENCH.values, "epochs": 10, "crop_padding": 4, "tta": False,
                                "tta_translate": False, "eval_every": 1}, shown={
    "epochs": "",
    "batch_size": "",
    "lr": "airbench94's 1.5 per 1024 images (mean loss)",
    "lr_batch_size": LR_BATCH_SIZE_NOTE,
})


# Fast AutoAugment's ops: the op table (pipeline.augment.ops.OPS) without Identity, in its order.
# Written out rather than imported so that reading params.yaml does not import torch (the CLI
# answers in a fraction of a second) and the stages' code deps stay narrow; a test keeps the two
# lists equal.
FAA_OPS = (
    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "AutoContrast", "Invert", "Equalize",
    "Solarize", "Posterize", "Contrast", "Color", "Brightness", "Sharpness", "Cutout", "SamplePairing",
)


class SearchSeeds(StrictModel):
    """A search's seeds, one per concern, so that one can move while the others stay (e.g.
    another sampler seed over the same splits and children). Each left null is the search's
    ``seed``: with none given, everything draws from ``seed`` as before the keys existed."""

    split: int | None = Field(None, ge=0, description="seed of the D_M / D_A splits (null: seed)")
    train: int | None = Field(None, ge=0, description="seed of the networks the search trains (null: seed)")
    sampler: int | None = Field(None, ge=0, description="seed of the Optuna sampler (null: seed)")


class SeededSearch:
    """The seeds of a search section that has a ``seed`` and its per-concern ``seeds``."""

    if TYPE_CHECKING:  # the fields are the section's own (kept where params.yaml lists them)
        seed: int
        seeds: SearchSeeds

    @property
    def split_seed(self) -> int:
        return self.seed if self.seeds.split is None else self.seeds.split

    @property
    def train_seed(self) -> int:
        return self.seed if self.seeds.train is None else self.seeds.train

    @property
    def sampler_seed(self) -> int:
        return self.seed if self.seeds.sampler is None else self.seeds.sampler


class RandAugmentSearchConfig(StrictModel):
    """`method: randaugment`: N ops per image at magnitude M, chosen by training a child per trial."""

    trials: int = Field(6, ge=1, description="(N, M) candidates tried")
    max_ops: int = Field(2, ge=1, le=3, description="largest N tried")
    epochs: int = Field(6, ge=1, description="child epochs per candidate")


class PolicySearchConfig(SeededSearch, StrictModel):
    """Fast AutoAugment (or RandAugment-style) policy search on the sample.

    The defaults finish in about 10 minutes on 2 CPU cores; the paper's settings are
    folds=5, trials_per_fold=200, top_n=10 (docs/policy-search.md).
    """

    method: Literal["faa", "randaugment"] = Field("faa", description="faa | randaugment (the cheap baseline: "
                                                  "search N ops at magnitude M)")
    folds: int = Field(3, ge=2, description="K stratified splits of the sample")
    held_out: float = Field(0.4, gt=0, lt=1, description="share of each split held out as D_A (the paper's "
                            "code: 0.4)")
    trials_per_fold: int = Field(80, ge=1, description="B: TPE trials per split")
    top_n: int = Field(5, ge=1, description="N: best candidate policies kept per split, merged into "
                       "policy.json")
    n_sub: int = Field(5, ge=1, description="sub-policies per candidate policy")
    ops_per_sub: int = Field(2, ge=1, le=4, description="ops per sub-policy")
    ops: list[str] = Field(default_factory=lambda: list(FAA_OPS), min_length=1,
                           description="ops the search may choose (names of the op table)")
    objective: Literal["accuracy", "loss"] = Field("accuracy", description="score of a candidate on augmented "
                                                   "D_A: accuracy | loss")
    draws: int = Field(1, ge=1, le=32, description="augmented draws per D_A image: 1 = one draw each; more = "
                       "Fast AutoAugment's objective (correct if any draw is, loss = the lowest; the paper: n_sub, 5x the cost)")
    startup_trials: int = Field(10, ge=0, description="random trials before TPE models the scores")
    warm_start: int = Field(5, ge=0, description="best candidates of the prior study (older data) re-evaluated "
                            "first")
    warm_budget: float = Field(0.3, gt=0, le=1, description="share of trials_per_fold a warm-started fold runs")
    warm_all_folds: bool = Field(True, description="a warm-started fold re-evaluates the best of every prior "
                                 "fold's study in turn, its own fold's first (the folds search one problem)")
    patience: int = Field(0, ge=0, description="a warm-started fold stops after this many trials without a "
                          "better one (0 = runs its budget)")
    warm_history: bool = Field(False, description="a warm-started fold's TPE also models the prior study's "
                               "trials (scored on the prior data) from its first trial")
    warm_child_epochs: int = Field(3, ge=0, description="a warm-started fold fine-tunes the prior data's child "
                                   "for this many epochs (at most child.epochs) instead of training one from scratch (0 = from scratch)")
    seed: int = Field(0, ge=0, description="the default of each of seeds")
    seeds: SearchSeeds = Field(default_factory=SearchSeeds, description="per-concern seeds (split, train, "
                               "sampler); each left null is seed")
    eval_seed: int = Field(0, ge=0, description="fixed seed of the augmentation of D_A, so scores compare")
    child_model: str = Field("airbench_half", description="network of the child models (a baseline name)")
    child: TrainConfig = Field(
        default_factory=CHILD.build,
        description="child recipe: flip/crop only (the searched policy is not applied); airbench's recipe "
        "(pipeline/config.py: CHILD, AIRBENCH) at batch 256, 10 epochs, crop 4, no TTA; a key left out keeps its "
        "value, any TrainConfig key may be given",
    )
    randaugment: RandAugmentSearchConfig = Field(default_factory=RandAugmentSearchConfig,
                                                 description="method randaugment's search")

    @field_validator("child", mode="before")
    @classmethod
    def _child_over_the_recipe(cls, value: Any) -> Any:
        """A partial child section (``{epochs: 4}``) means the recipe with those keys changed, not
        TrainConfig's generic defaults for the rest."""
        return CHILD.under(value)

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
        "most_accurate", description="most_accurate (the default: the budgets max_params and max_retrain_minutes "
        "say how small and how quick to retrain; within them, the best) | smallest_within (the fewest parameters within X points "
        "of the best or of a reference) | cheapest_within (the lowest predicted retrain minutes within X points; the "
        "lowest measured training cost when max_retrain_minutes is off) | "
        "under_budget (most accurate with at most budget_params)")
    within_points: float = Field(1.0, ge=0, le=100, description="smallest_within / cheapest_within: accuracy "
                                 "points allowed below")
    reference: str | None = Field(None, description="smallest_within / cheapest_within: compare with this "
                                  "reference model instead of the best found (e.g. mobilenetv2: as good as MobileNetV2 but smaller)")
    budget_params: int | None = Field(None, gt=0, description="under_budget: parameter budget")
    keep_seed_points: float | None = Field(
        3.0, ge=0, le=100, description="keep a seed point (a hand design of model_search.seed_points) over the "
        "rule's pick when it scored within this many points of it on the proxy (and obeys an under_budget rule's "
        "budget); of several, the first listed in seed_points. A lead this small is not evidence: a candidate's "
        "score moves 1-5.7 points (mean 2.6) with the training seed alone (as keep_champion_points); two searched "
        "picks retrained to 86.8 % where airbench_small reached 91.1 %, and airbench_like (ranked 0.8 points above "
        "it on machine G) to 89.5-90.2 % in three runs (BENCHMARKS.md); null: off")
    keep_champion_points: float | None = Field(
        3.0, ge=0, le=100, description="keep the @champion's architecture when this search trained it (a warm "
        "search re-trains the prior Pareto members first) and it scored within this many points of the rule's "
        "pick, so that retrain can start from the champion's weights (null: off); a candidate's score moves 1-5.7 "
        "points (mean 2.6) with the training seed alone at this recipe (BENCHMARKS.md: candidate-score noise)")

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


# The candidates' recipe: airbench's (the one recipe: lookahead, alternating flip, reflect
# translate, decoupled weight decay, 64x bias lr, label smoothing 0.2), short, at batch 64, scored
# each epoch without test-time augmentation. lr stays airbench's 0.375 per 256 images: 0.094 at 64.
SPACE = Recipe("space", values={**AIRBENCH.values, "epochs": 4, "batch_size": 64, "tta": False,
                                "tta_translate": False, "eval_every": 1}, shown={
    "epochs": "",
    "batch_size": "250 SGD steps on 4000 images; at 256 (62 steps) some candidates stayed at chance for two "
                  "epochs (BENCHMARKS.md: candidate fidelity)",
    "lr": "airbench94's 1.5 per 1024 images (mean loss): 0.094 at batch 64",
    "lr_batch_size": LR_BATCH_SIZE_NOTE,
    "eval_every": "the per-epoch validation curve of each trial in MLflow",
})
# The retrain stage: the same recipe, long, at batch 512, reported with airbench's flip +
# 1-pixel-translate test-time augmentation.
RETRAIN = Recipe("retrain", values={**AIRBENCH.values, "epochs": 40, "batch_size": 512, "tta": True,
                                    "tta_translate": True, "eval_every": 0}, shown={
    "epochs": "airbench_small (829 k): 90.47 % at 20 epochs without a policy (BENCHMARKS.md: machine K)",
    "batch_size": "",
    "lr": "airbench94's 1.5 per 1024 images (mean loss): 0.75 at batch 512",
    "lr_batch_size": LR_BATCH_SIZE_NOTE,
    "weight_decay": "",
    "label_smoothing": "",
    "tta": "flip test-time augmentation on the test split (said in metrics.json)",
    "tta_translate": "and airbench's 1-pixel translations (said in metrics.json)",
})


SpacePoint = Literal["airbench_like", "resnet20", "mobilenetv2", "airbench94", "airbench_small"]
"""The names of ``pipeline.models.SPACE_POINTS`` (spelled out here: this module does not import torch)."""
DEFAULT_SEED_POINTS: tuple[SpacePoint, ...] = ("airbench_small", "airbench_like", "resnet20")


class HalvingConfig(StrictModel):
    """Successive halving over the candidates' per-epoch validation curves (model_search.halving).

    Optuna's pruners do not support multi-objective studies, so the rule is the search's own and
    keeps the Pareto front: at a rung (an epoch of model_search.recipe), a candidate is compared
    with every earlier candidate's validation accuracy at that epoch and stops when at least
    ``dominated_by`` of them were at least as accurate there and no worse in each other objective
    (parameters, MACs, ...). A candidate still non-dominated at the rung always trains on. A
    stopped candidate keeps its rung accuracy as its value (the sampler learns from it) and an
    Optuna constraint (``halving`` > 0), so it is never on the front nor chosen."""

    rungs: list[int] = Field(min_length=1, description="proxy epochs after which a candidate is compared with the "
                             "earlier ones at the same epoch (each below model_search.recipe.epochs)")
    dominated_by: int = Field(2, ge=1, description="a candidate stops at a rung when at least this many earlier "
                              "candidates dominated it there (as accurate at that epoch, no worse in each other "
                              "objective)")
    min_trials: int = Field(4, ge=1, description="earlier candidates that must have reached a rung before any is "
                            "stopped there")

    @model_validator(mode="after")
    def _check(self) -> HalvingConfig:
        if self.rungs != sorted(set(self.rungs)) or self.rungs[0] < 1:
            raise ValueError(f"halving.rungs = {self.rungs}: increasing epochs, each at least 1")
        return self


class ModelSearchConfig(SeededSearch, StrictModel):
    """Multi-objective architecture search over the 7-block space (stage search_model)."""

    trials: int = Field(24, ge=1, description="candidates trained (over-budget ones are not trained)")
    sampler: Literal["tpe", "nsga2"] = Field("tpe", description="tpe | nsga2: Optuna's multi-objective TPE or "
                                             "NSGA-II (both honour the budgets)")
    objectives: list[Literal["accuracy", "params", "macs", "train_cost"]] = Field(
        default_factory=lambda: ["accuracy", "params"],  # type: ignore[arg-type]  # literals, as listed
        description="accuracy first; params, macs (a third objective if latency matters) and train_cost optional")
    max_params: int | None = Field(1_000_000, gt=0, description="parameter budget (an Optuna constraint; "
                                   "over-budget candidates are never trained)")
    max_macs: int | None = Field(60_000_000, gt=0, description="MACs budget per 32x32 image (ResNet-20: 40 M): on "
                                 "a CPU, MACs, not parameters, set a candidate's training time (a 0.7 M-param, "
                                 "324 M-MAC draw took > 8 min)")
    max_train_cost: float | None = Field(
        None, gt=0, description="training-cost budget (an Optuna constraint): a candidate's measured training "
        "step at recipe.batch_size as a multiple of ResNet-20's, both timed on the machine that runs the trial: "
        "MACs understate the space's depthwise/SE blocks 2-3x on a CPU (BENCHMARKS.md: training cost); null: off "
        "(max_retrain_minutes bounds the retrain in minutes instead)")
    max_retrain_minutes: float | None = Field(
        28.0, gt=0, description="retrain-time budget (an Optuna constraint): a candidate's predicted retrain "
        "minutes, its training step at retrain.recipe.batch_size measured on the machine that runs the trial x "
        "retrain.recipe.epochs x the steps of an epoch over the raw store's training images / 60; a candidate over "
        "it is never trained, so a wider network is chosen only when its retrain fits (28: make run within the "
        "hour on 2 native-bf16 cores: on a Zen 4, 53.8 minutes and 91.12 % with 34 epochs of airbench_small; "
        "at 25 before the trainer kept freed memory and froze the whitening bias, 51.2 minutes and 90.48 % "
        "with 24, and at 30 then 67.4 minutes, the model and recipe searches 8 minutes longer; null: off)")
    untimed_bound: float | None = Field(
        0.75, gt=0, le=1, description="with max_retrain_minutes, a draw is refused without timing its step when "
        "its MACs x the fewest minutes of SGD steps per MAC of the draws timed so far x this factor (or the same "
        "per activation, whichever is larger), plus the batches' minutes, exceed the budget (a lower bound: it "
        "errs only for a draw more than 1/factor times as efficient as every timed one; on an AVX2 CPU at the defaults, 289 timed refusals were 25 of the "
        "search's 29 minutes, and at 0.75 a replay skipped 188 of them and lost no draw that fit; such draws have "
        "their own cap, 100 x trials, with the draws over max_params or max_macs, apart from the 20 x trials of timed refusals); seed points and the champion "
        "are always timed; null: time every draw")
    train_images: int = Field(4000, ge=10, description="search-split images each candidate trains on")
    val_images: int = Field(2000, ge=10, description="validation images each candidate is scored on")
    halving: HalvingConfig | None = Field(
        default_factory=lambda: HalvingConfig(rungs=[1], dominated_by=4, min_trials=4),
        description="successive halving over the candidates' per-epoch validation curves (docs/model-search.md); "
        "null: every candidate trains the whole recipe. Rung 1, picked from bench/fidelity.py: over 8 networks "
        "retrained at the full recipe, the proxy's first epoch ranked them as well as its last (Spearman 0.86 "
        "against 0.76; BENCHMARKS.md: the proxy's rank agreement with the full retrain); 4 dominators kept the "
        "whole front in a replay where 2 at rungs [1, 2] cut a member")
    held_out: float = Field(0.4, gt=0, lt=1, description="validation share of the sample (as the policy search)")
    augment: Literal["policy", "flipcrop"] = Field("policy", description="policy | flipcrop: train candidates "
                                                   "with the found policy or with flip/crop only")
    startup_trials: int = Field(8, ge=0, description="random trials before TPE models the front")
    warm_start: int = Field(5, ge=0, description="Pareto members of the prior study re-trained first")
    warm_budget: float = Field(0.25, gt=0, le=1, description="share of trials a warm-started search runs (the "
                               "prior front re-trained, then new draws; at 0.5 the model search was half of a warm "
                               "update's minutes)")
    patience: int = Field(0, ge=0, description="a warm-started search stops after this many trials that "
                          "leave the Pareto front unchanged (0 = runs its budget)")
    warm_history: bool = Field(False, description="a warm-started search's sampler also models the prior "
                               "study's trials (scored on the prior data) from its first trial")
    warm_refused: bool = Field(True, description="a warm-started search's sampler knows the prior study's "
                               "draws the budgets refused (never trained: their record does not depend on the "
                               "data), so it draws fewer over-budget candidates (ignored when warm_history is on: "
                               "it has them all)")
    references: list[str] = Field(default_factory=lambda: ["resnet20", "mobilenetv2"],
                                  description="baselines trained with the same recipe, drawn on the Pareto plot")
    references_on_update: Literal["carry", "retrain"] = Field(
        "carry", description="after a data update (a warm-started search), carry: reuse each reference's score "
        "from the prior study when its recipe is the same (the plot and pareto.json say which data it was "
        "trained on; on 2 cores they were a quarter of a warm update); retrain: train them on the new data")
    seed_points: list[SpacePoint] = Field(default_factory=lambda: list(DEFAULT_SEED_POINTS),
                                   description="named points of the space (pipeline.models.SPACE_POINTS) a cold "
                                   "search trains first (also a warm one with warm_start 0, which re-trains no "
                                   "prior configuration; [] for a search from random draws only); they count as "
                                   "trials and obey the budgets: 337 draws never came near airbench's layout, which "
                                   "scores 9 points above their best; airbench_small is airbench94 at 64/128/192 "
                                   "channels (829 k parameters); the order is the preference among those within "
                                   "choose.keep_seed_points of the pick")
    narrow_seed_points: int = Field(
        2, ge=0, le=5, description="a seed point a budget refuses (on a slower CPU, max_retrain_minutes) is drawn "
        "again as the same design at narrower widths (pipeline.models.narrowed: each width x 0.95 x sqrt(limit / "
        "its measured value), rounded down to the space's widths), named <seed>-narrow1; up to this many times a "
        "seed point; 0: a refused seed point is only named")
    shorten_seed_points: float | None = Field(
        0.4, gt=0, le=1, description="a seed point (or a prior front member a warm search re-trains) whose only "
        "broken budget is max_retrain_minutes keeps its widths and is retrained for the most epochs that fit, when "
        "those are at least this share of retrain.recipe.epochs (chosen.json's retrain_epochs; the recipe search "
        "scales its epochs to them); below that share it is narrowed (narrow_seed_points). Where the budget binds, "
        "fewer epochs beat narrower widths: on a Zen 4, airbench_small at 18 of 40 epochs retrained to 90.4 %, "
        "airbench_like narrowed to fit the 40 epochs 88.4 %, in the same minutes; null: never shortened")
    seed: int = Field(0, ge=0, description="the default of each of seeds")
    seeds: SearchSeeds = Field(default_factory=SearchSeeds, description="per-concern seeds (split, train, "
                               "sampler); each left null is seed")
    recipe: TrainConfig = Field(default_factory=SPACE.build, description="short schedule per candidate: airbench's "
                                "recipe (pipeline/config.py AIRBENCH, SPACE), 4 epochs at batch 64; a key left out "
                                "keeps this value")
    choose: ChooseConfig = Field(default_factory=ChooseConfig, description="which Pareto member becomes the "
                                 "model")

    @field_validator("recipe", mode="before")
    @classmethod
    def _recipe_over_the_space_recipe(cls, value: Any) -> Any:
        """A partial recipe section (``{epochs: 2}``) changes those keys of the space recipe, not
        TrainConfig's generic defaults for the rest."""
        return SPACE.under(value)

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
        # cheapest_within ranks by the predicted retrain minutes when they are measured
        # (max_retrain_minutes set), else by the training cost: one of the two must be measured
        if (self.choose.rule == "cheapest_within" and self.max_retrain_minutes is None
                and self.max_train_cost is None and "train_cost" not in self.objectives):
            raise ValueError("choose.rule = cheapest_within needs the training cost measured: set "
                             "max_retrain_minutes (the cheapest is then the lowest predicted retrain minutes), add "
                             "train_cost to objectives (then the front holds the fast models) or set max_train_cost")
        if self.choose.reference is not None and self.choose.reference not in self.references:
            raise ValueError(f"choose.reference = {self.choose.reference!r} must be one of references "
                             f"{self.references}")
        if self.halving is not None and "halving" in self.model_fields_set:  # the default adapts (halving_applied)
            late = [r for r in self.halving.rungs if r >= self.recipe.epochs]
            if late:
                raise ValueError(f"halving.rungs = {self.halving.rungs}: each must be below recipe.epochs "
                                 f"({self.recipe.epochs}); {late} would stop nothing (for a recipe this short, "
                                 "set model_search.halving to null)")
            unscored = [r for r in self.halving.rungs if not self.recipe.eval_every or r % self.recipe.eval_every]
            if unscored:
                raise ValueError(f"halving.rungs = {self.halving.rungs}: the candidates are scored every "
                                 f"recipe.eval_every = {self.recipe.eval_every} epochs, not after {unscored}")
        return self

    @property
    def halving_applied(self) -> HalvingConfig | None:
        """``halving`` as the search applies it: the rungs before the proxy's last epoch at which the
        candidates are scored (a set ``halving`` has only those: validated), None when none is left
        (the default at a recipe of one epoch)."""
        halving, recipe = self.halving, self.recipe
        if halving is None:
            return None
        rungs = [r for r in halving.rungs if r < recipe.epochs and recipe.eval_every and r % recipe.eval_every == 0]
        if not rungs:
            return None
        return halving if rungs == halving.rungs else halving.model_copy(update={"rungs": rungs})


class RecipeSearchConfig(SeededSearch, StrictModel):
    """The retrain recipe searched on the chosen architecture (stage search_recipe): lr, weight
    decay, label smoothing and epochs, each trial a short proxy of the retrain on the sample."""

    trials: int = Field(8, ge=0, description="proxy trainings of the chosen architecture (0: no search; retrain "
                        "uses retrain.recipe as written)")
    lr: tuple[float, float] = Field((0.15, 0.75), description="range of the peak lr at retrain.recipe.lr_batch_size "
                                    "(log scale; airbench's 0.375 per 256 images in the middle)")
    weight_decay: tuple[float, float] = Field((5e-4, 3e-3), description="range of the weight decay (log scale; "
                                              "airbench's 1.33e-3 in the middle)")
    label_smoothing: tuple[float, float] = Field((0.0, 0.3), description="range of the label smoothing")
    epochs: list[int] = Field(default_factory=lambda: [30, 40, 50], min_length=1, description="retrain epochs to "
                              "choose from (each trial trains fidelity x epochs on the proxy); the choice is the "
                              "fewest epochs within within_points of the best, and obeys "
                              "model_search.max_retrain_minutes (a trial over it is never trained)")
    fidelity: float = Field(0.25, gt=0, le=1, description="proxy epochs per retrain epoch (at least 1)")
    batch_size: int = Field(128, ge=1, description="proxy batch size (the lr scales to it: retrain.recipe's "
                            "lr_batch_size rule)")
    train_images: int = Field(6000, ge=10, description="search-split images each proxy trains on (the model "
                              "search's split, uncut at the defaults)")
    val_images: int = Field(4000, ge=10, description="validation images each proxy is scored on")
    held_out: float = Field(0.4, gt=0, lt=1, description="validation share of the sample (as the other searches)")
    augment: Literal["policy", "flipcrop"] = Field("policy", description="policy | flipcrop: train proxies with "
                                                   "the found policy or with flip/crop only")
    within_points: float = Field(0.0, ge=0, description="accuracy points below the best that fewer epochs may "
                                 "score and still be chosen (0: the most accurate trial; the time budget bounds "
                                 "the epochs)")
    margin: float = Field(3.0, ge=0, description="accuracy points by which the choice must beat the params' own "
                          "recipe (the first trial) on the proxy to replace it; else retrain.recipe is kept: the "
                          "proxy's score moves by about a point with the seed alone, and the best of 7 other trials "
                          "leads by chance by about 2; at 1.0 a 2.2-point lead (lr 0.59, weight decay 0.0025, label "
                          "smoothing 0.28) replaced airbench's recipe on a Zen 4 and retrained to 89.79 % at 28 epochs, "
                          "against 90.48 % for airbench's at 24 (0: the best trial always wins)")
    startup_trials: int = Field(3, ge=0, description="random trials (after the params' own recipe) before TPE")
    warm_start: int = Field(3, ge=0, description="best recipes of the prior study (older data or another "
                            "architecture) re-evaluated first")
    warm_budget: float = Field(0.375, gt=0, le=1, description="share of trials a warm-started search runs (at "
                               "the defaults 3 of 8: the prior study's best recipes re-evaluated)")
    patience: int = Field(0, ge=0, description="a warm-started search stops after this many trials without a "
                          "better one (0 = runs its budget)")
    warm_history: bool = Field(False, description="a warm-started search's TPE also models the prior study's "
                               "trials from its first trial")
    seed: int = Field(0, ge=0, description="the default of each of seeds")
    seeds: SearchSeeds = Field(default_factory=SearchSeeds, description="per-concern seeds (split, train, "
                               "sampler); each left null is seed")

    @model_validator(mode="after")
    def _check(self) -> RecipeSearchConfig:
        for key in ("lr", "weight_decay", "label_smoothing"):
            low, high = getattr(self, key)
            if not 0 <= low <= high or (key != "label_smoothing" and low <= 0) or (key == "label_smoothing"
                                                                                  and high >= 1):
                raise ValueError(f"{key} = [{low}, {high}]: give [low, high] with 0 < low <= high"
                                 + (" < 1 (0 <= low allowed)" if key == "label_smoothing" else ""))
        if any(e < 1 for e in self.epochs) or len(set(self.epochs)) != len(self.epochs):
            raise ValueError(f"epochs = {self.epochs}: distinct whole numbers >= 1")
        return self


class RetrainConfig(StrictModel):
    """Training the chosen model on every training image (stage retrain)."""

    augment: Literal["policy", "flipcrop"] = Field("policy", description="policy | flipcrop: train with the "
                                                   "found policy or with flip/crop only")
    seed: int = Field(0, ge=0, description="seed of the network's initialisation and batches")
    recipe: TrainConfig = Field(default_factory=RETRAIN.build, description="the same recipe as the candidates' "
                                "(airbench's), long, at batch 512, with flip + translate test-time augmentation; a "
                                "key left out keeps this value")
    warm_epochs: int = Field(5, ge=0, description="when the chosen architecture is the @champion's, start from "
                             "its weights and train this many epochs instead of recipe.epochs (at most "
                             "recipe.epochs; 0: always from scratch); the model and recipe searches budget "
                             "the champion's architecture at this fine-tune (max_retrain_minutes)")
    warm_lr_scale: float = Field(0.1, gt=0, le=1, description="a fine-tune from the champion runs at this share of "
                                 "the recipe's peak lr: at the full peak a 2-epoch fine-tune lost 0.91 points of the "
                                 "champion's accuracy, at 0.1 it gained 0.44 (BENCHMARKS.md: continuous AutoML, "
                                 "machine H)")
    diverged_retries: int = Field(2, ge=0, description="a retrain whose loss diverges (NaN or infinite), or "
                                  "whose training accuracy falls back to chance with a finite loss (a collapse), starts "
                                  "again from the same weights at half the lr, at most this many times (airbench's lr "
                                  "per image at batch 512 diverged for searched networks that trained at the search's "
                                  "batch sizes; 0: the stage fails with the error)")
    max_overrun: float | None = Field(
        1.1, ge=1.0, description="a retrain whose epochs so far say it would train past this multiple of its "
        "predicted minutes (the model search's measured step x the recipe's steps: chosen.json) plans the epochs "
        "that fit instead, and its lr decay and lookahead run their course over them (metrics.json: "
        "planned_epochs, epochs, time_limit_minutes); a 2-core VM's speed drifts by a third within minutes, and "
        "an fp32 retrain ran 12-50 % over its prediction (BENCHMARKS.md: machine K); null: trains the recipe's "
        "epochs whatever they take")

    @field_validator("recipe", mode="before")
    @classmethod
    def _recipe_over_the_long_schedule(cls, value: Any) -> Any:
        return RETRAIN.under(value)


class PublishConfig(StrictModel):
    """Promotion to the registry's @champion alias (stage publish).

    The candidate and the champion are scored on the same test images; the candidate is
    promoted when it is better at significance ``alpha`` (McNemar's exact test on the images
    where they disagree) and by more than ``margin``, or, with ``prefer``, when it is not worse by
    more than ``margin`` and smaller or faster (latency under 0.9 of the champion's). A champion without such paired data (an older retrain) is compared by
    accuracy alone: the candidate must beat it by more than ``margin``.
    """

    margin: float = Field(0.0, ge=0, le=1, description="accuracy (0-1) a difference must exceed to count: a "
                          "significantly better candidate must also lead by more than this; a "
                          "smaller/faster candidate (prefer) may be worse by less than this (the lower "
                          "confidence bound of the difference above -margin); without paired data the "
                          "candidate must beat the champion's test accuracy by more than this")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance of the paired test: promote a better "
                         "candidate when McNemar's one-sided p is below alpha (a one-image lead never is)")
    prefer: Literal["smaller", "faster"] | None = Field(None, description="also promote a candidate that is not "
                                                        "worse (see margin) and has fewer parameters (smaller) "
                                                        "or a CPU latency at batch 1 under 0.9 of the "
                                                        "champion's (faster); "
                                                        "null = only a better one")


class Params(StrictModel):
    """All of params.yaml: its sections in the file's order, each described above its keys there."""

    sample: SampleConfig = Field(default_factory=SampleConfig, description=(
        "The stable stratified sample the searches run on (stage sample)."))
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description=(
        "Where studies and runs are kept; both survive `dvc repro`. AUTOAUG_MLFLOW_URI and "
        "AUTOAUG_OPTUNA_STORAGE in the environment override the two locations."))
    policy_search: PolicySearchConfig = Field(default_factory=PolicySearchConfig, description=(
        "Fast AutoAugment policy search (stage search_policy). These defaults are sized for about 10 minutes on "
        "2 CPU cores; the paper's settings for a GPU: folds 5, trials_per_fold 200, top_n 10 (and a longer child "
        "recipe)."))
    model_search: ModelSearchConfig = Field(default_factory=ModelSearchConfig, description=(
        "Multi-objective architecture search (stage search_model): maximise validation accuracy, minimise "
        "parameters over the 7-block space (pipeline/models/space.py). Each candidate trains on `train_images` of "
        "the policy search's first D_M split with the found policy and is scored on `val_images` of its D_A; the "
        "test split is never touched. Budgets are Optuna constraints."))
    recipe_search: RecipeSearchConfig = Field(default_factory=RecipeSearchConfig, description=(
        "The retrain recipe searched on the chosen architecture (stage search_recipe): each trial trains it on the "
        "model search's split of the sample for fidelity x epochs and is scored on its validation split; the found "
        "lr, weight_decay, label_smoothing and epochs replace retrain.recipe's."))
    retrain: RetrainConfig = Field(default_factory=RetrainConfig, description=(
        "Full retraining of the chosen model on every training image in the raw store (stage retrain)."))
    publish: PublishConfig = Field(default_factory=PublishConfig, description=(
        "Promotion (stage publish): the retrained model becomes @champion only if it beats the current champion's "
        "test accuracy by more than `margin`."))


# The recipe each TrainConfig section starts from (its keys written out in params.yaml: Recipe.shown).
RECIPE_OF: dict[str, Recipe] = {"policy_search.child": CHILD, "model_search.recipe": SPACE, "retrain.recipe": RETRAIN}
