"""Figures the stages share: optimisation histories, parameter importances (and, for the
model search, the Pareto front). Each returns a matplotlib figure; the stage saves it where
dvc.yaml declares it and logs it to MLflow."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna

from pipeline.names import ACCURACY_ATTR, PARAMS_ATTR, SKIPPED_ATTR
from pipeline.search.studies import completed
from pipeline.tracking import RunLogger


@contextmanager
def figures() -> Iterator[Any]:
    """matplotlib's pyplot on the file-only Agg back end; every figure opened inside is closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        yield plt
    finally:
        plt.close("all")


def save(fig: Any, path: Path | None, run: RunLogger | None, artifact_file: str) -> None:
    """Write ``fig`` to ``path`` (a DVC plot) and/or log it to ``run`` (MLflow)."""
    if path is not None:
        fig.savefig(path, dpi=110)
    if run is not None:
        run.log_figure(fig, artifact_file)


def plot_history(studies: Sequence[optuna.Study], ylabel: str = "score on augmented D_A",
                 title: str = "policy search: optimisation history", objective: int = 0) -> Any:
    """Score of every trial (objective ``objective``) and the best so far, one colour per part.
    Trials that were not trained (over a budget) are left out."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, study in enumerate(studies):
        trials = [t for t in completed(study) if t.values is not None and "skipped" not in t.user_attrs]
        xs = [t.number for t in trials]
        ys = [float(t.values[objective]) for t in trials]
        pick = max if study.directions[objective].name == "MAXIMIZE" else min
        best = [pick(ys[: i + 1]) for i in range(len(ys))]
        line = ax.plot(xs, best, label=f"split {k} best")[0]
        ax.scatter(xs, ys, s=14, alpha=0.5, color=line.get_color(), label=f"split {k} trials")
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_importances(study: optuna.Study, target: Any = None, target_name: str = "Objective Value") -> Any:
    """Optuna's fANOVA parameter importances, or a figure saying why there are none."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    own = completed(study)
    n = len(own)
    reason = f"only {n} finished trials: too few to estimate importances" if n < 3 else None
    if reason is None:
        if len(own) < len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))):
            # the prior data's trials given to the sampler as history: not this study's evidence
            own_study = optuna.create_study(study_name=study.study_name, directions=study.directions)
            own_study.add_trials(own)
            study = own_study
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
                ax = ovm.plot_param_importances(study, target=target, target_name=target_name)
            fig = ax.get_figure(root=True)
            assert fig is not None
            fig.set_size_inches(8, max(4.0, 0.22 * len(own[0].params)))
            fig.tight_layout()
            return fig
        except (RuntimeError, ValueError) as exc:  # e.g. every trial scored the same
            reason = f"importances unavailable: {exc}"
    fig, ax = plt.subplots(figsize=(8, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{study.study_name}\n{reason}", ha="center", va="center", wrap=True)
    return fig


def search_figures(studies: Sequence[optuna.Study], out: Path, run: RunLogger) -> None:
    """A policy search's history (all splits) and each split's importances: the first split's
    are the DVC plot, all are MLflow artifacts."""
    with figures():
        save(plot_history(studies), out / "history.png", run, "plots/optimization_history.png")
        for k, study in enumerate(studies):
            save(plot_importances(study), out / "importances.png" if k == 0 else None, run,
                 f"plots/param_importances_fold{k}.png")


def plot_pareto(study: optuna.Study, front: Sequence[Any], references: Mapping[str, Any],
                picks: Mapping[str, Any], objectives: Sequence[str],
                carried_from: Mapping[str, str] | None = None) -> Any:
    """Validation accuracy against parameters (log x) for every trained trial, coloured by trial
    order; the Pareto front as a step line; reference models as labelled stars (``carried_from``:
    a reference whose score was trained on earlier data says which, as "data <fingerprint>");
    and a ring around what each choice rule picks."""
    import matplotlib.pyplot as plt

    trials = [t for t in completed(study) if SKIPPED_ATTR not in t.user_attrs and PARAMS_ATTR in t.user_attrs]
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    if trials:
        points = ax.scatter([t.user_attrs[PARAMS_ATTR] for t in trials], [t.user_attrs[ACCURACY_ATTR] for t in trials],
                            c=[t.number for t in trials], cmap="viridis", s=28, alpha=0.85, zorder=2)
        fig.colorbar(points, ax=ax, label="trial")
    ordered = sorted(front, key=lambda c: c.params)
    ax.step([c.params for c in ordered], [c.accuracy for c in ordered], where="post", color="crimson",
            lw=1.5, label="Pareto front", zorder=3)
    for name, ref in references.items():
        ax.scatter([ref.params], [ref.accuracy], marker="*", s=220, color="black", zorder=4)
        source = (carried_from or {}).get(name)
        label = f"{name} {ref.accuracy:.3f}" + (f" (data {source[:8]})" if source else "")
        ax.annotate(label, (ref.params, ref.accuracy), textcoords="offset points",
                    xytext=(-10, 8), fontsize=8, ha="right")
    rings = ["tab:orange", "tab:blue", "tab:green", "tab:purple"]
    for (name, pick), colour in zip(picks.items(), rings, strict=False):
        ax.scatter([pick.params], [pick.accuracy], s=260, facecolors="none", edgecolors=colour, linewidths=2,
                   label=f"{name}: {pick.params / 1e3:.0f}k params, {pick.accuracy:.3f}", zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("validation accuracy (search split)")
    ax.set_title(f"model search: {len(trials)} trained trials, objectives {', '.join(objectives)}")
    ax.grid(alpha=0.3, which="both")
    xs = [c.params for c in front] + [r.params for r in references.values()]
    if xs:
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)  # room for the reference labels
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_confusion(matrix: Any, classes: Sequence[str], title: str) -> Any:
    """A row-normalised confusion matrix (true class by row) with the counts written in."""
    import matplotlib.pyplot as plt

    counts = matrix.float()
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
