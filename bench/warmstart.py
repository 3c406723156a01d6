"""Continuous AutoML: what a data update costs when the pipeline reuses its earlier work.

A first data version (``--v1-share`` of each class's training images, 4,500 of 5,000 by default)
and an update (the rest), both written as CIFAR-10 python archives and ingested with
``autoaug ingest`` into real DVC projects around this checkout's dvc.yaml:

1. project ``warm``: ingest v1, ``dvc repro`` (the first version's whole pipeline);
2. project ``warm``: ingest the update, ``dvc repro``: what a user's ``dvc repro`` does (the
   studies warm-start from v1's, the policy children are fine-tuned from v1's, retrain starts
   from the @champion when the architecture is the same);
3. project ``cold``: ingest v1 and the update, ``dvc repro`` with empty study storage, caches
   and registry: the same data, nothing to reuse.

Peer: the cold run. Printed per search: trials the warm study needed to reach the cold study's
final best, as a fraction of the cold study's trials (``warm_fraction``), and both final bests.
End to end: the warm update's ``dvc repro`` wall time over the cold one's (``time_ratio``) and
the champion's test accuracy both ways.

A policy's score depends on the child network it is measured with, and the warm run's child is
fine-tuned while the cold run's is trained from scratch, so their scores are not on one scale.
The policy search is therefore also compared with the child held equal (step 4): on the cold
project's sample and cached children, the search is run warm from a copy of v1's study storage,
with the prior's best re-scored first (``enqueue``) and with the prior's trials also given to
TPE as history (``enqueue+history``); its warm fraction is against the cold project's study.

Each study's best is the highest of its own noisy scores, and the highest of 40 draws sits
further above the truth than the highest of 12 (the winner's curse), so "reach the cold final
best" is also measured on one scale (``*_common_*``): every study's incumbent (its best so far
after each trial) is re-scored by one scorer with randomness neither search saw: policies by
the cold project's child of that fold on its D_A with ``--rescore-draws`` fresh augmentation
seeds, architectures trained ``--rescore-seeds`` times with fresh seeds on the model search's
split with the cold project's policy. Warm reaches cold when its incumbent re-scores at least as
high as cold's final incumbent (the same configuration re-scores the same).

Each project step records its wall time in ``WORK/steps.json``; ``--measure-only`` re-measures
the projects a finished (or interrupted-after-the-projects) run left, without re-running them, and
``--resume`` continues an interrupted run: finished steps are kept, an interrupted ``dvc repro``
runs again (DVC skips its finished stages) and is named in ``resumed=`` (its time is only the rest).

The profile is smaller than params.yaml's (fewer trials and epochs, the same for cold and warm;
see PROFILE); ``--defaults`` runs the shipped params.yaml unchanged, what users run (about two hours).
After the warm update, a second ``dvc repro`` with nothing changed is timed (``noop_repro_s``).
The warm and the cold champions are compared on the same test images with publish's paired
statistics (``paired_*``: the difference, its interval, McNemar's p both ways), and the warm
update's promotion decision is printed with its p-value (``gate_*``).
Example (an hour on 2 Zen 4 cores with native bf16)::

    python -m bench.warmstart --data /path/to/raw-store-or-cifar10-jpg.tar.gz --work /tmp/warmstart
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import yaml

from bench.common import base_parser, machine, result_line
from pipeline import paired
from pipeline.config import Params, PolicySearchConfig, load_params
from pipeline.contracts import Decision
from pipeline.data import ImageSet, RawStore, load_data
from pipeline.device import pick_device
from pipeline.evaluation import score
from pipeline.hashing import canonical_json
from pipeline.models import build_model
from pipeline.names import HISTORY_COUNT_ATTR, WARM_ATTR
from pipeline.search.model import ModelSearch, config_from_params
from pipeline.search.policy import FastAutoAugment
from pipeline.search.registry import BuildContext, search_stage
from pipeline.search.studies import completed, open_storage
from pipeline.stages.common import read_policy
from pipeline.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BEGUN = "begun"  # steps.json: the dvc repro steps started (finished ones also have their time)
RESUMED = "resumed"  # steps.json: the repro steps whose wall time is a resumed run's (only its rest)

# The bench profile: params.yaml's keys changed for both runs (everything else is params.yaml's,
# including the seed points, the MAC and training-cost budgets and the warm settings). It keeps the
# defaults' shape at about half their size: the retrain is the largest stage and a warm retrain
# from the champion trains the same share of its epochs (2 of 12; params.yaml: 5 of 30).
PROFILE: dict[str, dict[str, Any]] = {
    "policy_search": {"folds": 2, "trials_per_fold": 40, "startup_trials": 8},
    "model_search": {"trials": 12, "startup_trials": 6, "references": []},
    "retrain": {"recipe": {"epochs": 12}, "warm_epochs": 2},
}
QUICK: dict[str, dict[str, Any]] = {
    "sample": {"size": 400},
    "policy_search": {"folds": 2, "trials_per_fold": 6, "top_n": 2, "startup_trials": 2,
                      "child": {"epochs": 2}, "warm_child_epochs": 1},
    # Two trials: the seed points. No training-cost budget: ResNet-20 sits on its limit (1.0) by
    # definition, and a warm search's one trial must not depend on a timing.
    "model_search": {"trials": 2, "startup_trials": 2, "references": [], "max_train_cost": None,
                     "train_images": 150, "val_images": 100, "recipe": {"epochs": 1}},
    "retrain": {"recipe": {"epochs": 2}, "warm_epochs": 1},
    # no recipe search: its found recipe (30-50 epochs) would replace the 2-epoch retrain
    "recipe_search": {"trials": 0},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ------------------------------------------------------------------ data versions


def write_archive(folder: Path, sets: dict[str, ImageSet], classes: list[str]) -> Path:
    """``sets`` ("train" / "test") as a CIFAR-10 python archive folder: lossless, fast to ingest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in classes]}))
    for split, data in sets.items():
        images = data.images.cpu()
        assert images.shape[1:] == (3, 32, 32), images.shape
        blob = {b"data": images.reshape(len(images), -1).numpy().astype(np.uint8),
                b"labels": data.labels.tolist(), b"filenames": [f"{i}.png".encode() for i in data.ids]}
        (folder / ("test_batch" if split == "test" else "data_batch_1")).write_bytes(pickle.dumps(blob))
    return folder


