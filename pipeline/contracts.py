"""The files stages hand to each other, as pydantic models: one model per file, used by its
writer and by every reader (later stages, the CLI, the benches).

A field is found by its symbol, not by grepping a string key. Each model reads its file with
``Model.read(path)`` (a missing or malformed file is one ``DataError`` line naming the file and
the stage to re-run) and writes it with ``model.write(path)`` (atomically, in the JSON layout
DVC has always seen: same keys, same indentation, so metrics diffs keep their meaning).

Strict models (``extra="forbid"``) are the files whose fields are all known here; models whose
file carries free-form keys (a search method's own figures, one pair of keys per reference
network) allow extra keys and keep them. Adding a field: add it to the model (with a default
when older files lack it), fill it where the model is built, and every reader sees it.

The published/ folder (what the service reads) keeps its own contract in
``pipeline.artifacts`` (``PolicyRecord`` / ``ModelRecord``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from pipeline.errors import DataError
from pipeline.files import write_text_atomic

if TYPE_CHECKING:
    from pipeline.config import TrainConfig

Config = dict[str, Any] | str  # a search-space configuration, or a reference network's name


M = TypeVar("M", bound=BaseModel)


def from_document(model: type[M], data: Any, where: str, rerun: str) -> M:
    """``data`` (a document read from elsewhere, e.g. a registered run's artifact) as ``model``, or
    one DataError line naming where it came from, what is wrong and what to re-run."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"{where}: not a valid {model.__name__} ({_problem(exc)}); {rerun}") from None


def _problem(exc: ValidationError) -> str:
    """The first validation error as ``field: message`` (one line)."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "the file"
    return f"{where}: {error['msg']}"


class StageFile(BaseModel):
    """A JSON file one stage writes and others read."""

    model_config = ConfigDict(extra="forbid")

    # what the file is called in messages, and the command that (re)writes it (in backquotes)
    what: ClassVar[str] = "stage output"
    rerun: ClassVar[str] = "`dvc repro`"
    indent: ClassVar[int] = 2  # the layout the writer has always used

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Self:
        """The file at ``path``; DataError (one line, naming the stage to run) when it is missing
        or does not hold what the writer writes."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no {cls.what}; run {cls.rerun} first")
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (ValueError, OSError) as exc:  # ValidationError is a ValueError
            reason = _problem(exc) if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
            raise DataError(f"{path}: not a valid {cls.what} ({reason}); re-run {cls.rerun}") from None

    def to_json(self) -> dict[str, Any]:
        """The file's content as plain JSON values (what ``write`` writes)."""
        return dict(self.model_dump(mode="json"))

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a reader (DVC, the next stage) sees the old file or the new one."""
        write_text_atomic(path, json.dumps(self.to_json(), indent=self.indent) + "\n")


# ------------------------------------------------------------------ sample


class SampleManifest(StageFile):
    """``data/sample/manifest.json``: which images the sample holds, and its fingerprint."""

    what: ClassVar[str] = "sample manifest"
    rerun: ClassVar[str] = "`autoaug sample` (or `dvc repro sample`)"
    indent: ClassVar[int] = 1

    format: int = 1
    size: int
    seed: int
    fingerprint: str  # the data version: study names and every MLflow run carry it
    classes: list[str]
    class_counts: dict[str, int]
    pool_size: int  # training images in the store the sample was drawn from
    pool_class_counts: dict[str, int]
    ids: list[str]
    labels: list[int]


# ------------------------------------------------------------------ search_policy


class PolicySummary(StageFile):
    """``outputs/search_policy/summary.json``: the policy search's figures. A search method may
    add its own figures (extra keys are kept and shown by the service)."""

    model_config = ConfigDict(extra="allow")
    what: ClassVar[str] = "policy search summary"
    rerun: ClassVar[str] = "`dvc repro search_policy`"

    method: str | None = None
    fingerprint: str = ""
    space_hash: str | None = None
    folds: int | None = None
    trials: int | None = None
    warm_started_trials: int | None = None
    history_trials: int | None = None
    sub_policies: int | None = None
    best_score_mean: float | None = None
    child_clean_accuracy_mean: float | None = None
    child_train_seconds: float | None = None
    wall_seconds: float | None = None
    step_seconds: dict[str, float] | None = None  # the stage's steps (load, build, trials, summarise, write)
    mlflow_run_id: str | None = None

    def figures(self) -> dict[str, Any]:
        """The scalar figures (numbers, strings, None): what publish shows beside the policy."""
        data = self.model_dump(mode="json", exclude_unset=True)  # the keys the file holds, no defaults
        return {k: v for k, v in data.items() if isinstance(v, (int, float, str)) or v is None}


# ------------------------------------------------------------------ search_model


class ScoredModel(BaseModel):
    """A scored model as the model search records it (``pipeline.search.model.Candidate``)."""

    model_config = ConfigDict(extra="forbid")

    config: Config
    accuracy: float
    params: int
    macs: int
    trial: int | None = None
    train_seconds: float = 0.0
    train_cost: float | None = None
    seed_point: str | None = None
    predicted_retrain_minutes: float | None = None  # None: not measured (max_retrain_minutes off, a reference)
    retrain_step_seconds: float | None = None
    retrain_epochs: int | None = None  # fewer than retrain.recipe's, fitted to the minutes budget (None: the recipe's)


class Pareto(StageFile):
    """``outputs/search_model/pareto.json``: the feasible front, the references and each rule's pick."""

    what: ClassVar[str] = "Pareto front"
    rerun: ClassVar[str] = "`dvc repro search_model`"
    indent: ClassVar[int] = 1

    fingerprint: str
    study: str
    objectives: list[str]
    max_params: int | None
    max_macs: int | None
    max_train_cost: float | None
    max_retrain_minutes: float | None = None  # None: off (or a file from before the budget)
    front: list[ScoredModel]
    references: dict[str, ScoredModel]
    # reference name -> the sample fingerprint it was trained on: another than ``fingerprint`` when
    # its score was carried from the prior data (model_search.references_on_update: carry)
    reference_sources: dict[str, str] = Field(default_factory=dict)
    picks: dict[str, int | None]  # rule name -> trial number (None: a reference)


