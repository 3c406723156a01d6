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
    return f"{100 * float(value):.1f} %" if isinstance(value, int | float) else "–"


def si(value: Any) -> str:
    """270_144 -> '270 k', 40_800_000 -> '40.8 M'."""
    if not isinstance(value, int | float):
        return "–"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {suffix}"
    return f"{value:g}"


def when(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(value or "–")


templates.env.filters.update(percent=percent, si=si, when=when)


@dataclass(frozen=True)
class Row:
    label: str
    value: str
    href: str | None = None


def run_link(mlflow: str | None, run_id: Any) -> str | None:
    if mlflow and isinstance(run_id, str) and _RUN_ID.fullmatch(run_id):
        return f"{mlflow}/#/runs/{run_id}"
    return None


def lineage_rows(lineage: dict[str, Any], mlflow: str | None) -> list[Row]:
    """The lineage dict as rows, MLflow run ids and the registry version as links to the UI."""
    rows: list[Row] = []
    for key, value in lineage.items():
        label = _LABELS.get(key, key.replace("_", " "))
        if key == "policy_version" and isinstance(value, int):
            rows.append(Row(label, f"v{value}", f"policies/{value}"))
        elif key == "registry" and isinstance(value, dict) and {"name", "version"} <= set(value):
            href = f"{mlflow}/#/models/{value['name']}/versions/{value['version']}" if mlflow else None
            rows.append(Row("registry", f"{value['name']} v{value['version']}", href))
        elif isinstance(value, dict):
            rows += [Row(f"{label} · {k}", _text(v), run_link(mlflow, v)) for k, v in value.items()]
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
        "policy_run": run_link(mlflow, policy.meta.get("mlflow_run_id")) if policy else None,
        "sub_policies": policy.policy().sub_policies if policy else [],
        "models": published.model_history()[:20],
        "policies": published.policy_history()[:20],
        "current": snapshot.current,
    }
    status = 503 if model is None and policy is None else 200
    return templates.TemplateResponse(request, "index.html", context, status_code=status)
