"""Does the found policy help? The same model and recipe trained several ways, scored on the
CIFAR-10 test set (10,000 images).

Variants: ``flipcrop`` (flip/crop only), ``randaugment`` (torchvision RandAugment(2, 9)),
``autoaugment`` (torchvision AutoAugment(CIFAR10)), ``trivialaugment`` (torchvision
TrivialAugmentWide), and every policy given with ``--policy NAME=PATH`` (``found`` by default:
outputs/search_policy/policy.json; add e.g. ``found5=...`` for the paper's 5-draw objective or
``rasearch=...`` for the `method: randaugment` search's result). torchvision's transforms are
applied per image (wrapped as a batch transform, seeded from the trainer's generator), so those
peers are exactly torchvision; the found policies run on autoaug's batched kernels.

Two recipes:
- ``--recipe child`` (the default): the policy search's child model and recipe on the 10k
  sample, the budget the search scores candidates at;
- ``--recipe retrain``: the model the pipeline retrains (``--chosen``: chosen.json, or a
  baseline name) with ``retrain.recipe`` on every training image: the budget the policy is used
  at.

    python -m bench.policy --data /path/to/cifar10-jpg.tar.gz --policy found=outputs/search_policy/policy.json
    python -m bench.policy --data data/raw --recipe retrain --chosen outputs/search_model/chosen.json \
        --variants flipcrop,trivialaugment,found --seeds 1

A run at the retrain recipe takes about half an hour on 2 cores, so ``--ledger FILE`` keeps every
finished (variant, seed) as a JSON line (accuracy, minutes, machine, commit, the policy file's
hash) and a later invocation, in this session or another, skips what the ledger already holds for
the same recipe, model and policy file and reports from all of it: an interrupted comparison
loses at most the run in progress, and seeds accumulate across sessions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2

from bench.common import base_parser, machine, result_line
from pipeline.augment import load_policy
from pipeline.config import load_params
from pipeline.contracts import Chosen
from pipeline.data import load_data, stable_sample
from pipeline.device import pick_device
from pipeline.hashing import canonical_json, digest
from pipeline.models import build_model
from pipeline.tracking import git_commit
from pipeline.train import EpochMetrics, evaluate, train

TORCHVISION = {
    "randaugment": lambda: v2.RandAugment(num_ops=2, magnitude=9),
    "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
    "trivialaugment": lambda: v2.TrivialAugmentWide(),
}


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


def named_policies(given: list[str]) -> dict[str, str]:
    """``NAME=PATH`` pairs (a bare PATH is ``found``), in the order given."""
    out: dict[str, str] = {}
    for item in given:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "found", item
        if name in TORCHVISION or name == "flipcrop":
            raise SystemExit(f"--policy {item}: {name!r} names a built-in variant; pick another name")
        out[name] = path
    return out


def file_hash(path: str | Path) -> str:
    """The project's content hash of a policy file (16 hex characters, as a content id)."""
    return digest(Path(path).read_bytes(), 8)


