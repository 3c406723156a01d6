"""Successive halving for the model search, replayed on a finished study's curves.

Every candidate a model search trains is scored on the validation split after each epoch of the
candidate recipe (the trial's ``curve.val_accuracy``). This bench reads a finished ``search_model``
study (no training) and prints:

1. **Rank agreement per epoch**: Spearman's rank correlation between the candidates' validation
   accuracy after epoch e and after the last epoch (what the search keeps), over the candidates
   that trained the whole recipe; a rung is only worth having where this is high.
2. **The rule replayed** (``model_search.halving``: ``pipeline.search.model.rung_records`` and
   ``dominated_at_rung``, the code the search runs): in trial order, which candidates would have
   stopped at which rung (a stopped one then counts only up to its rung for later candidates),
   whether any member of the study's final Pareto front would have been stopped (the front is
   kept when none is), the epochs saved and the candidates trained per minute before and after
   (each candidate's own training seconds per epoch).

A replay, not a run: a search that stopped candidates would have given its sampler other values
and drawn other candidates afterwards. The rank agreement with the *full retrain* (at least 8
architectures each retrained for ``retrain.recipe``) is another measurement: ``bench/fidelity.py``.

    python -m bench.halving --storage /path/to/project/optuna.db --rungs 1 2
"""

from __future__ import annotations

import argparse
from typing import Any

import optuna

from bench.candidates import spearman
from bench.common import machine, model_search_study, result_line
from pipeline.config import HalvingConfig
from pipeline.names import TRAIN_SECONDS_ATTR, VAL_ACCURACY_CURVE
from pipeline.search.model import dominated_at_rung, rung_records
from pipeline.search.studies import feasible, pareto_front


def full_candidates(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's candidates that trained the whole recipe (feasible, a full curve), in order."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if feasible(t) and t.user_attrs.get(VAL_ACCURACY_CURVE)]
    epochs = max(len(t.user_attrs[VAL_ACCURACY_CURVE]) for t in trials)
    return sorted((t for t in trials if len(t.user_attrs[VAL_ACCURACY_CURVE]) == epochs), key=lambda t: t.number)


def rank_agreement(trials: list[optuna.trial.FrozenTrial]) -> dict[int, float]:
    """Spearman between the accuracy after each epoch and after the last."""
    curves = [t.user_attrs[VAL_ACCURACY_CURVE] for t in trials]
    final = [c[-1] for c in curves]
    return {e + 1: spearman([c[e] for c in curves], final) for e in range(len(curves[0]) - 1)}


def replay(trials: list[optuna.trial.FrozenTrial], halving: HalvingConfig) -> dict[int, int]:
    """{trial number: rung it would have stopped at} under ``halving``, in trial order."""
    stopped: dict[int, int] = {}
    seen: list[optuna.trial.FrozenTrial] = []
    for t in trials:
        curve = t.user_attrs[VAL_ACCURACY_CURVE]
        for rung in halving.rungs:
            # earlier candidates as the search would have left them: a stopped one reached its rung only
            earlier = [s if s.number not in stopped else truncated(s, stopped[s.number]) for s in seen]
            if dominated_at_rung(rung_records(earlier, rung, 1), curve[rung - 1], list(t.values[1:]), halving):
                stopped[t.number] = rung
                break
        seen.append(t)
    return stopped


def truncated(trial: optuna.trial.FrozenTrial, epochs: int) -> optuna.trial.FrozenTrial:
    attrs = {**trial.user_attrs, VAL_ACCURACY_CURVE: trial.user_attrs[VAL_ACCURACY_CURVE][:epochs]}
    return optuna.trial.create_trial(values=list(trial.values), user_attrs=attrs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True, help="the project's optuna.db (a path or an SQLAlchemy URL)")
    p.add_argument("--study", help="the study's name (default: the last search_model study in the storage)")
    p.add_argument("--rungs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dominated-by", type=int, default=2)
    p.add_argument("--min-trials", type=int, default=4)
    args = p.parse_args()
    study = model_search_study(args.storage, args.study)
    name = study.study_name
    trials = full_candidates(study)
    halving = HalvingConfig(rungs=args.rungs, dominated_by=args.dominated_by, min_trials=args.min_trials)
    epochs = len(trials[0].user_attrs[VAL_ACCURACY_CURVE])
    print(f"machine: {machine()}\nstudy {name}: {len(trials)} candidates trained for {epochs} epochs "
          f"(objectives {len(study.directions)}); rule {halving.model_dump()}", flush=True)

    agreement = rank_agreement(trials)
    for epoch, rho in agreement.items():
        print(f"epoch {epoch} of {epochs}: Spearman with the last epoch's accuracy {rho:.3f}")

    stopped = replay(trials, halving)
    front = {t.number for t in pareto_front(trials, study.directions)}
    cut_front = sorted(front & set(stopped))
    per_epoch = {t.number: t.user_attrs.get(TRAIN_SECONDS_ATTR, 0.0) / epochs for t in trials}
    before = sum(per_epoch.values()) * epochs / 60
    saved = sum(per_epoch[n] * (epochs - rung) for n, rung in stopped.items()) / 60
    for t in trials:
        if t.number in stopped:
            print(f"trial {t.number}: stopped at epoch {stopped[t.number]} (final accuracy "
                  f"{t.values[0]:.4f}, {t.values[1]:.0f} {'on the front' if t.number in front else 'off the front'})")
    fields: dict[str, Any] = {f"spearman_epoch{e}": rho for e, rho in agreement.items()}
    fields.update(candidates=len(trials), stopped=len(stopped), front=len(front), front_stopped=len(cut_front),
                  train_min_before=before, train_min_after=before - saved,
                  candidates_per_min_before=len(trials) / before if before else float("nan"),
                  candidates_per_min_after=len(trials) / (before - saved) if before > saved else float("nan"),
                  rungs="-".join(map(str, halving.rungs)), dominated_by=halving.dominated_by,
                  min_trials=halving.min_trials, machine=machine().replace(" ", "_"))
    print(result_line(**fields))


if __name__ == "__main__":
    main()
