"""The HTML page: rendered server-side (TestClient) and in a real headless browser (chromium)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from service.app import create_app
from service.settings import Settings

from ..publishing import RUN_ID, add_model, add_policy
from .conftest import TestClient
from .live import running_server

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
MLFLOW = "http://mlflow.example:5000"


def test_page_shows_champion_policy_history_and_links(published: Path, make_client: Callable[..., TestClient]) -> None:
    add_model(published, seed=1, accuracy=0.873)
    client = make_client(published, mlflow_ui_url=MLFLOW)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert re.search(r'id="test-accuracy">87\.30 %<', html)  # two decimals: what a search tells apart
    assert re.search(r'id="params">[\d.]+ k<', html) and re.search(r'id="macs">[\d.]+ M<', html)
    assert 'src="policies/1/grid.png"' in html
    assert f'href="{MLFLOW}/#/runs/{RUN_ID}"' in html  # lineage run ids link to the MLflow UI
    assert f'href="{MLFLOW}/#/models/autoaug-classifier/versions/2"' in html
    assert 'href="docs"' in html and f'href="{MLFLOW}"' in html and 'href="model/weights"' in html
    history = html[html.index('id="history"'):]
    assert history.index("v2") < history.index("v1") and "champion" in history
    assert "ShearX" in html and "Rotate" in html  # the sub-policy table


def test_numbers_are_rounded_for_people(published: Path, make_client: Callable[..., TestClient]) -> None:
    from pipeline.artifacts import publish_policy

    from ..publishing import tiny_policy

    publish_policy(published, tiny_policy(), fingerprint="f", mlflow_run_id=RUN_ID, summary={
        "best_score_mean": 0.812345, "child_clean_accuracy_mean": 0.9012, "wall_seconds": 1236.4,
        "child_train_seconds": 41.234, "trials": 1200, "method": "faa"})
    add_model(published, seed=1, accuracy=0.90123)
    html = make_client(published, mlflow_ui_url=MLFLOW).get("/").text
    assert re.search(r'id="test-accuracy">90\.12 %<', html)
    assert re.search(r'id="params">\d{1,3}(\.\d+)? k<', html)  # 3 significant digits and a unit
    policy = html[html.index('id="policy"'):html.index('id="history"')]
    for label, value in [("best score mean", "81.23 %"), ("child clean accuracy mean", "90.12 %"),
                         ("wall time", "20.6 min"), ("child train time", "41.2 s"), ("trials", "1,200"),
                         ("method", "faa")]:
        assert re.search(rf"<th>{label}</th><td>{re.escape(value)}</td>", policy), label
    assert "latency 1.5 ms" in html
    # the policy history links each version's search run
    history = html[html.index('id="history"'):]
    assert f'href="{MLFLOW}/#/runs/{RUN_ID}"><code>{RUN_ID[:8]}</code>' in history


def test_run_links_name_the_experiment_when_publish_recorded_it() -> None:
    from service.routers.pages import lineage_rows, run_link

    assert run_link(MLFLOW, RUN_ID, "7") == f"{MLFLOW}/#/experiments/7/runs/{RUN_ID}"
    assert run_link(MLFLOW, RUN_ID) == f"{MLFLOW}/#/runs/{RUN_ID}"  # the UI's direct route: the same page
    assert run_link(None, RUN_ID, "7") is None and run_link(MLFLOW, "not-a-run-id") is None
    rows = lineage_rows({"mlflow_run_ids": {"retrain": RUN_ID}, "mlflow_experiment_ids": {"retrain": "3"}}, MLFLOW)
    assert [(r.label, r.href) for r in rows] == [("MLflow run · retrain", f"{MLFLOW}/#/experiments/3/runs/{RUN_ID}")]


def test_page_without_mlflow_has_no_dead_links(published: Path, client: TestClient) -> None:
    html = client.get("/").text
    assert "#/runs/" not in html and RUN_ID in html  # ids shown as text


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (the test set-up runs as root)."""
    path = shutil.which("chromium")
    if path is None:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.skip("chromium is missing and cannot be installed here (needs apt-get as root)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        result = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:  # stale package lists: refresh once and retry
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            result = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
        path = shutil.which("chromium")
        if path is None:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"could not install chromium with apt-get: {tail[0]}")
    return path


def run_chromium(chromium: str, profile: Path, *args: str) -> str:
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_page_in_a_real_browser(chromium: str, published: Path, tmp_path: Path) -> None:
    add_policy(published, magnitude=0.7)
    add_model(published, seed=1, accuracy=0.912)
    app = create_app(Settings(published_dir=published, mlflow_ui_url=MLFLOW))
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "service-index.png"
    screenshot.unlink(missing_ok=True)
    with running_server(app) as url:
        dom = run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", f"{url}/")
        run_chromium(chromium, tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1200,1600",
                     f"{url}/")
    assert re.search(r'id="test-accuracy">91\.20 %<', dom)
    grid = re.search(r'<img[^>]*id="policy-grid"[^>]*>', dom)
    assert grid is not None and 'src="policies/2/grid.png"' in grid.group(0)
    loaded = re.search(r'data-loaded="(\d+)"', grid.group(0))  # set by the img's onload: the PNG decoded
    assert loaded is not None and int(loaded.group(1)) > 32 * 4
    assert screenshot.is_file() and screenshot.read_bytes().startswith(b"\x89PNG")