def split_versions(data: dict[str, ImageSet], share: float, per_class: int | None,
                   test_per_class: int | None) -> tuple[dict[str, ImageSet], dict[str, ImageSet]]:
    """(v1, update): v1 holds the first ``share`` of each class's training images (store order)."""
    train = data["train"]
    labels = train.labels.tolist()
    first: list[int] = []
    rest: list[int] = []
    for c in range(len(train.classes)):
        members = [i for i, label in enumerate(labels) if label == c][:per_class]
        cut = round(len(members) * share)
        first += members[:cut]
        rest += members[cut:]
    test = data["test"]
    if test_per_class is not None:
        tl = test.labels.tolist()
        test = test.subset(torch.tensor([i for c in range(len(test.classes))
                                         for i in [j for j, label in enumerate(tl) if label == c][:test_per_class]]))
    return ({"train": train.subset(torch.tensor(first)), "test": test},
            {"train": train.subset(torch.tensor(rest))})


# ------------------------------------------------------------------ projects


def sh(cmd: list[str], cwd: Path, log: Path) -> float:
    """Run ``cmd`` (this venv first on PATH), appending its output to ``log``; wall seconds."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} (exit {done.returncode}); see {log}")
    return time.perf_counter() - t0


def make_project(root: Path, overrides: dict[str, Any]) -> Path:
    """A git + DVC project with this checkout's dvc.yaml, params.yaml (+ ``overrides``) and code."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "pipeline").symlink_to(REPO / "pipeline")
    log = root / "bench.log"
    sh(["git", "init", "-q"], root, log)
    sh([str(BIN / "dvc"), "init", "-q"], root, log)
    return root


