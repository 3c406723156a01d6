"""The compose topology, run natively on loopback (no Docker engine here).

The services' own commands, read from docker-compose.yml, are started as processes against the
local PostgreSQL (``AUTOAUG_TEST_POSTGRES_URL``): the MLflow server on a PostgreSQL backend with
proxied artifacts, two `autoaug worker search_policy --wait` processes, the one-shot pipeline
(`dvc repro`) and the API. Host names are the only thing rewritten (``mlflow:5000`` and
``postgres:5432`` become loopback addresses). Then: one policy search shared by three processes
without duplicate trials or runs, the API serving what publish wrote, and the MLflow UI in a real
browser listing the stage runs and their nested trial runs (screenshot in tests/artifacts/).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from pipeline.names import WORKER_ATTR

from ..browser import EXPAND_NESTED_RUNS as EXPAND
from ..browser import Browser
from ..projects import BIN, make_project, run
from ..service.test_page import ARTIFACTS, chromium  # noqa: F401 - chromium is a fixture
from .test_compose import COMPOSE_FILE, ENV_EXAMPLE, command_of, interpolate_tree, read_env_file

PG_URL = os.environ.get("AUTOAUG_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="AUTOAUG_TEST_POSTGRES_URL is not set (.ci/run sets it)")
TRIALS_PER_FOLD = 12


def _services() -> dict[str, dict[str, Any]]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate_tree(raw, read_env_file(ENV_EXAMPLE))["services"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited: {_output(proc)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _sqlalchemy_url(db: str) -> str:
    assert PG_URL is not None
    base = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    return base.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """Fresh MLflow and Optuna databases, dropped afterwards."""
    import psycopg

    tag = uuid.uuid4().hex[:8]
    names = {"mlflow": f"autoaug_test_{tag}_mlflow", "optuna": f"autoaug_test_{tag}_optuna"}
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for db in names.values():
            conn.execute(f'CREATE DATABASE "{db}"')
    try:
        yield {k: _sqlalchemy_url(db) for k, db in names.items()}
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for db in names.values():
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
                conn.execute(f'DROP DATABASE IF EXISTS "{db}"')


_OUTPUTS: dict[int, Path] = {}  # a spawned process's pid: the file its output goes to


def _spawn(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``cmd`` started with its output going to a file (``_output``), not a pipe: nobody reads a
    server's pipe while it serves, and once the pipe is full the server blocks on its next log
    line. MLflow 3.18's server logs every request: the UI's page loads then hung
    ("ChunkLoadError: Loading chunk ... failed") after the runs page."""
    full = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT": "1", **env}
    fd, path = tempfile.mkstemp(prefix="spawned-", suffix=".log")
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=full, text=True, stdout=fd, stderr=subprocess.STDOUT)
    finally:
        os.close(fd)
    _OUTPUTS[proc.pid] = Path(path)
    return proc


def _output(proc: subprocess.Popen[str]) -> str:
    """What ``proc`` (from ``_spawn``) has written so far."""
    return _OUTPUTS[proc.pid].read_text(errors="replace")


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out = _output(proc)
    _OUTPUTS.pop(proc.pid).unlink(missing_ok=True)
    return out


