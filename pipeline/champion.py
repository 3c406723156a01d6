"""The @champion: the registered model version under the registry alias ``champion``, the one
the service serves. Every stage after the searches meets it; this module is all it is.

- **find** it in the MLflow registry (``find``), with its retrain run's weights and metrics
  (``weights``) and its architecture (``architecture``);
- **start** a warm retrain from its weights when the chosen architecture is its own
  (``champion_start``);
- **re-score** it on today's test split beside the candidate, image by image
  (``score_champion``: the paired outcome publish's test needs);
- **keep** its architecture in the model search when it scores within
  ``choose.keep_champion_points`` of the rule's pick (``champion_architecture``,
  ``keep_champion``, ``keep_or_choose``);
- **promote** a candidate only when the gate says so (``judge``, then ``promote``).

The gate (``judge``): with the candidate's and the champion's predictions on the same test
images, the candidate is promoted when it is better at significance ``publish.alpha``
(McNemar's exact test on the images where they disagree), or, with ``publish.prefer``, when it
is not worse by more than ``publish.margin`` (the one-sided lower confidence bound of the
accuracy difference is above ``-margin``) and smaller or faster. Without paired data (a champion
re-scored by an older retrain, or the alias moved since) the rule before the gate decides: a
test accuracy above the champion's by more than ``margin``, and the decision says so.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, Self, TypeVar

import torch
from optuna.trial import FrozenTrial

from pipeline import names, paired
from pipeline.config import ChooseConfig, Params, PublishConfig, TrainConfig
from pipeline.contracts import ChampionRescore, Comparison, Gate, PairedOutcome, RetrainMetrics
from pipeline.data import ImageSet
from pipeline.device import autocast_dtype
from pipeline.errors import first_line
from pipeline.evaluation import SplitScore, latency_ms, score
from pipeline.hashing import json_digest
from pipeline.models import build_model, count_params, normalise_config, seed_design
from pipeline.tracking import Tracker

ALIAS = "champion"  # the registry alias; the service, publish and the searches mean this version

# ------------------------------------------------------------------ find


def find(tracker: Tracker, model_name: str) -> Any | None:
    """The registered model's version under the ``champion`` alias (an MLflow ModelVersion), or None."""
    return tracker.version_by_alias(model_name, ALIAS)


def promote(tracker: Tracker, model_name: str, version: str) -> None:
    """Move the ``champion`` alias to ``version``."""
    tracker.set_alias(model_name, ALIAS, version)