def ingest(project: Path, archive: Path) -> float:
    return sh([str(BIN / "autoaug"), "ingest", str(archive), "--store", "data/raw"], project, project / "bench.log")


def repro(project: Path) -> float:
    return sh([str(BIN / "dvc"), "repro"], project, project / "bench.log")


def read(project: Path, path: str) -> dict[str, Any]:
    return dict(json.loads((project / path).read_text()))


# ------------------------------------------------------------------ measures


def own_trials(study: optuna.Study, counted_only: bool = False) -> list[optuna.trial.FrozenTrial]:
    """The study's own trials in trial order (trained ones only with ``counted_only``: the model
    search's over-budget draws are never trained)."""
    trials = sorted(completed(study), key=lambda t: t.number)
    return [t for t in trials if "skipped" not in t.user_attrs] if counted_only else trials


def own_values(study: optuna.Study, counted_only: bool = False) -> list[float]:
    """First-objective values of ``own_trials``."""
    return [float(t.values[0]) for t in own_trials(study, counted_only)]


def reach(warm: list[float], cold: list[float], tolerance: float = 0.0) -> tuple[float, float, float]:
    """(trials warm needed to reach cold's best - ``tolerance`` as a fraction of cold's trials, or
    inf when it never did; cold best; warm best)."""
    return reached_after(warm, max(cold) - tolerance, len(cold)), max(cold), max(warm)


def reached_after(values: list[float], target: float, out_of: int) -> float:
    """Trials until a value was at least ``target``, as a fraction of ``out_of``; inf if none was."""
    hit = next((i + 1 for i, v in enumerate(values) if v >= target), None)
    return hit / out_of if hit else float("inf")


