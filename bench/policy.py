"""Does the found policy help? The same child recipe on the real 10k sample, four ways.

(a) flip/crop only, (b) + torchvision RandAugment(2, 9), (c) + torchvision AutoAugment(CIFAR10),
(d) + the policy found by `search_policy`; each over several seeds, scored on the CIFAR-10 test
set (10,000 images). (b) and (c) are torchvision's own transforms applied per image (wrapped as
a batch transform, seeded from the trainer's generator), so the peers are exactly torchvision;
(d) runs on autoaug's batched kernels.

    python -m bench.policy --data /path/to/cifar10-jpg.tar.gz --policy outputs/search_policy/policy.json
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torchvision.transforms import v2

from bench.common import base_parser, machine, result_line
from pipeline.augment import load_policy
from pipeline.config import load_params
from pipeline.data import load_data, stable_sample
from pipeline.device import pick_device
from pipeline.models import build_model
from pipeline.train import evaluate, train


class PerImage:
    """A torchvision transform applied image by image, as a batch transform.

    torchvision draws from the global RNG; it is seeded from the trainer's generator inside a
    forked RNG state, so runs are reproducible and nothing else is disturbed."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = torch.stack([self.transform(img) for img in images.cpu()])
        return out.to(images.device)


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--policy", default="outputs/search_policy/policy.json", help="the found policy")
    p.add_argument("--params", default="params.yaml", help="child recipe: policy_search.child(_model)")
    p.add_argument("--epochs", type=int, default=None, help="override the child recipe's epochs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variants", default="flipcrop,randaugment,autoaugment,found")
    args = p.parse_args()

    params = load_params(args.params).policy_search
    recipe = params.child
    if args.epochs:
        recipe = recipe.model_copy(update={"epochs": args.epochs})
    if args.quick:
        recipe = recipe.model_copy(update={"epochs": 1})
    sets = load_data(args.data)
    sample = stable_sample(sets["train"], 2000 if args.quick else 10_000, 0)
    test = sets["test"]
    if args.quick:
        test = test.subset(torch.arange(0, len(test), 10))
    device = pick_device()
    sample, test = sample.to(device), test.to(device)
    variants: dict[str, Callable | None] = {
        "flipcrop": None,
        "randaugment": PerImage(v2.RandAugment(num_ops=2, magnitude=9)),
        "autoaugment": PerImage(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)),
        "found": load_policy(args.policy),
    }
    chosen = args.variants.split(",")
    seeds = [0] if args.quick else list(range(args.seeds))
    results: dict[str, list[float]] = {}
    minutes: dict[str, list[float]] = {}
    for name in chosen:
        for seed in seeds:
            model = build_model(params.child_model, num_classes=len(sample.classes), seed=seed)
            t0 = time.perf_counter()
            train(model, sample, recipe, augment=variants[name], device=device, seed=seed, progress=False)
            secs = time.perf_counter() - t0
            acc = evaluate(model, test, tta_flip=recipe.tta).accuracy
            results.setdefault(name, []).append(acc)
            minutes.setdefault(name, []).append(secs / 60)
            print(f"{name:12s} seed {seed}: test accuracy {acc:.4f}  ({secs / 60:.1f} min)", flush=True)
    print(f"\nmodel {params.child_model}, {recipe.epochs} epochs, {len(sample)} training images, "
          f"{len(test)} test images")
    print(f"{'variant':12s} {'mean':>7s} {'std':>7s}  per seed")
    for name, accs in results.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{name:12s} {statistics.mean(accs):7.4f} {std:7.4f}  {' '.join(f'{a:.4f}' for a in accs)}")
    means = {n: statistics.mean(a) for n, a in results.items()}
    peers = [means[n] for n in ("randaugment", "autoaugment") if n in means]
    fields: dict[str, object] = {f"{n}_acc": v for n, v in means.items()}
    if "found" in means and peers:
        fields["found_minus_best_peer"] = means["found"] - max(peers)
    fields.update(model=params.child_model, epochs=recipe.epochs, seeds=len(seeds),
                  minutes_per_run=statistics.median([m for ms in minutes.values() for m in ms]), machine=machine())
    print(result_line(**fields))


if __name__ == "__main__":
    main()
