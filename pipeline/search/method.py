"""What a search supplies to the runner: the ``SearchMethod`` protocol and its typed settings.

In the spirit of Optuna's ``BaseSampler``: a few hooks with a documented lifecycle, and the
runner (``pipeline.search.runner``) owns everything else once (studies, warm start, workers,
MLflow, progress). The lifecycle of a search, per part ``k`` (a fold of the policy search, or
the model search's one study):

    parts()                     the independent studies, named
    space()                     what defines the search space (its hash names every study)
    sampler(k, salt)            the part's seeded sampler (salted: resumed studies, workers)
    seed_points(k)              hand-designed points a cold part evaluates first
    prepare(k, prior)           the part's heavy set-up, once per process -> PreparedPart
    ... the runner runs trials through ``PreparedPart.objective`` ...
    record(k, trial)            what a finished trial's MLflow run holds (None: no run)
    decode(params)              a trial's parameters read back as what they describe
    combine(ranked, prepared)   the search's result from each part's trials, best first

Everything the runner needs to know but that is not a hook is data in ``spec``
(``MethodSpec``): the stage, the objectives, the budget and the warm-start settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import optuna
from optuna.trial import FrozenTrial

from pipeline.config import ModelSearchConfig, PolicySearchConfig, RecipeSearchConfig

Direction = Literal["minimize", "maximize"]
Objective = Callable[[optuna.Trial], float | Sequence[float]]


def _every_trial(trial: FrozenTrial) -> bool:
    return True


def _no_trial(trial: FrozenTrial) -> bool:
    return False


@dataclass(frozen=True)
class Budget:
    """How many trials a part runs, and which finished trials use it up."""

    trials_per_part: int
    counts: Callable[[FrozenTrial], bool] = _every_trial
    """Whether a finished trial uses up the budget (the model search's over-budget draws are
    never trained and do not count)."""
    free: Callable[[FrozenTrial], bool] = _no_trial
    """Whether a trial that does not count cost next to nothing (the model search's draws
    refused before any timing: over its parameter or MAC budget, or from its counts alone,
    ``untimed_bound``): the runner's cap on trials that do not
    count (``MAX_UNCOUNTED_FACTOR`` x the budget) leaves these out, and caps them apart
    (``MAX_FREE_FACTOR`` x the budget), so that a cheap refusal does not end a search after a
    few minutes with nothing found."""


@dataclass(frozen=True)
class WarmStart:
    """How a new study (new data) builds on the latest prior study of the same search.

    top_k      best prior configurations re-evaluated first (0: none)
    budget     share of ``Budget.trials_per_part`` a warm-started part runs
    patience   a warm-started part stops after this many counted trials without a better one
               (0: it runs its budget)
    history    the part's sampler also gets the prior study's trials as history
    history_of when ``history`` is off: the prior trials the sampler gets as history all the same
               (the model search's draws the budgets refused: never trained, their record does
               not depend on the data)
    all_parts  a part also re-evaluates the best of the other parts' prior studies, in turn
               with its own (the policy search's folds search one problem)
    first      prior trials re-evaluated before the prior's ranked best (the @champion's
               architecture, which the ranking may put beyond ``top_k``)
    """

    top_k: int = 0
    budget: float = 1.0
    patience: int = 0
    history: bool = False
    all_parts: bool = False
    first: Callable[[FrozenTrial], bool] = _no_trial
    history_of: Callable[[FrozenTrial], bool] | None = None

    @classmethod
    def from_config(cls, cfg: PolicySearchConfig | ModelSearchConfig | RecipeSearchConfig,
                    first: Callable[[FrozenTrial], bool] = _no_trial,
                    history_of: Callable[[FrozenTrial], bool] | None = None) -> WarmStart:
        """The warm-start keys of a search's params section."""
        all_parts = cfg.warm_all_folds if isinstance(cfg, PolicySearchConfig) else False
        return cls(top_k=cfg.warm_start, budget=cfg.warm_budget, patience=cfg.patience, history=cfg.warm_history,
                   all_parts=all_parts, first=first, history_of=history_of)


@dataclass(frozen=True)
class MethodSpec:
    """What the runner reads off a method as data, not hooks."""

    stage: str  # the DVC stage: part of every study name and of the MLflow experiment
    label: str  # shown in the progress bar, e.g. "faa"
    objectives: tuple[tuple[str, Direction], ...]  # (name, direction) of each value a trial returns
    budget: Budget
    warm: WarmStart = field(default_factory=WarmStart)

    @property
    def objective_names(self) -> list[str]:
        """The trial runs' metric names of the values, in order."""
        return [name for name, _ in self.objectives]

    @property
    def directions(self) -> list[Direction]:
        return [direction for _, direction in self.objectives]


@dataclass
class PreparedPart:
    """What ``SearchMethod.prepare`` hands the runner for one part."""

    objective: Objective
    metrics: dict[str, float] = field(default_factory=dict)  # logged on the part's run
    state: Any = None  # anything the method wants back in ``combine`` (e.g. the child model)


@dataclass(frozen=True)
class TrialRecord:
    """What a finished trial's MLflow run holds beyond its values and numeric attributes."""

    params: dict[str, Any]  # the run's params: the Optuna params plus what identifies the part
    artifacts: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # small JSON files, by name


class SearchMethod(Protocol):
    """A search as the runner runs it (see the module docstring for the lifecycle).

    ``parts()`` names the independent studies (``["fold0", "fold1", ...]``, or ``[None]`` for
    one study whose trials nest directly under the stage's MLflow run).
    """

    @property
    def spec(self) -> MethodSpec: ...

    def parts(self) -> list[str | None]: ...

    def space(self) -> dict[str, Any]:
        """What defines the search space: its hash is part of every study name."""
        ...

    def sampler(self, part: int, salt: int = 0) -> optuna.samplers.BaseSampler:
        """The part's sampler, seeded from the method's sampler seed plus ``salt``."""
        ...

    def seed_points(self, part: int) -> list[tuple[str, dict[str, Any]]]:
        """(name, trial parameters) of hand-designed points a cold part evaluates first."""
        ...

    def prepare(self, part: int, prior: str | None = None) -> PreparedPart:
        """The part's heavy set-up, once per process. ``prior``: the name of the study the part
        was warm-started from (its data fingerprint finds the prior data's artefacts, e.g. a
        child model to fine-tune instead of training one from scratch)."""
        ...

    def record(self, part: int, trial: FrozenTrial) -> TrialRecord | None:
        """A finished trial's MLflow run; None: the trial gets no run (a draw that was never
        trained is not a trial a user browses)."""
        ...

    def decode(self, params: Mapping[str, Any]) -> Any:
        """A trial's parameters read back as the thing they describe (a policy, a model)."""
        ...

    def combine(self, ranked: list[list[FrozenTrial]], prepared: list[PreparedPart]) -> Any:
        """The search's result from each part's finished trials, best first."""
        ...
