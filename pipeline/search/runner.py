"""One study runner for every search: the study lifecycle.

A search (Fast AutoAugment, the RandAugment baseline, the architecture search) differs from
another only in what a trial is. It describes that as a ``SearchMethod``
(``pipeline.search.method``); the runner does the rest once:

    open      create or resume each part's study; a new study (new data) is warm-started
              from the latest prior study with the same stage and space hash
    prepare   the method's heavy set-up of a part (e.g. train the split's child), once
    optimise  run trials until the part has its budget: the entry point a worker calls
    sync      give every finished trial one nested MLflow run (``mlflow_sync``, idempotent)
    collect   rank each part's trials and let the method combine the best

Lifecycle of one part ``k`` (a fold of the policy search, or the single study of the model
search): ``open(k) -> prepare(k) -> optimise(k) -> collect``. Everything that survives a crash
lives in the Optuna storage (trials) and in MLflow (runs keyed by tags), so running the same
search again continues where it stopped.

Several processes can share one search (``autoaug worker``, on several hosts, through a
PostgreSQL storage and an MLflow server; ``pipeline.search.workers``). The stage's process is
the *coordinator*: it creates the studies and the MLflow runs, and it returns only when every
part has its budget of finished trials, whoever ran them. A *worker* joins each part once the
coordinator has opened it and runs trials until the part's budget is finished or in progress.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial
from tqdm.auto import tqdm

from pipeline import interrupt
from pipeline.errors import first_line
from pipeline.hashing import int_digest
from pipeline.names import (
    BEST_SCORE,
    BUDGET,
    COLD_ATTR,
    COLD_START,
    FINGERPRINT,
    FORMAT_ATTR,
    HISTORY_COUNT_ATTR,
    PART_TRIALS,
    READY_ATTR,
    SEEDED_ATTR,
    WARM_ATTR,
    WARM_START_FROM,
)
from pipeline.search.method import PreparedPart, SearchMethod
from pipeline.search.mlflow_sync import TrialSync
from pipeline.search.studies import (
    STUDY_FORMAT,
    add_history,
    carry,
    completed,
    find_prior,
    fingerprint_of,
    load_prior,
    own_best_value,
    pareto_front,
    rank_trials,
    space_hash,
    study_name,
    warm_start,
)
from pipeline.search.workers import POLL_S, Processes, lost_connection
from pipeline.tracking import RunLogger

MAX_UNCOUNTED_FACTOR = 20  # trials that do not count, at most this many times the budget
MAX_FREE_FACTOR = 100  # and those of them that cost next to nothing (Budget.free), apart, at most this many times
MAX_LOST_CONNECTIONS = 10  # storage connection losses in a row before a search gives up
Role = Literal["coordinator", "worker"]


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
    space_hash: str = ""

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

    @property
    def history_trials(self) -> int:
        """Prior trials given to the parts' samplers as history."""
        return sum(int(p.study.user_attrs.get(HISTORY_COUNT_ATTR, 0)) for p in self.parts)


