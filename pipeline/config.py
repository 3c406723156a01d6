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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class Params(StrictModel):
    sample: SampleConfig = SampleConfig()
    tracking: TrackingConfig = TrackingConfig()


def _format_error(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; see params.yaml in the README)"
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

    epochs: int = Field(10, ge=1, description="passes over the training set")
    batch_size: int = Field(512, ge=1, description="images per SGD step")
    lr: float = Field(0.4, gt=0, description="peak learning rate (mean loss over the batch)")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0, description="L2 on conv/linear weights only; never on BN or biases")
    bias_lr_scale: float = Field(1.0, gt=0, description="lr multiplier for BN and bias parameters")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    schedule: Literal["onecycle", "cosine"] = Field(
        "onecycle", description="per-step lr: linear warm-up then linear (onecycle) or cosine decay"
    )
    warmup: float = Field(0.2, ge=0, lt=1, description="fraction of all steps spent warming up")
    final_lr_fraction: float = Field(0.0, ge=0, le=1, description="lr at the last step / peak lr")
    flip: Literal["none", "random", "alternating"] = Field(
        "random", description="horizontal flip; alternating = a fixed random half, all flipped every other epoch"
    )
    crop_padding: int = Field(4, ge=0, le=16, description="random-crop translation in pixels; 0 disables")
    crop_mode: Literal["zeros", "reflect"] = "zeros"
    lookahead: bool = Field(False, description="airbench-style lookahead/EMA of the weights in the last 70 %")
    tta: bool = Field(False, description="evaluate with horizontal-flip test-time augmentation")
    eval_every: int = Field(1, ge=0, description="evaluate eval_set every N epochs (0 = only after the last)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto = bf16 autocast on CPU, fp16 AMP (bf16 where supported) on CUDA"
    )
    channels_last: bool = True
    data_init: bool = Field(True, description="let a model initialise itself from data (airbench whitening)")
