"""bench/warmpolicy.py's plumbing: a consistent copy of a study storage that is still open, and
the search seed that moves the sampler only."""

from __future__ import annotations

from pathlib import Path

import optuna

from bench.warmpolicy import search_seed
from bench.warmstart import copy_storage
from pipeline.config import PolicySearchConfig
from pipeline.data import ImageSet
from pipeline.search import policy as policy_module
from pipeline.search.studies import open_storage


def test_the_copy_of_an_open_wal_storage_holds_its_latest_trials(tmp_path: Path) -> None:
    src, dst = tmp_path / "v1.db", tmp_path / "copy.db"
    storage = open_storage(f"sqlite:///{src}")  # WAL: recent commits sit in v1.db-wal while it is open
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    copy_storage(src, dst)
    copied = optuna.load_study(study_name="s", storage=open_storage(f"sqlite:///{dst}"))
    assert [t.params for t in copied.trials] == [t.params for t in study.trials]
    assert not dst.with_suffix(".part").exists()


def test_a_search_seed_moves_the_sampler_and_is_undone(tmp_path: Path) -> None:
    cfg = PolicySearchConfig()
    sample = ImageSet.__new__(ImageSet)  # the sampler needs no images

    def draws() -> list[dict[str, object]]:
        method = policy_module.METHODS["faa"](cfg, sample, "fp", device="cpu", progress=False)  # type: ignore[arg-type]
        study = optuna.create_study(sampler=method.sampler(0), direction="maximize")
        study.optimize(lambda t: float(len(policy_module.suggest_policy(t, cfg))), n_trials=2)
        return [t.params for t in study.trials]

    before = policy_module.METHODS["faa"]
    plain = draws()
    with search_seed(0):
        assert draws() == plain  # offset 0 is the pipeline's own seed
    with search_seed(1):
        moved = draws()
    assert moved != plain
    assert policy_module.METHODS["faa"] is before
