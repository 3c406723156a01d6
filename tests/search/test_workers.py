"""Several processes share one search: `autoaug worker` beside the stage (the coordinator).

Real processes on one SQLite storage and one MLflow store, as the compose services run them
(tests/deploy runs the same on PostgreSQL and an MLflow server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

from pipeline.config import Params, load_params
from pipeline.names import WORKER_ATTR
from pipeline.tracking import Tracker

BIN = Path(sys.executable).parent


def _write_params(params: Params, path: Path, **policy: object) -> Path:
    raw = params.model_dump()
    raw["policy_search"].update(policy)
    path.write_text(yaml.safe_dump(raw))
    return path


def _spawn(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    # SIGINT back to its default in the child: a test suite run as a background job (nohup, `&` in a
    # script) ignores SIGINT, the child would inherit that, and a Ctrl-C test would see it ignored
    return subprocess.Popen([str(BIN / "autoaug"), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> str:
    # a wait, not a speed check: 2 x 400 policy trials took over 240 s on 2 cores shared with a training run
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def _trial_runs(params: Params) -> list:
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    runs = tracker.client.search_runs([tracker.experiment_id("search_policy")], max_results=5000)
    return [r for r in runs if "autoaug.trial" in r.data.tags]


def _studies(params: Params) -> list[optuna.Study]:
    storage = optuna.storages.RDBStorage(params.tracking.optuna_storage)
    return [optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)]


def _check_one_run_per_trial(params: Params, studies: list[optuna.Study]) -> None:
    keys = [(r.data.tags["optuna.study"], r.data.tags["autoaug.trial"]) for r in _trial_runs(params)]
    done = [(s.study_name, str(t.number)) for s in studies for t in s.get_trials(states=(TrialState.COMPLETE,))]
    assert Counter(keys) == Counter(done)  # every finished trial logged once, nothing else


def test_a_worker_and_the_stage_share_the_search(tmp_path: Path, sample_dir: Path, params: Params) -> None:
    budget = 30
    path = _write_params(params, tmp_path / "params.yaml", trials_per_fold=budget)
    common = ["--params", str(path), "--sample", str(sample_dir), "--cache-dir", str(tmp_path / "cache"),
              "--no-progress"]
    worker = _spawn("worker", "search_policy", "--wait", "120", *common, cwd=tmp_path)  # before the stage
    stage = _spawn("search-policy", "--out", str(tmp_path / "out"), *common, cwd=tmp_path)
    stage_out, worker_out = _finish(stage), _finish(worker)

    studies = _studies(params)
    assert len(studies) == 2
    owners: Counter[str] = Counter()
    for study in studies:
        done = study.get_trials(states=(TrialState.COMPLETE,))
        # one trial at a time per process: at most one extra when both start the last one
        assert budget <= len(done) <= budget + 1
        owners.update(t.user_attrs[WORKER_ATTR] for t in done)
    assert len(owners) == 2, (owners, worker_out)  # both processes ran trials
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["trials"] == sum(len(s.get_trials(states=(TrialState.COMPLETE,))) for s in studies)
    _check_one_run_per_trial(params, studies)
    assert "trials run in 2 part(s)" in worker_out, worker_out
    assert "search_policy:" in stage_out


def test_a_killed_worker_loses_no_trial_and_its_configuration_is_retried(
    tmp_path: Path, sample_dir: Path, params: Params,
) -> None:
    # Fold 0 must outlast the test's polling (the stage alone ran 2 x 40 trials in 24 s on a fast
    # CPU, and 2 x 80 in 36 s before a poll saw its fold run) and keep the worker busy while the
    # test watches it.
    # CI once saw the whole stage (2 x 200 trials, 0.7 min) finish before the first poll came back:
    # the MLflow store is set up before the stage starts, so that the first poll is quick.
    budget = 400
    path = _write_params(params, tmp_path / "params.yaml", trials_per_fold=budget, folds=2)
    common = ["--params", str(path), "--sample", str(sample_dir), "--cache-dir", str(tmp_path / "cache"),
              "--no-progress"]
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)  # once: polls stay fast
    _fold_run_exists(tracker, params)
    # The stage opens fold 0 and is stopped (Ctrl-C) while the worker searches it alone.
    stage = _spawn("search-policy", "--out", str(tmp_path / "out"), *common, cwd=tmp_path)
    storage = optuna.storages.RDBStorage(load_params(path).tracking.optuna_storage)
    deadline = time.monotonic() + 180
    while not _fold_run_exists(tracker, params):
        assert time.monotonic() < deadline, "the stage never opened fold 0"
        # The fold run is opened after its study (runner.run), so it alone says the stage is in fold 0.
        assert stage.poll() is None, "the stage finished fold 0 before the test saw it: raise the budget"
        time.sleep(0.2)
    assert stage.poll() is None, "the stage finished before the test saw fold 0 open: raise the budget"
    stage.send_signal(signal.SIGINT)
    _finish_interrupted(stage)
    killed = None
    for _ in range(5):  # a trial can finish between the poll that saw it running and the kill: try again
        worker = _spawn("worker", "search_policy", "--wait", "60", *common, cwd=tmp_path)
        seen = _worker_running_a_trial(storage, worker, deadline)
        os.kill(worker.pid, signal.SIGKILL)  # mid-trial, and probably with finished trials not yet logged
        said = worker.communicate(timeout=30)[0]
        assert seen, f"the worker never ran a trial: {said}"
        # what the storage holds once the process is gone: a trial of its still running was killed in it
        killed = next(iter(_running_trials(storage, worker.pid)), None)
        if killed is not None:
            break
    assert killed is not None, "five workers were each killed between two trials"

    stage = _spawn("search-policy", "--out", str(tmp_path / "out"), *common, cwd=tmp_path)
    _finish(stage)
    studies = _studies(params)
    first = next(s for s in studies if s.study_name == killed_study_name(studies, killed))
    failed = [t for t in first.get_trials() if t.number == killed.number]
    assert failed[0].state == TrialState.FAIL  # reaped at once: its process is gone
    retried = [t for t in first.get_trials(states=(TrialState.COMPLETE,))
               if t.system_attrs.get("failed_trial") == killed.number]
    # the configuration was re-run: what the killed trial had drawn is fixed in its retry
    assert len(retried) == 1 and failed[0].params
    assert {k: retried[0].params[k] for k in failed[0].params} == failed[0].params
    for study in studies:
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) == budget
    _check_one_run_per_trial(params, studies)


def _ownerless_study(tmp_path: Path) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
    from pipeline.search.studies import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    return storage, optuna.create_study(study_name="s", storage=storage)


def test_a_trial_that_never_got_an_owner_is_reaped_after_the_grace_period(tmp_path: Path) -> None:
    """A process that loses the storage (or dies) between creating a trial and marking it as its
    own leaves a running trial with no owner and no heartbeat: neither the owner check nor
    Optuna's stale-trial check fails it, and the stage used to wait on it for ever."""
    from pipeline.search.workers import Processes

    storage, study = _ownerless_study(tmp_path)
    study.enqueue_trial({"x": 0.25})
    orphan = study.ask()  # created and left: the enqueued configuration, no owner, no heartbeat
    assert not orphan.params and storage.get_trial(orphan._trial_id).system_attrs["fixed_params"] == {"x": 0.25}
    processes = Processes(storage, orphan_grace_s=0.5)
    assert processes.orphan_grace_s == 0.5 and Processes(storage).orphan_grace_s == storage.grace_period
    assert processes.reap(study) == 1  # first seen now: still in progress
    time.sleep(0.2)
    assert processes.reap(study) == 1
    time.sleep(0.4)
    assert processes.reap(study) == 0
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    retry = study.ask()  # the retry carries the enqueued configuration
    assert retry.suggest_float("x", 0, 1) == 0.25
    assert retry.number == 1


