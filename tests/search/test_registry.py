"""Contract tests over every registered search stage (``pipeline.search.registry``): each spec
builds a method that keeps the ``SearchMethod`` protocol, and the stage and ``autoaug worker``
build the same search through it. Plus the per-concern seeds of a search."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from pipeline.augment import Policy
from pipeline.config import Params, parse_params
from pipeline.contracts import Chosen
from pipeline.hashing import json_digest
from pipeline.search.method import MethodSpec, SearchMethod, WarmStart
from pipeline.search.policy import FastAutoAugment
from pipeline.search.registry import SEARCH_STAGES, BuildContext, search_stage
from pipeline.search.studies import space_hash
from pipeline.stages.common import open_inputs
from pipeline.stages.worker import build_method, current_chosen

from .conftest import tiny_sample

REPO = Path(__file__).resolve().parents[2]
PROTOCOL = ("spec", "parts", "space", "sampler", "seed_points", "prepare", "record", "decode", "combine")


def tiny_params(params: Params) -> Params:
    """The suite's tiny policy search, and a tiny model search beside it."""
    tiny = parse_params({"model_search": {"trials": 2, "train_images": 10, "val_images": 10, "references": [],
                                          "seed_points": [], "recipe": {"epochs": 1, "batch_size": 16}},
                         "recipe_search": {"trials": 2, "epochs": [1, 2], "fidelity": 1.0, "batch_size": 16,
                                           "train_images": 10, "val_images": 10}})
    return params.model_copy(update={"model_search": tiny.model_search, "recipe_search": tiny.recipe_search})


CHOSEN = Chosen(config="resnet20")  # what the recipe search trains (a search that reads chosen.json)


def test_the_search_method_protocol_stays_narrow() -> None:
    members = sorted(m for m in vars(SearchMethod) if not m.startswith("_"))
    assert members == sorted(PROTOCOL) and len(members) < 10


def test_an_unknown_search_stage_is_a_user_error() -> None:
    with pytest.raises(Exception, match="unknown search stage 'retrain'"):
        search_stage("retrain")


@pytest.mark.parametrize("name", sorted(SEARCH_STAGES))
def test_every_registered_spec_builds_a_method_that_keeps_the_protocol(name: str, params: Params) -> None:
    spec = search_stage(name)
    assert spec.name == name
    params = tiny_params(params)
    context = BuildContext(params, tiny_sample(), "fp", torch.device("cpu"), progress=False,
                           policy=Policy([[("Rotate", 0.5, 0.3)]]), chosen=CHOSEN, retrain_images=100)
    method = spec.build(context)
    for member in PROTOCOL:
        assert hasattr(method, member), f"{name}: no {member}"
    assert isinstance(method.spec, MethodSpec) and isinstance(method.spec.warm, WarmStart)
    assert method.spec.stage == name
    assert len(method.spec.objective_names) == len(method.spec.directions) >= 1
    assert method.parts() and method.space() == spec.space(params)  # the identity is known before loading
    key = f"fp.{spec.variant(params, CHOSEN)}" if spec.uses_chosen(params) else "fp"  # the recipe search's architecture
    assert spec.identity(params, "fp", CHOSEN) == f"{name}-{space_hash(method.space())}-{key}"
    assert isinstance(method.sampler(0), optuna.samplers.BaseSampler)
    assert isinstance(method.seed_points(0), list)
    # a trial drawn through the method's objective reads back through decode and record
    prepared = method.prepare(0)
    study = optuna.create_study(directions=method.spec.directions, sampler=method.sampler(0))
    study.optimize(prepared.objective, n_trials=1)
    trial = study.trials[0]
    assert method.decode(trial.params) is not None
    record = method.record(0, trial)
    assert record is None or set(trial.params) <= set(record.params)


