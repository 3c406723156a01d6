"""Finished trials as nested MLflow runs: one run per trial, whoever ran it, across restarts.

A part's trials nest under the part's own run (a policy-search fold) or directly under the
stage run (the model search's one study). A trial's run is keyed by its number
(``names.TRIAL``), so syncing again after a restart logs only what is missing. Each process
logs only its own trials; the coordinator adopts those of a process that died between
finishing a trial and logging it (or ran on another host and has been silent for
``ADOPT_AFTER_S``). A trial the method gives no record (``SearchMethod.record`` is None: a
draw that was never trained) gets no run.
"""

from __future__ import annotations

import time
from typing import Any

import optuna

from pipeline.names import (
    CURVE_PREFIX,
    OPTUNA_TRIAL,
    PART,
    SEED_POINT,
    SEEDED_ATTR,
    STUDY,
    TRIAL,
    WARM_FROM_ATTR,
    WARM_START_FROM,
    WORKER_ATTR,
)
from pipeline.search.method import SearchMethod
from pipeline.search.studies import completed
from pipeline.search.workers import POLL_S, process_is_dead
from pipeline.tracking import RunLogger

ADOPT_AFTER_S = 60.0  # a trial finished this long ago by a process on another host and still not
#                      logged is logged by the coordinator (its process is taken to have died)
LINEAGE_TAGS = {WARM_FROM_ATTR: WARM_START_FROM, SEEDED_ATTR: SEED_POINT}
"""Where an enqueued trial came from: its user attribute -> the tag on its MLflow run."""


class TrialSync:
    """Logs a search's finished trials as nested runs, once each."""

    def __init__(self, method: SearchMethod, worker_id: str, tags: dict[str, Any]) -> None:
        self.method = method
        self.worker_id = worker_id
        self.tags = tags  # on every part and trial run (the data fingerprint)

    def part_run(self, stage_run: RunLogger, part: int, study_name: str) -> RunLogger:
        """The MLflow run the part's trials nest under: its own child run, or the stage run."""
        name = self.method.parts()[part]
        if name is None:
            return stage_run
        return stage_run.child(name, key_tag=PART, key=str(part), tags={**self.tags, STUDY: study_name})

    def logged(self, part_run: RunLogger) -> dict[str, list[str]]:
        """This part's trial runs by trial number; a trial logged twice (two processes racing
        to adopt it) keeps its first run and the others are deleted."""
        runs = part_run.children_runs(TRIAL)
        for number, ids in runs.items():
            for extra in ids[1:]:
                part_run.client.delete_run(extra)
            runs[number] = ids[:1]
        return runs

    def sync(self, part: int, study: optuna.Study, part_run: RunLogger, *, adopt: bool = False) -> int:
        """Give this process's finished trials their nested MLflow run, once (idempotent: safe
        after a restart). With ``adopt``, also the trials of processes that died or were on
        another host more than ``ADOPT_AFTER_S`` ago. Returns how many finished trials of
        others are still waiting for their own process to log them."""
        logged = self.logged(part_run)
        name = self.method.parts()[part]
        pending = 0
        for t in completed(study):
            if str(t.number) in logged or t.values is None:
                continue
            record = self.method.record(part, t)
            if record is None:
                continue  # no run for this trial, by the method's say
            owner = t.user_attrs.get(WORKER_ATTR)
            if owner and owner != self.worker_id:
                finished_ago = time.time() - t.datetime_complete.timestamp() if t.datetime_complete else 0.0
                if not adopt or not (process_is_dead(owner) or finished_ago > ADOPT_AFTER_S):
                    pending += 1
                    continue
            metrics = dict(zip(self.method.spec.objective_names, t.values, strict=True))
            metrics.update({k: v for k, v in t.user_attrs.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
            curves = {k.removeprefix(CURVE_PREFIX): v for k, v in t.user_attrs.items()
                      if k.startswith(CURVE_PREFIX) and isinstance(v, list)}
            part_run.log_finished_child(
                f"{name}-trial{t.number:03d}" if name else f"trial{t.number:03d}",
                key_tag=TRIAL, key=str(t.number), params=record.params, metrics=metrics, curves=curves,
                tags={**self.tags, STUDY: study.study_name, OPTUNA_TRIAL: t.number,
                      WORKER_ATTR: owner or self.worker_id,
                      **{tag: t.user_attrs[attr] for attr, tag in LINEAGE_TAGS.items() if attr in t.user_attrs}},
                dicts=record.artifacts,
            )
        return pending

    def adopt(self, part: int, study: optuna.Study, part_run: RunLogger) -> None:
        """The coordinator's last sync of a part: wait for the other processes to log their
        trials, and log those of processes that died, so every finished trial has one run."""
        while self.sync(part, study, part_run, adopt=True):
            time.sleep(POLL_S)
        self.logged(part_run)  # a race with a late owner leaves a duplicate: drop it
