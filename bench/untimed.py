"""The model search's untimed refusals (``model_search.untimed_bound``), replayed on a finished study.

Within the counted budgets, the model search times each draw's retrain step to predict its
retrain minutes (``max_retrain_minutes``). Where most draws are far over the budget (a CPU
without native bf16, 3-5x slower), those timings are most of the search. ``untimed_bound``
refuses a draw from its MACs alone when even the fewest retrain minutes per MAC seen so far
(x the factor) put it over the budget. This bench reads a finished ``search_model`` study that
timed every draw (no training, no timing) and replays the rule in trial order for each factor,
with ``pipeline.search.model.minutes_per_mac`` and ``mac_bound`` as the search uses them
(a draw the rule skips adds nothing to the record, as in the search; seed points and the
champion's fine-tune are always timed). Printed per factor: the timings skipped, the draws that
fit the budget but would have been refused (lost: the rule's only error), and the minutes saved.

The minutes saved are the skipped refusals' durations less what an untimed trial costs anyway
(building the network, counting its parameters and MACs, the sampler): the median duration of
the study's trials refused before any timing (over the parameter or MAC budget). The peer is the
study itself (the same draws, every one timed): ``search_min_after / search_min_before``.

``--activations`` replays the bound as the search uses it since it also counts activations
(``counts_bound`` over ``BOUND_COUNTS``: the larger of the MAC bound and the activation bound):
each draw's activations are its trial's ``activations`` or, in a study from before they were
recorded, counted from its configuration (``count_activations``). Such a study may have been
run with the MAC bound on: its draws refused untimed stay refused (the MAC part alone refused
them, at a record no richer than the replay's), which holds for factors at least the study's own.

A replay, not a run: a search that refused without timing gives its sampler the bound's
constraint value instead of the measured one (the same sign: TPE reads feasibility, NSGA-II also
the size of the violation), and may draw differently afterwards.

    python -m bench.untimed --storage /path/to/project/optuna.db [--factors 1.0 0.75 0.5] [--activations]
"""

from __future__ import annotations

import argparse
import statistics
from datetime import datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from bench.common import machine, model_search_study, result_line
from pipeline.config import ModelSearchConfig
from pipeline.models import SPACE_POINTS, build_model, count_activations
from pipeline.names import (
    ACTIVATIONS_ATTR,
    MACS_ATTR,
    PREDICTED_RETRAIN_MINUTES_ATTR,
    RETRAIN_MINUTES_BOUND_ATTR,
    SEEDED_ATTR,
    TRAIN_SECONDS_ATTR,
)
from pipeline.search.model import BOUND_COUNTS, config_from_params, counts_bound, minutes_per_mac


def seconds(trial: FrozenTrial) -> float:
    start, end = trial.datetime_start, trial.datetime_complete
    return (end - start).total_seconds() if isinstance(start, datetime) and isinstance(end, datetime) else 0.0


def activations_of(trial: FrozenTrial) -> int:
    """The draw's activations: recorded by the search, or counted from its configuration."""
    if ACTIVATIONS_ATTR in trial.user_attrs:
        return int(trial.user_attrs[ACTIVATIONS_ATTR])
    seed = trial.user_attrs.get(SEEDED_ATTR)
    config = SPACE_POINTS[seed] if isinstance(seed, str) and seed in SPACE_POINTS else config_from_params(trial.params)
    return count_activations(build_model(config))