class Chosen(StageFile):
    """``outputs/search_model/chosen.json``: the model retrain trains, with its lineage.

    Only ``config`` is required: a hand-written chosen file (the benches' ``bench/results``)
    holds little more. ``read`` also checks the configuration against today's search space.
    """

    what: ClassVar[str] = "chosen model"
    rerun: ClassVar[str] = "`dvc repro search_model`"
    indent: ClassVar[int] = 1

    config: Config
    accuracy: float | None = None
    params: int | None = None
    macs: int | None = None
    trial: int | None = None
    train_seconds: float | None = None
    train_cost: float | None = None
    seed_point: str | None = None
    # the retrain's training minutes predicted by the search, and the step they come from (the
    # step at retrain.recipe's batch size on the search's machine); None: not measured
    predicted_retrain_minutes: float | None = None
    retrain_step_seconds: float | None = None
    # the epochs the retrain trains, when the search kept a known design at its widths by fitting
    # fewer than retrain.recipe.epochs into max_retrain_minutes (shorten_seed_points); None: the recipe's
    retrain_epochs: int | None = Field(None, ge=1)
    rule: dict[str, Any] | None = None  # model_search.choose as it was
    fingerprint: str = ""
    study: str | None = None
    mlflow_run_id: str | None = None
    champion_architecture_version: int | None = None  # the @champion's, when this is its architecture
    kept_champion: bool = False  # kept over the rule's pick (choose.keep_champion_points)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Self:
        from pipeline.models import ModelConfigError, validate_config

        chosen = super().read(path)
        if not isinstance(chosen.config, str):
            try:
                validate_config(chosen.config)
            except ModelConfigError as exc:
                raise DataError(f"{path}: the chosen configuration no longer fits the search space ({exc}); "
                                f"re-run {cls.rerun}") from None
        return chosen

    def retrain_recipe(self, recipe: TrainConfig) -> TrainConfig:
        """``recipe`` (retrain.recipe) at the epochs the search fitted this model into
        (``retrain_epochs``), else as it is: what the recipe search starts from and retrain trains."""
        if self.retrain_epochs is None:
            return recipe
        return recipe.model_copy(update={"epochs": min(self.retrain_epochs, recipe.epochs)})


class ModelSearchSummary(StageFile):
    """``outputs/search_model/metrics.json``: the model search's figures, logged as MLflow
    metrics too. Each reference network adds ``<name>_accuracy`` and ``<name>_params``."""

    model_config = ConfigDict(extra="allow")
    what: ClassVar[str] = "model search summary"
    rerun: ClassVar[str] = "`dvc repro search_model`"

    fingerprint: str
    trials: int
    trained_trials: int
    warm_started_trials: int
    history_trials: int
    pareto_size: int
    chosen_trial: int | None
    chosen_accuracy: float
    chosen_params: int
    chosen_macs: int
    chosen_train_cost: float | None
    chosen_predicted_retrain_minutes: float | None = None
    chosen_retrain_epochs: int | None = None  # chosen.json's retrain_epochs (None: retrain.recipe's)
    best_accuracy: float
    champion_architecture_version: int | None
    kept_champion: bool
    # draws each budget refused: never trained, so no trial run (names.REFUSED_PREFIX + budget)
    refused_max_params: int = 0
    refused_max_macs: int = 0
    refused_max_train_cost: int = 0
    refused_max_retrain_minutes: int = 0
    refused_untimed: int = 0  # of those over the minutes budget, refused from their MACs, never timed (names.REFUSED_UNTIMED)
    references_carried: int = 0  # references whose score came from the prior data (names.REFERENCES_CARRIED)
    stopped_trials: int = 0  # candidates successive halving stopped at a rung (model_search.halving)
    kept_seed_point: str | None = None  # the seed point kept over the rule's pick (choose.keep_seed_points)
    seed_points_refused: list[str] = Field(default_factory=list)  # seed points a budget refused on this machine
    wall_seconds: float
    step_seconds: dict[str, float] | None = None  # the stage's steps (load, build, trials, summarise, write)
    mlflow_run_id: str | None


