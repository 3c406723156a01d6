"""Every search stage, registered once: its identity, how its search is built, how its result
is summarised.

A ``SearchStage`` is the one description of a search stage that the stage function, ``autoaug
worker`` and the benches share, so they cannot drift apart: the worker builds exactly the
method the stage builds (the same champion, the same seeds), and a restarted stage or a worker
finds the stage's MLflow run by the same identity.

The registry maps a stage name to the module that defines its spec (``SPEC``), imported on
first use: a stage's code then depends only on its own search (dvc.yaml's code deps stay
narrow; ``tests/test_dvc_deps.py``). To add a search stage: write its ``SearchMethod``, a spec
module with ``SPEC = SearchStage(...)``, and one line in ``SEARCH_STAGES``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import optuna
import torch

from pipeline.augment import Policy
from pipeline.config import Params
from pipeline.contracts import Chosen
from pipeline.data import ImageSet
from pipeline.device import pick_device
from pipeline.errors import AutoaugError
from pipeline.files import Laps
from pipeline.search.method import SearchMethod
from pipeline.search.runner import Role, SearchOutcome, StudyRunner
from pipeline.search.studies import search_name
from pipeline.tracking import RunLogger, Tracker

SEARCH_STAGES: dict[str, str] = {
    "search_policy": "pipeline.search.specs.policy",
    "search_model": "pipeline.search.specs.model",
    "search_recipe": "pipeline.search.specs.recipe",
}
"""A search stage's name -> the module whose ``SPEC`` describes it."""


@dataclass(frozen=True)
class BuildContext:
    """What a search is built from: the params, the stage's inputs and where it runs."""

    params: Params
    sample: ImageSet
    fingerprint: str  # the sample's
    device: torch.device
    cache: Path | None = None  # the search's own cache directory (``SearchStage.cache``)
    progress: bool = True
    policy: Policy | None = None  # the policy search's policy, for a search that trains with it
    tracker: Tracker | None = None  # the MLflow store (the model search looks up the @champion in it)
    chosen: Chosen | None = None  # the model search's choice, for a search that trains it (the recipe search)
    retrain_images: int | None = None  # training images the retrain will use (the sample's pool)


M = TypeVar("M", bound=SearchMethod)
R = TypeVar("R")


def _no_policy(params: Params) -> bool:
    return False


def _no_chosen(params: Params) -> bool:
    return False


def _no_variant(params: Params, chosen: Chosen | None) -> str | None:
    return None


@dataclass(frozen=True)
class SearchStage(Generic[M, R]):
    """One search stage.

    name       the DVC stage (and the prefix of its studies' names)
    space      what defines the search space, from the params alone: the stage's identity is
               known before anything is loaded
    build      the search method from a ``BuildContext``
    summarise  the stage's result from the finished search (``method, outcome, context,
               MLflow run id``): what the stage writes
    log_every  a coordinator logs its finished trials to MLflow every this many trials
    uses_policy  whether the search trains with the policy search's policy (the model search
               with ``augment: policy``)
    uses_chosen  whether the search trains the model search's chosen architecture (the recipe
               search)
    variant    what else than the data and the space a search is of (the recipe search: the
               chosen architecture and its fitted epochs), from the params and chosen.json; in
               the search's identity (its studies' names and its stage run's resume key), so
               another variant on the same data warm-starts a new study in a new stage run
               instead of resuming one whose trials trained something else (None: nothing else)
    """

    name: str
    space: Callable[[Params], dict[str, Any]]
    build: Callable[[BuildContext], M]
    summarise: Callable[[M, SearchOutcome, BuildContext, str], R]
    log_every: int = 10
    uses_policy: Callable[[Params], bool] = _no_policy
    uses_chosen: Callable[[Params], bool] = _no_chosen
    variant: Callable[[Params, Chosen | None], str | None] = _no_variant

    def study_key(self, params: Params, fingerprint: str, chosen: Chosen | None = None) -> str:
        """What the search is of besides its space: the data, and the variant on it."""
        variant = self.variant(params, chosen)
        return f"{fingerprint}.{variant}" if variant else fingerprint

    def identity(self, params: Params, fingerprint: str, chosen: Chosen | None = None) -> str:
        """The search's identity: its stage run's resume key (a restarted stage, or a worker,
        joins the same run) and the prefix of its studies' names."""
        return search_name(self.name, self.space(params), self.study_key(params, fingerprint, chosen))

    def cache(self, root: str | os.PathLike[str] | None) -> Path | None:
        """The search's cache directory under the cache root (None: no cache)."""
        return Path(root) / self.name if root else None

    def context(self, params: Params, sample: ImageSet, fingerprint: str, *, cache_root: str | os.PathLike[str] | None,
                progress: bool = True, policy: Policy | None = None, tracker: Tracker | None = None,
                chosen: Chosen | None = None, retrain_images: int | None = None) -> BuildContext:
        """The context a stage and a worker build the search from (on this machine's device)."""
        return BuildContext(params, sample, fingerprint, pick_device(), self.cache(cache_root), progress, policy,
                            tracker, chosen, retrain_images)

    def runner(self, method: M, storage: optuna.storages.BaseStorage, run: RunLogger, params: Params,
               fingerprint: str, *, chosen: Chosen | None = None, progress: bool = True,
               role: Role = "coordinator") -> StudyRunner:
        """The study runner of ``method`` (built from ``params`` and ``chosen`` on the data of
        ``fingerprint``); a worker logs each trial at once (nothing to adopt)."""
        return StudyRunner(method, storage, fingerprint, run, progress=progress, role=role,
                           log_every=self.log_every if role == "coordinator" else 1,
                           study_key=self.study_key(params, fingerprint, chosen))

    def run(self, context: BuildContext, storage: optuna.storages.BaseStorage, run: RunLogger,
            laps: Laps | None = None) -> R:
        """The whole search as the stage runs it (the coordinator), summarised; ``laps`` times
        its steps: build (the method), trials (the studies), summarise (e.g. the references)."""
        laps = laps or Laps()
        method = self.build(context)
        laps.lap("build")
        outcome = self.runner(method, storage, run, context.params, context.fingerprint, chosen=context.chosen,
                              progress=context.progress).run()
        laps.lap("trials")
        summary = self.summarise(method, outcome, context, run.run_id)
        laps.lap("summarise")
        return summary


def search_stage(name: str) -> SearchStage[Any, Any]:
    """The registered spec of the search stage ``name``; a user error for any other name."""
    if name not in SEARCH_STAGES:
        raise AutoaugError(f"unknown search stage {name!r}; one of {', '.join(SEARCH_STAGES)}")
    spec: SearchStage[Any, Any] = importlib.import_module(SEARCH_STAGES[name]).SPEC
    return spec
