"""The `search_model` stage: multi-objective architecture search on the sample with the found
policy; writes pareto.json, chosen.json, the Pareto plot and a metrics file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.config import Params
from pipeline.files import Laps
from pipeline.names import CHOSEN_TRIAL, DEVICE, FINGERPRINT, POLICY_STUDIES, STUDIES, STUDY
from pipeline.report import figures, plot_history, plot_pareto, save
from pipeline.search.specs.model import SPEC, ModelResult
from pipeline.stages.common import open_inputs, record_steps, search_input_policy
from pipeline.tracking import RunLogger


def search_model_stage(params: Params, sample_dir: str | os.PathLike[str], policy_path: str | os.PathLike[str],
                       out_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = ".autoaug/cache",
                       progress: bool = True) -> dict[str, Any]:
    """Run the stage; returns the summary written to ``out_dir/metrics.json``."""
    laps = Laps()
    policy = search_input_policy(SPEC.uses_policy(params), policy_path)  # before any work
    inputs = open_inputs(params, sample_dir)
    context = SPEC.context(params, inputs.sample, inputs.fingerprint, cache_root=cache_dir, progress=progress,
                           policy=policy, tracker=inputs.tracker, retrain_images=inputs.pool_size)
    laps.lap("load")
    search = SPEC.identity(params, inputs.fingerprint)
    policy_studies = (policy.metadata.get("studies") if policy is not None else None) or []
    tags = {FINGERPRINT: inputs.fingerprint, STUDY: search, DEVICE: context.device.type,
            POLICY_STUDIES: ",".join(policy_studies)}
    logged = {"model_search": params.model_search.model_dump(), "sample_size": len(inputs.sample)}
    with inputs.tracker.stage_run(SPEC.name, resume_key=search, tags=tags, params=logged) as run:
        if run.resumed:
            print(f"{SPEC.name}: resuming MLflow run {run.run_id} and its study")
        result = SPEC.run(context, inputs.storage, run, laps)
        write_outputs(result, params, Path(out_dir), run)
        summary = record_steps(laps, run, result.summary, Path(out_dir) / "metrics.json")
    return summary.to_json()


def write_outputs(result: ModelResult, params: Params, out: Path, run: RunLogger) -> None:
    """pareto.json, chosen.json, metrics.json and the Pareto plot; all logged with the history."""
    out.mkdir(parents=True, exist_ok=True)
    result.pareto.write(out / "pareto.json")
    result.chosen_doc.write(out / "chosen.json")
    result.summary.write(out / "metrics.json")
    studies = result.outcome.studies
    with figures():
        carried = {n: s for n, s in result.pareto.reference_sources.items() if s != result.pareto.fingerprint}
        save(plot_pareto(studies[0], result.front, result.references, result.picks, params.model_search.objectives,
                         carried),
             out / "pareto.png", run, "plots/pareto.png")
        save(plot_history(studies, ylabel="validation accuracy", title="model search: accuracy by trial",
                          objective=0), None, run, "plots/optimization_history.png")
    run.log_dict(result.pareto.to_json(), "pareto.json")
    run.log_dict(result.chosen_doc.to_json(), "chosen.json")
    summary = result.summary.to_json()
    run.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and v is not None})
    run.set_tags({STUDIES: ",".join(result.outcome.study_names), CHOSEN_TRIAL: result.chosen.trial})
