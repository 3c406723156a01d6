from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest
import torch

import pipeline.search.policy as search
from pipeline import interrupt
from pipeline.augment import Policy
from pipeline.config import Params, parse_params
from pipeline.errors import ConfigError
from pipeline.search.folds import stratified_splits
from pipeline.search.policy import (
    merge_policies,
    policy_from_params,
    suggest_policy,
    uniform_policy,
)
from pipeline.stages.search_policy import search_policy_stage
from pipeline.tracking import Tracker

from ..fakes import drop_a_ctrl_c, python_sigint
from .conftest import tiny_sample


def test_splits_are_stratified_disjoint_and_cover_the_sample() -> None:
    data = tiny_sample(n_per_class=50)
    splits = stratified_splits(data, folds=3, held_out=0.4, seed=0)
    assert len(splits) == 3
    for d_m, d_a in splits:
        assert set(d_m.tolist()).isdisjoint(d_a.tolist())
        assert len(d_m) + len(d_a) == len(data)
        assert torch.bincount(data.labels[d_a]).tolist() == [20, 20, 20]
    assert set(splits[0][1].tolist()) != set(splits[1][1].tolist())


def test_trial_params_round_trip_to_the_same_policy() -> None:
    cfg = parse_params({"policy_search": {"n_sub": 4, "ops_per_sub": 2}}).policy_search
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    policy = suggest_policy(trial, cfg)
    assert len(policy) == 4 and all(len(sp) == 2 for sp in policy.sub_policies)
    assert policy_from_params(trial.params, cfg) == policy


def test_merge_drops_duplicate_sub_policies() -> None:
    a = Policy([[("Invert", 0.5, 0.1)], [("Rotate", 0.2, 0.3)]])
    b = Policy([[("Rotate", 0.2, 0.3)], [("Color", 0.9, 0.9)]])
    merged = merge_policies([a, b])
    assert [sp.ops[0].op for sp in merged.sub_policies] == ["Invert", "Rotate", "Color"]


def test_uniform_policy_enumerates_every_sequence() -> None:
    policy = uniform_policy(2, 0.5, ["Invert", "Rotate", "Color", "Identity"])
    assert len(policy) == 9
    assert all(c.probability == 1.0 and c.magnitude == 0.5 for sp in policy.sub_policies for c in sp.ops)


def _runs(params: Params) -> list:
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    return tracker.client.search_runs([tracker.experiment_id("search_policy")], max_results=1000)


def test_a_ctrl_c_dropped_during_a_trial_stops_the_search_before_the_next(
    tmp_path: Path, sample_dir: Path, params: Params, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Python drops a KeyboardInterrupt raised inside a finalizer; the runner still stops at the next
    # trial (a policy search on a busy machine once ran all its trials after a Ctrl-C)
    real = optuna.Study.optimize
    calls = 0

    def optimize(self: optuna.Study, *args: object, **kwargs: object) -> None:
        nonlocal calls
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        calls += 1
        if calls == 3:
            drop_a_ctrl_c()

    monkeypatch.setattr(optuna.Study, "optimize", optimize)
    with python_sigint(), interrupt.handling(), pytest.raises(KeyboardInterrupt):
        search_policy_stage(params, sample_dir, tmp_path / "out", tmp_path / "cache", progress=False)
    storage = optuna.storages.RDBStorage(params.tracking.optuna_storage)
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3  # of its 5
    assert not (tmp_path / "out" / "policy.json").exists()
    (stage_run,) = [r for r in _runs(params) if "mlflow.parentRunId" not in r.data.tags]
    assert stage_run.info.status == "KILLED"


def test_stage_writes_policy_and_logs_nested_runs(tmp_path: Path, sample_dir: Path, params: Params) -> None:
    summary = search_policy_stage(params, sample_dir, tmp_path / "out", tmp_path / "cache", progress=False)
    policy = Policy.from_json((tmp_path / "out" / "policy.json").read_text())
    assert 1 <= len(policy) <= 2 * 2 * 3
    assert summary["trials"] == 10 and json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    for name in ("grid.png", "history.png", "importances.png"):
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"
    runs = _runs(params)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    # the stage's steps, in order, in summary.json and on the stage run
    steps = summary["step_seconds"]
    assert list(steps) == ["load", "build", "trials", "summarise", "write"] and steps["trials"] > 0
    assert {f"step_seconds.{k}": v for k, v in steps.items()}.items() <= parents[0].data.metrics.items()
    parent_id = parents[0].info.run_id
    folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(folds) == 2
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {f.info.run_id for f in folds}]
    assert len(trials) == 10
    assert all(r.data.tags["autoaug.fingerprint"] == summary["fingerprint"] for r in trials)
    assert {"op_0_0", "prob_0_0", "mag_0_0"} <= set(trials[0].data.params)


