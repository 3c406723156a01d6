"""The recipe search (stage search_recipe): the choice rule, the time budget, the stage end to
end (one MLflow run per trained trial, recipe.json), its warm start after a data update, and
retrain training with what it found. Stage runs are tiny (60 generated images, 10 to train on,
10 to validate, ResNet-20 for one or two epochs)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

import pipeline.search.recipe as recipe_search
from pipeline.config import Params, parse_params
from pipeline.contracts import Chosen, FoundRecipeFile
from pipeline.errors import AutoaugError, DataError
from pipeline.search.recipe import RecipeSearch, predicted_minutes
from pipeline.stages.retrain import with_found_recipe
from pipeline.stages.search_recipe import search_recipe_stage
from pipeline.tracking import Tracker

from .conftest import tiny_sample
from .test_model_search import write_policy, write_tiny_sample

PARENT = "mlflow.parentRunId"
TRIAL_TAG = "autoaug.trial"
TINY: dict[str, Any] = {"trials": 3, "startup_trials": 1, "margin": 0.0, "epochs": [1, 2], "fidelity": 1.0, "batch_size": 8,
                        "train_images": 10, "val_images": 10, "warm_start": 1, "warm_budget": 1.0}


def recipe_params(tmp: Path, mlflow_uri: str, **overrides: Any) -> Params:
    return parse_params({
        "recipe_search": {**TINY, **overrides},
        "retrain": {"recipe": {"epochs": 2, "batch_size": 8}},
        "tracking": {"mlflow_uri": mlflow_uri, "experiment_prefix": f"test-{uuid.uuid4().hex[:8]}",
                     "optuna_storage": f"sqlite:///{tmp}/optuna.db"},
    })


def write_chosen(path: Path, fingerprint: str = "", **fields: Any) -> Path:
    Chosen(config="resnet20", fingerprint=fingerprint, **fields).write(path)
    return path


def a_search(params: Params, **kwargs: Any) -> RecipeSearch:
    return RecipeSearch(params.recipe_search, tiny_sample(), retrain=params.retrain.recipe, architecture="resnet20",
                        policy=None, device=torch.device("cpu"), progress=False, **kwargs)


def trial(number: int, accuracy: float, epochs: int, lr: float = 0.3) -> optuna.trial.FrozenTrial:
    made = create_trial(
        params={"lr": lr, "weight_decay": 1e-3, "label_smoothing": 0.1, "epochs": epochs},
        distributions={"lr": FloatDistribution(0.15, 0.75, log=True),
                       "weight_decay": FloatDistribution(5e-4, 3e-3, log=True),
                       "label_smoothing": FloatDistribution(0.0, 0.3),
                       "epochs": CategoricalDistribution([20, 30, 40])},
        values=[accuracy, float(epochs)], state=TrialState.COMPLETE)
    made.number = number
    return made


# ------------------------------------------------------------------ the choice and the proxy


def test_the_choice_is_the_fewest_epochs_within_the_points_of_the_best(tmp_path: Path) -> None:
    search = a_search(recipe_params(tmp_path, "sqlite:///x.db", within_points=0.5))
    trials = [trial(0, 0.900, 40), trial(1, 0.897, 30), trial(2, 0.899, 30, lr=0.5), trial(3, 0.880, 20)]
    found = search.choose(trials)
    # 30 epochs are within half a point of the best (40); 20 are not; the better 30-epoch trial wins
    assert found.trial == 2 and found.values["epochs"] == 30 and found.values["lr"] == 0.5
    assert found.best_accuracy == 0.900 and found.recipe.epochs == 30 and found.recipe.lr == 0.5
    tight = a_search(recipe_params(tmp_path, "sqlite:///x.db", within_points=0.0))
    assert tight.choose(trials).trial == 0


def test_the_params_recipe_stays_unless_beaten_by_more_than_the_margin(tmp_path: Path) -> None:
    search = a_search(recipe_params(tmp_path, "sqlite:///x.db", epochs=[1, 2], margin=1.0))
    own = search.own_values()  # retrain.recipe: airbench's lr, weight decay, smoothing; 2 epochs here
    baseline = create_trial(
        params=own, distributions={"lr": FloatDistribution(0.15, 0.75, log=True),
                                   "weight_decay": FloatDistribution(5e-4, 3e-3, log=True),
                                   "label_smoothing": FloatDistribution(0.0, 0.3),
                                   "epochs": CategoricalDistribution([1, 2])},
        values=[0.761, 2.0], state=TrialState.COMPLETE)
    # the first run at the defaults: another recipe led by 0.05 points (2 of 4,000 images)
    noise = trial(5, 0.7615, 30, lr=0.73)
    found = search.choose([baseline, noise])
    assert found.kept_params_recipe and found.trial == baseline.number and found.values == own
    assert found.best_accuracy == 0.7615
    clear = trial(6, 0.775, 30, lr=0.73)  # 1.4 points: beyond the proxy's noise
    found = search.choose([baseline, noise, clear])
    assert not found.kept_params_recipe and found.trial == 6
    assert not a_search(recipe_params(tmp_path, "sqlite:///x.db", margin=0.0)).choose([baseline, noise]).kept_params_recipe


def test_the_proxy_is_the_recipe_shortened_at_its_lr_per_image(tmp_path: Path) -> None:
    params = recipe_params(tmp_path, "sqlite:///x.db", fidelity=0.25, batch_size=128)
    search = a_search(params)
    recipe = search.recipe({"lr": 0.5, "weight_decay": 1e-3, "label_smoothing": 0.1, "epochs": 30})
    proxy = search.proxy(recipe)
    assert proxy.epochs == 8 and proxy.batch_size == 128  # round(30 x 0.25)
    assert proxy.peak_lr == pytest.approx(recipe.lr * 128 / (recipe.lr_batch_size or recipe.batch_size))
    assert not proxy.tta and proxy.eval_every == 1
    assert (proxy.lookahead, proxy.flip, proxy.bias_lr_scale) == (recipe.lookahead, recipe.flip, recipe.bias_lr_scale)


def test_the_time_budget_refuses_epochs_whose_predicted_minutes_exceed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = recipe_params(tmp_path, "sqlite:///x.db", epochs=[1, 2])
    # 0.6 s per step, 80 images at batch 8: 10 steps an epoch = 0.1 minute an epoch
    search = a_search(params, step_seconds=0.6, retrain_images=80, max_minutes=0.15)
    assert predicted_minutes(0.6, search.recipe({"epochs": 2}), 80) == pytest.approx(0.2)
    trained: list[int] = []
    real_train = recipe_search.train

    def counting(model: Any, data: Any, cfg: Any, **kwargs: Any) -> Any:
        trained.append(cfg.epochs)
        return real_train(model, data, cfg, **kwargs)

    monkeypatch.setattr(recipe_search, "train", counting)
    study = optuna.create_study(directions=search.spec.directions, sampler=search.sampler(0))
    study.enqueue_trial({"lr": 0.3, "weight_decay": 1e-3, "label_smoothing": 0.1, "epochs": 2})
    study.enqueue_trial({"lr": 0.3, "weight_decay": 1e-3, "label_smoothing": 0.1, "epochs": 1})
    study.optimize(search.objective, n_trials=2)
    over, under = study.trials
    assert over.constraints["retrain_minutes"] == pytest.approx(0.05) and over.values[0] == 0.0  # never trained
    assert over.user_attrs["predicted_retrain_minutes"] == pytest.approx(0.2)
    assert under.constraints["retrain_minutes"] == pytest.approx(-0.05) and trained == [1]
    assert search.choose(study.trials).trial == under.number
    with pytest.raises(AutoaugError, match="max_retrain_minutes"):
        search.choose([over])


def test_the_champions_architecture_is_budgeted_as_the_fine_tune_the_retrain_gives_it(tmp_path: Path) -> None:
    # chosen.json is the @champion's architecture: the retrain fine-tunes it for warm_epochs, so a
    # 2-epoch recipe costs 1 epoch's minutes and fits the budget the full 2 epochs would break
    params = recipe_params(tmp_path, "sqlite:///x.db", epochs=[1, 2])
    full = a_search(params, step_seconds=0.6, retrain_images=80, max_minutes=0.15)
    fine = a_search(params, step_seconds=0.6, retrain_images=80, max_minutes=0.15, fine_tune_epochs=1)
    two = full.recipe({"epochs": 2})
    assert full.minutes(two) == pytest.approx(0.2) and fine.minutes(two) == pytest.approx(0.1)
    assert fine.minutes(full.recipe({"epochs": 1})) == pytest.approx(0.1)  # never more than the recipe's


def test_epochs_are_scaled_to_those_the_model_search_fitted_the_architecture_at(tmp_path: Path) -> None:
    # The model search kept airbench_small at its widths by fitting 18 of retrain.recipe's 40 epochs
    # into the minutes: the params' own recipe trains those 18, and each epochs choice means the
    # same share of it (30 -> 14 (13.5 half up), 50 -> 23), so a trial's parameters keep their meaning.
    params = recipe_params(tmp_path, "sqlite:///x.db", epochs=[30, 40, 50])
    retrain = params.retrain.recipe.model_copy(update={"epochs": 40})
    search = RecipeSearch(params.recipe_search, tiny_sample(), retrain=retrain, architecture="resnet20", policy=None,
                          device=torch.device("cpu"), progress=False, step_seconds=0.6, retrain_images=80,
                          max_minutes=1.9, retrain_epochs=18)
    assert [search.epochs_of(e) for e in (30, 40, 50)] == [14, 18, 23]
    assert search.own_values()["epochs"] == 18
    (name, own), = search.seed_points(0)
    assert name == "retrain.recipe" and own["epochs"] == 40  # the choice; it decodes to the fitted 18
    assert search.decode(own) == search.own_values()
    assert search.minutes(search.recipe(search.decode(own))) == pytest.approx(0.6 * 18 * 10 / 60)
    study = optuna.create_study(directions=search.spec.directions, sampler=search.sampler(0))
    study.enqueue_trial({**own, "epochs": 50})  # 23 epochs: 2.3 minutes, over the 1.9
    study.optimize(search.objective, n_trials=1)
    assert study.trials[0].user_attrs["predicted_retrain_minutes"] == pytest.approx(2.3)
    assert study.trials[0].values == [0.0, 23.0]  # never trained
    # without retrain_epochs the choices are the epochs themselves
    plain = RecipeSearch(params.recipe_search, tiny_sample(), retrain=retrain, architecture="resnet20", policy=None,
                         device=torch.device("cpu"), progress=False)
    assert [plain.epochs_of(e) for e in (30, 40, 50)] == [30, 40, 50] and plain.own_values()["epochs"] == 40


def test_the_fitted_epochs_reach_the_retrain_without_a_recipe_search(tmp_path: Path) -> None:
    params = recipe_params(tmp_path, "sqlite:///x.db")
    fitted = Chosen(config="resnet20", retrain_epochs=1)
    assert fitted.retrain_recipe(params.retrain.recipe).epochs == 1
    assert with_found_recipe(params, None, fitted).retrain.recipe.epochs == 1
    assert Chosen(config="resnet20", retrain_epochs=9).retrain_recipe(params.retrain.recipe).epochs == 2  # never more


def test_a_bad_recipe_search_value_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"recipe_search: lr = \[0.5, 0.1\]") as caught:
        parse_params({"recipe_search": {"lr": [0.5, 0.1]}})
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------ the stage


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("recipe")
    params = recipe_params(tmp, mlflow_uri)
    sample = write_tiny_sample(tmp / "sample")
    from pipeline.data import read_manifest

    fingerprint = read_manifest(sample)["fingerprint"]
    chosen = write_chosen(tmp / "chosen.json", fingerprint=fingerprint)
    found = search_recipe_stage(params, sample, chosen, write_policy(tmp / "policy.json"), tmp / "out",
                                progress=False)
    return {"params": params, "found": found, "tmp": tmp, "sample": sample, "chosen": chosen}


def test_stage_writes_the_recipe_and_one_nested_run_per_trial(searched: dict[str, Any]) -> None:
    params, found, tmp = searched["params"], searched["found"], searched["tmp"]
    document = FoundRecipeFile.read(tmp / "out" / "recipe.json")
    assert document.searched and document.architecture == "resnet20"
    assert set(document.values) == {"lr", "weight_decay", "label_smoothing", "epochs"}
    assert document.recipe["epochs"] == document.values["epochs"] in (1, 2)
    assert document.recipe["lr"] == document.values["lr"]
    assert (tmp / "out" / "metrics.json").is_file() and (tmp / "out" / "history.png").is_file()
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    runs = tracker.client.search_runs([tracker.experiment_id("search_recipe")], max_results=100)
    parents = [r for r in runs if PARENT not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_id == found["mlflow_run_id"]
    children = [r for r in runs if r.data.tags.get(PARENT) == parents[0].info.run_id]
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in children) == list(range(params.recipe_search.trials))
    for run in children:  # each trial: its recipe as params, its accuracy and epochs as metrics
        assert {"lr", "weight_decay", "label_smoothing", "epochs"} <= set(run.data.params)
        assert 0 <= run.data.metrics["accuracy"] <= 1 and run.data.metrics["epochs"] in (1, 2)
    assert parents[0].data.metrics["chosen_epochs"] == document.values["epochs"]
    steps = json.loads((tmp / "out" / "metrics.json").read_text())["step_seconds"]  # the stage's steps, in order
    assert list(steps) == ["load", "build", "trials", "summarise", "write"] and steps["trials"] > 0
    assert {f"step_seconds.{k}": v for k, v in steps.items()}.items() <= parents[0].data.metrics.items()


def test_a_data_update_warm_starts_from_the_prior_recipes(searched: dict[str, Any], tmp_path: Path) -> None:
    params = searched["params"]
    sample = write_tiny_sample(tmp_path / "sample", seed=1)
    from pipeline.data import read_manifest

    fingerprint = read_manifest(sample)["fingerprint"]
    chosen = write_chosen(tmp_path / "chosen.json", fingerprint=fingerprint)
    search_recipe_stage(params, sample, chosen, write_policy(tmp_path / "policy.json"), tmp_path / "out",
                        progress=False)
    summary = FoundRecipeFile.read(tmp_path / "out" / "recipe.json")
    assert summary.fingerprint == fingerprint
    import json

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["warm_started_trials"] == params.recipe_search.warm_start
    # the params' own recipe is re-evaluated first, so the margin rule can still keep it
    storage = optuna.storages.RDBStorage(params.tracking.optuna_storage)
    (warm,) = [optuna.load_study(study_name=s.study_name, storage=storage)
               for s in optuna.get_all_study_summaries(storage) if fingerprint in s.study_name]
    first = min(warm.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    search = a_search(params)
    assert search.decode(first.params) == search.own_values()


def test_retrain_trains_with_the_found_recipe_for_its_architecture(searched: dict[str, Any], tmp_path: Path) -> None:
    params, tmp = searched["params"], searched["tmp"]
    chosen = Chosen.read(searched["chosen"])
    found = FoundRecipeFile.read(tmp / "out" / "recipe.json")
    used = with_found_recipe(params, tmp / "out" / "recipe.json", chosen)
    assert used.retrain.recipe.model_dump() == found.recipe
    assert with_found_recipe(params, None, chosen) is params
    other = Chosen(config="mobilenetv2")
    with pytest.raises(DataError, match="another architecture"):
        with_found_recipe(params, tmp / "out" / "recipe.json", other)


def test_no_trials_writes_the_params_recipe_without_training(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recipe_search, "train", lambda *a, **k: pytest.fail("a model was trained"))
    params = recipe_params(tmp_path, mlflow_uri, trials=0)
    found = search_recipe_stage(params, tmp_path / "no-sample", write_chosen(tmp_path / "chosen.json"),
                                tmp_path / "no-policy.json", tmp_path / "out", progress=False)
    assert found["searched"] is False and found["recipe"] == params.retrain.recipe.model_dump()
    # every output dvc.yaml declares for the stage exists (a missing one fails `dvc repro`)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["trials"] == metrics["trained_trials"] == 0 and metrics["chosen_trial"] is None
    assert metrics["chosen_epochs"] == params.retrain.recipe.epochs
    assert (tmp_path / "out" / "history.png").stat().st_size > 0
    # a model the search fitted at fewer epochs: retrain.recipe at those
    fitted = search_recipe_stage(params, tmp_path / "no-sample", write_chosen(tmp_path / "fitted.json", retrain_epochs=1),
                                 tmp_path / "no-policy.json", tmp_path / "fitted")
    assert fitted["recipe"]["epochs"] == fitted["values"]["epochs"] == 1
    assert json.loads((tmp_path / "fitted" / "metrics.json").read_text())["chosen_epochs"] == 1
    declared = yaml.safe_load((Path(__file__).parents[2] / "dvc.yaml").read_text())["stages"]["search_recipe"]
    outputs = [next(iter(o)) if isinstance(o, dict) else o
               for kind in ("outs", "metrics", "plots") for o in declared.get(kind, [])]
    assert outputs and all((tmp_path / "out" / Path(o).name).exists() for o in outputs)


def test_a_recipe_whose_training_diverges_is_marked_and_never_chosen(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.names import DIVERGED_ATTR
    from pipeline.search.studies import feasible

    from ..fakes import diverging

    # the second trial diverges, as a too-high lr would
    monkeypatch.setattr(recipe_search, "train", diverging(recipe_search.train, on_call=2, lrs=[]))
    params = recipe_params(tmp_path, mlflow_uri, trials=3)
    sample = write_tiny_sample(tmp_path / "sample")
    from pipeline.data import read_manifest

    chosen = write_chosen(tmp_path / "chosen.json", fingerprint=read_manifest(sample)["fingerprint"])
    found = search_recipe_stage(params, sample, chosen, write_policy(tmp_path / "policy.json"), tmp_path / "out",
                                progress=False)
    storage = optuna.storages.RDBStorage(params.tracking.optuna_storage)
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(states=(TrialState.COMPLETE,))
    gone = [t for t in trials if DIVERGED_ATTR in t.user_attrs]
    assert len(trials) == 3 and len(gone) == 1 and not feasible(gone[0])  # the search went on to its budget
    assert found["values"]["lr"] != pytest.approx(gone[0].params["lr"])  # never the choice


def test_another_architecture_on_the_same_data_gets_its_own_study_warm_started_from_the_first(
    tmp_path: Path, mlflow_uri: str,
) -> None:
    # A model search that chose another network on the same data (its params changed, or another
    # machine timed it) used to resume the finished study, whose recipes were scored on the other
    # network, and wrote its choice for the new one without training any.
    from pipeline.data import read_manifest

    params = recipe_params(tmp_path, mlflow_uri, trials=2)
    sample = write_tiny_sample(tmp_path / "sample")
    fingerprint = read_manifest(sample)["fingerprint"]
    policy = write_policy(tmp_path / "policy.json")
    search_recipe_stage(params, sample, write_chosen(tmp_path / "a.json", fingerprint=fingerprint), policy,
                        tmp_path / "a", progress=False)
    Chosen(config="mobilenetv2", fingerprint=fingerprint).write(tmp_path / "b.json")
    found = search_recipe_stage(params, sample, tmp_path / "b.json", policy, tmp_path / "b", progress=False)
    storage = optuna.storages.RDBStorage(params.tracking.optuna_storage)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert len(names) == 2 and all(fingerprint in n for n in names)
    (first,) = [n for n in names if n != found["study"]]
    second = optuna.load_study(study_name=found["study"], storage=storage)
    assert second.user_attrs["warm_started_from"] == first  # the first network's recipes, re-trained
    assert found["trial"] in [t.number for t in second.get_trials(states=(TrialState.COMPLETE,))]
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["warm_started_trials"] >= 1
    # the same network again: its own study, resumed, nothing trained anew
    again = search_recipe_stage(params, sample, tmp_path / "b.json", policy, tmp_path / "c", progress=False)
    assert again["study"] == found["study"] and again["trial"] == found["trial"]


def test_an_interrupted_search_of_one_architecture_is_not_resumed_by_another(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stage run is keyed like the studies: an interrupted run of one network is resumed by a
    # restart of the same network only; another network on the same data opens its own run, so
    # the trials of two networks never nest under one parent.
    from pipeline.data import read_manifest

    params = recipe_params(tmp_path, mlflow_uri, trials=2)
    sample = write_tiny_sample(tmp_path / "sample")
    fingerprint = read_manifest(sample)["fingerprint"]
    policy = write_policy(tmp_path / "policy.json")
    a = write_chosen(tmp_path / "a.json", fingerprint=fingerprint)
    trained = recipe_search.train

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe_search, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search_recipe_stage(params, sample, a, policy, tmp_path / "a", progress=False)
    monkeypatch.setattr(recipe_search, "train", trained)
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)

    def parents() -> dict[str, str]:
        runs = tracker.client.search_runs([tracker.experiment_id("search_recipe")], max_results=100)
        return {r.info.run_id: r.info.status for r in runs if PARENT not in r.data.tags}

    (killed,) = parents()
    Chosen(config="mobilenetv2", fingerprint=fingerprint).write(tmp_path / "b.json")
    other = search_recipe_stage(params, sample, tmp_path / "b.json", policy, tmp_path / "b", progress=False)
    assert other["mlflow_run_id"] != killed and parents() == {killed: "KILLED", other["mlflow_run_id"]: "FINISHED"}
    # the first network again: its own interrupted run, resumed
    again = search_recipe_stage(params, sample, a, policy, tmp_path / "c", progress=False)
    assert again["mlflow_run_id"] == killed and parents()[killed] == "FINISHED"
