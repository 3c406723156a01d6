"""The `search_policy` stage: read the sample, search, write policy.json and log everything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pipeline.augment import policy_grid
from pipeline.config import Params
from pipeline.data import ImageSet
from pipeline.files import Laps, write_text_atomic
from pipeline.names import DEVICE, FINGERPRINT, STUDIES, STUDY
from pipeline.report import search_figures
from pipeline.search.specs.policy import SPEC, PolicyResult
from pipeline.stages.common import open_inputs, record_steps
from pipeline.tracking import RunLogger


def search_policy_stage(params: Params, sample_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                        cache_dir: str | os.PathLike[str] | None = ".autoaug/cache", progress: bool = True) -> dict[str, Any]:
    """Run the stage; returns the summary written to ``out_dir/summary.json``."""
    laps = Laps()
    inputs = open_inputs(params, sample_dir)
    context = SPEC.context(params, inputs.sample, inputs.fingerprint, cache_root=cache_dir, progress=progress,
                           tracker=inputs.tracker)
    laps.lap("load")
    search = SPEC.identity(params, inputs.fingerprint)
    tags = {FINGERPRINT: inputs.fingerprint, STUDY: search, DEVICE: context.device.type}
    logged = {"policy_search": params.policy_search.model_dump(), "sample_size": len(inputs.sample)}
    with inputs.tracker.stage_run(SPEC.name, resume_key=search, tags=tags, params=logged) as run:
        if run.resumed:
            print(f"{SPEC.name}: resuming MLflow run {run.run_id} and its studies")
        result = SPEC.run(context, inputs.storage, run, laps)
        write_outputs(result, Path(out_dir), inputs.sample, run)
        summary = record_steps(laps, run, result.summary, Path(out_dir) / "summary.json")
    return summary.to_json()


def write_outputs(result: PolicyResult, out: Path, sample: ImageSet, run: RunLogger) -> None:
    """policy.json, summary.json, the policy's grid and the search's figures; all logged."""
    out.mkdir(parents=True, exist_ok=True)
    policy_path = out / "policy.json"
    write_text_atomic(policy_path, result.policy.to_json() + "\n")
    result.summary.write(out / "summary.json")
    preview = sample.subset(torch.arange(0, len(sample), max(1, len(sample) // 8))[:8])
    png = policy_grid(result.policy, preview.images, n_draws=7, generator=torch.Generator().manual_seed(0),
                      path=out / "grid.png")
    run.log_artifact(policy_path)
    run.log_bytes(png, "policy_grid.png")
    summary = result.summary.to_json()
    run.log_dict(summary, "summary.json")
    run.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})
    run.set_tags({STUDIES: ",".join(result.outcome.study_names)})
    search_figures(result.outcome.studies, out, run)
