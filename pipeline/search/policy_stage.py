"""The `search_policy` stage: read the sample, search, write policy.json and log everything."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch

from pipeline.augment import policy_grid
from pipeline.config import Params
from pipeline.data import ImageSet, read_manifest
from pipeline.files import write_text_atomic
from pipeline.search.policy import STAGE, SearchResult, run_search, search_space
from pipeline.search.studies import completed, open_storage, space_hash, study_name
from pipeline.tracking import RunLogger, Tracker


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def plot_history(studies: list) -> Any:
    """Score of every trial and the best so far, one colour per split (short labels)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, study in enumerate(studies):
        trials = [t for t in completed(study) if t.value is not None]
        xs = [t.number for t in trials]
        ys = [float(t.value) for t in trials]  # type: ignore[arg-type]
        pick = max if study.direction.name == "MAXIMIZE" else min
        best = [pick(ys[: i + 1]) for i in range(len(ys))]
        line = ax.plot(xs, best, label=f"split {k} best")[0]
        ax.scatter(xs, ys, s=14, alpha=0.5, color=line.get_color(), label=f"split {k} trials")
    ax.set_xlabel("trial")
    ax.set_ylabel("score on augmented D_A")
    ax.set_title("policy search: optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def _plots(result: SearchResult, out: Path, run: RunLogger) -> None:
    """Optuna's optimisation history and parameter importances, as PNG files and artifacts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plot_history(result.fold_studies)
    fig.savefig(out / "history.png", dpi=110)
    run.log_figure(fig, "plots/optimization_history.png")
    plt.close(fig)
    for k, study in enumerate(result.fold_studies):
        fig = plot_importances(study)
        if k == 0:
            fig.savefig(out / "importances.png", dpi=110)  # declared in dvc.yaml: always written
        run.log_figure(fig, f"plots/param_importances_fold{k}.png")
        plt.close(fig)


def plot_importances(study: optuna.Study) -> Any:
    """Optuna's fANOVA parameter importances, or a figure saying why there are none."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    n = len(completed(study))
    reason = f"only {n} finished trials: too few to estimate importances" if n < 3 else None
    if reason is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
                ax = ovm.plot_param_importances(study)
            fig = ax.get_figure(root=True)
            assert fig is not None
            fig.set_size_inches(8, max(4.0, 0.22 * len(study.best_params)))
            fig.tight_layout()
            return fig
        except (RuntimeError, ValueError) as exc:  # e.g. every trial scored the same
            reason = f"importances unavailable: {exc}"
    fig, ax = plt.subplots(figsize=(8, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{study.study_name}\n{reason}", ha="center", va="center", wrap=True)
    return fig


def search_policy_stage(params: Params, sample_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                        cache_dir: str | os.PathLike[str] | None = ".autoaug/cache", progress: bool = True) -> dict[str, Any]:
    """Run the stage; returns the summary written to ``out_dir/summary.json``."""
    cfg = params.policy_search
    manifest = read_manifest(sample_dir)
    fingerprint = manifest["fingerprint"]
    # Both stores are opened before any training: an unreachable URL fails in seconds.
    storage = open_storage(params.tracking.optuna_storage)
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    sample = ImageSet.load(Path(sample_dir) / "images.pt")
    shash = space_hash(search_space(cfg))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device()
    tags = {"autoaug.fingerprint": fingerprint, "optuna.study": study_name(STAGE, shash, fingerprint),
            "autoaug.device": device.type}
    with tracker.stage_run(STAGE, resume_key=study_name(STAGE, shash, fingerprint), tags=tags,
                           params={"policy_search": cfg.model_dump(), "sample_size": len(sample)}) as run:
        if run.resumed:
            print(f"{STAGE}: resuming MLflow run {run.run_id} and its studies")
        result = run_search(sample, fingerprint, cfg, storage, run, device=device,
                            cache=Path(cache_dir) / STAGE if cache_dir else None, progress=progress)
        policy_path = out / "policy.json"
        write_text_atomic(policy_path, result.policy.to_json() + "\n")
        write_text_atomic(out / "summary.json", json.dumps(result.summary, indent=2) + "\n")
        preview = sample.subset(torch.arange(0, len(sample), max(1, len(sample) // 8))[:8])
        png = policy_grid(result.policy, preview.images, n_draws=7, generator=torch.Generator().manual_seed(0),
                          path=out / "grid.png")
        run.log_artifact(policy_path)
        run.log_bytes(png, "policy_grid.png")
        run.log_dict(result.summary, "summary.json")
        run.log_metrics({k: float(v) for k, v in result.summary.items() if isinstance(v, (int, float))})
        run.set_tags({"autoaug.studies": ",".join(result.studies)})
        _plots(result, out, run)
    return result.summary
