"""One typed schema for params.yaml.

Every section is a pydantic model with ``extra="forbid"``, so a typo in a key is an error, not a
silently ignored setting. ``load_params`` validates the whole file before any compute and turns
pydantic's report into one line per problem: the key, the value and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


class StrictModel(BaseModel):
    """Base for every params section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SampleConfig(StrictModel):
    """The stable stratified sample the searches run on."""

    size: int = Field(10_000, gt=0, description="images in the sample (equal per class when the pool allows)")
    seed: int = Field(0, ge=0, description="seed of the content hash that ranks images")


class TrackingConfig(StrictModel):
    """Where studies and runs are kept; both survive `dvc repro`."""

    mlflow_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI")
    optuna_storage: str = Field("sqlite:///optuna.db", description="Optuna RDB storage URL")
    experiment_prefix: str = Field("autoaug", min_length=1)




def _format_error(err: Any) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; see params.yaml in the README)"
    if err["type"] == "value_error":  # a cross-field rule: the message names the values
        return f"{key}: {str(err['msg']).removeprefix('Value error, ')}"
    return f"{key} = {err.get('input')!r}: {err['msg']}"


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_format_error(e) for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> Params:
    """Read and validate ``path``; a missing file means all defaults."""
    path = Path(path)
    if not path.exists():
        return Params()
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
    startup_trials: int = Field(10, ge=0, description="random trials before TPE takes over")
    warm_start: int = Field(5, ge=0, description="best configurations of a prior study re-evaluated first")
    seed: int = Field(0, ge=0)
    eval_seed: int = Field(0, ge=0, description="fixed seed of the augmentation of D_A, so scores compare")
    child_model: str = Field("airbench_half", description="network of the child models (a baseline name)")
    child: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=8), description="child training recipe")
    randaugment: RandAugmentSearchConfig = Field(default_factory=RandAugmentSearchConfig)

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


class Params(StrictModel):
    sample: SampleConfig = Field(default_factory=SampleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    policy_search: PolicySearchConfig = Field(default_factory=PolicySearchConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
