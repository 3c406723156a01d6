"""`autoaug worker STAGE`: more processes (on more hosts) for the running search of a stage.

The stage itself (``dvc repro``) is the coordinator: it opens the studies, owns the MLflow stage
run and writes the outputs. A worker reads the same params and sample, waits until the
coordinator has opened a part (a policy-search fold, or the model search's one study), runs
trials in it until its budget is finished or in progress, logs its own trials as nested runs of
the stage run, and moves on to the next part. It never writes a stage output, so the result is
the one a single-machine run writes. Children of the policy search are trained (or read from a
shared ``--cache-dir``) by every process that needs them; they are seeded, so all processes
score policies against the same child.

Made to be restarted by a supervisor (compose ``restart: on-failure``) and to ride out outages:
an unreachable store at start is retried with back-off for ``wait`` seconds, and a store that
drops mid-search (PostgreSQL restarted) makes the worker wait and rejoin; finished trials are in
the storage already, and the trial that was running is re-queued by the heartbeat.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from pipeline.config import Params
from pipeline.contracts import Chosen
from pipeline.errors import AutoaugError, ConfigError, DataError, first_line
from pipeline.names import PART, WARM_ATTR, WORKER_ATTR
from pipeline.search.method import SearchMethod
from pipeline.search.registry import SEARCH_STAGES, SearchStage, search_stage
from pipeline.search.runner import StudyRunner
from pipeline.search.studies import completed
from pipeline.search.workers import WaitTimeout, lost_connection
from pipeline.stages.common import StageInputs, open_inputs, search_input_policy
from pipeline.tracking import RunLogger

BACKOFF_MAX_S = 30.0
T = TypeVar("T")


def _say(message: str) -> None:
    print(f"autoaug worker: {message}", file=sys.stderr, flush=True)


def with_backoff(what: str, attempt: Callable[[], T], deadline: float,
                 retry_on: tuple[type[BaseException], ...] = (ConfigError, DataError)) -> T:
    """``attempt()`` until it succeeds, waiting 1, 2, 4 ... (at most 30) seconds between tries
    and saying why; after ``deadline`` (time.monotonic) the last error is raised."""
    delay = 1.0
    while True:
        try:
            return attempt()
        except retry_on as exc:
            if time.monotonic() + delay > deadline:
                raise
            _say(f"{what}: {first_line(exc)}; retrying in {delay:.0f} s")
            time.sleep(delay)
            delay = min(2 * delay, BACKOFF_MAX_S)


def _lost_connection(exc: BaseException) -> bool:
    """An error that means the storage or tracking server went away (worth rejoining)."""
    if lost_connection(exc):
        return True
    name = type(exc).__name__
    return name in {"MlflowException", "RestException"} and "connect" in str(exc).lower()


def current_chosen(spec: SearchStage[Any, Any], params: Params, inputs: StageInputs,
                   chosen_path: str | os.PathLike[str]) -> Chosen | None:
    """chosen.json for a search that trains the chosen model (the recipe search; None for the
    others), chosen on this sample: one of older data is waited for (DataError), not used."""
    if not spec.uses_chosen(params):
        return None
    chosen = Chosen.read(chosen_path)
    if chosen.fingerprint not in ("", inputs.fingerprint):
        raise DataError(f"{chosen_path} was chosen on sample {chosen.fingerprint}, not on this sample "
                        f"({inputs.fingerprint}); waiting for search_model to write the new one")
    return chosen


def build_method(spec: SearchStage[Any, Any], params: Params, inputs: StageInputs, *,
                 policy_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None,
                 progress: bool, chosen: Chosen | None = None) -> SearchMethod:
    """The stage's search method, built through its registered spec exactly as the stage builds
    it. A policy the search trains with must be the one found on this sample (a policy of older
    data is waited for, not used); so must the chosen model a search trains (the recipe search:
    ``chosen``, from ``current_chosen``, the one whose stage run the worker joined)."""
    policy = search_input_policy(spec.uses_policy(params), policy_path, fingerprint=inputs.fingerprint)
    context = spec.context(params, inputs.sample, inputs.fingerprint, cache_root=cache_dir, progress=progress,
                           policy=policy, tracker=inputs.tracker, chosen=chosen,
                           retrain_images=int(inputs.manifest["pool_size"]))
    method: SearchMethod = spec.build(context)
    return method


def run_worker(params: Params, stage: str, *, sample_dir: str | os.PathLike[str] = "data/sample",
               policy_path: str | os.PathLike[str] = "outputs/search_policy/policy.json",
               cache_dir: str | os.PathLike[str] | None = ".autoaug/cache", wait: float = 0.0,
               progress: bool = True, poll: float = 2.0,
               chosen_path: str | os.PathLike[str] = "outputs/search_model/chosen.json") -> dict[str, Any]:
    """Join the stage's running search until every part has its trials; returns what it did.

    ``wait``: seconds to wait for what is not there yet (the stores, the sample, the policy,
    the coordinator's runs and studies); 0 = fail at once with the reason.
    """
    if stage not in SEARCH_STAGES:
        raise AutoaugError(f"worker: unknown stage {stage!r}; a worker joins one of {', '.join(SEARCH_STAGES)}")
    spec = search_stage(stage)
    deadline = time.monotonic() + wait
    inputs = with_backoff("opening the sample and the stores", lambda: open_inputs(params, sample_dir), deadline)

    def stage_run() -> tuple[RunLogger, str, Chosen | None, str]:
        # the identity holds the variant (the recipe search's architecture): read from chosen.json each try
        chosen = current_chosen(spec, params, inputs, chosen_path)
        identity = spec.identity(params, inputs.fingerprint, chosen)
        found = inputs.tracker.find_stage_run(stage, identity)
        if found is None:
            raise WaitTimeout(f"no {stage} run for study {identity} yet: start the stage (`dvc repro {stage}`)")
        return (*found, chosen, identity)

    run, status, chosen, identity = with_backoff("waiting for the coordinator", stage_run, deadline,
                                                 retry_on=(WaitTimeout, ConfigError, DataError))
    if status == "FINISHED":
        _say(f"{stage}: the search {identity} is already finished; nothing to do")
        return {"stage": stage, "study": identity, "trials": 0, "parts": 0}
    # After the stage run exists: the inputs it reads (the model search's policy) are current.
    method = with_backoff(
        "reading the stage's inputs",
        lambda: build_method(spec, params, inputs, policy_path=policy_path, cache_dir=cache_dir, progress=progress,
                             chosen=chosen),
        deadline)
    runner = spec.runner(method, inputs.storage, run, params, inputs.fingerprint, chosen=chosen, progress=progress,
                         role="worker")
    _say(f"{stage}: joining {identity} as {runner.worker_id}")
    trials = sum(_rejoining(stage, partial(_work_on_part, runner, k, name, deadline, poll))
                 for k, name in enumerate(method.parts()))
    _say(f"{stage}: every part has its trials; this worker ran {trials}")
    return {"stage": stage, "study": identity, "trials": trials, "parts": len(method.parts())}


def _rejoining(stage: str, work: Callable[[], int]) -> int:
    """``work()``, run again after a lost connection (the storage or tracking server went away)
    until it finishes; any other error is raised."""
    while True:
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - only a lost connection is retried
            if not _lost_connection(exc):
                raise
            _say(f"{stage}: lost the connection ({first_line(exc)[:160]}); rejoining in 5 s")
            time.sleep(5)


def _work_on_part(runner: StudyRunner, k: int, name: str | None, deadline: float, poll: float) -> int:
    """Join part ``k`` (waiting for the coordinator to open it) and run trials; returns how
    many finished trials this process added."""
    method = runner.method
    remaining = max(deadline - time.monotonic(), 0.0)

    def part_run() -> RunLogger:
        if name is None:
            return runner.run_logger
        found = runner.run_logger.children(PART).get(str(k))
        if found is None:
            raise WaitTimeout(f"part {name} is not open yet")
        return RunLogger(runner.run_logger.tracker, runner.run_logger.experiment_id, found, resumed=True)

    # The coordinator opens the parts in order; a worker waits for each as long as it takes
    # (the coordinator may be training the previous part's child), polling gently.
    logger = with_backoff(f"waiting for {name or 'the study'}", part_run, time.monotonic() + max(remaining, 3600.0),
                          retry_on=(WaitTimeout,))
    study = runner.join(k, timeout=max(remaining, 3600.0), poll=poll)
    if runner.counted(study) >= runner.budget(study):
        return 0  # nothing left: do not train the part's child for nothing
    prepared = method.prepare(k, prior=study.user_attrs.get(WARM_ATTR))
    runner.optimise(k, study, prepared, logger)
    return sum(1 for t in completed(study) if t.user_attrs.get(WORKER_ATTR) == runner.worker_id)