def test_interrupted_stage_resumes_without_losing_or_duplicating(
    tmp_path: Path, sample_dir: Path, params: Params, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_evaluate = search.evaluate
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1 + 3 + 1:  # clean score of fold 0, three trials, then Ctrl-C
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(search, "evaluate", flaky)
    with pytest.raises(KeyboardInterrupt):
        search_policy_stage(params, sample_dir, tmp_path / "out", tmp_path / "cache", progress=False)
    killed = [r for r in _runs(params) if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in killed] == ["KILLED"]
    logged_before = [r for r in _runs(params) if r.data.tags.get("autoaug.trial") is not None]
    assert len(logged_before) == 3  # finished trials were logged even though the stage died

    trained = {"n": 0}
    real_train = search.train

    def counting_train(*args, **kwargs):
        trained["n"] += 1
        return real_train(*args, **kwargs)

    monkeypatch.setattr(search, "evaluate", real_evaluate)
    monkeypatch.setattr(search, "train", counting_train)
    summary = search_policy_stage(params, sample_dir, tmp_path / "out", tmp_path / "cache", progress=False)
    assert summary["trials"] == 10
    assert trained["n"] == 1  # fold 0's child came from the cache; only fold 1 trained
    runs = _runs(params)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_keys = [(r.data.tags["optuna.study"], r.data.tags["autoaug.trial"]) for r in runs if "autoaug.trial" in r.data.tags]
    assert len(trial_keys) == len(set(trial_keys)) == 10


def _two_data_versions(tmp_path: Path, params: Params) -> dict:
    """The stage on a first sample, then on a second one (a data update); the second's summary."""
    from pipeline.data import write_sample

    first, second = tiny_sample(seed=0), tiny_sample(seed=1)
    write_sample(first, tmp_path / "s1", seed=0, pool=first)
    write_sample(second, tmp_path / "s2", seed=0, pool=second)
    search_policy_stage(params, tmp_path / "s1", tmp_path / "o1", tmp_path / "cache", progress=False)
    return search_policy_stage(params, tmp_path / "s2", tmp_path / "o2", tmp_path / "cache", progress=False)


def test_new_data_warm_starts_from_the_prior_study(tmp_path: Path, params: Params) -> None:
    summary = _two_data_versions(tmp_path, params)
    assert summary["warm_started_trials"] == 2 * min(params.policy_search.warm_start, 5)
    storage = optuna.storages.RDBStorage(params.tracking.optuna_storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert len(names) == 4  # two splits x two data versions
    new = optuna.load_study(study_name=[n for n in names if summary["fingerprint"] in n][0], storage=storage)
    assert new.trials[0].user_attrs.get("warm_start_from")
    # warm_all_folds: the prior's best of both folds, in turn, the fold's own first
    sources = [t.user_attrs["warm_start_from"] for t in new.trials if "warm_start_from" in t.user_attrs]
    own = new.study_name.replace(summary["fingerprint"], new.user_attrs["warm_started_from"].split("-")[2])
    assert sources[0] == own == new.user_attrs["warm_started_from"]
    assert set(sources) == {n for n in names if summary["fingerprint"] not in n}


def test_without_warm_all_folds_a_fold_re_evaluates_only_its_own_prior(tmp_path: Path, params: Params) -> None:
    params = params.model_copy(update={"policy_search": params.policy_search.model_copy(update={"warm_all_folds": False})})
    summary = _two_data_versions(tmp_path, params)
    storage = optuna.storages.RDBStorage(params.tracking.optuna_storage)
    for name in [s.study_name for s in optuna.get_all_study_summaries(storage) if summary["fingerprint"] in s.study_name]:
        study = optuna.load_study(study_name=name, storage=storage)
        sources = {t.user_attrs["warm_start_from"] for t in study.trials if "warm_start_from" in t.user_attrs}
        assert sources == {study.user_attrs["warm_started_from"]}


def test_randaugment_method_runs_through_the_same_stage(tmp_path: Path, sample_dir: Path, params: Params) -> None:
    cfg = params.policy_search.model_copy(update={"method": "randaugment"})
    cfg.randaugment = cfg.randaugment.model_copy(update={"trials": 2, "epochs": 1})
    params = params.model_copy(update={"policy_search": cfg})
    summary = search_policy_stage(params, sample_dir, tmp_path / "out", None, progress=False)
    policy = Policy.from_json((tmp_path / "out" / "policy.json").read_text())
    assert summary["trials"] == 2 and policy.metadata["randaugment"]["num_ops"] in (1, 2)


@pytest.mark.parametrize(
    "section,fragment",
    [
        ({"folds": 1}, "policy_search.folds = 1"),
        ({"held_out": 1.0}, "policy_search.held_out = 1.0"),
        ({"n_sub": 300}, "n_sub = 300 sub-policies cannot be distinct"),
        ({"ops": ["Blur"]}, "unknown op 'Blur'"),
        ({"top_n": 50, "trials_per_fold": 10}, "top_n = 50 exceeds trials_per_fold = 10"),
    ],
)
def test_impossible_params_are_rejected(section: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_params({"policy_search": section})


def test_unreachable_storage_fails_before_any_training(
    tmp_path: Path, sample_dir: Path, params: Params, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search, "train", lambda *a, **k: pytest.fail("trained before checking storage"))
    bad = params.model_copy(update={"tracking": params.tracking.model_copy(
        update={"optuna_storage": "postgresql://nobody@127.0.0.1:1/none"})})
    with pytest.raises(ConfigError, match="tracking.optuna_storage"):
        search_policy_stage(bad, sample_dir, tmp_path / "out", None, progress=False)


# ------------------------------------------------------------------ warm budget, patience, cold start


def _two_versions(tmp_path: Path) -> tuple[Path, Path]:
    from pipeline.data import write_sample

    first, second = tiny_sample(seed=0), tiny_sample(seed=1)
    write_sample(first, tmp_path / "s1", seed=0, pool=first)
    write_sample(second, tmp_path / "s2", seed=0, pool=second)
    return tmp_path / "s1", tmp_path / "s2"


def _study_of(params: Params, fingerprint: str, fold: int = 0) -> optuna.Study:
    storage = optuna.storages.RDBStorage(params.tracking.optuna_storage)
    name = next(s.study_name for s in optuna.get_all_study_summaries(storage)
                if fingerprint in s.study_name and s.study_name.endswith(f"fold{fold}"))
    return optuna.load_study(study_name=name, storage=storage)


def test_a_warm_started_search_runs_its_warm_budget(tmp_path: Path, params: Params) -> None:
    s1, s2 = _two_versions(tmp_path)
    cold = params.model_copy(update={"policy_search": params.policy_search.model_copy(
        update={"trials_per_fold": 8, "warm_budget": 0.25, "warm_start": 5})})
    first = search_policy_stage(cold, s1, tmp_path / "o1", tmp_path / "cache", progress=False)
    second = search_policy_stage(cold, s2, tmp_path / "o2", tmp_path / "cache", progress=False)
    assert first["trials"] == 2 * 8
    assert second["trials"] == 2 * 2  # ceil(8 x 0.25) per fold
    assert second["warm_started_trials"] == 2 * 2  # never more prior configurations than that budget
    study = _study_of(cold, second["fingerprint"])
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # none left queued
    tracker = Tracker(cold.tracking.mlflow_uri, cold.tracking.experiment_prefix)
    folds = tracker.client.search_runs([tracker.experiment_id("search_policy")],
                                       filter_string="tags.`autoaug.fold` = '0'", max_results=10)
    warm_fold = [r for r in folds if r.data.tags.get("optuna.study") == study.study_name]
    assert warm_fold[0].data.tags["autoaug.warm_start_from"] == study.user_attrs["warm_started_from"]
    assert warm_fold[0].data.tags["autoaug.budget"] == "2"


def test_a_warm_started_search_stops_when_it_stops_improving(
    tmp_path: Path, params: Params, monkeypatch: pytest.MonkeyPatch,
) -> None:
    s1, s2 = _two_versions(tmp_path)
    cfg = params.policy_search.model_copy(update={"trials_per_fold": 6, "warm_budget": 1.0, "warm_start": 1,
                                                  "patience": 2, "folds": 2})
    p = params.model_copy(update={"policy_search": cfg})
    search_policy_stage(p, s1, tmp_path / "o1", tmp_path / "cache", progress=False)
    # the first trial of the new study (the prior's best) scores best; nothing after it does
    real_evaluate = search.evaluate
    scores = iter([0.9] + [0.1] * 100)

    def scripted(*args, **kwargs):
        result = real_evaluate(*args, **kwargs)
        if kwargs.get("augment") is None:  # the child's clean score
            return result
        return dataclasses.replace(result, accuracy=next(scores))

    monkeypatch.setattr(search, "evaluate", scripted)
    second = search_policy_stage(p, s2, tmp_path / "o2", tmp_path / "cache", progress=False)
    study = _study_of(p, second["fingerprint"], fold=0)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 1 + 2  # best, then 2 without gain


def test_a_changed_search_space_is_a_cold_start_said_out_loud(
    tmp_path: Path, params: Params, capsys: pytest.CaptureFixture[str],
) -> None:
    s1, s2 = _two_versions(tmp_path)
    search_policy_stage(params, s1, tmp_path / "o1", tmp_path / "cache", progress=False)
    changed = params.model_copy(update={"policy_search": params.policy_search.model_copy(update={"n_sub": 2})})
    capsys.readouterr()
    summary = search_policy_stage(changed, s2, tmp_path / "o2", tmp_path / "cache", progress=False)
    err = capsys.readouterr().err
    assert summary["warm_started_trials"] == 0
    assert "cold start: the search space changed since search_policy-" in err
    study = _study_of(changed, summary["fingerprint"])
    assert "search space changed" in study.user_attrs["autoaug.cold_start"]
    # a re-run of the same stage says nothing more (the study is not new)
    search_policy_stage(changed, s2, tmp_path / "o2", tmp_path / "cache", progress=False)
    assert "cold start" not in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["empty", "format"])
def test_an_unusable_prior_study_is_a_cold_start_with_its_reason(
    tmp_path: Path, params: Params, damage: str, capsys: pytest.CaptureFixture[str],
) -> None:
    s1, s2 = _two_versions(tmp_path)
    first = search_policy_stage(params, s1, tmp_path / "o1", tmp_path / "cache", progress=False)
    storage = optuna.storages.RDBStorage(params.tracking.optuna_storage)
    for fold in range(params.policy_search.folds):
        old = _study_of(params, first["fingerprint"], fold)
        if damage == "format":
            old.set_user_attr("autoaug.format", 99)
        else:  # a study with no finished trial (e.g. killed during its first trial)
            name = old.study_name
            optuna.delete_study(study_name=name, storage=storage)
            optuna.create_study(study_name=name, storage=storage).ask()
    capsys.readouterr()
    summary = search_policy_stage(params, s2, tmp_path / "o2", tmp_path / "cache", progress=False)
    err = capsys.readouterr().err
    assert summary["warm_started_trials"] == 0 and summary["trials"] == 2 * params.policy_search.trials_per_fold
    expected = "incompatible version (format 99" if damage == "format" else "has no finished trial"
    assert err.count(expected) == params.policy_search.folds, err


def test_the_papers_objective_is_a_search_of_its_own(tmp_path: Path, sample_dir: Path, params: Params,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_evaluate = search.evaluate

    def spy(*args, **kwargs):
        if kwargs.get("augment") is not None:
            seen.append(kwargs.get("draws", 1))
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(search, "evaluate", spy)
    paper = params.model_copy(update={"policy_search": params.policy_search.model_copy(update={"draws": 3})})
    one = search_policy_stage(params, sample_dir, tmp_path / "o1", tmp_path / "cache", progress=False)
    three = search_policy_stage(paper, sample_dir, tmp_path / "o3", tmp_path / "cache", progress=False)
    assert seen == [1] * one["trials"] + [3] * three["trials"]
    assert one["space_hash"] != three["space_hash"]  # scores of the two objectives never mix
    assert three["warm_started_trials"] == 0


# ------------------------------------------------------------------ reuse: sampler history, fine-tuned children


def test_prior_trials_reach_the_sampler_but_not_the_ranking_budget_or_mlflow(tmp_path: Path, params: Params) -> None:
    s1, s2 = _two_versions(tmp_path)
    cfg = params.policy_search.model_copy(update={"warm_history": True, "warm_start": 1, "warm_budget": 0.4})
    p = params.model_copy(update={"policy_search": cfg})
    first = search_policy_stage(p, s1, tmp_path / "o1", tmp_path / "cache", progress=False)
    second = search_policy_stage(p, s2, tmp_path / "o2", tmp_path / "cache", progress=False)
    study = _study_of(p, second["fingerprint"])
    prior = _study_of(p, first["fingerprint"])
    history = [t for t in study.trials if "autoaug.history" in t.user_attrs]
    own = [t for t in study.trials if "autoaug.history" not in t.user_attrs]
    # every finished prior trial, with its parameters and values, marked with the prior study
    assert len(history) == len(prior.trials) == cfg.trials_per_fold
    assert {t.user_attrs["autoaug.history"] for t in history} == {prior.study_name}
    assert sorted(t.values[0] for t in history) == sorted(t.values[0] for t in prior.trials)
    assert study.user_attrs["autoaug.history_trials"] == cfg.trials_per_fold
    # the study's own trials: the warm budget (ceil(5 x 0.4)), counted and logged as usual
    assert len(own) == 2 and second["trials"] == 2 * 2
    tracker = Tracker(p.tracking.mlflow_uri, p.tracking.experiment_prefix)
    runs = tracker.client.search_runs([tracker.experiment_id("search_policy")],
                                      filter_string=f"tags.`optuna.study` = '{study.study_name}'", max_results=100)
    assert sorted(r.data.tags["autoaug.trial"] for r in runs if "autoaug.trial" in r.data.tags) == \
        sorted(str(t.number) for t in own)
    # the found policy comes from the study's own trials only
    found = Policy.from_json((tmp_path / "o2" / "policy.json").read_text())
    def keys(policy: Policy) -> set[tuple]:
        return {tuple((c.op, round(c.probability, 4), round(c.magnitude, 4)) for c in sp.ops)
                for sp in policy.sub_policies}

    own_subs = set().union(*(keys(search.policy_from_params(t.params, cfg)) for f in (0, 1)
                             for t in _study_of(p, second["fingerprint"], fold=f).trials
                             if "autoaug.history" not in t.user_attrs))
    assert keys(found) and keys(found) <= own_subs


def test_a_warm_fold_fine_tunes_the_prior_child(tmp_path: Path, params: Params, capsys: pytest.CaptureFixture) -> None:
    s1, s2 = _two_versions(tmp_path)
    cfg = params.policy_search.model_copy(update={"warm_child_epochs": 1, "child": params.policy_search.child.model_copy(
        update={"epochs": 2})})
    p = params.model_copy(update={"policy_search": cfg})
    cache = tmp_path / "cache"
    search_policy_stage(p, s1, tmp_path / "o1", cache, progress=False)
    children = set((cache / "search_policy").glob("*.pt"))
    assert len(children) == 2
    loads: list[str] = []
    real_load = torch.load

    def spy(path, *args, **kwargs):
        loads.append(Path(path).name)
        return real_load(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(search.torch, "load", spy)
        search_policy_stage(p, s2, tmp_path / "o2", cache, progress=False)
    new = set((cache / "search_policy").glob("*.pt")) - children
    assert len(new) == 2  # one fine-tuned child per fold, cached under its own key
    assert sorted(n for n in loads if n in {c.name for c in children}) == sorted(c.name for c in children)  # each fold started from the prior child
    tracker = Tracker(p.tracking.mlflow_uri, p.tracking.experiment_prefix)
    folds = tracker.client.search_runs([tracker.experiment_id("search_policy")],
                                       filter_string="tags.`autoaug.fold` = '0'", max_results=10)
    assert sorted(r.data.metrics.get("child_finetuned_epochs", 0) for r in folds) == [0, 1]

    # no prior child left in the cache: trained from scratch, said so
    for child in (cache / "search_policy").glob("*.pt"):
        child.unlink()
    third = tiny_sample(seed=2)
    from pipeline.data import write_sample
    write_sample(third, tmp_path / "s3", seed=0, pool=third)
    capsys.readouterr()
    search_policy_stage(p, tmp_path / "s3", tmp_path / "o3", cache, progress=False)
    assert "no cached child of search_policy-" in capsys.readouterr().err



def test_a_cached_child_is_loaded_as_training_left_it(tmp_path: Path) -> None:
    # A child read from the cache (a resumed search, a worker, another objective) is scored in the
    # memory format the trainer gave the freshly trained one: a contiguous copy scores the same
    # but ~2x slower on a CPU.
    data = tiny_sample(n_per_class=8)
    recipe = parse_params({}).policy_search.child.model_copy(update={"epochs": 1, "batch_size": 8})
    common = dict(seed=0, device=torch.device("cpu"), cache=tmp_path, key="child", progress=False)
    trained, seconds = search.train_child(data, "airbench_half", recipe, **common)
    cached, cached_seconds = search.train_child(data, "airbench_half", recipe, **common)
    assert seconds > 0 and cached_seconds == 0.0
    convs = [(a, b) for a, b in zip(trained.parameters(), cached.parameters(), strict=True) if a.dim() == 4]
    assert convs and all(b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
                         for _, b in convs)
    assert all(torch.equal(a, b) for a, b in convs)
    assert search.evaluate(trained, data).accuracy == search.evaluate(cached, data).accuracy
