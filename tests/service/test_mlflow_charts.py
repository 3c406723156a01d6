"""The model search as a user browses it in the MLflow UI: trial runs logged the way the search
logs them (nested under the stage run, metrics accuracy / params / train_cost), the experiment's
chart view opened in headless chromium, a screenshot kept in tests/artifacts/.

MLflow's chart view draws one chart per metric over the runs shown in its table (the first ten
by default); a scatter of accuracy against params is one "Add chart" away there."""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import names
from pipeline.tracking import Tracker

from ..browser import EXPAND_NESTED_RUNS, Browser
from ..projects import stop_process_group
from .test_page import chromium  # noqa: F401 - the fixture that finds (or installs) chromium

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TRIALS = 24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def model_search_store(tmp_path: Path) -> tuple[str, str]:
    """A SQLite store holding one model-search stage run and its trial runs; (uri, experiment id)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    rng = random.Random(0)
    with tracker.stage_run("search_model", resume_key="charts") as stage:
        for number in range(TRIALS):
            params = rng.randint(40_000, 2_000_000)
            accuracy = 0.55 + 0.3 * (params / 2_000_000) ** 0.5 + rng.uniform(-0.03, 0.03)
            stage.log_finished_child(
                f"trial{number:03d}", key_tag=names.TRIAL, key=str(number), params={"stem.channels": 32},
                metrics={"accuracy": accuracy, "params": params, "macs": params * 60,
                         "train_cost": 0.2 + params / 1_500_000},
            )
    return uri, tracker.experiment_id("search_model")


@pytest.fixture
def mlflow_ui(model_search_store: tuple[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    uri, experiment = model_search_store
    port = free_port()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [mlflow, "server", "--backend-store-uri", uri, "--artifacts-destination", str(tmp_path / "art"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(command, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, "mlflow server exited"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not answer within 180 s"
                time.sleep(0.5)
        yield url, experiment
    finally:
        stop_process_group(proc)


@pytest.mark.slow  # an `mlflow server` start and a browser: about a minute
def test_model_search_trials_chart_in_the_mlflow_ui(
    chromium: str, mlflow_ui: tuple[str, str], tmp_path: Path  # noqa: F811
) -> None:
    url, experiment = mlflow_ui
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mlflow-model-search-charts.png"
    shot.unlink(missing_ok=True)
    with Browser(chromium, tmp_path / "browser", width=1600, height=1200) as browser:
        browser.goto(f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning"
                     "&compareRunsMode=CHART")
        browser.wait_for(lambda h: ">search_model<" in h)
        # the trials are nested under the stage run, collapsed: open it so the charts plot them
        for _ in range(20):
            if browser.evaluate(EXPAND_NESTED_RUNS):
                break
            time.sleep(0.5)
        try:
            html = browser.wait_for(lambda h: all(f">{m}<" in h for m in ("accuracy", "params", "train_cost")),
                                    timeout=60)
        except TimeoutError:
            browser.screenshot(shot)
            shot.with_suffix(".html").write_text(browser.html())  # what the page showed instead
            raise
        time.sleep(2)  # let the charts finish drawing before the picture
        browser.screenshot(shot)
    assert re.search(r"trial0\d\d", html)  # the trial runs are what the charts plot
    listed = re.search(r"<strong>(\d+)</strong> matching runs", html)
    assert listed is not None and int(listed.group(1)) == TRIALS + 1  # the stage run and every trial
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
