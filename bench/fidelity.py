"""The model search's fidelity against the full retrain: which proxy epoch ranks networks as the retrain does?

The model search scores each candidate on its validation split after every epoch of the proxy
recipe (the trial's ``curve.val_accuracy``); ``bench/halving.py`` compares those epochs with the
proxy's own last epoch. What matters is the ranking the **full retrain** gives. This bench reads a
finished checkout (``--project``): its model-search study (the study pareto.json names, in the
project's optuna.db or ``--storage``), the retrain recipe and the found policy (read as
``bench/handmade.py`` and the retrain stage read them). It picks ``--networks`` (default 8) of the
study's trained candidates, spread evenly over their proxy ranks, the chosen one included; retrains
each on every training image of ``--data`` with that recipe and policy for ``--epochs`` (default:
the pipeline's, i.e. the full retrain), scores the test split with the recipe's TTA, and prints:

- per network: its parameters, proxy accuracy per epoch, retrain minutes and test accuracy;
- per proxy epoch e: Spearman's rank correlation between the accuracy after e epochs and the
  retrain's test accuracy;
- the fidelity picked from it: the earliest epoch whose agreement is within ``--tolerance`` of the
  best epoch's, and the candidates trained per training minute at the whole proxy against at that
  epoch (each candidate's own seconds per epoch from the study).

The first run fixes a plan in ``--out`` (JSON): the networks (configurations, proxy curves, the
epochs the pipeline would retrain each for: a seed point over the minutes budget gets the epochs
that fit), the recipe, the found policy and every candidate's proxy seconds. Each retrain is added
as it finishes, and a re-run skips the ones already there (same epochs, seed and data). A re-run
reads the plan alone, so ``--project`` is needed only the first time: with ``--out`` kept (say in
git), a bench of 2-3 hours spreads over sessions whose projects and studies are gone. With
``--epochs`` below a network's the figures are a reduced retrain: the RESULT line says so
(``reduced=True``).

    python -m bench.fidelity --data /path/to/cifar10-jpg.tar.gz --project /path/to/finished/checkout \\
        --out bench/results/fidelity.json
    python -m bench.fidelity --data /path/to/cifar10-jpg.tar.gz --out bench/results/fidelity.json  # resumed
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import torch

from bench.candidates import spearman
from bench.common import base_parser, machine, read_out, result_line, storage_url, write_out
from bench.halving import full_candidates
from bench.handmade import QUICK_TEST, QUICK_TRAIN, Champion, read_champion, train_once
from pipeline.augment import Policy
from pipeline.config import TrainConfig
from pipeline.data import load_data
from pipeline.device import pick_device
from pipeline.models import build_model, count_params
from pipeline.names import HISTORY_ATTR, RETRAIN_EPOCHS_ATTR, TRAIN_SECONDS_ATTR, VAL_ACCURACY_CURVE
from pipeline.search.model import config_from_params

TOLERANCE = 0.05  # an epoch "agrees as well" when its Spearman is within this of the best epoch's


def own_candidates(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's own candidates trained for the whole proxy (a warm study's copied history is not
    its own: it was scored on another sample)."""
    return [t for t in full_candidates(study) if HISTORY_ATTR not in t.user_attrs]


def spread(trials: list[optuna.trial.FrozenTrial], n: int, keep: int | None) -> list[optuna.trial.FrozenTrial]:
    """``n`` trials spread evenly over the proxy-accuracy ranks (the best and the worst included),
    with trial number ``keep`` (the chosen one) among them when it is a candidate; in rank order."""
    ranked = sorted(trials, key=lambda t: (t.values[0], -t.number))
    if len(ranked) <= n:
        return ranked
    kept = [t for t in ranked if t.number == keep]
    rest = [t for t in ranked if t.number != keep]
    slots = n - len(kept)
    if slots <= 0:
        return kept[:n]
    picked = rest if slots >= len(rest) else [
        rest[round(i * (len(rest) - 1) / (slots - 1))] if slots > 1 else rest[-1] for i in range(slots)]
    return sorted({t.number: t for t in picked + kept}.values(), key=lambda t: (t.values[0], -t.number))


