"""Study storage on PostgreSQL, as in the compose deployment (needs AUTOAUG_TEST_POSTGRES_URL)."""

from __future__ import annotations

import os
import uuid

import optuna
import pytest

from pipeline.search.studies import find_prior, open_storage, warm_start

URL = os.environ.get("AUTOAUG_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="AUTOAUG_TEST_POSTGRES_URL is not set (PostgreSQL URL, e.g. "
                                                "postgresql://postgres@127.0.0.1:5432/postgres)")


def test_two_workers_share_one_study_and_warm_start_works() -> None:
    assert URL
    storage = open_storage(URL)
    tag = uuid.uuid4().hex[:8]
    old = optuna.create_study(study_name=f"test_stage-{tag}-oldprint-fold0", storage=storage, direction="maximize")
    old.optimize(lambda t: -(t.suggest_float("x", -1, 1) ** 2), n_trials=6)
    # a second "worker" opens the same study through its own storage object
    same = optuna.load_study(study_name=old.study_name, storage=open_storage(URL))
    same.optimize(lambda t: -(t.suggest_float("x", -1, 1) ** 2), n_trials=2)
    assert len(old.get_trials()) == 8

    prior = find_prior(storage, "test_stage", tag, "newprint", "fold0").study
    assert prior is not None and prior.study_name == old.study_name
    new = optuna.create_study(study_name=f"test_stage-{tag}-newprint-fold0", storage=storage, direction="maximize")
    assert warm_start(new, prior, top_k=3) == 3
    new.optimize(lambda t: -(t.suggest_float("x", -1, 1) ** 2), n_trials=3)
    assert new.best_value == pytest.approx(old.best_value)
    for name in (old.study_name, new.study_name):
        optuna.delete_study(study_name=name, storage=storage)