def incumbents(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """After each trial (in the given order), the best so far by its own first value (the earlier
    one on ties): what the study would have returned had it stopped there. Values are maximised."""
    out: list[optuna.trial.FrozenTrial] = []
    for t in trials:
        out.append(t if not out or t.values[0] > out[-1].values[0] else out[-1])
    return out


Scorer = Callable[[dict[str, Any]], float]


def memo(score: Scorer) -> Scorer:
    """``score`` once per distinct configuration (the prior's best are in several studies)."""
    seen: dict[str, float] = {}

    def cached(params: dict[str, Any]) -> float:
        key = canonical_json(params)
        if key not in seen:
            seen[key] = score(params)
        return seen[key]

    return cached


def common_reach(warm: list[optuna.trial.FrozenTrial], cold: list[optuna.trial.FrozenTrial],
                 score: Scorer) -> tuple[float, float, float]:
    """``reach`` on one scale: each study's incumbents re-scored by ``score`` (the same scorer for
    both, maximised). (Trials warm needed until its incumbent scored at least cold's final
    incumbent, as a fraction of cold's trials, or inf; cold's final; warm's final.)"""
    target = score(dict(incumbents(cold)[-1].params))
    warm_scores = [score(dict(t.params)) for t in incumbents(warm)]
    return reached_after(warm_scores, target, len(cold)), target, warm_scores[-1]


def policy_scorer(project: Path, fold: int, draws: int) -> Scorer:
    """``fold_scorer`` of ``project``'s sample, cached children and params."""
    return fold_scorer(load_params(project / "params.yaml").policy_search,
                       ImageSet.load(project / "data" / "sample" / "images.pt"),
                       read(project, "data/sample/manifest.json")["fingerprint"],
                       project / ".autoaug" / "cache" / "search_policy", fold, draws)


def fold_scorer(cfg: PolicySearchConfig, sample: ImageSet, fingerprint: str, cache: Path, fold: int,
                draws: int) -> Scorer:
    """A policy's mean accuracy over ``draws`` fresh augmentation seeds (the search used
    ``eval_seed``) on fold ``fold``'s D_A, by the from-scratch child of that fold (from ``cache``)."""
    context = BuildContext(Params(policy_search=cfg.model_copy(update={"method": "faa"})), sample, fingerprint,
                           pick_device(), cache, progress=False)
    method = search_stage("search_policy").build(context)
    assert isinstance(method, FastAutoAugment)
    d_m, d_a = method.split(fold)
    child, seconds = method.scratch_child(fold, d_m)
    if seconds:
        print(f"policy scorer: fold{fold}'s child was not in {cache}: trained it again", flush=True)

    def score(params: dict[str, Any]) -> float:
        policy = method.decode(params)
        return statistics.mean(method.score(child, d_a, policy, cfg.eval_seed + 1 + i).accuracy for i in range(draws))

    return memo(score)


def model_scorer(project: Path, seeds: int) -> Scorer:
    """An architecture's mean validation accuracy over ``seeds`` trainings with fresh seeds (the
    search seeds trial n with ``seed + n``) on the model search's split, with ``project``'s policy."""
    cfg = load_params(project / "params.yaml").model_search
    policy = read_policy(project / "outputs" / "search_policy" / "policy.json") if cfg.augment == "policy" else None
    context = BuildContext(Params(model_search=cfg), ImageSet.load(project / "data" / "sample" / "images.pt"),
                           read(project, "data/sample/manifest.json")["fingerprint"], pick_device(), policy=policy,
                           progress=False)  # no tracker: no @champion (the scorer trains, it does not search)
    method = search_stage("search_model").build(context)
    assert isinstance(method, ModelSearch)
    classes = len(method.train_set.classes)

    def score(params: dict[str, Any]) -> float:
        config = config_from_params(params)
        return statistics.mean(method.fit(build_model(config, num_classes=classes, seed=10_000 + i), seed=10_000 + i)[0]
                               for i in range(seeds))

    return memo(score)


def on_scale(fields: dict[str, Any], key: str, label: str, warm: list[optuna.Study], cold: list[optuna.Study],
             scorers: list[Scorer], counted: bool) -> None:
    """``common_reach`` per part (part k scored by ``scorers[k]``), printed and put in ``fields``
    as ``key``_fraction (the worst part), ``key``_cold and ``key``_warm (means over parts)."""
    rows = [common_reach(own_trials(w, counted), own_trials(c, counted), score)
            for w, c, score in zip(warm, cold, scorers, strict=True)]
    for k, (frac, cbest, wbest) in enumerate(rows):
        print(f"{label} part {k}, on one scale: cold's final incumbent {cbest:.4f}, warm's {wbest:.4f}; warm "
              f"reached cold's after {frac:.2f} of the cold trials", flush=True)
    fields[f"{key}_fraction"] = max(r[0] for r in rows)
    fields[f"{key}_cold"] = statistics.mean(r[1] for r in rows)
    fields[f"{key}_warm"] = statistics.mean(r[2] for r in rows)


def copy_storage(src: Path, dst: Path) -> None:
    """A consistent copy of the SQLite study storage ``src`` (WAL mode: the file alone may lack
    the latest commits while a connection is open), written atomically."""
    part = dst.with_suffix(".part")
    part.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(src)) as source, contextlib.closing(sqlite3.connect(part)) as target:
        source.backup(target)
    part.replace(dst)


def studies_of(storage_url: str, stage: str, fingerprint: str) -> list[optuna.Study]:
    storage = open_storage(storage_url)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
                   if s.study_name.startswith(f"{stage}-") and fingerprint in s.study_name)
    return [optuna.load_study(study_name=n, storage=storage) for n in names]


