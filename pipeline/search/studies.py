"""Study identity, storage and warm start.

Study identity = stage + hash of the search space + data fingerprint. A new fingerprint means a
new study; it is warm-started from the most recent prior study with the same stage and space
hash by re-evaluating that study's best configurations first (``enqueue_trial``) and,
optionally, by giving the sampler the prior's finished trials as history (``add_history``).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline.errors import ConfigError, first_line
from pipeline.files import ensure_sqlite_dir, sqlite_setup_lock
from pipeline.hashing import json_digest
from pipeline.names import (
    CARRIED_PREFIX,
    DIVERGED_ATTR,
    FORMAT_ATTR,
    HISTORY_ATTR,
    STOPPED_AT_ATTR,
    WARM_FROM_ATTR,
)

HEARTBEAT_S = 30  # a running trial's process writes a heartbeat this often; stale after 3 x


def space_hash(space: Any) -> str:
    """A short, order-independent hash of a JSON-serialisable search-space description
    (8 hex characters: part of every study name, so its size is part of the format)."""
    return json_digest(space, size=4)


def search_name(stage: str, space: Any, fingerprint: str) -> str:
    """The identity of a whole search (its stage's MLflow run is resumed by it): the study
    name without a part, from the search-space description itself."""
    return study_name(stage, space_hash(space), fingerprint)


def study_name(stage: str, space: str, fingerprint: str, part: str | None = None) -> str:
    name = f"{stage}-{space}-{fingerprint}"
    return f"{name}-{part}" if part else name


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage, or a ConfigError naming the URL when it cannot be reached.

    The heartbeat lets a restarted stage (or another worker sharing the storage) mark trials of
    a killed process as failed instead of waiting on them for ever; a failed trial's parameters
    are re-queued (``RetryHeartbeatStaleTrialCallback``, Optuna 5's replacement of the
    deprecated ``RetryFailedTrialCallback``), at most twice.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ensure_sqlite_dir(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            with sqlite_setup_lock(url):  # two processes creating one new SQLite file race otherwise
                storage = optuna.storages.RDBStorage(
                    # a server's connections can drop (restart, failover): test each before use
                    url, engine_kwargs=None if url.startswith("sqlite") else {"pool_pre_ping": True},
                    heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
        if url.startswith("sqlite"):
            _fast_sqlite(storage)
        storage.get_all_studies()
    except Exception as exc:  # noqa: BLE001 - connection, driver or URL errors all mean "unusable"
        raise ConfigError(
            f"tracking.optuna_storage = {url!r}: cannot open the study storage ({first_line(exc)[:200]})"
        ) from None
    return storage


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """WAL journal + synchronous=NORMAL: Optuna commits once per suggested parameter, and with
    SQLite's default (a full fsync per commit) that bookkeeping cost more than scoring a policy.
    WAL stays crash-safe: a power cut can lose the last commits, never corrupt the file."""
    from sqlalchemy import event

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened during set-up reconnect with the pragmas


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's own finished trials: what is ranked, counted against the budget and logged.
    Trials copied from a prior study as sampler history (``add_history``) are not among them."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if HISTORY_ATTR not in t.user_attrs]


def fingerprint_of(name: str, stage: str) -> str:
    """The data fingerprint in a study name (``study_name``'s format: stage-space-fingerprint[-part])."""
    return name.removeprefix(f"{stage}-").split("-")[1]


STUDY_FORMAT = 1  # bumped when a trial's record changes meaning


@dataclass
class Prior:
    """What a new study can warm-start from: the study, or why there is none (said out loud)."""

    study: optuna.Study | None
    cold_reason: str | None = None  # None with no study: nothing before it (the first search)
    empty: bool = False  # the study had no finished trial of its own


def find_prior(storage: optuna.storages.BaseStorage, stage: str, space: str, fingerprint: str,
               part: str | None = None) -> Prior:
    """The most recent study of the same stage, space and part on other data; or, when there is
    none that can be used, the reason: the search space changed, the prior study is empty,
    unreadable or from an incompatible version."""
    same: list[tuple[Any, str, int]] = []
    other: list[tuple[Any, str]] = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        name = s.study_name
        if not name.startswith(f"{stage}-") or fingerprint in name or s.datetime_start is None:
            continue
        if part is not None and not name.endswith(f"-{part}"):
            continue
        (same.append((s.datetime_start, name, s.n_trials)) if name.startswith(f"{stage}-{space}-")
         else other.append((s.datetime_start, name)))
    if not same:
        if other:
            old = max(other)[1]
            return Prior(None, f"the search space changed since {old} (space hash "
                               f"{old.removeprefix(stage + '-').split('-')[0]} -> {space})")
        return Prior(None)
    # newest first; one without a finished trial of its own (a warm start interrupted before its
    # first trial, holding only the sampler history it was given) gives way to the one before it
    newest: Prior | None = None
    for _, name, n_trials in sorted(same, reverse=True):
        prior = load_prior(storage, name, n_trials)
        newest = newest or prior
        if prior.study is not None or not prior.empty:
            return prior if prior.study is not None else newest
    assert newest is not None  # ``same`` is not empty
    return newest


def load_prior(storage: optuna.storages.BaseStorage, name: str, n_trials: int | None = None) -> Prior:
    """The study ``name`` when a warm start can use it; otherwise why not: it is missing or
    cannot be read, was written by an incompatible version, or has no finished trial
    (``n_trials``: its trial count as a summary gave it, for the message)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        version = study.user_attrs.get(FORMAT_ATTR, STUDY_FORMAT)
        finished = completed(study)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, it is not usable
        return Prior(None, f"the prior study {name} cannot be read ({first_line(exc)[:120]})")
    if version != STUDY_FORMAT:
        return Prior(None, f"the prior study {name} was written by an incompatible version "
                           f"(format {version}, this version reads {STUDY_FORMAT})")
    if not finished:
        return Prior(None, f"the prior study {name} has no finished trial "
                           f"({len(study.get_trials(deepcopy=False)) if n_trials is None else n_trials} in all)",
                     empty=True)
    return Prior(study)


def _dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[int]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (``signs``: +1 maximise)."""
    better = False
    for x, y, sign in zip(a, b, signs, strict=True):
        if sign * x < sign * y:
            return False
        better |= sign * x > sign * y
    return better


def _signs(directions: Sequence[optuna.study.StudyDirection]) -> list[int]:
    return [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in directions]


def _fronts(trials: Sequence[optuna.trial.FrozenTrial], signs: Sequence[int]) -> Iterator[list[optuna.trial.FrozenTrial]]:
    """Non-dominated sorting: the non-dominated trials, then those only they dominate, ...;
    each front by its first objective, best first."""
    remaining = [t for t in trials if t.values is not None]
    while remaining:
        front = [t for t in remaining
                 if not any(_dominates(o.values, t.values, signs) for o in remaining if o is not t)]
        front.sort(key=lambda t: signs[0] * t.values[0], reverse=True)
        yield front
        remaining = [t for t in remaining if all(t is not f for f in front)]


def rank_trials(trials: Sequence[optuna.trial.FrozenTrial],
                directions: Sequence[optuna.study.StudyDirection]) -> list[optuna.trial.FrozenTrial]:
    """Finished trials, best first.

    One objective: by value (stable: ties keep trial order). Several: by Pareto front, then by
    the first objective within a front. Multi-objective trials have no single ``value`` to
    sort by.
    """
    signs = _signs(directions)
    if len(signs) == 1:
        scored = [t for t in trials if t.values is not None]
        return sorted(scored, key=lambda t: t.values[0], reverse=signs[0] > 0)
    return [t for front in _fronts(trials, signs) for t in front]


def pareto_front(trials: Sequence[optuna.trial.FrozenTrial],
                 directions: Sequence[optuna.study.StudyDirection]) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated trials (the first front of ``rank_trials``), best first objective first."""
    return next(_fronts(trials, _signs(directions)), [])


def add_history(study: optuna.Study, prior: optuna.Study,
                only: Callable[[FrozenTrial], bool] | None = None) -> int:
    """Copy the prior study's finished trials (those for which ``only`` is true, when given)
    into ``study`` as finished trials marked ``HISTORY_ATTR`` (the prior study's name): the
    sampler models them from the first trial (TPE needs no random start-up trials), while
    ranking, budgets and MLflow see only the study's own trials (``completed``). Their values
    were measured on the prior data: a sampler treats them as approximate. Constraint values
    are kept, so a constrained sampler still knows what was over budget. Returns how many were
    copied; only done once per study."""
    if any(HISTORY_ATTR in t.user_attrs for t in study.get_trials(deepcopy=False)):
        return 0
    copies = [
        optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, values=t.values,
            user_attrs={HISTORY_ATTR: prior.study_name},
            system_attrs={k: v for k, v in t.system_attrs.items() if k.split(":")[0] == "constraints"},
        )
        for t in completed(prior) if only is None or only(t)
    ]
    study.add_trials(copies)
    return len(copies)


def own_best_value(study: optuna.Study) -> float:
    """The best first-objective value among the study's own trials (``study.best_value`` would
    include the prior trials copied in as sampler history)."""
    return float(rank_trials(completed(study), study.directions)[0].values[0])


def carry(study: optuna.Study, prior: optuna.Study) -> None:
    """Copy the prior study's carried attributes (``names.CARRIED_PREFIX``: results that outlive
    their data, such as a reference network's score) that ``study`` does not have yet, so a chain
    of warm starts keeps them with their provenance."""
    for key, value in prior.user_attrs.items():
        if key.startswith(CARRIED_PREFIX) and key not in study.user_attrs:
            study.set_user_attr(key, value)


def warm_start(study: optuna.Study, prior: optuna.Study, top_k: int,
               first: Callable[[FrozenTrial], bool] | None = None,
               others: Sequence[optuna.Study] = ()) -> int:
    """Enqueue the ``top_k`` best configurations of ``prior``; returns how many were enqueued.
    Prior trials for which ``first`` is true come before the ranking (e.g. the model search's
    @champion architecture, which the ranking may put beyond ``top_k``).

    ``others``: more prior studies of the same search on the same data (the policy search's
    other folds). Then the ``top_k`` are taken in turn: the prior's best, each other study's
    best, the prior's second, ... (a configuration already taken is skipped). Each enqueued
    trial records the study it came from (``warm_start_from``).

    Works for any number of objectives (``rank_trials``). Only done once per study (a study
    that already has trials was warm-started or has its own history), so a resumed stage does
    not enqueue them again.
    """
    if study.get_trials(deepcopy=False):
        return 0
    queues: list[tuple[str, list[FrozenTrial]]] = []
    for source in (prior, *others):
        ranked = rank_trials(completed(source), source.directions)
        if first is not None:
            ranked.sort(key=lambda t: not first(t))  # stable: the ranking holds within each group
        queues.append((source.study_name, ranked))
    seen: set[str] = set()
    n = 0
    for round_ in range(max(len(ranked) for _, ranked in queues)):
        for name, ranked in queues:
            if round_ >= len(ranked):
                continue
            t = ranked[round_]
            key = json.dumps(t.params, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            study.enqueue_trial(t.params, user_attrs={WARM_FROM_ATTR: name})
            n += 1
            if n >= top_k:
                return n
    return n


def mark_diverged(trial: optuna.Trial, error: Exception) -> None:
    """A trial whose training diverged (a non-finite loss: too high an lr for this network) or
    collapsed (``TrainingCollapsedError``: its accuracy back to chance with a finite loss):
    said on the trial, and infeasible (constraint ``diverged``), so it is never on a front nor
    chosen, while the search goes on. What it cost counts as a trained trial (``trained``)."""
    trial.set_user_attr(DIVERGED_ATTR, str(error))
    trial.set_constraint(DIVERGED_ATTR, 1.0)


def diverged(trial: FrozenTrial) -> bool:
    return DIVERGED_ATTR in trial.user_attrs


def trained(trial: FrozenTrial) -> bool:
    """A trial that trained something (what a search's budget counts): within every budget,
    stopped at a rung by the model search's successive halving, or diverged. A draw a budget
    refused was never trained."""
    return feasible(trial) or STOPPED_AT_ATTR in trial.user_attrs or diverged(trial)


def feasible(trial: FrozenTrial) -> bool:
    """Within every budget (what ``Trial.set_constraint`` recorded; none recorded = feasible)."""
    return all(v <= 0 for v in trial.constraints.values())