def test_a_trial_with_an_owner_is_not_reaped_as_ownerless(tmp_path: Path) -> None:
    """Ownerless time counts only while a trial has no owner, as this process saw it: a trial
    that gets its owner before the grace period ends (a live process on any host) keeps running."""
    from pipeline.search.workers import Processes

    storage, study = _ownerless_study(tmp_path)
    alive = study.ask()
    processes = Processes(storage, orphan_grace_s=0.3)
    assert processes.reap(study) == 1
    alive.set_user_attr(WORKER_ATTR, f"other-host:{os.getpid()}:nonce")  # marked within the grace period
    time.sleep(0.4)
    assert processes.reap(study) == 1
    assert study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING
    late = study.ask()  # a second, newer ownerless trial: its own clock starts when first seen
    assert processes.reap(study) == 2
    time.sleep(0.4)
    assert processes.reap(study) == 1
    assert study.get_trials(deepcopy=False)[late.number].state == TrialState.FAIL


def _running_trials(storage: optuna.storages.BaseStorage, pid: int) -> list[optuna.trial.FrozenTrial]:
    """Trials of process `pid` that are running and have drawn their configuration (params), so a
    retry has something to repeat."""
    trials = [t for s in optuna.get_all_study_summaries(storage)
              for t in optuna.load_study(study_name=s.study_name, storage=storage).trials]
    return [t for t in trials if t.state == TrialState.RUNNING and t.params
            and t.user_attrs.get(WORKER_ATTR, "").split(":")[1:2] == [str(pid)]]


def _worker_running_a_trial(storage: optuna.storages.BaseStorage, worker: subprocess.Popen[str],
                            deadline: float) -> bool:
    """Polls until the worker has finished two trials and is running a third."""
    while time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
        try:
            done = sum(t.state == TrialState.COMPLETE and
                       t.user_attrs.get(WORKER_ATTR, "").split(":")[1:2] == [str(worker.pid)]
                       for s in optuna.get_all_study_summaries(storage)
                       for t in optuna.load_study(study_name=s.study_name, storage=storage).trials)
            if done >= 2 and _running_trials(storage, worker.pid):
                return True
        except sqlalchemy.exc.OperationalError:  # the file is locked by the worker's write: poll again
            continue
    return False


