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

The profile is smaller than params.yaml's (fewer trials and epochs, the same for cold and warm;
see PROFILE). Example (an hour on 2 Zen 4 cores with native bf16)::

    python -m bench.warmstart --data /path/to/raw-store-or-cifar10-jpg.tar.gz --work /tmp/warmstart
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import base_parser, machine, result_line  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.data import ImageSet, load_data  # noqa: E402
from pipeline.device import pick_device  # noqa: E402
from pipeline.search.policy import run_search  # noqa: E402
from pipeline.search.runner import HISTORY_COUNT_ATTR, WARM_ATTR  # noqa: E402
from pipeline.search.studies import completed, open_storage  # noqa: E402
from pipeline.tracking import Tracker  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

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
    "model_search": {"trials": 2, "startup_trials": 2, "references": [], "max_macs": 15_000_000,
                     "train_images": 150, "val_images": 100, "recipe": {"epochs": 1}},
    "retrain": {"recipe": {"epochs": 2}, "warm_epochs": 1},
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


def own_values(study: optuna.Study, counted_only: bool = False) -> list[float]:
    """First-objective values of the study's own trials in trial order (trained ones only with
    ``counted_only``: the model search's over-budget draws are never trained)."""
    trials = sorted(completed(study), key=lambda t: t.number)
    if counted_only:
        trials = [t for t in trials if "skipped" not in t.user_attrs]
    return [float(t.values[0]) for t in trials]