def policy_equal_child(cold: Path, v1_storage: Path, work: Path, history: bool) -> list[optuna.Study]:
    """The policy search on the cold project's sample and cached (from-scratch) children, warm
    from a copy of v1's study storage: only the study's prior differs from the cold study."""
    params = load_params(cold / "params.yaml")
    cfg = params.policy_search.model_copy(update={"warm_child_epochs": 0, "warm_history": history})
    db = work / f"equal-child-{'history' if history else 'enqueue'}.db"
    copy_storage(v1_storage, db)
    sample = ImageSet.load(cold / "data" / "sample" / "images.pt")
    fingerprint = read(cold, "data/sample/manifest.json")["fingerprint"]
    tracker = Tracker(f"sqlite:///{work / 'equal-child-mlflow.db'}", "bench")
    return policy_search(sample, fingerprint, cfg, db, cold / ".autoaug" / "cache" / "search_policy", tracker,
                         f"equal-{db.stem}")


def policy_search(sample: ImageSet, fingerprint: str, cfg: PolicySearchConfig, db: Path, cache: Path,
                  tracker: Tracker, resume_key: str) -> list[optuna.Study]:
    """The policy search as the stage builds it (through its registered spec), in the SQLite
    storage ``db`` (resumed when it holds the studies), with the children in ``cache``."""
    spec = search_stage("search_policy")
    context = BuildContext(Params(policy_search=cfg), sample, fingerprint, pick_device(), cache, progress=False)
    with tracker.stage_run(spec.name, resume_key=resume_key) as run:
        result = spec.run(context, open_storage(f"sqlite:///{db}"), run)
    studies: list[optuna.Study] = result.outcome.studies
    return studies


