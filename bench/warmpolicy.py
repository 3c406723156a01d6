"""Policy search continuity, repeated over search seeds: how soon a warm-started policy study
reaches the cold study's final best.

``bench/warmstart.py`` runs the whole pipeline once per data version, so its per-search measure
of the policy search rests on one TPE run per fold, and one fold's miss (or hit) may be the luck
of that run. This bench isolates the policy search and repeats it:

1. the data versions of ``bench/warmstart.py`` (v1: the first ``--v1-share`` of each class's
   training images; the update: all of them) and each version's stable sample (params.yaml's
   ``sample``);
2. v1's study: the policy search (the warm-start bench's profile) on v1's sample, cold;
3. for each search seed ``s`` (an offset of the TPE sampler's seed only: the splits, the
   children and the D_A augmentation seed stay the same), on the update's sample: the cold
   study (empty storage) and, for each warm mechanism, a warm study (a copy of v1's storage).
   The studies score with the update's from-scratch children (``warm_child_epochs: 0``), so
   only the prior and the sampler's seed differ, except in the mechanisms that fine-tune v1's
   child as the pipeline's warm fold does (``all_folds``, ``finetuned*``);
   seed 0 is the pipeline's own, which v1's search used too (their random start-up trials
   coincide, as after a real update); seeds 1 and up share no draw with v1's search;
4. on one scale (as ``bench/warmstart.py``): each study's incumbents (its best so far after each
   trial) re-scored by the fold's child on D_A with ``--rescore-draws`` fresh augmentation seeds.
   Per (seed, fold): trials the warm study needed until its incumbent re-scored at least as high
   as the cold study's final incumbent, as a fraction of the cold study's trials (target 0.25).

Peer: the cold study of the same seed. Printed per mechanism: the median fraction over the
(seed, fold) pairs, how many pairs met 0.25, and the mean final incumbents on one scale.
Studies, children and re-scores persist in ``--work``: an interrupted run resumes.

    python -m bench.warmpolicy --data /path/to/raw-store-or-cifar10-jpg.tar.gz --work /tmp/warmpolicy --seeds 3
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import optuna
import yaml

from bench.common import base_parser, machine, result_line
from bench.warmstart import (
    PROFILE,
    QUICK,
    common_reach,
    copy_storage,
    fold_scorer,
    merge,
    own_trials,
    own_values,
    policy_search,
    reach,
    split_versions,
)
from pipeline.config import Params, PolicySearchConfig, parse_params
from pipeline.data import ImageSet, load_data
from pipeline.data.sample import fingerprint, stable_sample
from pipeline.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent

MECHANISMS: dict[str, dict[str, Any]] = {
    # params.yaml's warm start: the best of every prior fold's study in turn (its own fold's first)
    # re-scored first, then TPE; the fold's child fine-tuned from v1's (3 epochs) and scoring.
    "all_folds": {"warm_child_epochs": 3},
    "all_folds+scratch": {},  # ... with the update's from-scratch child (the child held equal)
    # The prior's best of the fold's own study only (before warm_all_folds), from-scratch child:
    "enqueue": {"warm_all_folds": False},
    "history": {"warm_all_folds": False, "warm_history": True},  # ... and the prior's trials as TPE history
    # ... with the fold's child fine-tuned from v1's; the one scale still re-scores with the
    # update's from-scratch child of the fold.
    "finetuned": {"warm_all_folds": False, "warm_child_epochs": 3},
    "finetuned+history": {"warm_all_folds": False, "warm_child_epochs": 3, "warm_history": True},
}
"""Warm mechanisms compared: a name -> the policy_search keys it changes."""


def with_search_seed(cfg: PolicySearchConfig, offset: int) -> PolicySearchConfig:
    """``cfg`` with the sampler's seed shifted by ``offset`` (0: the pipeline's own); the splits
    and the children keep their seeds."""
    seeds = cfg.seeds.model_copy(update={"split": cfg.split_seed, "train": cfg.train_seed,
                                         "sampler": cfg.sampler_seed + offset})
    return cfg.model_copy(update={"seeds": seeds})


def search(sample: ImageSet, fp: str, cfg: PolicySearchConfig, db: Path, work: Path, offset: int) -> list[optuna.Study]:
    """The policy search on ``sample`` in the storage ``db`` (resumed when it holds the study)."""
    tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}", "bench")
    return policy_search(sample, fp, with_search_seed(cfg, offset), db, work / "cache", tracker, db.stem)


def versions(data_path: str, params: Params, share: float, quick: bool) -> tuple[ImageSet, ImageSet]:
    """(v1's sample, the update's sample)."""
    data = load_data(data_path)
    per_class = 500 if quick else None
    v1, _ = split_versions(data, share, per_class=per_class, test_per_class=None)
    everything, _ = split_versions(data, 1.0, per_class=per_class, test_per_class=None)
    return (stable_sample(v1["train"], params.sample.size, params.sample.seed),
            stable_sample(everything["train"], params.sample.size, params.sample.seed))


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/autoaug-warmpolicy", help="studies, children and MLflow runs")
    p.add_argument("--v1-share", type=float, default=0.9, help="share of each class in the first version")
    p.add_argument("--seeds", type=int, default=3, help="search seeds (sampler seed offsets 0, 1, ...)")
    p.add_argument("--mechanisms", default=",".join(MECHANISMS), help=f"warm mechanisms: {', '.join(MECHANISMS)}")
    p.add_argument("--rescore-draws", type=int, default=5, help="fresh augmentation seeds per policy on one scale")
    args = p.parse_args()
    mechanisms = args.mechanisms.split(",")
    unknown = [m for m in mechanisms if m not in MECHANISMS]
    if unknown:
        raise SystemExit(f"--mechanisms: unknown {', '.join(unknown)}; known: {', '.join(MECHANISMS)}")
    if args.seeds < 1 or args.rescore_draws < 1:
        raise SystemExit("--seeds and --rescore-draws must be at least 1")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    overrides = merge(PROFILE, QUICK) if args.quick else PROFILE
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = parse_params(merge(raw, {k: v for k, v in overrides.items() if k in ("sample", "policy_search")}),
                          "params.yaml + the bench profile")
    cfg = params.policy_search.model_copy(update={"warm_child_epochs": 0})
    print(f"machine: {machine()}\npolicy_search: {cfg.model_dump_json()}", flush=True)

    v1_sample, sample = versions(args.data, params, args.v1_share, args.quick)
    v1_fp, fp = fingerprint(v1_sample), fingerprint(sample)
    shared = len(set(v1_sample.ids) & set(sample.ids))
    print(f"samples: v1 {v1_fp[:12]}, update {fp[:12]}; {shared} of {len(sample)} images in both", flush=True)

    search(v1_sample, v1_fp, cfg, work / "v1.db", work, 0)
    rows: dict[str, list[tuple[float, float, float]]] = {m: [] for m in mechanisms}
    scored: dict[str, list[tuple[float, float, float]]] = {m: [] for m in mechanisms}
    for seed in range(args.seeds):
        cold = search(sample, fp, cfg, work / f"cold-s{seed}.db", work, seed)
        if seed == 0:  # the cold search has trained (cached) the children the scorers use
            scorers = [fold_scorer(cfg, sample, fp, work / "cache", k, args.rescore_draws) for k in range(cfg.folds)]
        for mech in mechanisms:
            db = work / f"warm-{mech}-s{seed}.db"
            if not db.exists():
                copy_storage(work / "v1.db", db)
            warm = search(sample, fp, cfg.model_copy(update=MECHANISMS[mech]), db, work, seed)
            for k, (w, c) in enumerate(zip(warm, cold, strict=True)):
                row = common_reach(own_trials(w), own_trials(c), scorers[k])
                rows[mech].append(row)
                scored[mech].append(reach(own_values(w), own_values(c)))
                print(f"seed {seed} fold {k} warm {mech}: {len(own_values(w))} trials vs cold {len(own_values(c))}; "
                      f"one scale: cold final {row[1]:.4f}, warm final {row[2]:.4f}, reached after {row[0]:.2f}; "
                      f"as scored: cold {scored[mech][-1][1]:.4f}, warm {scored[mech][-1][2]:.4f}", flush=True)

    fields: dict[str, Any] = {"seeds": args.seeds, "folds": cfg.folds, "cold_trials": cfg.trials_per_fold}
    for mech in mechanisms:
        fractions = [r[0] for r in rows[mech]]
        fields[f"{mech}_median_fraction"] = statistics.median(fractions)
        fields[f"{mech}_met"] = f"{sum(f <= 0.25 for f in fractions)}/{len(fractions)}"
        fields[f"{mech}_reached"] = f"{sum(f != float('inf') for f in fractions)}/{len(fractions)}"
        fields[f"{mech}_cold_mean"] = statistics.mean(r[1] for r in rows[mech])
        fields[f"{mech}_warm_mean"] = statistics.mean(r[2] for r in rows[mech])
        fields[f"{mech}_warm_minus_cold_min"] = min(r[2] - r[1] for r in rows[mech])
        fields[f"{mech}_scored_median_fraction"] = statistics.median(r[0] for r in scored[mech])
    fields.update(quick=args.quick, machine=machine().replace(" ", "_"))
    print(result_line(**fields))


if __name__ == "__main__":
    main()