class StudyRunner:
    """Runs a ``SearchMethod`` against an Optuna storage, logging into ``run`` (MLflow)."""

    def __init__(self, method: SearchMethod, storage: optuna.storages.BaseStorage, fingerprint: str,
                 run: RunLogger, *, progress: bool = True, log_every: int = 10,
                 role: Role = "coordinator", study_key: str | None = None) -> None:
        self.method = method
        self.spec = method.spec
        self.storage = storage
        self.fingerprint = fingerprint
        # what the studies are of, in their names: the data, and the variant of the search on it
        # (``SearchStage.study_key``: the recipe search's architecture); another variant on the
        # same data is a prior study to warm-start from, never a study to resume
        self.study_key = study_key or fingerprint
        self.run_logger = run
        self.progress = progress
        self.log_every = log_every
        self.role = role
        self.processes = Processes(storage)
        self.space_hash = space_hash(method.space())
        self.trial_sync = TrialSync(method, self.worker_id, {FINGERPRINT: fingerprint})

    @property
    def worker_id(self) -> str:
        return self.processes.worker_id

    # ------------------------------------------------------------------ identity

    def study_name(self, part: int) -> str:
        return study_name(self.spec.stage, self.space_hash, self.study_key, self.method.parts()[part])

    def _sampler(self, part: int, salt: int = 0) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return self.method.sampler(part, salt)

    # ------------------------------------------------------------------ open

    def open(self, part: int) -> tuple[optuna.Study, int, str | None]:
        """Create or resume the part's study; a new one is warm-started from the prior study.

        Returns the study, how many prior configurations were enqueued, and the prior's name.
        """
        warm_cfg = self.spec.warm
        study = optuna.create_study(study_name=self.study_name(part), storage=self.storage,
                                    sampler=self._sampler(part), load_if_exists=True,
                                    directions=self.spec.directions)
        fresh = not study.get_trials(deepcopy=False)
        found = find_prior(self.storage, self.spec.stage, self.space_hash, self.study_key,
                           self.method.parts()[part])
        prior = found.study
        warm = history = 0
        if prior is not None and fresh:
            carry(study, prior)  # results that outlive their data (reference scores), with provenance
            if warm_cfg.top_k:  # never more prior configurations than the warm budget runs
                others = self._other_parts(prior, part) if warm_cfg.all_parts else []
                warm = warm_start(study, prior, min(warm_cfg.top_k, self._warm_trials()), first=warm_cfg.first,
                                  others=others)
            if warm_cfg.history or warm_cfg.history_of is not None:  # after the enqueued ones: add_history
                # leaves a used study alone
                history = add_history(study, prior, only=None if warm_cfg.history else warm_cfg.history_of)
                study.set_user_attr(HISTORY_COUNT_ATTR, history)
            if warm or (history and warm_cfg.history):  # refused draws alone (history_of) inform the
                # sampler, not the budget: a search that re-trains nothing runs as a cold one does
                study.set_user_attr(WARM_ATTR, prior.study_name)
        if fresh and not warm:  # a cold part starts from the method's known-good points, if any
            for name, point in self.method.seed_points(part):
                study.enqueue_trial(point, user_attrs={SEEDED_ATTR: name})
        if fresh and found.cold_reason:
            # Never a silent mix of incompatible trials, never a crash: a cold start, said out loud.
            print(f"{study.study_name}: cold start: {found.cold_reason}", file=sys.stderr, flush=True)
            study.set_user_attr(COLD_ATTR, found.cold_reason)
        self._reseed(study, part)
        study.set_user_attr(FORMAT_ATTR, STUDY_FORMAT)
        study.set_user_attr(READY_ATTR, True)
        return study, warm, prior.study_name if prior is not None else None

    def _other_parts(self, prior: optuna.Study, part: int) -> list[optuna.Study]:
        """The usable studies (``load_prior``) of the other parts on the prior's data, same
        stage and space."""
        stage = self.spec.stage
        fingerprint = fingerprint_of(prior.study_name, stage)
        others = (load_prior(self.storage, study_name(stage, self.space_hash, fingerprint, name)).study
                  for k, name in enumerate(self.method.parts()) if k != part)
        return [other for other in others if other is not None]

    def _reseed(self, study: optuna.Study, part: int) -> None:
        """A seeded sampler replays its draws from the start. A resumed study (or one that
        holds a prior study's configurations) would re-propose what it already has, so it gets
        a sampler salted with its name and trial count: deterministic, but new draws. A new
        cold study keeps the plain seed."""
        n = len(study.get_trials(deepcopy=False))
        if n:
            study.sampler = self._sampler(part, salt=int_digest(f"{study.study_name}:{n}", 3))

    def join(self, part: int, timeout: float, poll: float = POLL_S) -> optuna.Study:
        """A worker's view of the part's study, once the coordinator has opened it."""
        return self.processes.join(self.study_name(part), lambda salt: self._sampler(part, salt),
                                   stage=self.spec.stage, timeout=timeout, poll=poll)

    # ------------------------------------------------------------------ budget

    def budget(self, study: optuna.Study) -> int:
        """Trials the part runs: ``trials_per_part``, or its warm share when the study was
        warm-started (the prior's best come first; the search then only refines them)."""
        return self._warm_trials() if study.user_attrs.get(WARM_ATTR) else self.spec.budget.trials_per_part

    def _warm_trials(self) -> int:
        return max(1, math.ceil(self.spec.budget.trials_per_part * self.spec.warm.budget))

    def counted(self, study: optuna.Study) -> int:
        return sum(1 for t in completed(study) if self.spec.budget.counts(t))

    def stalled(self, study: optuna.Study) -> bool:
        """A warm-started study whose best (or Pareto front) has not improved for ``patience``
        counted trials: it stops early. A cold study always runs its budget."""
        patience = self.spec.warm.patience
        if not patience or not study.user_attrs.get(WARM_ATTR):
            return False
        own = sorted((t for t in completed(study) if self.spec.budget.counts(t)), key=lambda t: t.number)
        if len(own) <= patience:
            return False
        best = {t.number for t in pareto_front(own, study.directions)}
        last_gain = max(i for i, t in enumerate(own) if t.number in best)
        return len(own) - 1 - last_gain >= patience

    # ------------------------------------------------------------------ optimise

    def optimise(self, part: int, study: optuna.Study, prepared: PreparedPart, part_run: RunLogger,
                 bar: tqdm | None = None) -> None:
        """Run trials until the part has its budget of finished trials that count (a resumed
        part runs only what is missing); this process's finished trials reach MLflow every
        ``log_every`` and on exit. Trials that do not count are capped at
        ``MAX_UNCOUNTED_FACTOR`` times the budget, so an impossible constraint ends quickly; those
        of them the method calls free (``Budget.free``: refused at next to no cost) are capped
        apart, at ``MAX_FREE_FACTOR`` times the budget.

        One trial at a time, so that trials other processes are running count as in
        progress: a worker stops when the budget is finished or in progress; the coordinator
        waits for the last trials of others (and runs any that a dead process left)."""
        budget = self.budget(study)
        counts, free = self.spec.budget.counts, self.spec.budget.free
        objective = self.processes.own(prepared.objective)
        since_sync = 0
        lost = 0

        def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            nonlocal since_sync
            if bar is not None and counts(trial):
                bar.update()
                if len(study.directions) == 1:
                    bar.set_postfix(best=f"{own_best_value(study):.4f}")
            since_sync += 1
            if since_sync >= self.log_every:
                self.trial_sync.sync(part, study, part_run)
                since_sync = 0

        try:
            while True:
                interrupt.check()  # a Ctrl-C that a finalizer dropped during the last trial
                try:
                    done = completed(study)
                    counted = sum(1 for t in done if counts(t))
                    missing = budget - counted
                    if missing <= 0:
                        break
                    cheap = sum(1 for t in done if not counts(t) and free(t))
                    if len(done) - counted - cheap >= MAX_UNCOUNTED_FACTOR * budget or cheap >= MAX_FREE_FACTOR * budget:
                        break  # the method's combine() says why nothing (more) counted
                    if self.stalled(study):
                        break
                    in_progress = self.processes.reap(study)
                    if in_progress >= missing:
                        if self.role == "worker":
                            break  # the last trials are someone else's
                        time.sleep(POLL_S)
                        continue
                    study.optimize(objective, n_trials=1, callbacks=[on_trial])
                    lost = 0
                except Exception as exc:
                    if not lost_connection(exc) or lost >= MAX_LOST_CONNECTIONS:
                        raise
                    lost += 1  # the storage's connections dropped (a restart): wait, then carry on
                    print(f"{study.study_name}: lost the storage connection ({first_line(exc)[:120]}); "
                          f"retrying in {POLL_S * lost:.0f} s", file=sys.stderr, flush=True)
                    time.sleep(POLL_S * lost)
                    with contextlib.suppress(Exception):  # the storage may still be away
                        self.processes.fail_own_running(study)
        finally:
            self.trial_sync.sync(part, study, part_run)
        if self.role == "coordinator":
            self.trial_sync.adopt(part, study, part_run)

    # ------------------------------------------------------------------ the whole search

    def run(self) -> SearchOutcome:
        """Open, prepare and optimise every part, then combine: the whole search, resumable."""
        method, spec = self.method, self.spec
        parts = method.parts()
        t_start = time.perf_counter()
        outcomes: list[PartOutcome] = []
        ranked_parts: list[list[FrozenTrial]] = []
        bar = tqdm(total=len(parts) * spec.budget.trials_per_part, desc=f"{spec.stage} ({spec.label})",
                   unit="trial", disable=not self.progress)
        try:
            for k, name in enumerate(parts):
                study, warm, prior = self.open(k)  # before its run: workers wait for the run
                part_run = self.trial_sync.part_run(self.run_logger, k, study.study_name)
                lineage = {WARM_START_FROM: study.user_attrs.get(WARM_ATTR),
                           COLD_START: study.user_attrs.get(COLD_ATTR), BUDGET: self.budget(study)}
                part_run.set_tags({key: v for key, v in lineage.items() if v is not None})
                bar.update(min(self.counted(study), spec.budget.trials_per_part))
                prepared = method.prepare(k, prior=study.user_attrs.get(WARM_ATTR))
                if prepared.metrics and part_run is not self.run_logger:
                    part_run.log_metrics(prepared.metrics)
                outcomes.append(PartOutcome(name, study, prepared, warm, prior))
                self.optimise(k, study, prepared, part_run, bar)
                ranked = rank_trials(completed(study), study.directions)
                ranked_parts.append(ranked)
                if part_run is not self.run_logger:
                    part_run.log_metrics({BEST_SCORE: ranked[0].values[0], PART_TRIALS: len(ranked)})
                    part_run.finish()
        finally:
            bar.close()
        priors = sorted({o.study.user_attrs[WARM_ATTR] for o in outcomes if o.study.user_attrs.get(WARM_ATTR)})
        if priors:  # lineage on the stage run: which earlier studies this search built on
            self.run_logger.set_tags({WARM_START_FROM: ",".join(priors)})
        result = method.combine(ranked_parts, [o.prepared for o in outcomes])
        return SearchOutcome(result, outcomes, time.perf_counter() - t_start, self.space_hash)
