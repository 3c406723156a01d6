"""What a model search pays for the draws its budgets refuse, cold and warm.

At the shipped budgets (1 M parameters, 60 M MACs, 25 predicted retrain minutes) most of the
7-block space is over budget: a cold search drew 180 for its 24 trainable candidates, and a warm
update's search 84 for 6, whose 78 refusals took 158 s of its 252 (BENCHMARKS.md, "Fifth run").
A refused draw costs its sampling, its parameter and MAC count and, when it passes those, a
timing of the retrain's step. This bench measures the two cuts made for it, each against its
peer in the same run:

1. **The sampler** (``model_search.warm_refused``): a warm search's sampler is given the prior
   study's refused draws as history (never trained, their record does not depend on the data).
   For each seed: a cold search (the shipped seed points enqueued, then the shipped TPE) draws
   until ``trials`` are trainable; then a warm search on it (the prior's best re-trained first by
   the project's ``warm_start``, then new draws) draws until ``ceil(trials x warm_budget)`` are
   trainable, once without history and once with the refused draws (``add_history``,
   ``was_refused``). Printed: the draws and refusals of each. The draws are the real objective
   (``ModelSearch.objective``: the budgets, the counts, the constraints the sampler reads); the
   training is replaced by a stand-in score (log parameters and MACs: larger within the budget
   scores higher), and ``max_retrain_minutes`` is off here (its timing is part 2), so this part
   measures the sampler only, in seconds of CPU.
2. **The retrain-step timing** (``step_seconds(limit=)``): for draws within the parameter and
   MAC budgets whose retrain at the shipped recipe this machine predicts over the minutes budget,
   the timing with the early stop against the full one (alternating, same draws), in seconds.

    python -m bench.refusals --seeds 5 --timed 6
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

import optuna
import torch

from bench.common import machine, result_line
from pipeline.config import load_params
from pipeline.data.imageset import ImageSet
from pipeline.models import build_model
from pipeline.models.cost import count_macs
from pipeline.models.space import suggest_config
from pipeline.names import SEEDED_ATTR
from pipeline.search.model import ModelSearch, was_refused
from pipeline.search.studies import add_history, completed, trained, warm_start
from pipeline.train import predicted_minutes, step_seconds


def tiny_sample(n: int = 200) -> ImageSet:
    """Enough images for the search's split; no candidate is trained on them."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(n) % 10
    return ImageSet(images, labels, [str(c) for c in range(10)], [f"{i:064x}" for i in range(n)])


def stand_in(search: ModelSearch) -> None:
    """Training replaced by a score from the network's size (deterministic, no data)."""

    def fit(model: torch.nn.Module, seed: int) -> tuple[float, float, list[float]]:
        params = sum(p.numel() for p in model.parameters())
        score = 0.3 + 0.03 * math.log(params)
        return score, 0.0, [score]

    search.fit = fit  # type: ignore[method-assign]


def draw_until(study: optuna.Study, search: ModelSearch, wanted: int) -> tuple[int, int, float]:
    """Draw until ``wanted`` of the study's own trials are trainable: (draws, refused, seconds)."""
    start, draws = time.perf_counter(), 0
    while sum(trained(t) for t in completed(study)) < wanted:
        study.optimize(search.objective, n_trials=1)
        draws += 1
    refused = sum(was_refused(t) for t in completed(study))
    return draws, refused, time.perf_counter() - start


def sampler_rows(seed: int, trials: int, warm_budget: float, top_k: int) -> dict[str, Any]:
    params = load_params("params.yaml")
    cfg = params.model_search.model_copy(update={
        "max_retrain_minutes": None, "train_images": 100, "val_images": 100,
        "seeds": params.model_search.seeds.model_copy(update={"sampler": seed})})
    search = ModelSearch(cfg, tiny_sample(), policy=None, device=torch.device("cpu"), progress=False)
    stand_in(search)
    storage = optuna.storages.InMemoryStorage()
    directions = [d for _, d in search.spec.objectives]
    cold = optuna.create_study(storage=storage, study_name="cold", directions=directions, sampler=search.sampler(0))
    for name, point in search.seed_points(0):
        cold.enqueue_trial(point, user_attrs={SEEDED_ATTR: name})
    row: dict[str, Any] = {}
    row["cold_draws"], row["cold_refused"], row["cold_s"] = draw_until(cold, search, trials)
    warm_trials = math.ceil(trials * warm_budget)
    for label, history in (("plain", False), ("refused", True)):
        study = optuna.create_study(storage=storage, study_name=f"warm-{label}", directions=directions,
                                    sampler=search.sampler(0, salt=1))
        warm_start(study, cold, min(top_k, warm_trials))
        if history:
            row["history"] = add_history(study, cold, only=was_refused)
        row[f"{label}_draws"], row[f"{label}_refused"], row[f"{label}_s"] = draw_until(study, search, warm_trials)
    return row


