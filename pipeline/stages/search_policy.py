"""The `search_policy` stage: read the sample, search, write policy.json and log everything."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pipeline.augment import policy_grid
from pipeline.config import Params
from pipeline.device import pick_device
from pipeline.files import write_text_atomic
from pipeline.report import search_figures
from pipeline.search.policy import METHODS, STAGE, run_search
from pipeline.search.studies import search_name
from pipeline.stages.common import open_inputs


def identity(params: Params, fingerprint: str) -> str:
    """The search's identity (the stage run is found again by it: a restarted stage, or a
    worker, joins the same run)."""
    cfg = params.policy_search
    return search_name(STAGE, METHODS[cfg.method].space_of(cfg), fingerprint)


def search_policy_stage(params: Params, sample_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                        cache_dir: str | os.PathLike[str] | None = ".autoaug/cache", progress: bool = True) -> dict[str, Any]:
    """Run the stage; returns the summary written to ``out_dir/summary.json``."""
    cfg = params.policy_search
    inputs = open_inputs(params, sample_dir)
    sample, fingerprint = inputs.sample, inputs.fingerprint
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device()
    search = identity(params, fingerprint)
    tags = {"autoaug.fingerprint": fingerprint, "optuna.study": search, "autoaug.device": device.type}
    with inputs.tracker.stage_run(STAGE, resume_key=search, tags=tags,
                                  params={"policy_search": cfg.model_dump(), "sample_size": len(sample)}) as run:
        if run.resumed:
            print(f"{STAGE}: resuming MLflow run {run.run_id} and its studies")
        result = run_search(sample, fingerprint, cfg, inputs.storage, run, device=device,
                            cache=Path(cache_dir) / STAGE if cache_dir else None, progress=progress)
        policy_path = out / "policy.json"
        summary = {**result.summary, "mlflow_run_id": run.run_id}
        write_text_atomic(policy_path, result.policy.to_json() + "\n")
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        preview = sample.subset(torch.arange(0, len(sample), max(1, len(sample) // 8))[:8])
        png = policy_grid(result.policy, preview.images, n_draws=7, generator=torch.Generator().manual_seed(0),
                          path=out / "grid.png")
        run.log_artifact(policy_path)
        run.log_bytes(png, "policy_grid.png")
        run.log_dict(summary, "summary.json")
        run.log_metrics({k: float(v) for k, v in result.summary.items() if isinstance(v, (int, float))})
        run.set_tags({"autoaug.studies": ",".join(result.studies)})
        search_figures(result.fold_studies, out, run)
    return summary
