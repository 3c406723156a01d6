"""One study runner for every search.

A search (Fast AutoAugment, the RandAugment baseline, the architecture search) differs from
another only in what a trial is. It describes that as a ``SearchMethod``; the runner does the
rest once:

    open      create or resume each part's study; a new study (new data) is warm-started
              from the latest prior study with the same stage and space hash
    prepare   the method's heavy set-up of a part (e.g. train the split's child), once
    optimise  run trials until the part has its budget: the entry point a worker calls
    sync      give every finished trial one nested MLflow run (idempotent across restarts)
    collect   rank each part's trials and let the method combine the best

Lifecycle of one part ``k`` (a fold of the policy search, or the single study of the model
search): ``open(k) -> prepare(k) -> optimise(k) -> collect``. Everything that survives a crash
lives in the Optuna storage (trials) and in MLflow (runs keyed by tags), so running the same
search again continues where it stopped.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import optuna
from optuna.trial import FrozenTrial
from tqdm.auto import tqdm

from pipeline.hashing import int_digest
from pipeline.search.studies import (
    completed,
    prior_study,
    rank_trials,
    space_hash,
    study_name,
    warm_start,
)
from pipeline.tracking import RunLogger

TRIAL_TAG = "autoaug.trial"
PART_TAG = "autoaug.fold"  # the tag name predates model search, where a part is the whole study

MAX_UNCOUNTED_FACTOR = 20
Objective = Callable[[optuna.Trial], float | Sequence[float]]


@dataclass
class PreparedPart:
    """What ``SearchMethod.prepare`` hands the runner for one part."""

    objective: Objective
    metrics: dict[str, float] = field(default_factory=dict)  # logged on the part's run
    state: Any = None  # anything the method wants back in ``combine`` (e.g. the child model)


class SearchMethod(Protocol):
    """What a search supplies; the runner owns studies, warm start, MLflow and progress.

    ``parts()`` names the independent studies (``["fold0", "fold1", ...]``, or ``[None]``
    for one study whose trials nest directly under the stage's MLflow run).
    ``objective_names`` name the values a trial returns, in ``directions`` order; they become
    the trial runs' metric names.
    """

    @property
    def stage(self) -> str: ...

    @property
    def label(self) -> str:
        """Shown in the progress bar, e.g. "faa"."""
        ...

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]: ...

    @property
    def objective_names(self) -> list[str]: ...

    @property
    def trials_per_part(self) -> int: ...

    def space(self) -> dict[str, Any]:
        """What defines the search space: its hash is part of every study name."""
        ...

    def parts(self) -> list[str | None]: ...

    def sampler(self, part: int, salt: int = 0) -> optuna.samplers.BaseSampler:
        """The part's sampler, seeded from the method's seed plus ``salt`` (see ``open``)."""
        ...

    def prepare(self, part: int) -> PreparedPart: ...

    def decode(self, params: Mapping[str, Any]) -> Any:
        """A trial's parameters read back as the thing they describe (a policy, a model)."""
        ...

    def trial_params(self, part: int, trial: FrozenTrial) -> dict[str, Any]:
        """The MLflow params of a trial's run (the Optuna params plus what identifies the part)."""
        ...

    def trial_artifacts(self, trial: FrozenTrial) -> dict[str, Mapping[str, Any]]:
        """Small JSON artifacts of a trial's run, by file name."""
        ...

    def combine(self, ranked: list[list[FrozenTrial]], prepared: list[PreparedPart]) -> Any:
        """The search's result from each part's finished trials, best first."""
        ...

    def counts(self, trial: FrozenTrial) -> bool:
        """Whether a finished trial uses up the budget (the model search's over-budget
        candidates are never trained, cost nothing and do not count)."""
        ...


@dataclass
class PartOutcome:
    name: str | None
    study: optuna.Study
    prepared: PreparedPart
    warm_started: int = 0
    prior: str | None = None


@dataclass
class SearchOutcome:
    result: Any
    parts: list[PartOutcome]
    wall_seconds: float

    @property
    def studies(self) -> list[optuna.Study]:
        return [p.study for p in self.parts]

    @property
    def study_names(self) -> list[str]:
        return [p.study.study_name for p in self.parts]

    @property
    def trials(self) -> int:
        return sum(len(completed(p.study)) for p in self.parts)

    @property
    def warm_started(self) -> int:
        return sum(p.warm_started for p in self.parts)


class StudyRunner:
    """Runs a ``SearchMethod`` against an Optuna storage, logging into ``run`` (MLflow)."""

    def __init__(self, method: SearchMethod, storage: optuna.storages.BaseStorage, fingerprint: str,
                 run: RunLogger, *, warm_start: int = 0, progress: bool = True, log_every: int = 10) -> None:
        self.method = method
        self.storage = storage
        self.fingerprint = fingerprint
        self.run_logger = run
        self.warm_start = warm_start
        self.progress = progress
        self.log_every = log_every
        self.space_hash = space_hash(method.space())
        self.tags = {"autoaug.fingerprint": fingerprint}

    # ------------------------------------------------------------------ identity

    def study_name(self, part: int) -> str:
        return study_name(self.method.stage, self.space_hash, self.fingerprint, self.method.parts()[part])

    # ------------------------------------------------------------------ lifecycle

    def open(self, part: int) -> tuple[optuna.Study, int, str | None]:
        """Create or resume the part's study; a new one is warm-started from the prior study.

        Returns the study, how many prior configurations were enqueued, and the prior's name.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = self.method.sampler(part)
        study = optuna.create_study(study_name=self.study_name(part), storage=self.storage, sampler=sampler,
                                    load_if_exists=True, directions=self.method.directions)
        prior = prior_study(self.storage, self.method.stage, self.space_hash, self.fingerprint,
                            self.method.parts()[part])
        warm = 0
        if prior is not None and self.warm_start:
            warm = warm_start(study, prior, self.warm_start)
            if warm:
                study.set_user_attr("warm_started_from", prior.study_name)
        self._reseed(study, part)
        return study, warm, prior.study_name if prior is not None else None

    def _reseed(self, study: optuna.Study, part: int) -> None:
        """A seeded sampler replays its draws from the start. A resumed study (or one that
        holds a prior study's configurations) would re-propose what it already has, so it gets
        a sampler salted with its name and trial count: deterministic, but new draws. A new
        cold study keeps the plain seed."""
        n = len(study.get_trials(deepcopy=False))
        if n:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.sampler = self.method.sampler(part, salt=int_digest(f"{study.study_name}:{n}", 3))

    def counted(self, study: optuna.Study) -> int:
        return sum(1 for t in completed(study) if self.method.counts(t))

    def optimise(self, part: int, study: optuna.Study, prepared: PreparedPart, part_run: RunLogger,
                 bar: tqdm | None = None) -> None:
        """Run trials until the part has ``trials_per_part`` finished ones that count (a
        resumed part runs only what is missing); finished trials reach MLflow every
        ``log_every`` and on exit. Trials that do not count are capped at
        ``MAX_UNCOUNTED_FACTOR`` times the budget, so an impossible constraint ends quickly."""
        budget = self.method.trials_per_part
        since_sync = 0

        def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            nonlocal since_sync
            if bar is not None and self.method.counts(trial):
                bar.update()
                if len(study.directions) == 1:
                    bar.set_postfix(best=f"{study.best_value:.4f}")
            since_sync += 1
            if since_sync >= self.log_every:
                self.sync(part, study, part_run)
                since_sync = 0

        try:
            while (missing := budget - self.counted(study)) > 0:
                if len(completed(study)) - self.counted(study) >= MAX_UNCOUNTED_FACTOR * budget:
                    break  # the method's combine() says why nothing (more) counted
                study.optimize(prepared.objective, n_trials=missing, callbacks=[on_trial])
        finally:
            self.sync(part, study, part_run)

    def sync(self, part: int, study: optuna.Study, part_run: RunLogger) -> None:
        """Give every finished trial its nested MLflow run, once (idempotent: safe after a restart)."""
        logged = part_run.children(TRIAL_TAG)
        name = self.method.parts()[part]
        for t in completed(study):
            if str(t.number) in logged or t.values is None:
                continue
            metrics = dict(zip(self.method.objective_names, t.values, strict=True))
            metrics.update({k: v for k, v in t.user_attrs.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
            curves = {k.removeprefix("curve."): v for k, v in t.user_attrs.items()
                      if k.startswith("curve.") and isinstance(v, list)}
            part_run.log_finished_child(
                f"{name}-trial{t.number:03d}" if name else f"trial{t.number:03d}",
                key_tag=TRIAL_TAG, key=str(t.number),
                params=self.method.trial_params(part, t), metrics=metrics, curves=curves,
                tags={**self.tags, "optuna.study": study.study_name, "optuna.trial": t.number},
                dicts=self.method.trial_artifacts(t),
            )

    def part_run(self, part: int) -> RunLogger:
        """The MLflow run the part's trials nest under: its own child run, or the stage run."""
        name = self.method.parts()[part]
        if name is None:
            return self.run_logger
        return self.run_logger.child(name, key_tag=PART_TAG, key=str(part),
                                     tags={**self.tags, "optuna.study": self.study_name(part)})

    def run(self) -> SearchOutcome:
        """Open, prepare and optimise every part, then combine: the whole search, resumable."""
        method = self.method
        parts = method.parts()
        t_start = time.perf_counter()
        outcomes: list[PartOutcome] = []
        ranked_parts: list[list[FrozenTrial]] = []
        bar = tqdm(total=len(parts) * method.trials_per_part, desc=f"{method.stage} ({method.label})",
                   unit="trial", disable=not self.progress)
        try:
            for k, name in enumerate(parts):
                part_run = self.part_run(k)
                study, warm, prior = self.open(k)
                bar.update(min(self.counted(study), method.trials_per_part))
                prepared = method.prepare(k)
                if prepared.metrics and part_run is not self.run_logger:
                    part_run.log_metrics(prepared.metrics)
                outcomes.append(PartOutcome(name, study, prepared, warm, prior))
                self.optimise(k, study, prepared, part_run, bar)
                ranked = rank_trials(completed(study), study.directions)
                ranked_parts.append(ranked)
                if part_run is not self.run_logger:
                    part_run.log_metrics({"best_score": ranked[0].values[0], "trials": len(ranked)})
                    part_run.finish()
        finally:
            bar.close()
        result = method.combine(ranked_parts, [o.prepared for o in outcomes])
        return SearchOutcome(result, outcomes, time.perf_counter() - t_start)