def timing_rows(count: int, seed: int) -> dict[str, Any]:
    """Draws within the parameter and MAC budgets whose predicted retrain is over the minutes
    budget on this machine, each timed with and without the early stop (in turn)."""
    params = load_params("params.yaml")
    cfg, recipe = params.model_search, params.retrain.recipe
    images = 50_000
    limit = cfg.max_retrain_minutes / predicted_minutes(1.0, recipe, images) if cfg.max_retrain_minutes else None
    search = ModelSearch(cfg.model_copy(update={"train_images": 100, "val_images": 100}), tiny_sample(), policy=None,
                         device=torch.device("cpu"), progress=False, retrain_recipe=recipe, retrain_images=images)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    full: list[float] = []
    early: list[float] = []
    scanned = 0
    while len(full) < count and scanned < 2000:
        scanned += 1
        trial = study.ask()
        model = build_model(suggest_config(trial), num_classes=10, seed=scanned)
        if sum(p.numel() for p in model.parameters()) > (cfg.max_params or math.inf) or \
                count_macs(model) > (cfg.max_macs or math.inf):
            study.tell(trial, 0.0)
            continue
        a = time.perf_counter()
        step = step_seconds(model, recipe, num_classes=10, device="cpu")
        b = time.perf_counter()
        study.tell(trial, 0.0)
        if limit is None or step <= limit:
            continue  # within the minutes budget: timed in full either way
        stopped, _ = search.retrain_minutes(model)  # the search's own timing, with the stop
        c = time.perf_counter()
        full.append(b - a)
        early.append(c - b)
        print(f"  over the minutes budget: step {step:.2f} s (limit {limit:.2f} s), "
              f"{predicted_minutes(step, recipe, images):.1f} min; timed {b - a:.1f} s in full, "
              f"{c - b:.1f} s with the stop ({stopped:.2f} s a step)", flush=True)
    return {"timed": len(full), "scanned": scanned, "limit_s": limit,
            "full_s": statistics.median(full) if full else math.nan,
            "early_s": statistics.median(early) if early else math.nan}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="sampler seeds of part 1")
    p.add_argument("--timed", type=int, default=6, help="over-budget draws timed in part 2 (0: skip)")
    p.add_argument("--trials", type=int, default=None, help="trainable candidates of the cold search "
                   "(default: model_search.trials of params.yaml)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, 8 trials, 1 timed draw")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.timed = 1, 8, min(args.timed, 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.manual_seed(0)
    params = load_params("params.yaml")
    cfg = params.model_search
    trials = args.trials or cfg.trials
    print(f"machine: {machine()}")
    rows = []
    for seed in range(args.seeds):
        row = sampler_rows(seed, trials, cfg.warm_budget, cfg.warm_start)
        rows.append(row)
        print(f"seed {seed}: cold {row['cold_draws']} draws ({row['cold_refused']} refused) for {trials}; warm for "
              f"{math.ceil(trials * cfg.warm_budget)}: {row['plain_draws']} draws ({row['plain_refused']} refused) "
              f"without history, {row['refused_draws']} ({row['refused_refused']} refused) with the prior's "
              f"{row['history']} refused draws", flush=True)
    fields: dict[str, Any] = {}
    if rows:
        def med(key: str) -> float:
            return float(statistics.median(r[key] for r in rows))

        fields.update(seeds=len(rows), cold_draws=med("cold_draws"), warm_plain_refused=med("plain_refused"),
                      warm_history_refused=med("refused_refused"), warm_plain_draws=med("plain_draws"),
                      warm_history_draws=med("refused_draws"),
                      refused_ratio=med("refused_refused") / max(med("plain_refused"), 1))
    if args.timed:
        timing = timing_rows(args.timed, seed=0)
        fields.update(timed=timing["timed"], limit_s=timing["limit_s"], timing_full_s=timing["full_s"],
                      timing_early_s=timing["early_s"], timing_ratio=timing["early_s"] / timing["full_s"])
    print(result_line(bench="refusals", **fields, machine=machine()))


if __name__ == "__main__":
    main()
