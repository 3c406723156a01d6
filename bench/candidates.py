"""Candidate fidelity of the model search: does a short schedule rank architectures like a long one?

The model search scores each candidate after a short schedule on a small split of the sample.
That is only useful if the short score orders candidates the way a longer schedule would. This
bench draws ``--configs`` random configurations of the search space that fit the budget (the
same draw the search's random start-up trials make), adds the reference networks and any
``--chosen`` configuration (a chosen.json), trains every one under each named recipe variant
on the search split (``ModelSearch.split``: the policy search's first D_M / D_A) and prints, per
variant: the validation accuracies, the seconds, and Spearman's rank correlation with the last
variant (the "long" one, the ground truth).

Variants are ``name:key=value,key=value`` over ``model_search.recipe`` plus four extra keys:
``images`` (training images; default model_search.train_images), ``augment`` (policy | flipcrop),
``val`` (validation images) and ``seed`` (the training seed: initialisation, batch order and
augmentation draws; the split stays). Peer: the last variant. Two variants that differ only in
``seed`` measure the candidates' score noise: the mean and largest absolute difference in
accuracy points are printed per variant. Example (the 2-core defaults against a
batch-64 variant, ground truth = 12 epochs on the whole D_M)::

    python -m bench.candidates --data data/raw --policy outputs/search_policy/policy.json \
        --variant short:epochs=4 --variant b64:epochs=4,batch_size=64,lr=0.05 \
        --variant long:epochs=12,images=6000,batch_size=128,lr=0.1
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import torch

from bench.common import base_parser, machine, median, result_line
from pipeline.config import ModelSearchConfig, load_params
from pipeline.contracts import Chosen
from pipeline.data import load_data, stable_sample
from pipeline.device import pick_device
from pipeline.models import build_model, count_macs, count_params, suggest_config
from pipeline.search.model import ModelSearch
from pipeline.search.registry import BuildContext, search_stage
from pipeline.stages.common import read_policy

EXTRA_KEYS = {"images", "augment", "val"}


def parse_variant(text: str, base: ModelSearchConfig) -> tuple[str, ModelSearchConfig, int | None]:
    """(name, the search config, the training seed or None: ``--seed``)."""
    name, _, spec = text.partition(":")
    recipe: dict[str, Any] = base.recipe.model_dump()
    top: dict[str, Any] = {}
    seed: int | None = None
    for item in filter(None, spec.split(",")):
        key, _, raw = item.partition("=")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        if key == "seed":
            seed = int(value)
        elif key in EXTRA_KEYS:
            top[{"images": "train_images", "val": "val_images"}.get(key, key)] = value
        else:
            recipe[key] = value
    return name, base.model_copy(update={"recipe": type(base.recipe)(**recipe), **top}), seed


def random_configs(cfg: ModelSearchConfig, n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` random draws of the space that fit ``max_params`` and ``max_macs``."""
    found: list[dict[str, Any]] = []
    if n <= 0:
        return found
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(2000):
        trial = study.ask()
        config = suggest_config(trial)
        study.tell(trial, 0.0)
        model = build_model(config, num_classes=10, seed=0)
        if cfg.max_params and count_params(model) > cfg.max_params:
            continue
        if cfg.max_macs and count_macs(model) > cfg.max_macs:
            continue
        found.append(config)
        if len(found) == n:
            break
    return found


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x: list[float]) -> torch.Tensor:
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = torch.empty(len(x))
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom else float("nan")


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--policy", default=None, help="policy.json for variants with augment=policy")
    p.add_argument("--configs", type=int, default=4, help="random feasible configurations of the space")
    p.add_argument("--references", nargs="*", default=["resnet20"])
    p.add_argument("--chosen", action="append", default=[], metavar="PATH",
                   help="also score this configuration (a chosen.json, or any JSON with a 'config' key)")
    p.add_argument("--variant", action="append", required=True, help="name:key=value,... (last = ground truth)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    params = load_params(args.params)
    base = params.model_search
    if args.quick:
        args.configs = 1
        args.references = []
    variants = [parse_variant(v, base) for v in args.variant]
    policy = read_policy(args.policy) if args.policy else None
    if policy is None and any(v.augment == "policy" for _, v, _ in variants):
        p.error("a variant trains with augment=policy: give --policy (or add augment=flipcrop)")
    train_split = load_data(args.data)["train"]
    sample = stable_sample(train_split, params.sample.size, params.sample.seed)
    if args.quick:
        sample = stable_sample(sample, 1000, 0)
    device = pick_device()
    models: list[tuple[str, dict[str, Any] | str]] = [(f"random{i}", c) for i, c in
                                                     enumerate(random_configs(base, args.configs, args.seed))]
    models += [(name, name) for name in args.references]
    models += [(Path(path).stem, Chosen.read(path).config) for path in args.chosen]
    print(f"{len(models)} models x {len(variants)} variants on {len(sample)} sample images; {machine()}", flush=True)

    acc: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    secs: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for label, config in models:
        probe = build_model(config, num_classes=10, seed=0)
        print(f"{label}: {count_params(probe):,} parameters, {count_macs(probe) / 1e6:.0f} M MACs", flush=True)
        for vname, vcfg, vseed in variants:
            seed = args.seed if vseed is None else vseed
            # the search's method as the stage builds it (no tracker: no @champion to look up)
            context = BuildContext(params.model_copy(update={"model_search": vcfg}), sample, "bench", device,
                                   policy=policy, progress=False)
            search = search_stage("search_model").build(context)
            assert isinstance(search, ModelSearch)
            model = build_model(config, num_classes=10, seed=seed)
            t0 = time.perf_counter()
            accuracy, _, curve = search.fit(model, seed=seed)
            seconds = time.perf_counter() - t0
            acc[vname].append(accuracy)
            secs[vname].append(seconds)
            print(f"  {vname:>10}: val acc {accuracy:.4f} in {seconds:6.1f} s  curve "
                  f"{' '.join(f'{c:.3f}' for c in curve)}", flush=True)

    truth = variants[-1][0]
    fields: dict[str, Any] = {"bench": "candidates", "quick": args.quick, "models": len(models)}
    print("\nvariant      median acc   median s   spearman vs " + truth + "   |acc - " + truth + "| points: mean, max")
    for vname, _, _ in variants:
        rho = spearman(acc[vname], acc[truth]) if len(models) > 1 else float("nan")
        gaps = [abs(a - b) * 100 for a, b in zip(acc[vname], acc[truth], strict=True)]
        print(f"{vname:>10}   {median(acc[vname]):.4f}   {median(secs[vname]):8.1f}   {rho:+.2f}"
              f"   {sum(gaps) / len(gaps):.2f}, {max(gaps):.2f}")
        fields[f"{vname}_gap_mean_points"] = sum(gaps) / len(gaps)
        fields[f"{vname}_gap_max_points"] = max(gaps)
        fields[f"{vname}_acc_median"] = median(acc[vname])
        fields[f"{vname}_s_median"] = median(secs[vname])
        fields[f"{vname}_spearman"] = rho
        fields[f"{vname}_time_ratio"] = sum(secs[vname]) / sum(secs[truth])
    print(result_line(**fields, machine=machine()))


if __name__ == "__main__":
    main()