@pytest.fixture(scope="module")
def mlflow_server(databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` exactly as the compose service runs it, but on loopback and the test DB."""
    cmd = command_of(_services()["mlflow"])
    port = _free_port()
    swap = {cmd[cmd.index("--backend-store-uri") + 1]: databases["mlflow"],
            cmd[cmd.index("--artifacts-destination") + 1]: str(tmp_path_factory.mktemp("mlartifacts")),
            "0.0.0.0": "127.0.0.1", "5000": str(port)}
    assert cmd[cmd.index("--backend-store-uri") + 1].startswith("postgresql+psycopg://")
    cmd = [swap.get(arg, arg) for arg in cmd]
    proc = _spawn(cmd, Path.cwd(), {})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", 180, proc)  # the first start migrates the schema
        yield url
    finally:
        _stop(proc)


def _job_env(service: dict[str, Any], mlflow_url: str, databases: dict[str, str]) -> dict[str, str]:
    """The service's environment with the compose host names pointed at loopback."""
    env = {k: str(v) for k, v in service["environment"].items()}
    assert env["AUTOAUG_MLFLOW_URI"] == "http://mlflow:5000"
    assert env["AUTOAUG_OPTUNA_STORAGE"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env[
        "AUTOAUG_OPTUNA_STORAGE"]
    return {**env, "AUTOAUG_MLFLOW_URI": mlflow_url, "AUTOAUG_OPTUNA_STORAGE": databases["optuna"]}


def test_compose_topology_on_loopback(
    tmp_path: Path, databases: dict[str, str], mlflow_server: str, chromium: str,  # noqa: F811
) -> None:
    services = _services()
    project = make_project(tmp_path, policy_search={"trials_per_fold": TRIALS_PER_FOLD})
    env = _job_env(services["pipeline"], mlflow_server, databases)
    assert _job_env(services["worker"], mlflow_server, databases) == env

    workers = [_spawn([*command_of(services["worker"]), "--no-progress"], project, env) for _ in range(2)]
    try:
        pipeline_out = run(command_of(services["pipeline"]), project, env=env, timeout=900)
        for w in workers:
            w.wait(timeout=300)
        worker_outs = [_output(w) for w in workers]
    finally:
        for w in workers:
            _stop(w)
    assert all(w.returncode == 0 for w in workers), worker_outs
    assert "Running stage 'publish'" in pipeline_out

    # One policy search, shared: the budget met once per fold, every trial logged once.
    storage = optuna.storages.RDBStorage(databases["optuna"])
    studies = [optuna.load_study(study_name=s.study_name, storage=storage)
               for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith("search_policy-")]
    assert len(studies) == 2
    owners: Counter[str] = Counter()
    done_keys = []
    for study in studies:
        done = study.get_trials(states=(TrialState.COMPLETE,))
        assert TRIALS_PER_FOLD <= len(done) <= TRIALS_PER_FOLD + 2  # at most one extra per extra process
        owners.update(t.user_attrs[WORKER_ATTR] for t in done)
        done_keys += [(study.study_name, str(t.number)) for t in done]
    assert len(owners) >= 2, (owners, worker_outs)  # the workers took part
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("autoaug-search_policy")
    assert exp is not None and exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    logged = [(r.data.tags["optuna.study"], r.data.tags["autoaug.trial"]) for r in runs if "autoaug.trial" in r.data.tags]
    assert Counter(logged) == Counter(done_keys)
    stage_runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in stage_runs] == ["FINISHED"]
    # artifacts went through the server (mlflow-artifacts:/), not to a path on this host
    assert stage_runs[0].info.artifact_uri.startswith("mlflow-artifacts:")
    assert "policy.json" in {a.path for a in client.list_artifacts(stage_runs[0].info.run_id)}

    _check_api(services["api"], project)
    _check_mlflow_ui(chromium, tmp_path, mlflow_server, exp.experiment_id, stage_runs[0], runs)


def _check_api(service: dict[str, Any], project: Path) -> None:
    """The API's command on loopback serves the policy and the champion that publish wrote."""
    cmd = command_of(service)
    port = _free_port()
    cmd = [{"0.0.0.0": "127.0.0.1", "8000": str(port), "/workspace/published": str(project / "published")}.get(a, a)
           for a in cmd]
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    api = _spawn(cmd, project, env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/healthz", 60, api)
        with urllib.request.urlopen(f"{url}/policy", timeout=10) as resp:
            served = json.load(resp)
        with urllib.request.urlopen(f"{url}/model", timeout=10) as resp:
            model = json.load(resp)
    finally:
        _stop(api)
    published = json.loads((project / "outputs" / "search_policy" / "policy.json").read_text())
    assert served["policy"]["sub_policies"] == published["sub_policies"]
    retrained = json.loads((project / "outputs" / "retrain" / "metrics.json").read_text())
    assert model["version"] >= 1 and model["metrics"]["test_accuracy"] == retrained["test_accuracy"]


def _check_mlflow_ui(chromium: str, tmp_path: Path, url: str, experiment_id: str, stage_run: Any,  # noqa: F811
                     runs: list[Any]) -> None:
    """The MLflow UI in chromium: the experiment's runs table holds the stage run; expanded, its
    fold runs and their trial runs; a trial run's page shows its metric and its parent.

    MLflow 3.17's UI keeps a global GenAI / model-training switch (browser storage, GenAI by
    default) that a fresh browser follows whatever the experiment's kind tag says; the links
    name the workflow, as the README's do."""
    ARTIFACTS.mkdir(exist_ok=True)
    trials = [r for r in runs if "autoaug.trial" in r.data.tags]
    with Browser(chromium, tmp_path / "browser") as browser:
        browser.goto(f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
        html = browser.wait_for(lambda h: ">search_policy<" in h and "matching runs" in h)
        listed = re.search(r"<strong>(\d+)</strong> matching runs", html)
        assert listed is not None and int(listed.group(1)) == len(runs)  # the stage run, its folds, every trial
        for _ in range(4):  # stage run -> folds -> trials
            if not browser.evaluate(EXPAND):
                break
            time.sleep(1.0)
        # the grid renders the rows in view: the folds and the first trials below them
        html = browser.wait_for(lambda h: ">fold0<" in h and re.search(r">fold\d-trial\d{3}<", h) is not None)
        shown = set(re.findall(r">(fold\d-trial\d{3})<", html))
        assert shown and shown <= {r.info.run_name for r in trials}
        browser.screenshot(ARTIFACTS / "mlflow-ui-runs.png")

        trial = trials[0]
        parent = next(r for r in runs if r.info.run_id == trial.data.tags["mlflow.parentRunId"])
        browser.goto(f"{url}/#/experiments/{experiment_id}/runs/{trial.info.run_id}?workflowType=machine_learning")
        # its metric, and its parent (a fold's run) linked by name once the page has fetched it
        browser.wait_for(lambda h: trial.info.run_name in h and ">score<" in h and "Parent run" in h
                         and f">{parent.info.run_name}<" in h)
        browser.screenshot(ARTIFACTS / "mlflow-ui-trial.png")
    assert stage_run.info.run_name == "search_policy"
    for name in ("mlflow-ui-runs.png", "mlflow-ui-trial.png"):
        assert (ARTIFACTS / name).read_bytes().startswith(b"\x89PNG")