# ------------------------------------------------------------------ search_recipe


class FoundRecipeFile(StageFile):
    """``outputs/search_recipe/recipe.json``: the retrain recipe found for the chosen
    architecture (``values``: the searched keys; ``recipe``: retrain.recipe with them on top),
    with its lineage. ``searched`` false: the search was off (recipe_search.trials 0) and
    ``recipe`` is retrain.recipe as written."""

    what: ClassVar[str] = "found recipe"
    rerun: ClassVar[str] = "`dvc repro search_recipe`"

    searched: bool
    values: dict[str, Any]
    recipe: dict[str, Any]
    architecture: Config  # the chosen.json configuration it was found for
    trial: int | None = None
    accuracy: float | None = None  # proxy validation accuracy of the chosen trial
    best_accuracy: float | None = None  # of the best trial (the choice may give a little for fewer epochs)
    predicted_minutes: float | None = None  # predicted retrain training minutes at the found epochs
    kept_params_recipe: bool = False  # no trial beat retrain.recipe by more than recipe_search.margin
    fingerprint: str = ""
    study: str | None = None
    mlflow_run_id: str | None = None


class RecipeSearchSummary(StageFile):
    """``outputs/search_recipe/metrics.json``: the recipe search's figures (MLflow metrics too)."""

    what: ClassVar[str] = "recipe search summary"
    rerun: ClassVar[str] = "`dvc repro search_recipe`"

    fingerprint: str
    trials: int
    trained_trials: int
    warm_started_trials: int
    chosen_trial: int | None
    chosen_accuracy: float | None
    best_accuracy: float | None
    chosen_epochs: int
    chosen_lr: float
    chosen_weight_decay: float
    chosen_label_smoothing: float
    predicted_minutes: float | None
    kept_params_recipe: bool = False
    refused_max_retrain_minutes: int = 0
    wall_seconds: float
    step_seconds: dict[str, float] | None = None  # the stage's steps (load, build, trials, summarise, write)
    mlflow_run_id: str | None


# ------------------------------------------------------------------ retrain


