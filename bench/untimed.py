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

A replay, not a run: a search that refused without timing gives its sampler the bound's
constraint value instead of the measured one (the same sign: TPE reads feasibility, NSGA-II also
the size of the violation), and may draw differently afterwards.

    python -m bench.untimed --storage /path/to/project/optuna.db [--factors 1.0 0.75 0.5]
"""

from __future__ import annotations

import argparse
import statistics
from datetime import datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from bench.common import machine, model_search_study, result_line
from pipeline.names import (
    MACS_ATTR,
    PREDICTED_RETRAIN_MINUTES_ATTR,
    RETRAIN_MINUTES_BOUND_ATTR,
    SEEDED_ATTR,
    TRAIN_SECONDS_ATTR,
)
from pipeline.search.model import mac_bound, minutes_per_mac


def seconds(trial: FrozenTrial) -> float:
    start, end = trial.datetime_start, trial.datetime_complete
    return (end - start).total_seconds() if isinstance(start, datetime) and isinstance(end, datetime) else 0.0


def replay(trials: list[FrozenTrial], factor: float, limit: float) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """(skipped, lost): the timed draws ``untimed_bound = factor`` would have refused untimed, in
    trial order, and those of them whose measured prediction was within ``limit``."""
    record: list[float] = []
    skipped: list[FrozenTrial] = []
    for t in trials:
        per_mac = minutes_per_mac(t)
        if per_mac is None:
            continue  # not timed (over a counted budget), or the champion's fine-tune
        bound = mac_bound(record, float(t.user_attrs[MACS_ATTR]), factor)
        if SEEDED_ATTR not in t.user_attrs and bound is not None and bound > limit:
            skipped.append(t)
            continue
        record.append(per_mac)
    lost = [t for t in skipped if float(t.user_attrs[PREDICTED_RETRAIN_MINUTES_ATTR]) <= limit]
    return skipped, lost


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True, help="the project's optuna.db (a path or an SQLAlchemy URL)")
    p.add_argument("--study", help="the study's name (default: the last search_model study in the storage)")
    p.add_argument("--limit", type=float, default=25.0, help="the study's max_retrain_minutes")
    p.add_argument("--factors", type=float, nargs="+", default=[1.0, 0.75, 0.6, 0.5])
    args = p.parse_args()
    study = model_search_study(args.storage, args.study)
    name = study.study_name
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    if any(RETRAIN_MINUTES_BOUND_ATTR in t.user_attrs for t in trials):
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
                              "search_min_before": before}
    for factor in args.factors:
        skipped, lost = replay(trials, factor, args.limit)
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
