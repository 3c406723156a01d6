"""Several processes on one search: who runs a trial, reaping the trials of dead processes,
and a worker joining a part the coordinator opened.

Every trial records the process that runs it (``WORKER_ATTR``: host, pid and a nonce). A trial
whose process dies is failed (at once when the process ran on this host, after the storage's
heartbeat grace period otherwise) and re-queued with the same parameters, so its configuration
is not lost. A trial that never got an owner (its process lost the storage, or died, between
creating the trial and marking it; it has no heartbeat either) is failed and re-queued once this
process has seen it ownerless for the grace period. A storage whose connections drop (a database
restart) is waited for, not fatal.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import DBAPIError

from pipeline.errors import AutoaugError
from pipeline.hashing import int_digest
from pipeline.names import READY_ATTR, WORKER_ATTR
from pipeline.search.method import Objective

POLL_S = 2.0  # how often a process looks at trials that other processes are running
ORPHAN_GRACE_S = 90.0  # an ownerless running trial is reaped after this long, where the storage sets no
                       # heartbeat grace period (a trial is ownerless only while its sampler draws)


class WaitTimeout(AutoaugError):
    """A worker waited longer than it was allowed to for the coordinator."""


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


class Processes:
    """This process among those sharing a search's storage."""

    def __init__(self, storage: optuna.storages.BaseStorage, orphan_grace_s: float | None = None) -> None:
        self.storage = storage
        self.worker_id = process_id()
        grace = getattr(storage, "grace_period", None)
        self.orphan_grace_s = float(orphan_grace_s if orphan_grace_s is not None else grace or ORPHAN_GRACE_S)
        self._ownerless_since: dict[int, float] = {}  # trial id -> when this process first saw it ownerless

    def own(self, objective: Objective) -> Objective:
        """``objective`` with the trial marked as this process's (for logging and reaping)."""

        def run(trial: optuna.Trial) -> float | Sequence[float]:
            trial.set_user_attr(WORKER_ATTR, self.worker_id)
            return objective(trial)

        return run

    def reap(self, study: optuna.Study) -> int:
        """Fail the running trials of dead processes and re-queue their parameters: at once for
        a process of this host, after the heartbeat grace period for others, and a trial without
        an owner once this process has seen it so for ``orphan_grace_s`` (its own clock: the
        trial's start time is another host's). Returns how many trials other processes are still
        running."""
        now = time.monotonic()
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        ownerless = {t._trial_id for t in running if not t.user_attrs.get(WORKER_ATTR)}
        self._ownerless_since = {i: self._ownerless_since.get(i, now) for i in ownerless}
        for t in running:
            owner = t.user_attrs.get(WORKER_ATTR)
            if owner and owner != self.worker_id and process_is_dead(owner):
                self._fail_and_requeue(study, t)
            elif not owner and now - self._ownerless_since[t._trial_id] >= self.orphan_grace_s:
                self._fail_and_requeue(study, t)  # no longer running: the next call's map drops it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def fail_own_running(self, study: optuna.Study) -> None:
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

    def join(self, name: str, sampler: Callable[[int], optuna.samplers.BaseSampler], *, stage: str,
             timeout: float, poll: float = POLL_S) -> optuna.Study:
        """A worker's view of the study ``name``, once the coordinator has opened it (created and
        warm-started: a worker never creates a study, so a warm start is enqueued once). Its
        sampler (``sampler(salt)``) is salted with this process's id: workers draw different
        configurations."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                study = optuna.load_study(study_name=name, storage=self.storage)
                if study.user_attrs.get(READY_ATTR):
                    break
            except KeyError:
                pass
            if time.monotonic() > deadline:
                raise WaitTimeout(f"study {name} was not opened within {timeout:.0f} s: is the "
                                  f"{stage} stage running (`dvc repro {stage}`)?")
            time.sleep(poll)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.sampler = sampler(int_digest(f"{name}:{self.worker_id}", 3))
        return study
