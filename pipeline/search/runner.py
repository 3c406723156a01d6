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

Several processes can share one search (``autoaug worker``, on several hosts, through a
PostgreSQL storage and an MLflow server). The stage's process is the *coordinator*: it creates
the studies and the MLflow runs, and it returns only when every part has its budget of finished
trials, whoever ran them. A *worker* joins each part once the coordinator has opened it and runs
trials until the part's budget is finished or in progress. Every trial records the process that
runs it (``autoaug.worker``) and each process gives MLflow runs only to its own trials, so two
processes never log the same trial; the coordinator adopts the trials of a process that died
between finishing a trial and logging it. A trial whose process dies is failed (at once when the
process ran on this host, after the storage's heartbeat grace period otherwise) and re-queued
with the same parameters, so its configuration is not lost.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import DBAPIError
from tqdm.auto import tqdm

from pipeline.errors import AutoaugError, first_line
from pipeline.hashing import int_digest
from pipeline.search.studies import (
    FORMAT_ATTR,
    STUDY_FORMAT,
    add_history,
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
from pipeline.tracking import RunLogger

TRIAL_TAG = "autoaug.trial"
PART_TAG = "autoaug.fold"  # the tag name predates model search, where a part is the whole study
WORKER_ATTR = "autoaug.worker"  # trial user attribute: the process that ran it (host:pid:nonce)
READY_ATTR = "autoaug.ready"  # study user attribute: opened (and warm-started) by the coordinator
WARM_ATTR = "warm_started_from"  # study user attribute: the prior study it was warm-started from
COLD_ATTR = "autoaug.cold_start"  # study user attribute: why a prior study could not be used
HISTORY_COUNT_ATTR = "autoaug.history_trials"  # study user attribute: prior trials given to the sampler

MAX_UNCOUNTED_FACTOR = 20
SEEDED_ATTR = "seed_point"
"""Trial attribute: the name of the hand-designed point a cold study enqueued (``Method.seed_points``)."""
LINEAGE_TAGS = {"warm_start_from": "autoaug.warm_start_from", SEEDED_ATTR: "autoaug.seed_point"}
"""Where an enqueued trial came from: its user attribute -> the tag on its MLflow run."""
ADOPT_AFTER_S = 60.0  # a trial finished this long ago by a process on another host and still not
#                      logged is logged by the coordinator (its process is taken to have died)
POLL_S = 2.0  # how often the coordinator looks at trials that other processes are running
MAX_LOST_CONNECTIONS = 10  # storage connection losses in a row before a search gives up
Role = Literal["coordinator", "worker"]


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says a store's connection went away: a database
    error (Optuna wraps them in StorageInternalError and, mid-trial, can mask them with an
    AssertionError of its own) or a connection error."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, DBAPIError | optuna.exceptions.StorageInternalError | ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def process_id() -> str:
    """This process as trials record it: host, pid and a nonce (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def process_is_dead(owner: str) -> bool:
    """True only when ``owner`` ran on this host and its pid no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class WaitTimeout(AutoaugError):
    """A worker waited longer than it was allowed to for the coordinator."""
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

    @property
    def warm_budget(self) -> float:
        """Share of ``trials_per_part`` a warm-started part runs."""
        ...

    @property
    def patience(self) -> int:
        """A warm-started part stops after this many trials without a better one (0 = never)."""
        ...

    @property
    def warm_history(self) -> bool:
        """Whether a warm-started part's sampler gets the prior study's trials as history."""
        ...

    def warm_first(self, trial: FrozenTrial) -> bool:
        """Whether a prior trial is re-evaluated before the prior's ranked best on a warm start."""
        ...

    @property
    def warm_all_parts(self) -> bool:
        """Whether a warm-started part also re-evaluates the best of the other parts' prior
        studies (in turn with its own), not only its own part's."""
        ...

    def seed_points(self, part: int) -> list[tuple[str, dict[str, Any]]]:
        """(name, trial parameters) of hand-designed points a cold part evaluates first."""
        ...

    def space(self) -> dict[str, Any]:
        """What defines the search space: its hash is part of every study name."""
        ...

    def parts(self) -> list[str | None]: ...

    def sampler(self, part: int, salt: int = 0) -> optuna.samplers.BaseSampler:
        """The part's sampler, seeded from the method's seed plus ``salt`` (see ``open``)."""
        ...

    def prepare(self, part: int, prior: str | None = None) -> PreparedPart:
        """The part's heavy set-up, once per process. ``prior``: the name of the study the part
        was warm-started from (its data fingerprint finds the prior data's artefacts, e.g. a
        child model to fine-tune instead of training one from scratch)."""
        ...

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


class WarmSettings:
    """``warm_budget`` and ``patience`` of a method, read from its params section ``cfg``."""

    cfg: Any

    @property
    def warm_budget(self) -> float:
        return float(self.cfg.warm_budget)

    @property
    def patience(self) -> int:
        return int(self.cfg.patience)

    @property
    def warm_history(self) -> bool:
        return bool(self.cfg.warm_history)

    def warm_first(self, trial: FrozenTrial) -> bool:
        """Whether a prior trial is re-evaluated before the prior's ranked best (none, here)."""
        return False

    @property
    def warm_all_parts(self) -> bool:
        """Only the part's own prior study (a method whose parts are one problem may pool them)."""
        return False

    def seed_points(self, part: int) -> list[tuple[str, dict[str, Any]]]:
        """Hand-designed points a cold part evaluates first (none, here)."""
        return []


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

    @property
    def history_trials(self) -> int:
        """Prior trials given to the parts' samplers as history."""
        return sum(int(p.study.user_attrs.get(HISTORY_COUNT_ATTR, 0)) for p in self.parts)


class StudyRunner:
    """Runs a ``SearchMethod`` against an Optuna storage, logging into ``run`` (MLflow)."""

    def __init__(self, method: SearchMethod, storage: optuna.storages.BaseStorage, fingerprint: str,
                 run: RunLogger, *, warm_start: int = 0, progress: bool = True, log_every: int = 10,
                 role: Role = "coordinator") -> None:
        self.method = method
        self.storage = storage
        self.fingerprint = fingerprint
        self.run_logger = run
        self.warm_start = warm_start
        self.progress = progress
        self.log_every = log_every
        self.role = role
        self.worker_id = process_id()
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
        fresh = not study.get_trials(deepcopy=False)
        found = find_prior(self.storage, self.method.stage, self.space_hash, self.fingerprint,
                           self.method.parts()[part])
        prior = found.study
        warm = history = 0
        if prior is not None and fresh:
            if self.warm_start:  # never more prior configurations than the warm budget runs
                others = self._other_parts(prior, part) if self.method.warm_all_parts else []
                warm = warm_start(study, prior, min(self.warm_start, self._warm_trials()), first=self.method.warm_first,
                                  others=others)
            if self.method.warm_history:  # after the enqueued ones: add_history leaves a used study alone
                history = add_history(study, prior)
                study.set_user_attr(HISTORY_COUNT_ATTR, history)
            if warm or history:
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
        fingerprint = fingerprint_of(prior.study_name, self.method.stage)
        others = (load_prior(self.storage, study_name(self.method.stage, self.space_hash, fingerprint, name)).study
                  for k, name in enumerate(self.method.parts()) if k != part)
        return [other for other in others if other is not None]

    def budget(self, study: optuna.Study) -> int:
        """Trials the part runs: ``trials_per_part``, or its ``warm_budget`` share when the study
        was warm-started (the prior's best come first; the search then only refines them)."""
        return self._warm_trials() if study.user_attrs.get(WARM_ATTR) else self.method.trials_per_part

    def _warm_trials(self) -> int:
        return max(1, math.ceil(self.method.trials_per_part * self.method.warm_budget))

    def stalled(self, study: optuna.Study) -> bool:
        """A warm-started study whose best (or Pareto front) has not improved for ``patience``
        counted trials: it stops early. A cold study always runs its budget."""
        patience = self.method.patience
        if not patience or not study.user_attrs.get(WARM_ATTR):
            return False
        own = sorted((t for t in completed(study) if self.method.counts(t)), key=lambda t: t.number)
        if len(own) <= patience:
            return False
        best = {t.number for t in pareto_front(own, study.directions)}
        last_gain = max(i for i, t in enumerate(own) if t.number in best)
        return len(own) - 1 - last_gain >= patience

    def join(self, part: int, timeout: float, poll: float = POLL_S) -> optuna.Study:
        """A worker's view of the part's study, once the coordinator has opened it (created and
        warm-started: a worker never creates a study, so a warm start is enqueued once).
        Its sampler is salted with this process's id: workers draw different configurations."""
        deadline = time.monotonic() + timeout
        name = self.study_name(part)
        while True:
            try:
                study = optuna.load_study(study_name=name, storage=self.storage)
                if study.user_attrs.get(READY_ATTR):
                    break
            except KeyError:
                pass
            if time.monotonic() > deadline:
                raise WaitTimeout(f"study {name} was not opened within {timeout:.0f} s: is the "
                                  f"{self.method.stage} stage running (`dvc repro {self.method.stage}`)?")
            time.sleep(poll)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.sampler = self.method.sampler(part, salt=int_digest(f"{name}:{self.worker_id}", 3))
        return study

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

    def _owned(self, objective: Objective) -> Objective:
        """``objective`` with the trial marked as this process's (for logging and reaping)."""

        def run(trial: optuna.Trial) -> float | Sequence[float]:
            trial.set_user_attr(WORKER_ATTR, self.worker_id)
            return objective(trial)

        return run

    def reap(self, study: optuna.Study) -> int:
        """Fail the running trials of dead processes and re-queue their parameters: at once for
        a process of this host, after the heartbeat grace period for others. Returns how many
        trials other processes are still running."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get(WORKER_ATTR)
            if owner and owner != self.worker_id and process_is_dead(owner):
                self._fail_and_requeue(study, t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def _fail_own_running(self, study: optuna.Study) -> None:
        """This process's trials still marked running after a lost connection: they are not
        running any more. Failed and re-queued (same parameters) at once, not after the
        heartbeat grace period."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get(WORKER_ATTR) == self.worker_id:
                self._fail_and_requeue(study, t)

    def _fail_and_requeue(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Fail a running trial and queue its parameters again (the storage's retry callback)."""
        try:
            failed = self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except RuntimeError:  # finished meanwhile (optuna's UpdateFinishedTrialError)
            return
        retry = getattr(self.storage, "heartbeat_stale_trial_callback", None)
        if failed and retry is not None:
            retry(study, self.storage.get_trial(trial._trial_id))

    def optimise(self, part: int, study: optuna.Study, prepared: PreparedPart, part_run: RunLogger,
                 bar: tqdm | None = None) -> None:
        """Run trials until the part has ``trials_per_part`` finished ones that count (a
        resumed part runs only what is missing); this process's finished trials reach MLflow
        every ``log_every`` and on exit. Trials that do not count are capped at
        ``MAX_UNCOUNTED_FACTOR`` times the budget, so an impossible constraint ends quickly.

        One trial at a time, so that trials other processes are running count as in
        progress: a worker stops when the budget is finished or in progress; the coordinator
        waits for the last trials of others (and runs any that a dead process left)."""
        budget = self.budget(study)
        objective = self._owned(prepared.objective)
        since_sync = 0
        lost = 0

        def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            nonlocal since_sync
            if bar is not None and self.method.counts(trial):
                bar.update()
                if len(study.directions) == 1:
                    bar.set_postfix(best=f"{own_best_value(study):.4f}")
            since_sync += 1
            if since_sync >= self.log_every:
                self.sync(part, study, part_run)
                since_sync = 0

        try:
            while True:
                try:
                    done = completed(study)
                    counted = sum(1 for t in done if self.method.counts(t))
                    missing = budget - counted
                    if missing <= 0:
                        break
                    if len(done) - counted >= MAX_UNCOUNTED_FACTOR * budget:
                        break  # the method's combine() says why nothing (more) counted
                    if self.stalled(study):
                        break
                    in_progress = self.reap(study)
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
                        self._fail_own_running(study)
        finally:
            self.sync(part, study, part_run)
        if self.role == "coordinator":
            self.adopt(part, study, part_run)

    def _logged(self, part_run: RunLogger) -> dict[str, list[str]]:
        """This part's trial runs by trial number; a trial logged twice (two processes racing
        to adopt it) keeps its first run and the others are deleted."""
        runs = part_run.children_runs(TRIAL_TAG)
        for number, ids in runs.items():
            for extra in ids[1:]:
                part_run.client.delete_run(extra)
            runs[number] = ids[:1]
        return runs

    def sync(self, part: int, study: optuna.Study, part_run: RunLogger, *, adopt: bool = False) -> int:
        """Give this process's finished trials their nested MLflow run, once (idempotent: safe
        after a restart). With ``adopt``, also the trials of processes that died or were on
        another host more than ``ADOPT_AFTER_S`` ago. Returns how many finished trials of
        others are still waiting for their own process to log them."""
        logged = self._logged(part_run)
        name = self.method.parts()[part]
        pending = 0
        for t in completed(study):
            if str(t.number) in logged or t.values is None:
                continue
            owner = t.user_attrs.get(WORKER_ATTR)
            if owner and owner != self.worker_id:
                finished_ago = time.time() - t.datetime_complete.timestamp() if t.datetime_complete else 0.0
                if not adopt or not (process_is_dead(owner) or finished_ago > ADOPT_AFTER_S):
                    pending += 1
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
                tags={**self.tags, "optuna.study": study.study_name, "optuna.trial": t.number,
                      WORKER_ATTR: owner or self.worker_id,
                      **{tag: t.user_attrs[attr] for attr, tag in LINEAGE_TAGS.items() if attr in t.user_attrs}},
                dicts=self.method.trial_artifacts(t),
            )
        return pending

    def adopt(self, part: int, study: optuna.Study, part_run: RunLogger) -> None:
        """The coordinator's last sync of a part: wait for the other processes to log their
        trials, and log those of processes that died, so every finished trial has one run."""
        while self.sync(part, study, part_run, adopt=True):
            time.sleep(POLL_S)
        self._logged(part_run)  # a race with a late owner leaves a duplicate: drop it

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
                study, warm, prior = self.open(k)  # before its run: workers wait for the run
                part_run = self.part_run(k)
                lineage = {"autoaug.warm_start_from": study.user_attrs.get(WARM_ATTR),
                           "autoaug.cold_start": study.user_attrs.get(COLD_ATTR),
                           "autoaug.budget": self.budget(study)}
                part_run.set_tags({key: v for key, v in lineage.items() if v is not None})
                bar.update(min(self.counted(study), method.trials_per_part))
                prepared = method.prepare(k, prior=study.user_attrs.get(WARM_ATTR))
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
        priors = sorted({o.study.user_attrs[WARM_ATTR] for o in outcomes if o.study.user_attrs.get(WARM_ATTR)})
        if priors:  # lineage on the stage run: which earlier studies this search built on
            self.run_logger.set_tags({"autoaug.warm_start_from": ",".join(priors)})
        result = method.combine(ranked_parts, [o.prepared for o in outcomes])
        return SearchOutcome(result, outcomes, time.perf_counter() - t_start)