class Ledger:
    """Finished runs of this bench, one JSON object per line, appended as each run ends.

    A run is identified by its setting (recipe, model, epochs, training and test images: ``setting``),
    its variant, the policy file's hash for a found policy (a re-searched policy.json is a new
    variant) and its seed. Lines that do not parse are reported and ignored (a run killed while
    appending leaves at most a truncated last line)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.entries: list[dict[str, Any]] = []
        if self.path and self.path.is_file():
            for n, line in enumerate(self.path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    self.entries.append(json.loads(line))
                except json.JSONDecodeError:
                    print(f"ledger {self.path}:{n}: not JSON, ignored", flush=True)

    @staticmethod
    def key(entry: dict[str, Any]) -> tuple[Any, ...]:
        return (canonical_json(entry["setting"]), entry["variant"], entry.get("policy_hash"), entry["seed"])

    def find(self, setting: dict[str, Any], variant: str, policy_hash: str | None, seed: int) -> dict[str, Any] | None:
        want = self.key({"setting": setting, "variant": variant, "policy_hash": policy_hash, "seed": seed})
        return next((e for e in reversed(self.entries) if self.key(e) == want), None)

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a+b") as fh:
                fh.seek(0, 2)
                if fh.tell():  # after a truncated line, start a new one
                    fh.seek(-1, 2)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
                fh.write((json.dumps(entry, sort_keys=True) + "\n").encode())
                fh.flush()


def epoch_line(name: str, seed: int) -> Callable[[EpochMetrics], None]:
    """A trainer callback printing one line per epoch (a run is tens of minutes on 2 cores; a
    log file shows how far it got and when it will end)."""

    def report(m: EpochMetrics) -> None:
        left = m.elapsed_s / m.epoch * (m.epochs - m.epoch)
        print(f"  {name} seed {seed}: epoch {m.epoch}/{m.epochs} loss {m.train_loss:.4f} "
              f"train acc {m.train_accuracy:.4f}  {m.images_per_s:.0f} img/s  "
              f"{m.elapsed_s / 60:.1f} min, ~{left / 60:.0f} min left", flush=True)

    return report


def chosen_model(spec: str) -> tuple[Any, str]:
    """(config for build_model, a short label) from a chosen.json path (validated as `retrain`
    reads it) or a baseline name."""
    if not Path(spec).is_file():
        return spec, spec
    chosen = Chosen.read(spec)
    config = chosen.config
    return config, config if isinstance(config, str) else f"chosen({chosen.params or '?'} params)"


def plot_runs(results: dict[str, list[float]], title: str, path: Path) -> None:
    """Every seed's test accuracy as a dot and each variant's mean as a bar, the dashed line at
    flip/crop's mean: how far apart the variants are, next to how far the seeds spread."""
    from pipeline.report import figures

    with figures() as plt:
        fig, ax = plt.subplots(figsize=(1.3 * len(results) + 2, 4.2))
        for i, accs in enumerate(results.values()):
            mean = statistics.mean(accs)
            ax.hlines(mean, i - 0.3, i + 0.3, color="black", linewidth=2)
            ax.scatter([i] * len(accs), accs, s=28, alpha=0.7, zorder=3)
            ax.text(i + 0.33, mean, f"{mean:.4f}\nn={len(accs)}", fontsize=7, va="center")
        if "flipcrop" in results:
            ax.axhline(statistics.mean(results["flipcrop"]), color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(results)), list(results), rotation=20, fontsize=8)
        ax.set_ylabel("CIFAR-10 test accuracy")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--policy", action="append", default=None, metavar="NAME=PATH",
                   help="a policy to compare (repeatable); default found=outputs/search_policy/policy.json")
    p.add_argument("--params", default="params.yaml", help="recipes: policy_search.child(_model), retrain.recipe")
    p.add_argument("--recipe", choices=("child", "retrain"), default="child",
                   help="child: the search's child on the 10k sample; retrain: the retrained model on all images")
    p.add_argument("--chosen", default="outputs/search_model/chosen.json",
                   help="--recipe retrain: chosen.json or a baseline model name (resnet20, airbench_half, ...)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--variants", default=None,
                   help="comma-separated; default flipcrop,randaugment,autoaugment,trivialaugment + the policies")
    p.add_argument("--ledger", default=None, metavar="FILE",
                   help="JSON lines of finished runs: runs it holds are not trained again, and the report uses them")
    p.add_argument("--rerun", action="store_true", help="with --ledger: train every run even if the ledger holds it")
    p.add_argument("--report", action="store_true",
                   help="with --ledger: train nothing; report what the ledger holds and list the runs it lacks")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw every seed's accuracy and each variant's mean (a PNG)")
    args = p.parse_args()
    if args.report and not args.ledger:
        p.error("--report reads the runs from --ledger FILE; give one")
    run(args)


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    policies = named_policies(args.policy or ["found=outputs/search_policy/policy.json"])
    names = args.variants.split(",") if args.variants else ["flipcrop", *TORCHVISION, *policies]
    unknown = [n for n in names if n != "flipcrop" and n not in TORCHVISION and n not in policies]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; built in: flipcrop, {', '.join(TORCHVISION)}; "
                         f"policies given: {', '.join(policies) or 'none'}")
    sets = load_data(args.data)
    if args.recipe == "child":
        recipe, model_spec = params.policy_search.child, params.policy_search.child_model
        label = str(model_spec)
        train_set = stable_sample(sets["train"], 2000 if args.quick else 10_000, 0)
    else:
        recipe = params.retrain.recipe
        model_spec, label = chosen_model(args.chosen)
        train_set = sets["train"]
        if args.quick:
            train_set = stable_sample(train_set, 2000, 0)
    if args.epochs:
        recipe = recipe.model_copy(update={"epochs": args.epochs})
    if args.quick:
        recipe = recipe.model_copy(update={"epochs": 1})
    test = sets["test"]
    if args.quick:
        test = test.subset(torch.arange(0, len(test), 10))
    device = pick_device()
    train_set, test = train_set.to(device), test.to(device)
    augment: dict[str, Callable | None] = {"flipcrop": None}
    augment.update({n: PerImage(make()) for n, make in TORCHVISION.items() if n in names})
    augment.update({n: load_policy(path) for n, path in policies.items() if n in names})
    seeds = [args.first_seed] if args.quick else list(range(args.first_seed, args.first_seed + args.seeds))
    setting = {"recipe": args.recipe, "model": label, "epochs": recipe.epochs, "train_images": len(train_set),
               "test_images": len(test), "quick": bool(args.quick)}
    hashes = {n: file_hash(path) for n, path in policies.items()}
    ledger = Ledger(args.ledger)
    results: dict[str, list[float]] = {}
    minutes: dict[str, list[float]] = {}
    missing: list[str] = []
    for name in names:
        for seed in seeds:
            done = None if args.rerun else ledger.find(setting, name, hashes.get(name), seed)
            if done is None and args.report:
                missing.append(f"{name} seed {seed}")
                continue
            if done is not None:
                acc, mins = done["accuracy"], done["minutes"]
                print(f"{name:14s} seed {seed}: test accuracy {acc:.4f}  ({mins:.1f} min, from the ledger: "
                      f"{done.get('date', '?')}, {done.get('machine', '?')})", flush=True)
            else:
                model = build_model(model_spec, num_classes=len(train_set.classes), seed=seed)
                t0 = time.perf_counter()
                train(model, train_set, recipe, augment=augment[name], device=device, seed=seed, progress=False,
                      callback=epoch_line(name, seed))
                mins = (time.perf_counter() - t0) / 60
                acc = evaluate(model, test, tta_flip=recipe.tta, tta_translate=recipe.tta_translate,
                               precision=recipe.precision).accuracy
                ledger.add({"setting": setting, "variant": name, "policy_hash": hashes.get(name),
                            "policy": policies.get(name), "seed": seed, "accuracy": acc, "minutes": mins,
                            "machine": machine(), "commit": git_commit() or "unknown",
                            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")})
                print(f"{name:14s} seed {seed}: test accuracy {acc:.4f}  ({mins:.1f} min)", flush=True)
            results.setdefault(name, []).append(acc)
            minutes.setdefault(name, []).append(mins)
    print(f"\nrecipe {args.recipe}: model {label}, {recipe.epochs} epochs, {len(train_set)} training images, "
          f"{len(test)} test images")
    if missing:
        print(f"not in the ledger (not run yet): {', '.join(missing)}")
    if not results:
        raise SystemExit(f"{args.ledger}: no run of this setting ({canonical_json(setting)})")
    if args.plot:
        plot_runs(results, f"{args.recipe} recipe: {label}, {recipe.epochs} epochs, {len(train_set)} training images",
                  Path(args.plot))
    print(f"{'variant':14s} {'mean':>7s} {'std':>7s}  per seed")
    for name, accs in results.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{name:14s} {statistics.mean(accs):7.4f} {std:7.4f}  {' '.join(f'{a:.4f}' for a in accs)}")
    means = {n: statistics.mean(a) for n, a in results.items()}
    fields: dict[str, object] = {f"{n}_acc": v for n, v in means.items()}
    best_fixed = max((means[n] for n in TORCHVISION if n in means), default=None)  # what a found policy must match
    for name in policies:
        if name in means and "flipcrop" in means:
            fields[f"{name}_minus_flipcrop"] = means[name] - means["flipcrop"]
        if name in means and best_fixed is not None:
            fields[f"{name}_minus_best_fixed"] = means[name] - best_fixed
    fields.update(recipe=args.recipe, model=label.replace(" ", "_"), epochs=recipe.epochs,
                  train_images=len(train_set), seeds=len(seeds),
                  minutes_per_run=statistics.median([m for ms in minutes.values() for m in ms]), machine=machine())
    print(result_line(**fields))


if __name__ == "__main__":
    main()
