"""Every name the project writes into MLflow (tags, metrics) or into Optuna (study and trial
user attributes), in one place.

A reader finds every writer and reader of a name by its symbol, never by grepping a string.
The values are stored data (MLflow runs, Optuna studies already written), so a value is never
renamed: add a new constant instead.
"""

from __future__ import annotations

from typing import Final

# --- MLflow tags on stage runs -----------------------------------------------------------
FINGERPRINT: Final = "autoaug.fingerprint"  # the sample (or store) content a run worked on
DVC_STAGE: Final = "autoaug.dvc_stage"  # the DVC stage a stage run belongs to
RESUME_KEY: Final = "autoaug.resume_key"  # a restarted stage (or a worker) finds its run by it
DEVICE: Final = "autoaug.device"  # cpu / cuda / mps: where the stage trained
STUDY: Final = "optuna.study"  # the Optuna study a run (stage, part or trial) belongs to
STUDIES: Final = "autoaug.studies"  # comma-separated: every study a stage run used
POLICY_STUDIES: Final = "autoaug.policy_studies"  # the studies the model search's policy came from
CHOSEN_TRIAL: Final = "autoaug.chosen_trial"  # the model search's chosen trial number
SEARCH_MODEL_RUN: Final = "autoaug.search_model_run"  # retrain: the model search run it retrained
WARM_START_FROM: Final = "autoaug.warm_start_from"  # the prior study / champion a run started from
COLD_START: Final = "autoaug.cold_start"  # why a part could not be warm-started
BUDGET: Final = "autoaug.budget"  # the number of trials a part runs
MODEL_VERSION: Final = "autoaug.model_version"  # publish: the registered version
PROMOTED: Final = "autoaug.promoted"  # publish: whether the version became @champion
REASON: Final = "autoaug.reason"  # publish: why it was (not) promoted
CHAMPION: Final = "autoaug.champion"  # publish: the @champion after the decision

# --- MLflow tags on nested runs ----------------------------------------------------------
KIND: Final = "autoaug.kind"  # "trial" on a trial run
TRIAL: Final = "autoaug.trial"  # a trial run's key: the trial number within its study
PART: Final = "autoaug.fold"  # a part run's key (the name predates model search's one-part study)
OPTUNA_TRIAL: Final = "optuna.trial"  # a trial run's Optuna trial number
SEED_POINT: Final = "autoaug.seed_point"  # the hand-designed point a cold study enqueued

# --- Optuna user attributes --------------------------------------------------------------
WORKER_ATTR: Final = "autoaug.worker"  # trial: the process that ran it (host:pid:nonce)
READY_ATTR: Final = "autoaug.ready"  # study: opened (and warm-started) by the coordinator
WARM_ATTR: Final = "warm_started_from"  # study: the prior study it was warm-started from
COLD_ATTR: Final = COLD_START  # study: why a prior study could not be used
HISTORY_COUNT_ATTR: Final = "autoaug.history_trials"  # study: prior trials given to the sampler
HISTORY_ATTR: Final = "autoaug.history"  # trial: a prior study's trial, copied as sampler history
FORMAT_ATTR: Final = "autoaug.format"  # study: the study format it was written with
SEEDED_ATTR: Final = "seed_point"  # trial: the seed point's name (Method.seed_points)
WARM_FROM_ATTR: Final = "warm_start_from"  # trial: the prior study an enqueued trial came from
