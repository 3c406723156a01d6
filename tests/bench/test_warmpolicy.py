"""bench/warmpolicy.py's plumbing: a consistent copy of a study storage that is still open, and
the search seed that moves the sampler only (through the config: policy_search.seeds.sampler)."""

from __future__ import annotations

from pathlib import Path

import optuna
import torch

from bench.warmpolicy import with_search_seed
from bench.warmstart import copy_storage
from pipeline.config import Params, PolicySearchConfig
from pipeline.data import ImageSet
from pipeline.search.policy import FastAutoAugment, suggest_policy
from pipeline.search.registry import BuildContext, search_stage
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


def test_a_search_seed_moves_the_sampler_only(tmp_path: Path) -> None:
    cfg = PolicySearchConfig()
    sample = ImageSet.__new__(ImageSet)  # the sampler needs no images

    def method(cfg: PolicySearchConfig) -> FastAutoAugment:
        built = search_stage("search_policy").build(BuildContext(Params(policy_search=cfg), sample, "fp",
                                                                 torch.device("cpu"), progress=False))
        assert isinstance(built, FastAutoAugment)
        return built

    def draws(cfg: PolicySearchConfig) -> list[dict[str, object]]:
        study = optuna.create_study(sampler=method(cfg).sampler(0), direction="maximize")
        study.optimize(lambda t: float(len(suggest_policy(t, cfg))), n_trials=2)
        return [t.params for t in study.trials]

    plain = draws(cfg)
    assert draws(with_search_seed(cfg, 0)) == plain  # offset 0 is the pipeline's own seed
    moved = with_search_seed(cfg, 1)
    assert draws(moved) != plain
    # the splits and the children keep theirs: the same cached child, the same D_A
    assert (moved.split_seed, moved.train_seed, moved.sampler_seed) == (cfg.split_seed, cfg.train_seed, cfg.seed + 1)
    assert method(moved).child_key("fp", 0) == method(cfg).child_key("fp", 0)