@pytest.mark.parametrize("name", sorted(SEARCH_STAGES))
def test_the_worker_and_the_stage_build_the_same_search(name: str, tmp_path: Path, sample_dir: Path,
                                                        params: Params) -> None:
    spec = search_stage(name)
    params = tiny_params(params)
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(Policy([[("Rotate", 0.5, 0.3)]]).to_json())
    chosen_path = tmp_path / "chosen.json"
    CHOSEN.write(chosen_path)
    inputs = open_inputs(params, sample_dir)
    stage_context = spec.context(params, inputs.sample, inputs.fingerprint, cache_root=tmp_path / "cache",
                                 progress=False, policy=Policy.from_json(policy_path.read_text()),
                                 tracker=inputs.tracker, chosen=CHOSEN if spec.uses_chosen(params) else None,
                                 retrain_images=int(inputs.manifest["pool_size"]))
    staged = spec.build(stage_context)
    worked = build_method(spec, params, inputs, policy_path=policy_path, cache_dir=tmp_path / "cache", progress=False,
                          chosen=current_chosen(spec, params, inputs, chosen_path))
    assert type(worked) is type(staged)
    assert worked.space() == staged.space() and worked.parts() == staged.parts()

    def plain(method: Any) -> tuple[Any, ...]:  # the spec without its callables (bound to each method)
        s = method.spec
        return (s.stage, s.label, s.objectives, s.budget.trials_per_part, s.warm.top_k, s.warm.budget,
                s.warm.patience, s.warm.history, s.warm.all_parts)

    assert plain(worked) == plain(staged)
    chosen = stage_context.chosen
    identity = spec.identity(params, inputs.fingerprint, chosen)
    run = inputs.tracker.stage_run(name, resume_key=identity)
    with run as logger:
        runners = [spec.runner(staged, inputs.storage, logger, params, inputs.fingerprint, chosen=chosen,
                               progress=False),
                   spec.runner(worked, inputs.storage, logger, params, inputs.fingerprint, chosen=chosen,
                               progress=False, role="worker")]
        assert [r.study_name(0) for r in runners][0] == runners[1].study_name(0)
        assert runners[0].study_name(0).startswith(identity)


def test_no_search_dispatches_on_the_stage_name() -> None:
    """A search is built through its registered spec: no ``if stage == ...`` anywhere."""
    for path in [*(REPO / "pipeline").rglob("*.py"), *(REPO / "bench").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
                left, ops = node.test.left, node.test.ops
                if isinstance(left, ast.Name) and left.id == "stage" and isinstance(ops[0], ast.Eq):
                    pytest.fail(f"{path.relative_to(REPO)}:{node.lineno}: dispatch on the stage name")


# ------------------------------------------------------------------ seeds


def test_the_default_seeds_are_the_search_seed_so_caches_and_draws_stay() -> None:
    cfg = Params().policy_search
    assert cfg.split_seed == cfg.train_seed == cfg.sampler_seed == cfg.seed
    method = FastAutoAugment(cfg, tiny_sample(), "fp", device=torch.device("cpu"))
    # the child's cache key as it was before the seeds were separate: cached children are found
    assert method.child_key("fp", 1) == json_digest(["fp", 1, cfg.seed, cfg.held_out, cfg.folds, cfg.child_model,
                                                      cfg.child.model_dump()])
    model = Params().model_search
    assert model.split_seed == model.train_seed == model.sampler_seed == model.seed


def test_each_seed_moves_only_its_concern() -> None:
    base = parse_params({"policy_search": {"seed": 3}}).policy_search
    sample = tiny_sample(n_per_class=30)

    def look(cfg: Any) -> tuple[Any, ...]:
        method = FastAutoAugment(cfg, sample, "fp", device=torch.device("cpu"))
        d_m, _ = method.split(0)
        study = optuna.create_study(sampler=method.sampler(0))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        return d_m.ids, [t.params["x"] for t in study.trials], method.child_key("fp", 0)

    splits, draws, key = look(base)
    moved = {name: look(base.model_copy(update={"seeds": base.seeds.model_copy(update={name: 7})}))
             for name in ("split", "train", "sampler")}
    assert moved["sampler"][:1] == (splits,) and moved["sampler"][1] != draws and moved["sampler"][2] == key
    assert moved["split"][0] != splits and moved["split"][1] == draws and moved["split"][2] != key
    assert moved["train"][:2] == (splits, draws) and moved["train"][2] != key