def agreement(curves: list[list[float]], tests: list[float]) -> dict[int, float]:
    """{proxy epoch: Spearman between the accuracies after it and the retrain's test accuracies}."""
    return {e + 1: spearman([c[e] for c in curves], tests) for e in range(min(len(c) for c in curves))}


def pick_epoch(rho: dict[int, float], tolerance: float = TOLERANCE) -> int | None:
    """The earliest epoch whose agreement is within ``tolerance`` of the best epoch's (None: no
    epoch has a defined agreement)."""
    defined = {e: r for e, r in rho.items() if not math.isnan(r)}
    if not defined:
        return None
    best = max(defined.values())
    return min(e for e, r in defined.items() if r >= best - tolerance)


PLAN_FORMAT = 1  # bumped when the plan's fields change meaning


def pipeline_retrain(champion: Champion, epochs: int) -> dict[str, Any] | None:
    """The project's own retrain of the chosen network (metrics.json), when it is the retrain this
    bench would run: from scratch, ``epochs`` planned and trained (no time-limit cut, no diverged
    restart), at the project's retrain.seed; it is then not trained twice."""
    m = champion.metrics
    if (m.warm_start_from_version is not None or m.diverged_restarts or m.epochs != epochs
            or m.planned_epochs not in (None, epochs) or m.train_minutes is None or m.train_images is None
            or m.params is None):
        return None
    return {"test_accuracy": m.test_accuracy, "minutes": m.train_minutes, "epochs": epochs,
            "seed": champion.retrain_seed, "train_images": m.train_images, "params": m.params}


def reusable(network: dict[str, Any], epochs: int, seed: int, images: int) -> dict[str, Any] | None:
    """The planned network's result taken from the project's retrain, when that retrain is this
    one (the same epochs, seed and training images); None: train it."""
    own = network.get("pipeline_retrain")
    if not own or (own["epochs"], own["seed"], own["train_images"]) != (epochs, seed, images):
        return None
    return {"trial": network["trial"], "test_accuracy": own["test_accuracy"], "minutes": own["minutes"],
            "epochs": epochs, "params": own["params"], "source": "the project's retrain"}


