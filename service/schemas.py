"""Request and response schemas (pydantic): what the OpenAPI docs show.

Inputs arrive as multipart uploads, form fields and query parameters, so the input schemas here
are the policy document accepted by ``POST /augment``; everything a route returns as JSON is an
output schema below. Output models are built from published meta.json files, which may carry
more keys than listed (``extra="allow"`` where the contract is open-ended).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.augment import OPS

# ------------------------------------------------------------------------------ inputs


class OpCallIn(BaseModel):
    """One op of a sub-policy, as a policy file holds it."""

    model_config = ConfigDict(extra="forbid")

    op: str = Field(description="op name from the op table (e.g. ShearX, Rotate, Invert)",
                    json_schema_extra={"enum": list(OPS)})
    probability: float = Field(ge=0, le=1)
    magnitude: float = Field(ge=0, le=1, description="mapped through the op table's range")


class PolicyIn(BaseModel):
    """A policy JSON document (the format of policy.json); sent as the ``policy`` form field."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(description="format version (required: policy files always name it)")
    sub_policies: list[Annotated[list[OpCallIn], Field(min_length=1)]] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


# ------------------------------------------------------------------------------ outputs


class ErrorOut(BaseModel):
    """Every 4xx/5xx answer: one line that names the problem (and, for 503, what to run)."""

    detail: str = Field(examples=["file 'notes.txt' is not an image (PNG, JPEG, ...)"])


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    status: Literal["ready"] = "ready"
    model_version: int
    policy_version: int | None


class OpCallOut(BaseModel):
    op: str
    probability: float
    magnitude: float


class PolicyDocument(BaseModel):
    """The policy JSON itself (load it with ``pipeline.augment.Policy.from_dict``)."""

    version: int
    sub_policies: list[list[OpCallOut]]
    metadata: dict[str, Any] = Field(default_factory=dict)


class PolicySummaryOut(BaseModel):
    """One entry of the policy history."""

    version: int
    published_at: str
    fingerprint: str | None = Field(description="data fingerprint of the sample the search ran on")
    mlflow_run_id: str | None
    sub_policies: int
    summary: dict[str, Any] = Field(description="search figures (score, trials, ...)")
    current: bool
    url: str
    grid_url: str


class PolicyOut(PolicySummaryOut):
    """A policy with its provenance."""

    studies: list[str]
    etag: str
    policy: PolicyDocument


class PolicyListOut(BaseModel):
    current: int | None
    policies: list[PolicySummaryOut] = Field(description="newest first")


class ModelMetricsOut(BaseModel):
    """Test metrics of the model (open-ended: tta, latency_ms, ... as published)."""

    model_config = ConfigDict(extra="allow")

    test_accuracy: float | None = None
    per_class_accuracy: dict[str, float] = Field(default_factory=dict)


class WeightsOut(BaseModel):
    exported: bool = Field(description="model.pt2 (torch.export, plain PyTorch) is available")
    export_error: str | None
    url: str = Field(description="GET it: model.pt2, or the state dict with ?format=state_dict")


class ModelSummaryOut(BaseModel):
    """One entry of the model history."""

    version: int
    published_at: str
    test_accuracy: float | None
    params: int
    macs: int
    fingerprint: str | None
    current: bool


class ModelOut(BaseModel):
    """The champion (or a given version): what it is, how good, how big, where it came from."""

    version: int
    published_at: str
    config: dict[str, Any] | str = Field(description="search-space configuration or baseline name")
    classes: list[str]
    params: int
    macs: int = Field(description="multiply-accumulates of one 32x32 forward pass")
    metrics: ModelMetricsOut
    fingerprint: str | None
    lineage: dict[str, Any] = Field(description="MLflow run ids, registry name/version, policy version, studies")
    weights: WeightsOut


class ModelListOut(BaseModel):
    current: int | None
    models: list[ModelSummaryOut] = Field(description="newest first")


class ClassProbability(BaseModel):
    label: str
    index: int
    probability: float = Field(ge=0, le=1)


class ImagePrediction(BaseModel):
    filename: str
    top: list[ClassProbability] = Field(description="most probable first")


class PredictOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: int
    predictions: list[ImagePrediction] = Field(description="one per uploaded file, in upload order")