def killed_study_name(studies: list[optuna.Study], trial: optuna.trial.FrozenTrial) -> str:
    return next(s.study_name for s in studies if any(t._trial_id == trial._trial_id for t in s.get_trials()))


def _fold_run_exists(tracker: Tracker, params: Params) -> bool:
    """The stage has opened fold 0 (its study and its MLflow run, which a worker waits for)."""
    exp = tracker.client.get_experiment_by_name(f"{params.tracking.experiment_prefix}-search_policy")
    return exp is not None and bool(tracker.client.search_runs(
        [exp.experiment_id], filter_string="tags.`autoaug.fold` = '0'", max_results=1))


def _finish_any(proc: subprocess.Popen[str]) -> str:
    return proc.communicate(timeout=240)[0]


def _finish_interrupted(proc: subprocess.Popen[str]) -> None:
    # An interrupted stage finishes its running trial and logs what finished before it exits:
    # once in a full CI run that took over 60 s on 2 cores (99 s for the whole test alone).
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, out


@pytest.mark.parametrize("stage", ["search_policy", "search_model"])
def test_a_worker_without_a_running_stage_says_what_to_start(
    tmp_path: Path, sample_dir: Path, params: Params, stage: str, capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline.cli import main

    path = _write_params(params, tmp_path / "params.yaml")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"sub_policies": [[["Rotate", 0.5, 0.5]]]}))
    code = main(["worker", stage, "--params", str(path), "--sample", str(sample_dir), "--policy", str(policy)])
    err = capsys.readouterr().err
    assert code == 2 and f"dvc repro {stage}" in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_worker_with_an_unreachable_storage_retries_then_fails_clearly(
    tmp_path: Path, sample_dir: Path, params: Params, capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline.cli import main

    path = _write_params(params, tmp_path / "params.yaml")
    raw = yaml.safe_load(path.read_text())
    raw["tracking"]["optuna_storage"] = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    path.write_text(yaml.safe_dump(raw))
    t0 = time.monotonic()
    code = main(["worker", "search_policy", "--params", str(path), "--sample", str(sample_dir), "--wait", "4"])
    err = capsys.readouterr().err
    assert code == 2
    assert "retrying in 1 s" in err and "retrying in 2 s" in err  # back-off, said out loud
    assert err.strip().splitlines()[-1].startswith("autoaug worker: error: tracking.optuna_storage")
    assert time.monotonic() - t0 < 30


PG_URL = os.environ.get("AUTOAUG_TEST_POSTGRES_URL")


@pytest.mark.skipif(not PG_URL, reason="AUTOAUG_TEST_POSTGRES_URL is not set (.ci/run sets it)")
def test_dropped_database_connections_lose_no_trial(tmp_path: Path, sample_dir: Path, params: Params) -> None:
    """PostgreSQL drops every connection of the study database (as in a restart) twice while
    the stage and a worker search: both carry on and every finished trial is kept and logged."""
    import psycopg

    db = f"autoaug_test_{uuid.uuid4().hex[:8]}"
    assert PG_URL is not None
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        url = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1).rsplit("/", 1)[0] + f"/{db}"
        budget = 100  # tiny trials: enough of them that the drops land mid-search
        path = _write_params(params, tmp_path / "params.yaml", trials_per_fold=budget)
        raw = yaml.safe_load(path.read_text())
        raw["tracking"]["optuna_storage"] = url
        path.write_text(yaml.safe_dump(raw))
        common = ["--params", str(path), "--sample", str(sample_dir), "--cache-dir", str(tmp_path / "cache"),
                  "--no-progress"]
        worker = _spawn("worker", "search_policy", "--wait", "120", *common, cwd=tmp_path)
        stage = _spawn("search-policy", "--out", str(tmp_path / "out"), *common, cwd=tmp_path)
        storage = optuna.storages.RDBStorage(url)
        drops, next_drop, deadline = 0, 5, time.monotonic() + 240
        while drops < 2 and time.monotonic() < deadline and stage.poll() is None:
            time.sleep(0.2)
            done = sum(len(optuna.load_study(study_name=s.study_name, storage=storage).get_trials(
                states=(TrialState.COMPLETE,))) for s in optuna.get_all_study_summaries(storage))
            if done >= next_drop:
                next_drop = done + 10
                storage.engine.dispose()
                with psycopg.connect(PG_URL, autocommit=True) as conn:
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", (db,))
                drops += 1
        if drops < 2:
            worker.kill()
        assert drops == 2, f"the search ended first: {_finish_any(stage)[-3000:]}"
        stage_out, worker_out = _finish(stage), _finish(worker)
        storage.engine.dispose()
        storage = optuna.storages.RDBStorage(url)
        studies = [optuna.load_study(study_name=s.study_name, storage=storage)
                   for s in optuna.get_all_study_summaries(storage)]
        assert len(studies) == 2
        for study in studies:
            assert budget <= len(study.get_trials(states=(TrialState.COMPLETE,))) <= budget + 1
        _check_one_run_per_trial(load_params(path), studies)
        assert "search_policy:" in stage_out and "trials run in 2 part(s)" in worker_out
        storage.engine.dispose()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