def make_plan(champion: Champion, candidates: list[optuna.trial.FrozenTrial],
              chosen: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """What the bench retrains, fixed on its first run and kept in ``--out``: the networks (their
    configurations, proxy curves and the epochs the pipeline would retrain them for), the recipe,
    the found policy and every candidate's proxy seconds; for the chosen network, the project's
    own retrain when it is the same one (``pipeline_retrain``). A later run, in this session or
    another, reads it back and needs neither the project nor its study."""
    networks: list[dict[str, Any]] = [
        {"trial": t.number, "config": config_from_params(t.params), "proxy": float(t.values[0]),
         "curve": [float(a) for a in t.user_attrs[VAL_ACCURACY_CURVE]],
         # a seed point over the minutes budget is retrained for the epochs that fit
         "retrain_epochs": t.user_attrs.get(RETRAIN_EPOCHS_ATTR)} for t in chosen]
    for network in networks:
        if network["trial"] == champion.chosen.trial:
            full = retrain_epochs(network, champion.recipe.epochs, None, quick=False)[1]
            network["pipeline_retrain"] = pipeline_retrain(champion, full)
    return {"format": PLAN_FORMAT, "bench": "fidelity", "study": champion.pareto.study, "chosen_trial": champion.chosen.trial,
            "recipe": champion.recipe.model_dump(mode="json"), "recipe_source": champion.recipe_source,
            "policy": champion.policy.to_dict() if champion.policy is not None else None,
            "candidate_seconds": [float(t.user_attrs.get(TRAIN_SECONDS_ATTR, 0.0)) for t in candidates],
            "networks": networks}


def retrain_epochs(network: dict[str, Any], recipe_epochs: int, asked: int | None, quick: bool) -> tuple[int, int]:
    """(epochs to train, the full retrain's epochs) of one planned network: the recipe's (for the
    chosen network, the epochs its retrain trained: recipe.json's), or fewer for a seed point whose
    full recipe was over the minutes budget (the epochs that fit, ``RETRAIN_EPOCHS_ATTR``)."""
    full = min(recipe_epochs, int(network["retrain_epochs"] or recipe_epochs))
    return (1 if quick else min(full, asked) if asked else full), full


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a finished pipeline checkout (not needed when --out holds the plan)")
    parser.add_argument("--storage", help="the model search's study storage (default: the project's optuna.db)")
    parser.add_argument("--networks", type=int, help="how many candidates to retrain (at least 3; default 8)")
    parser.add_argument("--epochs", type=int, help="retrain epochs (default: the pipeline's, the full retrain)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--out", type=Path, help="JSON of the plan and the retrains done so far (read to resume, "
                                                 "written after each retrain)")
    args = parser.parse_args()
    if args.networks is not None and args.networks < 3:
        parser.error("--networks: a rank correlation needs at least 3 networks")

    out = read_out(args.out, PLAN_FORMAT, "fidelity")
    if "plan" in out:
        plan = out["plan"]
        if args.networks is not None and args.networks != len(plan["networks"]):
            parser.error(f"--networks {args.networks}: {args.out}'s plan has {len(plan['networks'])}")
        if args.project is not None and (other := read_champion(args.project).pareto.study) != plan["study"]:
            parser.error(f"--project: its study is {other}, but {args.out} holds the plan of {plan['study']}; "
                         "give another --out")
        print(f"the plan in {args.out}: study {plan['study']}", flush=True)
    else:
        if args.project is None:
            parser.error(f"--project: needed to make the plan ({args.out or '--out'} holds none)")
        champion = read_champion(args.project)
        study = optuna.load_study(study_name=champion.pareto.study,
                                  storage=storage_url(args.storage or str(args.project / "optuna.db")))
        candidates = own_candidates(study)
        if len(candidates) < 3:
            raise SystemExit(f"bench/fidelity: study {champion.pareto.study} has {len(candidates)} candidates "
                             "trained for the whole proxy; at least 3 are needed")
        plan = make_plan(champion, candidates, spread(candidates, args.networks or 8, champion.chosen.trial))
        out = {"plan": plan, "retrains": {}}
    recipe = TrainConfig.model_validate(plan["recipe"])
    policy = Policy.from_dict(plan["policy"]) if plan["policy"] is not None else None
    networks: list[dict[str, Any]] = plan["networks"]
    proxy_epochs = len(networks[0]["curve"])
    candidates_seconds: list[float] = plan["candidate_seconds"]

    splits = load_data(args.data)
    train_set, test_set = splits["train"], splits["test"]
    if args.quick:  # smoke run: a slice of the data, one epoch
        pick = torch.Generator().manual_seed(0)
        train_set = train_set.subset(torch.randperm(len(train_set), generator=pick)[:QUICK_TRAIN])
        test_set = test_set.subset(torch.randperm(len(test_set), generator=pick)[:QUICK_TEST])
    epochs = {n["trial"]: retrain_epochs(n, recipe.epochs, args.epochs, args.quick) for n in networks}
    reduced = any(e < full for e, full in epochs.values())
    device = pick_device()
    print(f"machine: {machine()}\nstudy {plan['study']}: {len(candidates_seconds)} candidates, proxy "
          f"{proxy_epochs} epochs; retraining {len(networks)} for "
          f"{' / '.join(str(e) for e, _ in epochs.values())} epochs"
          f"{' (reduced: fewer than the pipeline would)' if reduced else ''} on "
          f"{len(train_set)} images, test {len(test_set)}, recipe {plan['recipe_source']}, policy "
          f"{'found' if policy else 'none'}", flush=True)

    def key_of(network: dict[str, Any]) -> str:  # one retrain: the network, epochs, seed and data
        return f"{network['trial']}:{epochs[network['trial']][0]}:{args.seed}:{len(train_set)}"

    done: dict[str, Any] = out.setdefault("retrains", {})
    write_out(args.out, out)  # the plan is kept before the first retrain starts
    for network in networks:
        key = key_of(network)
        if key in done:
            print(f"trial {network['trial']}: from {args.out}: test {done[key]['test_accuracy']:.4f}", flush=True)
            continue
        config = network["config"]
        cfg = recipe.model_copy(update={"epochs": epochs[network["trial"]][0]})
        own = reusable(network, cfg.epochs, args.seed, len(train_set))
        if own is not None:
            done[key] = own
            print(f"trial {network['trial']}: the project's own retrain (metrics.json): test "
                  f"{own['test_accuracy']:.4f}", flush=True)
        else:
            minutes, accuracy, failure = train_once(config, train_set, test_set, cfg, policy, args.seed, device)
            done[key] = {"trial": network["trial"], "test_accuracy": accuracy, "minutes": minutes,
                         "epochs": cfg.epochs,
                         "params": count_params(build_model(config, num_classes=len(train_set.classes)))}
            if failure is not None:  # a collapse is this network's result at the recipe: ranked as scored
                done[key]["failed"] = failure
            print(f"trial {network['trial']}: proxy {network['proxy']:.4f}, {done[key]['params']:,} parameters, "
                  f"{cfg.epochs} epochs, {minutes:.2f} min, test {accuracy:.4f}", flush=True)
        write_out(args.out, out)

    keys = [key_of(n) for n in networks]
    tests = [float(done[k]["test_accuracy"]) for k in keys]
    curves = [list(n["curve"]) for n in networks]
    rho = agreement(curves, tests)
    best_epoch = pick_epoch(rho, args.tolerance)
    print("| trial | parameters | proxy accuracy per epoch | retrain epochs | retrain minutes | test accuracy |\n"
          "|---|---|---|---|---|---|")
    for n, k, curve in zip(networks, keys, curves, strict=True):
        marks = (" (chosen)" if n["trial"] == plan["chosen_trial"] else "") + (
            ", the project's retrain" if "source" in done[k] else "")
        print(f"| {n['trial']}{marks} | {done[k]['params']:,} | {' / '.join(f'{a:.4f}' for a in curve)} | "
              f"{done[k]['epochs']} | {done[k]['minutes']:.2f} | {done[k]['test_accuracy']:.4f} |")
    for e, r in rho.items():
        print(f"proxy epoch {e} of {proxy_epochs}: Spearman with the retrain's test accuracy {r:.3f}")
    per_epoch = [s / proxy_epochs for s in candidates_seconds]
    full_min = sum(per_epoch) * proxy_epochs / 60
    at_pick = sum(per_epoch) * (best_epoch or proxy_epochs) / 60
    print(f"fidelity picked: epoch {best_epoch} (the earliest within {args.tolerance} of the best agreement)")
    fields: dict[str, Any] = {"bench": "fidelity", "quick": args.quick, "networks": len(networks),
                              "retrain_epochs": "/".join(str(e) for e, _ in epochs.values()), "reduced": reduced,
                              "train_images": len(train_set)}
    fields.update({f"spearman_epoch{e}": r for e, r in rho.items()})
    fields.update(pick_epoch=best_epoch if best_epoch is not None else "none", proxy_epochs=proxy_epochs,
                  candidates=len(candidates_seconds),
                  candidates_per_min_full=len(candidates_seconds) / full_min if full_min else float("nan"),
                  candidates_per_min_at_pick=len(candidates_seconds) / at_pick if at_pick else float("nan"),
                  machine=machine().replace(" ", "_"))
    print(result_line(**fields))


if __name__ == "__main__":
    main()