def run_projects(args: Any, work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Steps 1-3 (v1, the warm update, cold); their wall times and v1's metrics."""
    data = load_data(args.data)
    v1, update = split_versions(data, args.v1_share, per_class=500 if args.quick else None,
                                test_per_class=100 if args.quick else None)
    classes = data["train"].classes
    a1 = write_archive(work / "v1", v1, classes)
    a2 = write_archive(work / "update", update, classes)
    print(f"v1: {len(v1['train'])} train + {len(v1['test'])} test images; update: {len(update['train'])} train",
          flush=True)
    steps: dict[str, Any] = load_steps(work) if args.resume else {}
    warm, cold = work / "warm", work / "cold"

    def timed_repro(name: str, project: Path) -> None:
        """``steps[name]``: one ``dvc repro`` in ``project``, marked begun in steps.json first (the
        caller saves the time with what it reads after); one a ``--resume`` finds begun but not saved
        runs again and is listed under RESUMED (DVC skips the stages already done, so its time is
        only the rest)."""
        begun = steps.setdefault(BEGUN, [])
        if name in begun:
            steps.setdefault(RESUMED, []).append(name)
        else:
            begun.append(name)
        save(work, steps)
        steps[name] = repro(project)

    if "t_v1" not in steps:
        if "t_ingest1" not in steps:
            make_project(warm, overrides)
            steps["t_ingest1"] = ingest(warm, a1)
            save(work, steps)
        timed_repro("t_v1", warm)
        steps["v1_metrics"] = read(warm, "outputs/retrain/metrics.json")
        copy_storage(warm / "optuna.db", work / "v1-optuna.db")  # the study storage as v1 left it (for step 4)
        save(work, steps)
    print(f"v1: ingest {steps['t_ingest1']:.0f} s, dvc repro {steps['t_v1'] / 60:.1f} min, champion "
          f"{steps['v1_metrics']['test_accuracy']:.4f}", flush=True)

    if "t_warm" not in steps:
        if "t_ingest_warm" not in steps:
            steps["t_ingest_warm"] = ingest(warm, a2)
            save(work, steps)
        timed_repro("t_warm", warm)
        save(work, steps)
    warm_metrics = read(warm, "outputs/retrain/metrics.json")
    warm_search = read(warm, "outputs/search_model/metrics.json")
    print(f"warm update: ingest {steps['t_ingest_warm']:.0f} s, dvc repro {steps['t_warm'] / 60:.1f} min, champion "
          f"{warm_metrics['test_accuracy']:.4f} (model: the champion's architecture "
          f"{warm_search.get('champion_architecture_version')}, kept over the rule's pick: "
          f"{bool(warm_search.get('kept_champion'))}; retrain from version "
          f"{warm_metrics.get('warm_start_from_version')})", flush=True)
    if "t_noop" not in steps:
        steps["t_noop"] = repro(warm)  # nothing changed: every stage must be skipped
        save(work, steps)
    print(f"no-op: a second dvc repro with nothing changed took {steps['t_noop']:.1f} s", flush=True)

    if "t_cold" not in steps:
        if "t_ingest_cold" not in steps:
            make_project(cold, overrides)
            steps["t_ingest_cold"] = ingest(cold, a1) + ingest(cold, a2)
            save(work, steps)
        timed_repro("t_cold", cold)
        save(work, steps)
    print(f"cold: ingest {steps['t_ingest_cold']:.0f} s, dvc repro {steps['t_cold'] / 60:.1f} min, champion "
          f"{read(cold, 'outputs/retrain/metrics.json')['test_accuracy']:.4f}", flush=True)
    return steps


def save(work: Path, steps: dict[str, Any]) -> None:
    """The steps so far (an interrupted run keeps what it measured)."""
    (work / "steps.json").write_text(json.dumps(steps, indent=1))


def load_steps(work: Path) -> dict[str, Any]:
    """The steps an interrupted run saved (``--resume``); a step begun but not saved is re-run."""
    path = work / "steps.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/autoaug-warmstart", help="where the two projects are made")
    p.add_argument("--v1-share", type=float, default=0.9, help="share of each class in the first version")
    p.add_argument("--no-equal-child", action="store_true",
                   help="skip step 4 (the policy search with the child held equal); warm_fraction is then "
                   "the searches' as the pipeline ran them")
    p.add_argument("--rescore-draws", type=int, default=5,
                   help="fresh augmentation seeds per policy on the common scale (0: no common scale)")
    p.add_argument("--rescore-seeds", type=int, default=2,
                   help="fresh training seeds per architecture on the common scale (0: none)")
    p.add_argument("--defaults", action="store_true",
                   help="run the shipped params.yaml unchanged (no bench profile): what users run, about two "
                   "hours on 2 cores")
    p.add_argument("--resume", action="store_true",
                   help="continue the run --work holds (its steps.json): finished steps are kept, an interrupted "
                   "dvc repro is run again (DVC skips its finished stages; the step is listed as resumed)")
    p.add_argument("--measure-only", action="store_true",
                   help="measure the projects a previous run left in --work (its steps.json) without re-running them")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    overrides = {} if args.defaults else merge(PROFILE, QUICK) if args.quick else PROFILE
    print(f"machine: {machine()}\nprofile: {json.dumps(overrides)}", flush=True)
    if args.measure_only:
        if not (work / "steps.json").is_file():
            raise SystemExit(f"--measure-only: {work / 'steps.json'} is missing: no finished run in {work}")
        steps = json.loads((work / "steps.json").read_text())
    else:
        steps = run_projects(args, work, overrides)
    measure(args, work, steps)


def champions_paired(warm: Path, cold: Path) -> dict[str, Any]:
    """The warm update's and the cold run's retrained models on the same test images (the cold
    project's store; both hold the same data), each with its own retrain recipe's TTA: the
    accuracy difference warm - cold, its 95 % interval, and McNemar's exact one-sided p-values
    that warm is not better and that cold is not better (a small second p: warm is worse)."""
    test_set = RawStore(cold / "data" / "raw").split("test")
    device = pick_device()
    predictions = {}
    for name, project in (("warm", warm), ("cold", cold)):
        saved = torch.load(project / "outputs" / "retrain" / "model.pt", map_location="cpu", weights_only=False)
        model = build_model(saved["config"], num_classes=len(saved["classes"]))
        model.load_state_dict(saved["state_dict"])
        recipe = load_params(project / "params.yaml").retrain.recipe
        predictions[name] = score(model, test_set, recipe, device).predictions
    n, warm_only, cold_only = paired.discordant(test_set.labels, predictions["warm"], predictions["cold"])
    low, high = paired.interval(warm_only, cold_only, n)
    return {"paired_n": n, "paired_warm_only": warm_only, "paired_cold_only": cold_only,
            "paired_diff": paired.difference(warm_only, cold_only, n), "paired_low": low, "paired_high": high,
            "p_warm_not_better": paired.mcnemar_p(warm_only, cold_only),
            "p_warm_not_worse": paired.mcnemar_p(cold_only, warm_only)}


