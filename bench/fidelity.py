"""The model search's fidelity against the full retrain: which proxy epoch ranks networks as the retrain does?

The model search scores each candidate on its validation split after every epoch of the proxy
recipe (the trial's ``curve.val_accuracy``); ``bench/halving.py`` compares those epochs with the
proxy's own last epoch. What matters is the ranking the **full retrain** gives. This bench reads a
finished checkout (``--project``): its model-search study (the study pareto.json names, in the
project's optuna.db or ``--storage``), the retrain recipe and the found policy (read as
``bench/handmade.py`` and the retrain stage read them). It picks ``--networks`` (default 8) of the
study's trained candidates, spread evenly over their proxy ranks, the chosen one included; retrains
each on every training image of ``--data`` with that recipe and policy for ``--epochs`` (default:
the recipe's, i.e. the full retrain), scores the test split with the recipe's TTA, and prints:

- per network: its parameters, proxy accuracy per epoch, retrain minutes and test accuracy;
- per proxy epoch e: Spearman's rank correlation between the accuracy after e epochs and the
  retrain's test accuracy;
- the fidelity picked from it: the earliest epoch whose agreement is within ``--tolerance`` of the
  best epoch's, and the candidates trained per training minute at the whole proxy against at that
  epoch (each candidate's own seconds per epoch from the study).

Each retrain is appended to ``--out`` (JSON) as it finishes and a re-run skips the ones already
there (same epochs and seed), so a run interrupted or spread over several sessions loses nothing.
With ``--epochs`` below the recipe's the figures are a reduced retrain: the RESULT line says so
(``reduced=True``).

    python -m bench.fidelity --data /path/to/cifar10-jpg.tar.gz --project /path/to/finished/checkout \\
        --out bench/results/fidelity.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import torch

from bench.candidates import spearman
from bench.common import base_parser, machine, result_line, storage_url
from bench.halving import full_candidates
from bench.handmade import QUICK_TEST, QUICK_TRAIN, read_champion, train_once
from pipeline.data import load_data
from pipeline.device import pick_device
from pipeline.models import build_model, count_params
from pipeline.names import HISTORY_ATTR, TRAIN_SECONDS_ATTR, VAL_ACCURACY_CURVE
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


def load_done(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    return dict(json.loads(path.read_text()))


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a finished pipeline checkout")
    parser.add_argument("--storage", help="the model search's study storage (default: the project's optuna.db)")
    parser.add_argument("--networks", type=int, default=8, help="how many candidates to retrain (at least 3)")
    parser.add_argument("--epochs", type=int, help="retrain epochs (default: the recipe's, the full retrain)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--out", type=Path, help="JSON of the retrains done so far (read to resume, appended to)")
    args = parser.parse_args()
    if args.networks < 3:
        parser.error("--networks: a rank correlation needs at least 3 networks")

    champion = read_champion(args.project)
    study = optuna.load_study(study_name=champion.pareto.study, storage=storage_url(args.storage or str(args.project / "optuna.db")))
    candidates = own_candidates(study)
    if len(candidates) < 3:
        raise SystemExit(f"bench/fidelity: study {champion.pareto.study} has {len(candidates)} candidates trained "
                         "for the whole proxy; at least 3 are needed")
    chosen = spread(candidates, args.networks, champion.chosen.trial)
    proxy_epochs = len(chosen[0].user_attrs[VAL_ACCURACY_CURVE])

    splits = load_data(args.data)
    train_set, test_set = splits["train"], splits["test"]
    if args.quick:  # smoke run: a slice of the data, one epoch
        pick = torch.Generator().manual_seed(0)
        train_set = train_set.subset(torch.randperm(len(train_set), generator=pick)[:QUICK_TRAIN])
        test_set = test_set.subset(torch.randperm(len(test_set), generator=pick)[:QUICK_TEST])
    epochs = 1 if args.quick else (args.epochs or champion.recipe.epochs)
    reduced = epochs < champion.recipe.epochs
    cfg = champion.recipe.model_copy(update={"epochs": epochs})
    device = pick_device()
    print(f"machine: {machine()}\nstudy {champion.pareto.study}: {len(candidates)} candidates, proxy "
          f"{proxy_epochs} epochs; retraining {len(chosen)} for {epochs} epochs"
          f"{' (reduced: the recipe has ' + str(champion.recipe.epochs) + ')' if reduced else ''} on "
          f"{len(train_set)} images, test {len(test_set)}, recipe {champion.recipe_source}, policy "
          f"{'found' if champion.policy else 'none'}", flush=True)

    def key_of(trial: optuna.trial.FrozenTrial) -> str:  # one retrain: the network, epochs, seed and data
        return f"{trial.number}:{epochs}:{args.seed}:{len(train_set)}"

    done = load_done(args.out)
    for trial in chosen:
        key = key_of(trial)
        if key in done:
            print(f"trial {trial.number}: from {args.out}: test {done[key]['test_accuracy']:.4f}", flush=True)
            continue
        config = config_from_params(trial.params)
        minutes, accuracy = train_once(config, train_set, test_set, cfg, champion.policy, args.seed, device)
        done[key] = {"trial": trial.number, "test_accuracy": accuracy, "minutes": minutes,
                     "params": count_params(build_model(config, num_classes=len(train_set.classes)))}
        print(f"trial {trial.number}: proxy {trial.values[0]:.4f}, {done[key]['params']:,} parameters, "
              f"{minutes:.2f} min, test {accuracy:.4f}", flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(done, indent=1))

    keys = [key_of(t) for t in chosen]
    tests = [float(done[k]["test_accuracy"]) for k in keys]
    curves = [list(t.user_attrs[VAL_ACCURACY_CURVE]) for t in chosen]
    rho = agreement(curves, tests)
    best_epoch = pick_epoch(rho, args.tolerance)
    print(f"| trial | parameters | proxy accuracy per epoch | retrain minutes | test accuracy ({epochs} epochs) |\n"
          "|---|---|---|---|---|")
    for t, k, curve in zip(chosen, keys, curves, strict=True):
        marks = " (chosen)" if t.number == champion.chosen.trial else ""
        print(f"| {t.number}{marks} | {done[k]['params']:,} | {' / '.join(f'{a:.4f}' for a in curve)} | "
              f"{done[k]['minutes']:.2f} | {done[k]['test_accuracy']:.4f} |")
    for e, r in rho.items():
        print(f"proxy epoch {e} of {proxy_epochs}: Spearman with the retrain's test accuracy {r:.3f}")
    per_epoch = [float(t.user_attrs.get(TRAIN_SECONDS_ATTR, 0.0)) / proxy_epochs for t in candidates]
    full_min = sum(per_epoch) * proxy_epochs / 60
    at_pick = sum(per_epoch) * (best_epoch or proxy_epochs) / 60
    print(f"fidelity picked: epoch {best_epoch} (the earliest within {args.tolerance} of the best agreement)")
    fields: dict[str, Any] = {"bench": "fidelity", "quick": args.quick, "networks": len(chosen),
                              "retrain_epochs": epochs, "reduced": reduced, "train_images": len(train_set)}
    fields.update({f"spearman_epoch{e}": r for e, r in rho.items()})
    fields.update(pick_epoch=best_epoch if best_epoch is not None else "none", proxy_epochs=proxy_epochs,
                  candidates=len(candidates),
                  candidates_per_min_full=len(candidates) / full_min if full_min else float("nan"),
                  candidates_per_min_at_pick=len(candidates) / at_pick if at_pick else float("nan"),
                  machine=machine().replace(" ", "_"))
    print(result_line(**fields))


if __name__ == "__main__":
    main()
