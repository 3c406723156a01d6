"""The page for people: the champion, the policy (with its grid), the history, links."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from service.deps import PublishedDep, SettingsDep, SnapshotDep
from service.published import WHAT_TO_RUN

router = APIRouter(tags=["page"])
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))

_RUN_ID = re.compile(r"[0-9a-f]{32}")
_LABELS = {"mlflow_run_ids": "MLflow run", "mlflow_run_id": "MLflow run", "policy_version": "policy"}


def percent(value: Any) -> str:
    """0.90123 -> '90.12 %' (accuracies: two decimals tell apart what a search distinguishes)."""
    return f"{100 * float(value):.2f} %" if _number(value) else "–"


def si(value: Any) -> str:
    """270_144 -> '270 k', 40_800_000 -> '40.8 M'."""
    if not _number(value):
        return "–"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {suffix}"
    return f"{value:g}"


def duration(seconds: Any) -> str:
    """0.0015 -> '1.5 ms', 45.2 -> '45.2 s', 1236 -> '20.6 min', 5400 -> '1.5 h'."""
    if not _number(seconds):
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 90:
        return f"{seconds:.3g} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def figure(key: str, value: Any) -> str:
    """A search figure for people, by what its name says it is: times, accuracies, counts."""
    if not _number(value):
        return "–" if value is None else str(value)
    if key.endswith(("seconds", "_s")):
        return duration(value)
    if isinstance(value, float) and ("accuracy" in key or "score" in key) and 0 <= value <= 1:
        return percent(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def figure_label(key: str) -> str:
    """'child_train_seconds' -> 'child train time'."""
    return key.replace("_seconds", " time").replace("_", " ")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def when(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(value or "–")


templates.env.filters.update(percent=percent, si=si, when=when, duration=duration, figure_label=figure_label)
templates.env.globals.update(figure=figure)


@dataclass(frozen=True)
class Row:
    label: str
    value: str
    href: str | None = None


def run_link(mlflow: str | None, run_id: Any, experiment_id: Any = None) -> str | None:
    """The run's page in the MLflow UI: ``#/experiments/<exp>/runs/<run>`` when the experiment is
    known, else the UI's direct run route ``#/runs/<run>``, which opens the same page."""
    if not (mlflow and isinstance(run_id, str) and _RUN_ID.fullmatch(run_id)):
        return None
    if isinstance(experiment_id, str | int) and str(experiment_id).isdigit():
        return f"{mlflow}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{mlflow}/#/runs/{run_id}"


def lineage_rows(lineage: dict[str, Any], mlflow: str | None) -> list[Row]:
    """The lineage dict as rows, MLflow run ids and the registry version as links to the UI."""
    rows: list[Row] = []
    experiments = lineage.get("mlflow_experiment_ids", {})  # {stage: experiment id}, when publish recorded them
    experiments = experiments if isinstance(experiments, dict) else {}
    for key, value in lineage.items():
        if key == "mlflow_experiment_ids":
            continue
        label = _LABELS.get(key, key.replace("_", " "))
        if key == "policy_version" and isinstance(value, int):
            rows.append(Row(label, f"v{value}", f"policies/{value}"))
        elif key == "registry" and isinstance(value, dict) and {"name", "version"} <= set(value):
            href = f"{mlflow}/#/models/{value['name']}/versions/{value['version']}" if mlflow else None
            rows.append(Row("registry", f"{value['name']} v{value['version']}", href))
        elif isinstance(value, dict):
            rows += [Row(f"{label} · {k}", _text(v), run_link(mlflow, v, experiments.get(k))) for k, v in value.items()]
        else:
            rows.append(Row(label, _text(value), run_link(mlflow, value)))
    return rows


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return value if isinstance(value, str) else json.dumps(value)


@router.get("/", response_class=HTMLResponse, summary="The page for people", include_in_schema=False)
def index(request: Request, settings: SettingsDep, published: PublishedDep, snapshot: SnapshotDep) -> HTMLResponse:
    model, policy = snapshot.model, snapshot.policy
    mlflow = settings.mlflow_ui_url
    context = {
        "request": request,
        "root": str(published.root),
        "what_to_run": WHAT_TO_RUN,
        "mlflow": mlflow,
        "model": model,
        "model_rows": lineage_rows(model.meta.get("lineage", {}), mlflow) if model else [],
        "config_text": json.dumps(model.config, indent=1) if model else "",
        "policy": policy,
        "policy_run": run_link(mlflow, policy.meta.get("mlflow_run_id"), policy.meta.get("mlflow_experiment_id"))
        if policy else None,
        "run_link": lambda record: run_link(mlflow, record.meta.get("mlflow_run_id"),
                                            record.meta.get("mlflow_experiment_id")),
        "sub_policies": policy.policy().sub_policies if policy else [],
        "models": published.model_history()[:20],
        "policies": published.policy_history()[:20],
        "current": snapshot.current,
    }
    status = 503 if model is None and policy is None else 200
    return templates.TemplateResponse(request, "index.html", context, status_code=status)