def measure(args: Any, work: Path, steps: dict[str, Any]) -> None:
    warm, cold = work / "warm", work / "cold"
    t_warm, t_cold = steps["t_warm"], steps["t_cold"]
    v1_metrics = steps["v1_metrics"]
    warm_metrics = read(warm, "outputs/retrain/metrics.json")
    cold_metrics = read(cold, "outputs/retrain/metrics.json")
    kept = bool(read(warm, "outputs/search_model/metrics.json").get("kept_champion"))
    for name, project in (("warm", warm), ("cold", cold)):
        policy_s = read(project, "outputs/search_policy/summary.json")
        model_s = read(project, "outputs/search_model/metrics.json")
        retrain_s = read(project, "outputs/retrain/metrics.json")
        print(f"{name} stages: search_policy {policy_s['wall_seconds'] / 60:.1f} min (children "
              f"{policy_s['child_train_seconds'] / 60:.1f}), search_model {model_s['wall_seconds'] / 60:.1f} min "
              f"({model_s['trained_trials']} trained), retrain {retrain_s['train_minutes']:.1f} min "
              f"({retrain_s['epochs']} epochs)", flush=True)
    fp = read(cold, "data/sample/manifest.json")["fingerprint"]
    assert read(warm, "data/sample/manifest.json")["fingerprint"] == fp, "the two projects hold different data"
    fields: dict[str, Any] = {}
    # Is the warm update's champion worse than the cold run's? Paired, on the same test images.
    pair = champions_paired(warm, cold)
    print(f"warm against cold on the same {pair['paired_n']} test images: {pair['paired_diff'] * 100:+.2f} points "
          f"(95 % interval {pair['paired_low'] * 100:+.2f} to {pair['paired_high'] * 100:+.2f}); "
          f"{pair['paired_warm_only']} images only warm gets right, {pair['paired_cold_only']} only cold; McNemar "
          f"p(warm not better) {pair['p_warm_not_better']:.3g}, p(warm not worse) {pair['p_warm_not_worse']:.3g}",
          flush=True)
    fields.update(pair)
    # The promotion gate's decision on the warm update (publish's decision.json).
    decision = Decision.read(warm / "outputs" / "publish" / "decision.json")
    gate = decision.comparison
    print(f"warm update's promotion gate: promoted {decision.promoted} ({decision.reason})"
          + (f"; against the champion (version {gate.champion_version}): {gate.difference_points:+.2f} points, 95 % interval "
             f"{gate.interval_points[0]:+.2f} to {gate.interval_points[1]:+.2f}, p {gate.p_value:.3g}" if gate else ""), flush=True)
    fields.update(gate_promoted=decision.promoted, gate_p=gate.p_value if gate else None,
                  gate_diff_points=gate.difference_points if gate else None)

    # Per search, as the pipeline ran it; and on one scale (see the module's docstring).
    folds = load_params(cold / "params.yaml").policy_search.folds
    policy_scale = [policy_scorer(cold, k, args.rescore_draws) for k in range(folds)] if args.rescore_draws else None
    model_scale = model_scorer(cold, args.rescore_seeds) if args.rescore_seeds else None
    # per search: its stage, its key in the RESULT line, whether only trained trials count, its scorers
    searches = (("search_policy", "policy", False, policy_scale),
                ("search_model", "model", True, [model_scale] if model_scale else None))
    for stage, key, counted, scorers in searches:
        cold_studies = studies_of(f"sqlite:///{cold / 'optuna.db'}", stage, fp)
        warm_studies = studies_of(f"sqlite:///{warm / 'optuna.db'}", stage, fp)
        rows = [reach(own_values(w, counted), own_values(c, counted)) for w, c in zip(warm_studies, cold_studies, strict=True)]
        for (frac, cbest, wbest), w, c in zip(rows, warm_studies, cold_studies, strict=True):
            print(f"{stage} {c.study_name}: cold best {cbest:.4f} in {len(own_values(c, counted))} trials; warm "
                  f"best {wbest:.4f} in {len(own_values(w, counted))} (from {w.user_attrs.get(WARM_ATTR)}), "
                  f"reached cold's best after {frac:.2f} of the cold trials", flush=True)
        fields[f"{key}_warm_fraction"] = max(r[0] for r in rows)
        fields[f"{key}_cold_best"] = sum(r[1] for r in rows) / len(rows)
        fields[f"{key}_warm_best"] = sum(r[2] for r in rows) / len(rows)
        if scorers:
            on_scale(fields, f"{key}_common", key, warm_studies, cold_studies, scorers, counted)
    cold_summary = read(cold, "outputs/search_policy/summary.json")
    warm_summary = read(warm, "outputs/search_policy/summary.json")
    print(f"policy children: cold {cold_summary['child_train_seconds']:.0f} s (clean D_A accuracy "
          f"{cold_summary['child_clean_accuracy_mean']:.4f}), warm fine-tuned {warm_summary['child_train_seconds']:.0f} s "
          f"({warm_summary['child_clean_accuracy_mean']:.4f})", flush=True)

    # The policy search with the child held equal.
    cold_policy = studies_of(f"sqlite:///{cold / 'optuna.db'}", "search_policy", fp)
    for history in () if args.no_equal_child else (False, True):
        label = "enqueue+history" if history else "enqueue"
        studies = policy_equal_child(cold, work / "v1-optuna.db", work, history)
        rows = [reach(own_values(w), own_values(c)) for w, c in zip(studies, cold_policy, strict=True)]
        for (frac, cbest, wbest), w in zip(rows, studies, strict=True):
            print(f"equal child, warm {label}: {w.study_name}: cold best {cbest:.4f}, warm best {wbest:.4f} in "
                  f"{len(own_values(w))} trials (history {w.user_attrs.get(HISTORY_COUNT_ATTR, 0)}), reached "
                  f"after {frac:.2f} of the cold trials", flush=True)
        tag = "hist" if history else "enq"
        fields[f"policy_equal_{tag}_fraction"] = max(r[0] for r in rows)
        fields[f"policy_equal_{tag}_best"] = sum(r[2] for r in rows) / len(rows)
        if policy_scale:
            on_scale(fields, f"policy_equal_{tag}_common", f"equal child, warm {label}", studies, cold_policy,
                     policy_scale, False)
    if "policy_common_fraction" in fields and "model_common_fraction" in fields:
        fields["warm_fraction_common"] = max(fields["policy_common_fraction"], fields["model_common_fraction"])

    fields.update(
        warm_fraction=max(fields.get("policy_equal_enq_fraction", fields["policy_warm_fraction"]),
                          fields["model_warm_fraction"]),
        time_ratio=t_warm / t_cold, warm_repro_min=t_warm / 60, cold_repro_min=t_cold / 60,
        v1_repro_min=steps["t_v1"] / 60, cold_acc=cold_metrics["test_accuracy"], warm_acc=warm_metrics["test_accuracy"],
        v1_acc=v1_metrics["test_accuracy"], retrain_from_champion=warm_metrics.get("warm_start_from_version") is not None,
        kept_champion=kept,
        cold_minutes_retrain=cold_metrics["train_minutes"], warm_minutes_retrain=warm_metrics["train_minutes"],
        noop_repro_s=steps.get("t_noop"), quick=args.quick, defaults=args.defaults,
        resumed=",".join(steps.get(RESUMED, [])) or "none",  # a resumed step's time is only its rest
        machine=machine().replace(" ", "_"),
    )
    print(result_line(**fields))


if __name__ == "__main__":
    main()
