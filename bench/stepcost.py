"""What predicts a candidate's training time: its MACs, or a few measured training steps?

The model search bounds what a candidate may cost to train (``model_search.max_macs``, and
``max_train_cost``: a measured step time as a multiple of ResNet-20's). This bench draws
``--configs`` random configurations of the search space that fit ``max_params`` and ``max_macs``
(what the search's random start-up trains), adds the reference networks, and for each:

- counts its MACs (the peer predictor);
- measures ``pipeline.train.step_seconds`` (the trainer's own SGD step at the candidate recipe's
  batch size, median of ``--steps`` after one warm-up step): the predictor the search uses;
- trains it for one epoch of ``--images`` images with the candidate recipe (``train``), the
  ground truth: seconds per training image.

It prints Spearman's rank correlation of each predictor with the measured time, and how far
the step-based estimate (step seconds / batch size) is from the measured time per image. The
images are random pixels: a step's cost does not depend on what the pixels show, and the
bench then needs no data (``--data`` is not used).

    python -m bench.stepcost --configs 16
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench.candidates import random_configs, spearman
from bench.common import machine, median, result_line
from pipeline.config import load_params
from pipeline.data import ImageSet
from pipeline.device import pick_device
from pipeline.models import build_model, count_macs, count_params
from pipeline.train import step_seconds, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--configs", type=int, default=16, help="random configurations within the budgets")
    p.add_argument("--references", nargs="*", default=["resnet20", "airbench_half", "mobilenetv2"])
    p.add_argument("--images", type=int, default=1280, help="images of the one timed training epoch")
    p.add_argument("--steps", type=int, default=3, help="timed steps of the step measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    args = p.parse_args()
    if args.quick:
        args.configs, args.references, args.images, args.steps = 2, ["resnet20"], 128, 1

    cfg = load_params(args.params).model_search
    recipe = cfg.recipe.model_copy(update={"epochs": 1, "eval_every": 0})
    device = pick_device()
    gen = torch.Generator().manual_seed(args.seed)
    n = args.images
    data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                    torch.randint(0, 10, (n,), generator=gen), [str(c) for c in range(10)], [str(i) for i in range(n)])
    models: list[tuple[str, dict[str, Any] | str]] = [("resnet20", "resnet20")]
    models += [(f"random{i}", c) for i, c in enumerate(random_configs(cfg, args.configs, args.seed))]
    models += [(name, name) for name in args.references if name != "resnet20"]
    print(f"{len(models)} models, batch {recipe.batch_size}, one epoch of {n} images each; {machine()}", flush=True)
    print(f"{'model':>12} {'params':>9} {'M MACs':>7} {'step s':>7} {'cost':>6} {'ms/img':>7} {'est ms/img':>10}")

    rows: list[dict[str, Any]] = []
    for label, config in models:
        model = build_model(config, num_classes=10, seed=0)
        macs = count_macs(model)
        step = step_seconds(model, recipe, num_classes=10, device=device, steps=args.steps)
        t0 = time.perf_counter()
        result = train(model, data, recipe, device=device, seed=0, progress=False)
        wall = time.perf_counter() - t0
        ms_per_image = 1000 / result.images_per_s
        rows.append({"label": label, "params": count_params(model), "macs": macs, "step": step,
                     "ms": ms_per_image, "est": 1000 * step / recipe.batch_size, "wall": wall})
        cost = step / rows[0]["step"]
        print(f"{label:>12} {rows[-1]['params']:>9,} {macs / 1e6:>7.1f} {step:>7.3f} {cost:>6.2f} "
              f"{ms_per_image:>7.2f} {rows[-1]['est']:>10.2f}", flush=True)

    measured = [r["ms"] for r in rows]
    rho_macs = spearman([float(r["macs"]) for r in rows], measured)
    rho_step = spearman([r["step"] for r in rows], measured)
    errors = [abs(r["est"] - r["ms"]) / r["ms"] for r in rows]
    ref = rows[0]
    # How wrong each predictor is about a model's cost relative to ResNet-20's (x-fold, either way).
    def fold(pred: float, truth: float) -> float:
        return max(pred / truth, truth / pred)

    macs_fold = [fold(r["macs"] / ref["macs"], r["ms"] / ref["ms"]) for r in rows[1:]]
    step_fold = [fold(r["step"] / ref["step"], r["ms"] / ref["ms"]) for r in rows[1:]]
    print(f"\nSpearman with the measured ms/image: MACs {rho_macs:+.2f}, measured step {rho_step:+.2f}")
    print(f"cost relative to ResNet-20, off by (x-fold, median / max): MACs {median(macs_fold):.2f} / "
          f"{max(macs_fold):.2f}, measured step {median(step_fold):.2f} / {max(step_fold):.2f}")
    print(result_line(bench="stepcost", quick=args.quick, models=len(rows), spearman_macs=rho_macs,
                      spearman_step=rho_step, macs_fold_median=median(macs_fold), macs_fold_max=max(macs_fold),
                      step_fold_median=median(step_fold), step_fold_max=max(step_fold),
                      step_estimate_error_median=median(errors), machine=machine()))


if __name__ == "__main__":
    main()