def replay(trials: list[FrozenTrial], factor: float, limit: float,
           activations: bool = False) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """(skipped, lost): the timed draws ``untimed_bound = factor`` would have refused untimed, in
    trial order, and those of them whose measured prediction was within ``limit``; from the MACs
    alone, or with ``activations`` from both counts as the search does (``counts_bound``)."""
    names = BOUND_COUNTS if activations else (MACS_ATTR,)
    record: dict[str, list[float]] = {name: [] for name in names}
    skipped: list[FrozenTrial] = []
    for t in trials:
        per_mac = minutes_per_mac(t)
        if per_mac is None:
            continue  # not timed (over a counted budget), or the champion's fine-tune
        macs = float(t.user_attrs[MACS_ATTR])
        counts = {MACS_ATTR: macs}
        if activations:
            counts[ACTIVATIONS_ATTR] = float(activations_of(t))
        bound = counts_bound(record, counts, factor)
        if SEEDED_ATTR not in t.user_attrs and bound is not None and bound > limit:
            skipped.append(t)
            continue
        for name, amount in counts.items():
            record[name].append(per_mac * macs / amount)  # minutes per unit of each count
    lost = [t for t in skipped if float(t.user_attrs[PREDICTED_RETRAIN_MINUTES_ATTR]) <= limit]
    return skipped, lost


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True, help="the project's optuna.db (a path or an SQLAlchemy URL)")
    p.add_argument("--study", help="the study's name (default: the last search_model study in the storage)")
    p.add_argument("--limit", type=float, default=ModelSearchConfig().max_retrain_minutes,
                   help="the study's max_retrain_minutes (default: the shipped default, %(default)s)")
    p.add_argument("--factors", type=float, nargs="+", default=[1.0, 0.75, 0.6, 0.5])
    p.add_argument("--activations", action="store_true",
                   help="the bound from MACs and activations, as the search uses it (default: MACs alone)")
    args = p.parse_args()
    study = model_search_study(args.storage, args.study)
    name = study.study_name
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    if any(RETRAIN_MINUTES_BOUND_ATTR in t.user_attrs for t in trials) and not args.activations:
        raise SystemExit(f"{name}: some draws were already refused untimed; replay a study run with "
                         "model_search.untimed_bound: null")
    timed = [t for t in trials if minutes_per_mac(t) is not None]
    if not timed:
        raise SystemExit(f"{name}: no draw was timed (max_retrain_minutes off?)")
    untimed = [seconds(t) for t in trials if MACS_ATTR in t.user_attrs and PREDICTED_RETRAIN_MINUTES_ATTR not in t.user_attrs
               and TRAIN_SECONDS_ATTR not in t.user_attrs]
    overhead = statistics.median(untimed) if untimed else 0.0
    starts = [t.datetime_start for t in trials if isinstance(t.datetime_start, datetime)]
    ends = [t.datetime_complete for t in trials if isinstance(t.datetime_complete, datetime)]
    before = (max(ends) - min(starts)).total_seconds() / 60
    refused = [t for t in timed if float(t.user_attrs[PREDICTED_RETRAIN_MINUTES_ATTR]) > args.limit]
    print(f"machine: {machine()}\nstudy {name}: {len(trials)} draws, {len(timed)} timed, {len(refused)} of them "
          f"refused by the {args.limit:g}-minute budget ({sum(seconds(t) for t in refused) / 60:.1f} min of "
          f"trials); the trials (first start to last end) {before:.1f} min; an untimed refusal costs "
          f"{overhead:.2f} s (median of {len(untimed)})", flush=True)
    fields: dict[str, Any] = {"draws": len(trials), "timed": len(timed), "timed_refused": len(refused),
                              "search_min_before": before, "bound": "macs+activations" if args.activations else "macs"}
    for factor in args.factors:
        skipped, lost = replay(trials, factor, args.limit, activations=args.activations)
        # a lost draw was trained: its minutes are not a saving (the search would draw another)
        saved = sum(max(0.0, seconds(t) - overhead) for t in skipped if t not in lost) / 60
        print(f"untimed_bound {factor:g}: {len(skipped)} of {len(refused)} refused timings skipped, "
              f"{len(lost)} draws that fit lost{' ' + str([t.number for t in lost]) if lost else ''}, "
              f"{saved:.1f} min saved: the trials {before - saved:.1f} min ({(before - saved) / before:.3f} of before)")
        key = f"{factor:g}".replace(".", "")
        fields.update({f"skipped_{key}": len(skipped), f"lost_{key}": len(lost), f"saved_min_{key}": saved,
                       f"ratio_{key}": (before - saved) / before})
    fields["machine"] = machine().replace(" ", "_")
    print(result_line(**fields))


if __name__ == "__main__":
    main()
