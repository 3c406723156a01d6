"""How well the model search predicts a retrain's minutes: from the SGD step alone, or from the step plus the batch?

The model search predicts each candidate's retrain minutes (``max_retrain_minutes``, the
budget) from a few timed steps at the retrain recipe. The peer is what it did before: the
trainer's SGD step alone, on random images (``pipeline.train.step_seconds``). Now the step is
that plus the batch's gather, flip, crop and policy (``pipeline.train.batch_seconds``), which the
retrain pays on the same cores before every step. For each network (the shipped seed points,
the networks of ``--chosen`` chosen.json files, and ``--draws`` random draws of the space
within ``max_params`` and ``max_macs``), this bench times both, predicts ``--epochs`` epochs on
``--images`` training images of ``--data`` with the shipped ``retrain.recipe``, trains exactly
that (``pipeline.train.train``, with the policy ``--policy``: a policy.json; none: flip and crop
only), and prints actual / predicted under each. The RESULT line gives the medians over the
networks and the worst of each.

    python -m bench.retrainpred --data /path/to/cifar10-jpg.tar.gz --policy outputs/search_policy/policy.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.candidates import random_configs
from bench.common import base_parser, machine, median, result_line
from pipeline.config import load_params
from pipeline.contracts import Chosen
from pipeline.data import load_data
from pipeline.device import pick_device
from pipeline.models import SPACE_POINTS, build_model, count_macs, count_params
from pipeline.stages.common import read_policy
from pipeline.train import batch_seconds, predicted_minutes, step_seconds, train

QUICK_IMAGES = 256


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--policy", type=Path, help="the retrain's policy.json (none: flip and crop only)")
    p.add_argument("--draws", type=int, default=3, help="random draws of the space within the budgets")
    p.add_argument("--chosen", type=Path, nargs="*", default=[],
                   help="chosen.json files of model searches: their networks too (a search's own pick)")
    p.add_argument("--images", type=int, default=50_000, help="training images (the retrain's: all 50,000)")
    p.add_argument("--epochs", type=int, default=1, help="epochs each network trains")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    params = load_params(args.params)
    cfg = params.model_search
    recipe = params.retrain.recipe.model_copy(update={"epochs": args.epochs, "eval_every": 0})
    policy = read_policy(args.policy) if args.policy else None
    train_set = load_data(args.data)["train"]
    images = min(QUICK_IMAGES if args.quick else args.images, len(train_set))
    pick = torch.Generator().manual_seed(args.seed)  # the store is in class order: draw at random
    train_set = train_set.subset(torch.randperm(len(train_set), generator=pick)[:images])
    if args.quick:
        recipe = recipe.model_copy(update={"batch_size": 64})
    seeds = [name for name in cfg.seed_points if name in SPACE_POINTS][: 1 if args.quick else None]
    networks: list[tuple[str, Any]] = [(name, SPACE_POINTS[name]) for name in seeds]
    networks += [(f"chosen{i}", Chosen.read(path).config) for i, path in enumerate(args.chosen)]
    networks += [(f"draw{i}", c) for i, c in enumerate(random_configs(cfg, 1 if args.quick else args.draws, args.seed))]
    device = pick_device()
    timing: dict[str, Any] = {"steps": 1, "warmup": 0} if args.quick else {}
    print(f"{machine()}; recipe batch {recipe.batch_size}, {recipe.epochs} epoch(s) on {len(train_set)} images, "
          f"policy {args.policy or 'none'}", flush=True)

    batch = batch_seconds(train_set, recipe, augment=policy, device=device, **timing)
    print(f"batch (gather, flip, crop, policy): {batch:.4f} s", flush=True)
    before: list[float] = []
    after: list[float] = []
    for name, config in networks:
        model = build_model(config, num_classes=len(train_set.classes), seed=args.seed)
        step = step_seconds(model, recipe, num_classes=len(train_set.classes), device=device, **timing)
        old = predicted_minutes(step, recipe, len(train_set))
        new = predicted_minutes(step + batch, recipe, len(train_set))
        result = train(model, train_set, recipe, augment=policy, device=device, seed=args.seed, progress=False)
        actual = result.train_seconds / 60
        before.append(actual / old)
        after.append(actual / new)
        print(f"  {name}: {count_params(model):,} params, {count_macs(model) / 1e6:.1f} M MACs; step {step:.4f} s; "
              f"predicted {old:.3f} min (step alone), {new:.3f} min (step + batch); trained {actual:.3f} min: "
              f"actual / predicted {actual / old:.3f} before, {actual / new:.3f} now", flush=True)
    print(result_line(bench="retrainpred", networks=len(networks), images=len(train_set), epochs=recipe.epochs,
                      batch_s=batch, median_ratio_step_alone=median(before), median_ratio_with_batch=median(after),
                      worst_step_alone=max(before, key=lambda r: abs(r - 1)),
                      worst_with_batch=max(after, key=lambda r: abs(r - 1)), policy=bool(policy),
                      quick=args.quick, machine=machine().replace(" ", "_")))


if __name__ == "__main__":
    main()
