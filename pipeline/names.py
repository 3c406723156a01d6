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
NARROWED_ATTR: Final = "narrowed"  # trial (model search): how many times its seed point was narrowed to fit the budgets
WARM_FROM_ATTR: Final = "warm_start_from"  # trial: the prior study an enqueued trial came from

# --- the promotion gate and the metrics `autoaug history` reads (contracts / champion) ------
GATE: Final = "autoaug.gate"  # publish: the rule that decided (pipeline.contracts.Gate)
P_VALUE: Final = "p_value"  # publish metric: McNemar's exact one-sided p (candidate not better)
DIFFERENCE_POINTS: Final = "difference_points"  # publish metric: candidate - champion, accuracy points
DIFFERENCE_LOW_POINTS: Final = "difference_low_points"  # publish metric: its 95 % interval, low end
DIFFERENCE_HIGH_POINTS: Final = "difference_high_points"  # publish metric: its 95 % interval, high end
DISCORDANT_CANDIDATE: Final = "candidate_only"  # publish metric: test images only the candidate gets right
DISCORDANT_CHAMPION: Final = "champion_only"  # publish metric: test images only the champion gets right
TEST_ACCURACY: Final = "test_accuracy"  # retrain metric (RetrainMetrics.test_accuracy); a version tag too
TRAIN_IMAGES: Final = "train_images"  # retrain metric (RetrainMetrics.train_images)
TRAIN_LOSS: Final = "train_loss"  # retrain metric, one step per epoch (the epoch's mean loss)
TRAIN_ACCURACY: Final = "train_accuracy"  # retrain metric, one step per epoch
IMAGES_PER_S: Final = "images_per_s"  # retrain metric, one step per epoch (training throughput)
CLASS_ACCURACY_PREFIX: Final = "class_accuracy."  # retrain metrics: one per class
STEP_PREFIX: Final = "step_seconds."  # stage metrics: the wall seconds of each step (retrain: train, score, ...)
BEST_SCORE_MEAN: Final = "best_score_mean"  # search_policy metric (PolicySummary.best_score_mean)
WARM_STARTED_TRIALS: Final = "warm_started_trials"  # search metric (PolicySummary / ModelSearchSummary)
PARETO_SIZE: Final = "pareto_size"  # search_model metric (ModelSearchSummary.pareto_size)
CHAMPION_ARCHITECTURE_VERSION: Final = "champion_architecture_version"  # search_model metric
KEPT_CHAMPION: Final = "kept_champion"  # search_model metric (1: the champion's architecture was kept)
FINGERPRINT_VERSION_TAG: Final = "fingerprint"  # registered model version tag: its data fingerprint

# --- The search layer (pipeline/search) --------------------------------------------------
SKIPPED_ATTR: Final = "skipped"  # trial: why a model-search draw was never trained (over a budget)
REFUSED_PREFIX: Final = "refused_max_"  # stage metric: draws a budget refused, e.g. refused_max_params
# trial user attributes that become the trial run's metrics (every numeric one) and curves
ACCURACY_ATTR: Final = "accuracy"  # trial: the validation (model) or augmented-D_A (policy) accuracy
LOSS_ATTR: Final = "loss"  # trial (policy search): the augmented-D_A loss
PARAMS_ATTR: Final = "params"  # trial (model search): the candidate's parameters
MACS_ATTR: Final = "macs"  # trial (model search): its MACs per image (-1: not counted)
ACTIVATIONS_ATTR: Final = "activations"  # trial (model search): elements its layers output per image (untimed_bound)
TRAIN_COST_ATTR: Final = "train_cost"  # trial (model search): training step / ResNet-20's
STEP_SECONDS_ATTR: Final = "step_seconds"  # trial (model search): its measured training step
RETRAIN_STEP_SECONDS_ATTR: Final = "retrain_step_seconds"  # trial (model search): its step at the retrain recipe, batch included
RETRAIN_BATCH_SECONDS_ATTR: Final = "retrain_batch_seconds"  # trial (model search): that step's batch (flip, crop, policy)
RETRAIN_TIMINGS_ATTR: Final = "retrain_timings"  # trial (model search): how many times its retrain step was timed (the fastest stands)
PREDICTED_RETRAIN_MINUTES_ATTR: Final = "predicted_retrain_minutes"  # trial (model search): its retrain, predicted
RETRAIN_MINUTES_BOUND_ATTR: Final = "retrain_minutes_bound"  # trial (model search): a lower bound of its retrain minutes from its MACs (refused untimed)
REFUSED_UNTIMED: Final = "refused_untimed"  # stage metric (model search): draws the minutes budget refused from their MACs, never timed
FINE_TUNE_EPOCHS_ATTR: Final = "fine_tune_epochs"  # trial (model search): the @champion's architecture, predicted as a fine-tune of these epochs
RETRAIN_EPOCHS_ATTR: Final = "retrain_epochs"  # trial (model search): a known design over the minutes budget at retrain.recipe.epochs, retrained for these (fewer) epochs that fit
FULL_RETRAIN_MINUTES_ATTR: Final = "full_recipe_retrain_minutes"  # trial (model search): such a design's predicted minutes at retrain.recipe.epochs (untimed_bound's record)
TRAIN_SECONDS_ATTR: Final = "train_seconds"  # trial (model search): its training time
STOPPED_AT_ATTR: Final = "stopped_at_epoch"  # trial (model search): the rung successive halving stopped it at
HALVING_CONSTRAINT: Final = "halving"  # trial constraint (model search): > 0 when stopped at a rung
DIVERGED_RESTARTS: Final = "diverged_restarts"  # retrain run metric: trainings restarted at half the lr
DIVERGED_ATTR: Final = "diverged"  # trial (model, recipe search): why its training diverged (a non-finite loss) or collapsed (accuracy back to chance)
CURVE_PREFIX: Final = "curve."  # trial: a per-epoch list, logged as the metric's history (curve.val_accuracy)
VAL_ACCURACY_CURVE: Final = CURVE_PREFIX + "val_accuracy"
BEST_SCORE: Final = "best_score"  # part run metric: the part's best first objective
PART_TRIALS: Final = "trials"  # part run metric: the part's finished trials

# --- carried across data versions ---------------------------------------------------------
CARRIED_PREFIX: Final = "autoaug.carried."  # study attrs a warm-started study copies from its prior
REFERENCE_ATTR_PREFIX: Final = CARRIED_PREFIX + "reference."  # study: a reference network's score (+ provenance)
REFERENCES_CARRIED: Final = "references_carried"  # search_model metric: references reused, not trained