def weights(tracker: Tracker, champion: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A registered version's saved weights (its retrain run's ``weights/model.pt``: config,
    classes and state dict), its retrain metrics (``weights/metrics.json`` as the stage wrote
    them, lineage included; rebuilt from the run's metrics and params for a run without it)
    and its data fingerprint."""
    saved = tracker.artifact(champion.run_id, "weights/model.pt",
                             lambda p: dict(torch.load(p, map_location="cpu", weights_only=True)))
    if saved is None:
        raise FileNotFoundError(f"run {champion.run_id} has no weights/model.pt")
    run = tracker.client.get_run(champion.run_id)
    from mlflow.exceptions import MlflowException

    try:
        metrics = tracker.artifact(champion.run_id, "weights/metrics.json", lambda p: dict(json.loads(p.read_text())))
    except (OSError, ValueError, MlflowException):  # unreadable: rebuilt from what the run logged
        metrics = None
    return saved, metrics if metrics is not None else metrics_of_run(run), run.data.tags.get(names.FINGERPRINT, "")


def architecture(tracker: Tracker, model_name: str) -> tuple[str, dict[str, Any] | None] | None:
    """(version, its retrain run's ``model_config.json``: architecture config and classes) of
    the @champion; the document is None when that run did not log it. None: no champion."""
    champion = find(tracker, model_name)
    if champion is None:
        return None
    doc = tracker.artifact(champion.run_id, "model_config.json", lambda p: dict(json.loads(p.read_text())))
    return str(champion.version), doc


_COUNTS = ("epochs", "train_images", "test_images", "params", "macs")


def metrics_of_run(run: Any) -> dict[str, Any]:
    """A retrain run's metrics.json rebuilt from what MLflow keeps (floats, flat names, params
    as strings): per-class accuracies regrouped, counts as integers, the TTA as retrain names it."""
    logged = dict(run.data.metrics)
    prefix = names.CLASS_ACCURACY_PREFIX
    metrics: dict[str, Any] = {k: v for k, v in logged.items() if not k.startswith(prefix)}
    per_class = {k.removeprefix(prefix): v for k, v in logged.items() if k.startswith(prefix)}
    if per_class:
        metrics["per_class_accuracy"] = per_class
    for key in _COUNTS:
        if key in metrics:
            metrics[key] = int(metrics[key])
    flip = run.data.params.get("retrain.recipe.tta") == "True"
    translate = run.data.params.get("retrain.recipe.tta_translate") == "True"
    metrics["tta"] = "flip+translate" if flip and translate else "flip" if flip else "none"
    return metrics


# ------------------------------------------------------------------ start (retrain)


def champion_start(tracker: Tracker, model_name: str, config: Any, classes: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(version, state dict) of the @champion to fine-tune, or None (said why) when there is
    none or its architecture or classes differ from the chosen model's."""
    champion = find(tracker, model_name)
    if champion is None:
        print(f"retrain: no @champion of {model_name} yet: training from scratch", flush=True)
        return None
    saved, _, _ = weights(tracker, champion)
    # configs saved before the space gained fields compare by what they build (normalise_config)
    same = isinstance(config, str) and saved.get("config") == config or (
        isinstance(config, Mapping) and isinstance(saved.get("config"), Mapping)
        and normalise_config(saved["config"]) == normalise_config(config))
    if not same or list(saved.get("classes", [])) != list(classes):
        print(f"retrain: the chosen architecture is not the champion's (version {champion.version}): "
              "training from scratch", flush=True)
        return None
    print(f"retrain: starting from the champion's weights ({model_name} version {champion.version})", flush=True)
    return str(champion.version), saved["state_dict"]


def warm_recipe(recipe: TrainConfig, warm_epochs: int, warm_lr_scale: float) -> TrainConfig:
    """The recipe of a fine-tune from the champion: ``warm_epochs`` (at most the recipe's) at a
    share of its learning rate."""
    return recipe.model_copy(update={"epochs": min(warm_epochs, recipe.epochs), "lr": recipe.lr * warm_lr_scale})


# ------------------------------------------------------------------ re-score (retrain)


def score_champion(tracker: Tracker, model_name: str, test_set: ImageSet, recipe: TrainConfig,
                   device: torch.device, candidate: SplitScore) -> tuple[ChampionRescore | None, PairedOutcome | None]:
    """The @champion on today's test split with today's TTA, and its outcome paired with the
    ``candidate``'s image by image; (None, None) without a champion.

    The accuracy tagged on a registered version was measured on the test split of its day; after
    a data update (more test images) or a TTA change it is not comparable, so publish compares
    the new model with this re-score. When the weights, the test images, the TTA and the
    precision are those its own retrain scored it at, the predictions that retrain stored are
    read instead of scoring it again (``note`` says so). The re-score's ``test_accuracy`` is
    None (said why), and there is no paired outcome, when the champion's weights cannot be read
    or its classes are not today's.
    """
    from mlflow.exceptions import MlflowException

    champion = find(tracker, model_name)
    if champion is None:
        return None, None
    version = str(champion.version)
    try:
        saved, _, _ = weights(tracker, champion)
    except (MlflowException, OSError) as exc:
        print(f"retrain: cannot re-score the champion (version {version}): its weights are unreadable "
              f"({first_line(exc)})", flush=True)
        return ChampionRescore(version=version, test_accuracy=None, note="weights unreadable"), None
    if list(saved.get("classes", [])) != list(test_set.classes):
        return ChampionRescore(version=version, test_accuracy=None, note="other classes"), None
    model = build_model(saved["config"], num_classes=len(saved["classes"]))
    model.load_state_dict(saved["state_dict"])
    key = predictions_key(test_set, recipe, device, saved["state_dict"])
    predictions = stored_predictions(tracker, champion.run_id, key, len(test_set.classes))
    note = None
    if predictions is not None:  # what scoring it again would give: same weights, images, TTA, precision
        accuracy = int((predictions == test_set.labels.cpu()).sum()) / len(test_set)
        note = STORED_NOTE
    else:
        scored = score(model, test_set, recipe, device)
        predictions, accuracy = scored.predictions, scored.accuracy
    print(f"retrain: the champion (version {version}) scores {accuracy:.4f} on this test split"
          + (f" ({note})" if note else ""), flush=True)
    n, candidate_only, champion_only = paired.discordant(test_set.labels, candidate.predictions, predictions)
    model_cpu = model.to("cpu")
    outcome = PairedOutcome(version=version, n=n, candidate_only=candidate_only, champion_only=champion_only,
                            champion_params=count_params(model_cpu),
                            champion_latency_ms_batch1=latency_ms(model_cpu, torch.device("cpu"), 1))
    return ChampionRescore(version=version, test_accuracy=accuracy, note=note), outcome


PREDICTIONS_ARTIFACT = "weights/test_predictions.json"
STORED_NOTE = "its predictions stored at its retrain: the same test images, TTA and precision"


def predictions_key(test_set: ImageSet, recipe: TrainConfig, device: torch.device,
                    state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What a model's test predictions depend on: its weights (a digest of the state dict), the
    test images (their content ids, in order), the TTA and the precision the evaluation ran at
    on this device."""
    weights_digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        weights_digest.update(name.encode())
        weights_digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return {"weights": weights_digest.hexdigest(), "test_ids": json_digest(test_set.ids),
            "test_images": len(test_set), "tta": recipe.tta,
            "tta_translate": recipe.tta_translate, "precision": str(autocast_dtype(recipe.precision, device)),
            "device": device.type}


def store_predictions(run: Any, key: Mapping[str, Any], predictions: torch.Tensor) -> None:
    """Log a retrained model's test predictions on its run (``PREDICTIONS_ARTIFACT``), so that
    the next retrain, comparing its model with this one as the @champion on the same test
    images, reads them instead of scoring it again."""
    run.log_dict({**key, "predictions": predictions.tolist()}, PREDICTIONS_ARTIFACT)


def stored_predictions(tracker: Tracker, run_id: str, key: Mapping[str, Any], classes: int) -> torch.Tensor | None:
    """The predictions ``store_predictions`` logged on ``run_id`` when they were made under
    ``key``; None when there are none (a run older than them), they are unreadable or malformed
    (not one class index in ``range(classes)`` per test image), or anything in the key differs
    (other weights, the test split grew, another TTA or precision)."""
    from mlflow.exceptions import MlflowException

    try:
        doc = tracker.artifact(run_id, PREDICTIONS_ARTIFACT, lambda p: json.loads(p.read_text()))
        if not isinstance(doc, dict) or any(doc.get(k) != v for k, v in key.items()):
            return None
        predictions = torch.tensor(doc["predictions"], dtype=torch.long)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, MlflowException):
        return None
    if predictions.shape != (key["test_images"],) or not len(predictions) \
            or int(predictions.min()) < 0 or int(predictions.max()) >= classes:
        return None
    return predictions


# ------------------------------------------------------------------ keep (search_model)


class _Scored(Protocol):
    """What keep_champion needs of a candidate (``pipeline.search.model.Candidate``; not
    imported, so that retrain and publish do not depend on the search code)."""

    # read-only properties: a frozen dataclass (Candidate) satisfies them, plain attributes it would not
    @property
    def config(self) -> dict[str, Any] | str: ...
    @property
    def accuracy(self) -> float: ...
    @property
    def params(self) -> int: ...
    @property
    def trial(self) -> int | None: ...

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> Self: ...


C = TypeVar("C", bound=_Scored)


def _within_budgets(trial: FrozenTrial) -> bool:
    """pipeline.search.studies.feasible's rule (what Trial.set_constraint recorded), without
    importing the search code into retrain and publish."""
    return all(v <= 0 for v in trial.constraints.values())


def keep_champion(chosen: C, trials: Sequence[FrozenTrial], champion_config: Mapping[str, Any],
                  points: float, max_params: int | None = None) -> C | None:
    """The @champion's architecture instead of ``chosen`` when ``trials`` (the study's own finished
    trials) trained it within the budgets (and ``max_params``, an under_budget rule's) and its
    mean accuracy over them is within ``points`` accuracy points of ``chosen``; else None. The
    warm start re-trains it first (``ModelSearch.warm_first``); keeping it lets retrain start
    from its weights."""
    champion_config = normalise_config(champion_config)  # stored before the space's newer fields?
    trained = [t for t in trials if _within_budgets(t) and "accuracy" in t.user_attrs]
    same = [c for c in (type(chosen).from_trial(t) for t in trained) if c.config == champion_config]
    if not same or (max_params is not None and same[0].params > max_params):
        return None
    latest = max(same, key=lambda c: c.trial or 0)
    mean = replace(latest, accuracy=sum(c.accuracy for c in same) / len(same))  # type: ignore[type-var]
    return mean if mean.accuracy >= chosen.accuracy - points / 100 else None


def champion_architecture(tracker: Tracker, params: Params, classes: Sequence[str]) -> tuple[str, Any] | None:
    """(version, config) of the @champion's architecture when ``choose.keep_champion_points`` may
    keep it: set, a champion whose classes are the sample's, and a retrain that would start from
    its weights (``retrain.warm_epochs`` > 0). Says why not when a champion exists."""
    if params.model_search.choose.keep_champion_points is None:
        return None
    found = architecture(tracker, params.tracking.registered_model)
    if found is None:
        return None
    version, doc = found
    if not params.retrain.warm_epochs:
        why = "retrain.warm_epochs = 0 (retrain would not start from its weights)"
    elif doc is None or "config" not in doc:
        why = "its run has no model_config.json"
    elif list(doc.get("classes", [])) != list(classes):
        why = f"its classes {doc.get('classes')} are not the sample's {list(classes)}"
    else:
        return version, doc["config"]
    print(f"search_model: not keeping the @champion's architecture (version {version}): {why}", flush=True)
    return None


def keep_or_choose(params: Params, chosen: C, champion: tuple[str, Any] | None,
                   trials: Sequence[FrozenTrial]) -> C | None:
    """The @champion's candidate when ``choose.keep_champion_points`` keeps it over the rule's
    pick ``chosen`` (said either way), else None."""
    rule = params.model_search.choose
    points = rule.keep_champion_points
    if champion is None or points is None or champion[1] == chosen.config:
        return None
    version, config = champion
    kept = keep_champion(chosen, trials, config, points,
                         max_params=rule.budget_params if rule.rule == "under_budget" else None)
    if kept is None:
        print(f"search_model: choosing trial {chosen.trial} ({chosen.accuracy:.4f}): the @champion's architecture "
              f"(version {version}) was not trained by this search, broke a budget, or scored more than "
              f"{points:g} points below", flush=True)
        return None
    print(f"search_model: keeping the @champion's architecture (version {version}, trial {kept.trial}: "
          f"{kept.accuracy:.4f}) over trial {chosen.trial} ({chosen.accuracy:.4f}): within "
          f"choose.keep_champion_points = {points:g}", flush=True)
    return kept


def keep_seed_point(rule: ChooseConfig, chosen: C, trials: Sequence[FrozenTrial],
                    order: Sequence[str] = ()) -> tuple[str, C] | None:
    """(name, candidate) of the seed point ``rule.keep_seed_points`` keeps over the rule's pick
    ``chosen`` (said either way), else None: among this search's feasible trials of seed points
    that scored within that many points of ``chosen``, the first in ``order``
    (``model_search.seed_points``, the order of preference; a narrowed seed point ranks after
    its own design, and names not listed after the listed ones), the most accurate among equals.
    None when that is ``chosen`` itself."""
    points = rule.keep_seed_points
    seeded = [t for t in trials if names.SEEDED_ATTR in t.user_attrs and t.values and _within_budgets(t)]
    if points is None or not seeded:
        return None
    if rule.rule == "under_budget" and rule.budget_params is not None:
        seeded = [t for t in seeded if t.user_attrs.get(names.PARAMS_ATTR, 0) <= rule.budget_params]
    if not seeded:
        return None
    within = [t for t in seeded if t.values[0] >= chosen.accuracy - points / 100]
    if not within:
        best = max(seeded, key=lambda t: (t.values[0], -t.number))
        print(f"search_model: choosing trial {chosen.trial} ({chosen.accuracy:.4f}): it leads the best seed point "
              f"{best.user_attrs[names.SEEDED_ATTR]} ({best.values[0]:.4f}) by more than "
              f"choose.keep_seed_points = {points:g}", flush=True)
        return None

    def preference(t: FrozenTrial) -> tuple[int, int, float, int]:
        design = seed_design(str(t.user_attrs[names.SEEDED_ATTR]))
        listed = list(order).index(design) if design in order else len(order)
        return listed, int(t.user_attrs.get(names.NARROWED_ATTR, 0)), -t.values[0], t.number

    kept = min(within, key=preference)
    if kept.number == chosen.trial:
        return None
    name = str(kept.user_attrs[names.SEEDED_ATTR])
    why = (", and listed before the more accurate seed points in model_search.seed_points"
           if any(t.values[0] > kept.values[0] for t in within) else "")
    print(f"search_model: keeping seed point {name} (trial {kept.number}: {kept.values[0]:.4f}) over trial "
          f"{chosen.trial} ({chosen.accuracy:.4f}): within choose.keep_seed_points = {points:g}{why}", flush=True)
    return name, type(chosen).from_trial(kept)


# ------------------------------------------------------------------ promote (publish)


def decide(new_accuracy: float, champion_accuracy: float | None, margin: float) -> tuple[bool, str]:
    """The rule without paired data: promote only a strictly better model, by more than
    ``margin`` (accuracy, 0-1)."""
    if champion_accuracy is None:
        return True, f"no champion yet: promoted with test accuracy {new_accuracy:.4f}"
    if new_accuracy > champion_accuracy + margin:
        return True, (f"test accuracy {new_accuracy:.4f} beats the champion's {champion_accuracy:.4f} "
                      f"by more than the margin {margin:.4f}")
    return False, (f"kept the champion: test accuracy {new_accuracy:.4f} does not beat the champion's "
                   f"{champion_accuracy:.4f} by more than the margin {margin:.4f}")


def champion_score(champion: Any, rescored: ChampionRescore | Mapping[str, Any] | None) -> tuple[float | None, str]:
    """(the champion's accuracy to beat, where it comes from).

    Retrain re-scores the champion on its own test split and TTA (``champion_rescored``); that
    figure is used when it is for the champion of now. Otherwise the accuracy tagged on the
    registered version, which was measured on the test split of its day. A champion with
    neither (no tag, not re-scored) has no accuracy to beat.
    """
    if champion is None:
        return None, "no champion"
    if isinstance(rescored, Mapping):
        rescored = ChampionRescore.model_validate(rescored)
    if rescored is not None and rescored.version == str(champion.version) and rescored.test_accuracy is not None:
        return rescored.test_accuracy, f"champion version {champion.version} re-scored on this test split"
    recorded = float(champion.tags.get(names.TEST_ACCURACY, "nan"))
    if math.isnan(recorded):
        return None, f"champion version {champion.version} has no test_accuracy tag and was not re-scored"
    return recorded, f"champion version {champion.version}'s accuracy as registered, on the test split of its day"


FASTER_BY = 0.9
"""``prefer: faster`` counts a candidate as faster when its batch-1 latency is under this share of
the champion's."""


def compare(candidate: RetrainMetrics, outcome: PairedOutcome, alpha: float) -> Comparison:
    """The paired statistics of the candidate against the champion it was scored beside."""
    b, c, n = outcome.candidate_only, outcome.champion_only, outcome.n
    low, high = paired.interval(b, c, n)
    return Comparison(
        champion_version=outcome.version, n=n, candidate_only=b, champion_only=c,
        difference_points=100 * paired.difference(b, c, n), interval_points=(100 * low, 100 * high),
        p_value=paired.mcnemar_p(b, c), lower_bound_points=100 * paired.lower_bound(b, c, n, alpha),
        smaller=candidate.params is not None and candidate.params < outcome.champion_params,
        # a clear lead only: two medians of 30 CPU timings of the same network differ by chance
        faster=(candidate.latency_ms_batch1 is not None
                and candidate.latency_ms_batch1 < FASTER_BY * outcome.champion_latency_ms_batch1),
    )


def describe(comparison: Comparison) -> str:
    """``+0.50 points (95 % interval +0.33 to +0.67, McNemar p = 0.0001; 60 vs 10 of 10000 images)``."""
    low, high = comparison.interval_points
    return (f"{comparison.difference_points:+.2f} points (95 % interval {low:+.2f} to {high:+.2f}, "
            f"McNemar p = {comparison.p_value:.4g}; {comparison.candidate_only} vs {comparison.champion_only} "
            f"discordant of {comparison.n} test images)")


def paired_gate(comparison: Comparison, cfg: PublishConfig) -> tuple[bool, Gate, str]:
    """(promote, the rule that decided, why) from the paired comparison."""
    against = f"champion version {comparison.champion_version}"
    if comparison.p_value < cfg.alpha and comparison.difference_points > 100 * cfg.margin:
        return True, "better", (f"better than {against} at alpha {cfg.alpha:g} and by more than the margin "
                                f"{cfg.margin:.4f}: {describe(comparison)}")
    not_worse = comparison.lower_bound_points > -100 * cfg.margin
    edge = {"smaller": comparison.smaller, "faster": comparison.faster}.get(cfg.prefer or "", False)
    if not_worse and edge:
        return True, "not_worse_and_smaller" if cfg.prefer == "smaller" else "not_worse_and_faster", (
            f"not worse than {against} by more than the margin {cfg.margin:.4f} (lower bound "
            f"{comparison.lower_bound_points:+.2f} points) and {cfg.prefer} (publish.prefer): {describe(comparison)}")
    why = f"not better at alpha {cfg.alpha:g} by more than the margin {cfg.margin:.4f}"
    if cfg.prefer:
        why += (f", and not {cfg.prefer}" if not_worse else
                f", and possibly worse by more than the margin {cfg.margin:.4f} "
                f"(lower bound {comparison.lower_bound_points:+.2f} points)")
    return False, "kept", f"kept {against}: {why}: {describe(comparison)}"


@dataclass(frozen=True)
class Verdict:
    """Publish's decision on a candidate, before anything is written."""

    promote: bool
    gate: Gate
    reason: str
    champion_accuracy: float | None  # the champion's accuracy compared with (None: no champion)
    comparison: Comparison | None  # the paired statistics, when the retrain recorded them


def judge(candidate: RetrainMetrics, champion: Any | None, cfg: PublishConfig) -> Verdict:
    """Whether ``candidate`` (retrain's metrics) replaces ``champion`` (None: there is none)."""
    version = candidate.model_version
    accuracy, basis = champion_score(champion, candidate.champion_rescored)
    if champion is not None and version is not None and str(champion.version) == version:
        return Verdict(False, "already_champion", f"version {version} is already the champion", accuracy, None)
    outcome = candidate.champion_paired
    comparison = None
    if champion is None:
        promote, reason = decide(candidate.test_accuracy, None, cfg.margin)
        gate: Gate = "no_champion"
    elif outcome is not None and outcome.version == str(champion.version):
        comparison = compare(candidate, outcome, cfg.alpha)
        promote, gate, reason = paired_gate(comparison, cfg)
        reason += f" ({basis})"
    else:
        promote, reason = decide(candidate.test_accuracy, accuracy, cfg.margin)
        gate = "fallback_promoted" if promote else "fallback_kept"
        reason += (f" ({basis}; no paired test: the retrain did not score the candidate beside champion "
                   f"version {champion.version} image by image)")
    if promote and version is None:
        return Verdict(False, "no_version", "the retrain registered no model version: nothing to promote",
                       accuracy, comparison)
    return Verdict(promote, gate, reason, accuracy, comparison)


def gate_metrics(comparison: Comparison | None) -> dict[str, float]:
    """The paired statistics as the publish run's MLflow metrics (what `autoaug history` shows)."""
    if comparison is None:
        return {}
    low, high = comparison.interval_points
    return {names.DIFFERENCE_POINTS: comparison.difference_points, names.DIFFERENCE_LOW_POINTS: low,
            names.DIFFERENCE_HIGH_POINTS: high, names.P_VALUE: comparison.p_value,
            names.DISCORDANT_CANDIDATE: comparison.candidate_only, names.DISCORDANT_CHAMPION: comparison.champion_only}


__all__ = ["ALIAS", "Verdict", "architecture", "champion_architecture", "champion_score", "champion_start",
           "compare", "decide", "find", "gate_metrics", "judge", "keep_champion", "keep_or_choose",
           "metrics_of_run", "paired_gate", "promote", "score_champion", "warm_recipe", "weights"]