class ChampionRescore(BaseModel):
    """The @champion re-scored on today's test split (``test_accuracy`` None: it could not be,
    ``note`` says why; with an accuracy, ``note`` says when its stored predictions were read)."""

    model_config = ConfigDict(extra="forbid")

    version: str
    test_accuracy: float | None
    note: str | None = None

    @model_serializer(mode="wrap")
    def _without_empty_note(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("note") is None:  # the file has never carried an empty note
            data.pop("note", None)
        return data


class PairedOutcome(BaseModel):
    """The candidate and the @champion on the same test images: what publish's paired test
    (McNemar's exact test) needs, with the champion's size and speed measured beside the
    candidate's."""

    model_config = ConfigDict(extra="forbid")

    version: str  # the champion version compared with
    n: int  # test images both were scored on
    candidate_only: int  # images the candidate gets right and the champion wrong
    champion_only: int  # images the champion gets right and the candidate wrong
    champion_params: int
    champion_latency_ms_batch1: float  # measured in the same process as the candidate's


class RetrainLineage(BaseModel):
    """Where the retrained model came from."""

    model_config = ConfigDict(extra="allow")

    search_model_run: str | None = None
    search_model_study: str | None = None
    policy_studies: list[str] = []
    warm_start_from_version: str | None = None


Tta = Literal["flip+translate", "flip", "none"]


class RetrainMetrics(StageFile):
    """``outputs/retrain/metrics.json`` (also the retrain run's ``weights/metrics.json``).

    Publish reads it, as do the benches. Only ``test_accuracy`` is required to read one: a
    registered version's metrics rebuilt from MLflow (``pipeline.champion.weights``) hold a subset.
    """

    model_config = ConfigDict(extra="allow")
    what: ClassVar[str] = "retrain metrics"
    rerun: ClassVar[str] = "`dvc repro retrain`"

    test_accuracy: float
    test_loss: float | None = None
    test_images: int | None = None
    tta: Tta | None = None
    per_class_accuracy: dict[str, float] | None = None
    params: int | None = None
    macs: int | None = None
    latency_ms_batch1: float | None = None
    latency_ms_batch256: float | None = None
    train_minutes: float | None = None  # this run's training time (evaluation excluded)
    # the model search's prediction of train_minutes (chosen.json), for the recipe's epochs (planned_epochs)
    predicted_minutes: float | None = None
    train_images: int | None = None
    epochs: int | None = None  # the epochs trained
    # the recipe's epochs; more than epochs when the time limit (retrain.max_overrun) shortened the run
    planned_epochs: int | None = None
    time_limit_minutes: float | None = None  # predicted_minutes x retrain.max_overrun (None: no limit)
    warm_start_from_version: str | None = None
    diverged_restarts: int = 0  # trainings that diverged and started again at half the lr (retrain.diverged_retries)
    champion_rescored: ChampionRescore | None = None
    champion_paired: PairedOutcome | None = None
    fingerprint: str = ""
    store_content_hash: str | None = None
    device: str | None = None
    mlflow_run_id: str | None = None
    registered_model: str | None = None
    model_version: str | None = None
    lineage: RetrainLineage = RetrainLineage()
    # wall seconds of the stage's steps (load, plan, train, score, rescore_champion, measure, write,
    # register), logged as step_seconds.<step> on the run: what an update spends beyond training
    step_seconds: dict[str, float] | None = None

    # logged as MLflow metrics (numbers only; the per-class accuracies separately)
    LOGGED: ClassVar[tuple[str, ...]] = ("test_accuracy", "test_loss", "test_images", "params", "macs",
                                         "latency_ms_batch1", "latency_ms_batch256", "train_minutes",
                                         "predicted_minutes", "train_images", "epochs", "planned_epochs",
                                         "time_limit_minutes")
    # what a published model shows (published/models/*/meta.json "metrics")
    PUBLISHED: ClassVar[tuple[str, ...]] = ("test_accuracy", "per_class_accuracy", "tta", "latency_ms_batch1",
                                            "latency_ms_batch256", "train_minutes", "epochs", "train_images")

    def mlflow_metrics(self) -> dict[str, float]:
        """The numbers the retrain run logs: the LOGGED fields and one ``class_accuracy.<class>``
        per class."""
        logged = {k: float(v) for k in self.LOGGED if (v := getattr(self, k)) is not None}
        return {**logged, **{f"class_accuracy.{c}": a for c, a in (self.per_class_accuracy or {}).items()}}

    def published(self) -> dict[str, Any]:
        """The PUBLISHED figures this file holds (a subset when rebuilt from MLflow)."""
        data = self.model_dump(mode="json", exclude_unset=True)
        return {k: data[k] for k in self.PUBLISHED if k in data}


# ------------------------------------------------------------------ publish


class Comparison(BaseModel):
    """The candidate against the @champion on the same test images (publish's paired test).

    Differences are in accuracy points (percent of the test images); ``interval_points`` is the
    two-sided 95 % interval of the difference; ``p_value`` is McNemar's exact one-sided p that
    the candidate is not better.
    """

    model_config = ConfigDict(extra="forbid")

    champion_version: str
    n: int
    candidate_only: int
    champion_only: int
    difference_points: float
    interval_points: tuple[float, float]
    p_value: float
    lower_bound_points: float  # one-sided (1 - alpha) lower bound: the non-inferiority check
    smaller: bool  # fewer parameters than the champion
    faster: bool  # lower latency at batch 1, measured beside the champion's


Gate = Literal["no_champion", "better", "not_worse_and_smaller", "not_worse_and_faster", "kept",
               "fallback_promoted", "fallback_kept", "already_champion", "no_version"]


class Decision(StageFile):
    """``outputs/publish/decision.json``: whether the model was promoted and why."""

    what: ClassVar[str] = "publish decision"
    rerun: ClassVar[str] = "`dvc repro publish`"

    promoted: bool
    reason: str
    test_accuracy: float
    champion_accuracy_before: float | None
    registered_model: str
    model_version: str | None
    champion_version: str | None
    is_champion: bool
    published_model_version: int | None
    published_policy_version: int | None
    fingerprint: str
    mlflow_run_ids: dict[str, str | None]
    gate: Gate | None = None  # which rule decided
    comparison: Comparison | None = None  # None: no champion, or none re-scored with paired data


__all__ = [
    "ChampionRescore",
    "Chosen",
    "Comparison",
    "Decision",
    "FoundRecipeFile",
    "Gate",
    "ModelSearchSummary",
    "PairedOutcome",
    "Pareto",
    "PolicySummary",
    "RecipeSearchSummary",
    "RetrainLineage",
    "RetrainMetrics",
    "SampleManifest",
    "ScoredModel",
    "StageFile",
]