def reach(warm: list[float], cold: list[float], tolerance: float = 0.0) -> tuple[float, float, float]:
    """(trials warm needed to reach cold's best - ``tolerance`` as a fraction of cold's trials, or
    inf when it never did; cold best; warm best)."""
    target = max(cold) - tolerance
    hit = next((i + 1 for i, v in enumerate(warm) if v >= target), None)
    return (hit / len(cold) if hit else float("inf")), max(cold), max(warm)


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
    shutil.copy(v1_storage, db)
    sample = ImageSet.load(cold / "data" / "sample" / "images.pt")
    fingerprint = read(cold, "data/sample/manifest.json")["fingerprint"]
    tracker = Tracker(f"sqlite:///{work / 'equal-child-mlflow.db'}", "bench")
    with tracker.stage_run("search_policy", resume_key=f"equal-{db.stem}") as run:
        result = run_search(sample, fingerprint, cfg, open_storage(f"sqlite:///{db}"), run, device=pick_device(),
                            cache=cold / ".autoaug" / "cache" / "search_policy", progress=False)
    return result.fold_studies


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/autoaug-warmstart", help="where the two projects are made")
    p.add_argument("--v1-share", type=float, default=0.9, help="share of each class in the first version")
    p.add_argument("--no-equal-child", action="store_true",
                   help="skip step 4 (the policy search with the child held equal); warm_fraction is then "
                   "the searches' as the pipeline ran them")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    overrides = merge(PROFILE, QUICK) if args.quick else PROFILE
    print(f"machine: {machine()}\nprofile: {json.dumps(overrides)}", flush=True)

    data = load_data(args.data)
    v1, update = split_versions(data, args.v1_share, per_class=500 if args.quick else None,
                                test_per_class=100 if args.quick else None)
    classes = data["train"].classes
    a1 = write_archive(work / "v1", v1, classes)
    a2 = write_archive(work / "update", update, classes)
    print(f"v1: {len(v1['train'])} train + {len(v1['test'])} test images; update: {len(update['train'])} train",
          flush=True)

    warm = make_project(work / "warm", overrides)
    t_ingest1 = ingest(warm, a1)
    t_v1 = repro(warm)
    v1_metrics = read(warm, "outputs/retrain/metrics.json")
    print(f"v1: ingest {t_ingest1:.0f} s, dvc repro {t_v1 / 60:.1f} min, champion {v1_metrics['test_accuracy']:.4f}",
          flush=True)
    v1_storage = work / "v1-optuna.db"
    shutil.copy(warm / "optuna.db", v1_storage)  # the study storage as v1 left it (for step 4)

    t_ingest_warm = ingest(warm, a2)
    t_warm = repro(warm)
    warm_metrics = read(warm, "outputs/retrain/metrics.json")
    warm_search = read(warm, "outputs/search_model/metrics.json")
    kept = bool(warm_search.get("kept_champion"))
    print(f"warm update: ingest {t_ingest_warm:.0f} s, dvc repro {t_warm / 60:.1f} min, champion "
          f"{warm_metrics['test_accuracy']:.4f} (model: the champion's architecture "
          f"{warm_search.get('champion_architecture_version')}, kept over the rule's pick: {kept}; "
          f"retrain from version {warm_metrics.get('warm_start_from_version')})", flush=True)

    cold = make_project(work / "cold", overrides)
    t_ingest_cold = ingest(cold, a1) + ingest(cold, a2)
    t_cold = repro(cold)
    cold_metrics = read(cold, "outputs/retrain/metrics.json")
    print(f"cold: ingest {t_ingest_cold:.0f} s, dvc repro {t_cold / 60:.1f} min, champion "
          f"{cold_metrics['test_accuracy']:.4f}", flush=True)

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

    # Per search, as the pipeline ran it.
    for stage, key in (("search_policy", "policy"), ("search_model", "model")):
        cold_studies = studies_of(f"sqlite:///{cold / 'optuna.db'}", stage, fp)
        warm_studies = studies_of(f"sqlite:///{warm / 'optuna.db'}", stage, fp)
        counted = stage == "search_model"
        rows = [reach(own_values(w, counted), own_values(c, counted)) for w, c in zip(warm_studies, cold_studies, strict=True)]
        for (frac, cbest, wbest), w, c in zip(rows, warm_studies, cold_studies, strict=True):
            print(f"{stage} {c.study_name}: cold best {cbest:.4f} in {len(own_values(c, counted))} trials; warm "
                  f"best {wbest:.4f} in {len(own_values(w, counted))} (from {w.user_attrs.get(WARM_ATTR)}), "
                  f"reached cold's best after {frac:.2f} of the cold trials", flush=True)
        fields[f"{key}_warm_fraction"] = max(r[0] for r in rows)
        fields[f"{key}_cold_best"] = sum(r[1] for r in rows) / len(rows)
        fields[f"{key}_warm_best"] = sum(r[2] for r in rows) / len(rows)
    cold_summary = read(cold, "outputs/search_policy/summary.json")
    warm_summary = read(warm, "outputs/search_policy/summary.json")
    print(f"policy children: cold {cold_summary['child_train_seconds']:.0f} s (clean D_A accuracy "
          f"{cold_summary['child_clean_accuracy_mean']:.4f}), warm fine-tuned {warm_summary['child_train_seconds']:.0f} s "
          f"({warm_summary['child_clean_accuracy_mean']:.4f})", flush=True)

    # The policy search with the child held equal.
    cold_policy = studies_of(f"sqlite:///{cold / 'optuna.db'}", "search_policy", fp)
    for history in () if args.no_equal_child else (False, True):
        label = "enqueue+history" if history else "enqueue"
        studies = policy_equal_child(cold, v1_storage, work, history)
        rows = [reach(own_values(w), own_values(c)) for w, c in zip(studies, cold_policy, strict=True)]
        for (frac, cbest, wbest), w in zip(rows, studies, strict=True):
            print(f"equal child, warm {label}: {w.study_name}: cold best {cbest:.4f}, warm best {wbest:.4f} in "
                  f"{len(own_values(w))} trials (history {w.user_attrs.get(HISTORY_COUNT_ATTR, 0)}), reached "
                  f"after {frac:.2f} of the cold trials", flush=True)
        tag = "hist" if history else "enq"
        fields[f"policy_equal_{tag}_fraction"] = max(r[0] for r in rows)
        fields[f"policy_equal_{tag}_best"] = sum(r[2] for r in rows) / len(rows)

    fields.update(
        warm_fraction=max(fields.get("policy_equal_enq_fraction", fields["policy_warm_fraction"]),
                          fields["model_warm_fraction"]),
        time_ratio=t_warm / t_cold, warm_repro_min=t_warm / 60, cold_repro_min=t_cold / 60,
        v1_repro_min=t_v1 / 60, cold_acc=cold_metrics["test_accuracy"], warm_acc=warm_metrics["test_accuracy"],
        v1_acc=v1_metrics["test_accuracy"], retrain_from_champion=warm_metrics.get("warm_start_from_version") is not None,
        kept_champion=kept,
        cold_minutes_retrain=cold_metrics["train_minutes"], warm_minutes_retrain=warm_metrics["train_minutes"],
        quick=args.quick, machine=machine().replace(" ", "_"),
    )
    print(result_line(**fields))


if __name__ == "__main__":
    main()
