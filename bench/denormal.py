"""Subnormal floats in fp32 training: how many a trained network makes, and what they cost a step.

On CPUs without native bf16 the trainer runs in fp32, and there the retrain trained 19-29 % longer
than the model search predicted (BENCHMARKS.md), while one epoch of the same networks from their
initial weights matched the prediction within 10 % (``bench/retrainpred.py``): the steps slow down
as the network trains. An fp32 value below 2^-126 (a subnormal) takes a slow microcode path on x86
unless the thread flushes it (FTZ/DAZ in MXCSR); a GELU of a large negative input and the
products after it land there once a network is confident. Native-bf16 kernels flush such values
themselves, so bf16 runs would not see this. Measured on machine K (BENCHMARKS.md, "Subnormal
floats ruled out"): a 28-epoch fp32 retrain's network holds none, in its weights, activations or
gradients, and steps as fast as a fresh one; the under-prediction there came from the timings
(``pipeline.search.model.standing``). The bench stays to check another network or CPU.

This bench reads a finished checkout (``--project``): the retrain's weights
(``outputs/retrain/model.pt``), recipe and policy (read as ``bench/handmade.py`` reads them). It
counts, on real training images, the share of the nonzero values that are subnormal in the
weights, in every leaf layer's output (the forward) and in the gradients (the backward), for the
trained network and a fresh one of the same architecture. Then, in a fresh process per case
(FTZ/DAZ must be set before PyTorch starts its worker threads, which inherit it), it trains each
for ``--epochs`` epochs of ``--images`` training images at the retrain's recipe and policy, with
and without ``torch.set_flush_denormal(True)``, and prints the median images per second after the
first epoch. ``trained_vs_fresh`` says how much slower a trained network steps; ``flush_speedup``
what flushing gives it back. The trained weights stay near where the retrain left them (the
recipe's warm-up starts at a low lr); the whitening stem keeps its trained weights.

    python -m bench.denormal --data /path/to/project/data/raw --project /path/to/finished/checkout
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def _child(args: argparse.Namespace) -> None:
    """One case in its own process: flush first (before any worker thread exists), then train."""
    import torch

    flushed = torch.set_flush_denormal(args.flush == "on")  # before any worker thread: they inherit it
    from bench.handmade import read_champion
    from pipeline.data import load_data
    from pipeline.train import train

    champion = read_champion(Path(args.project))
    train_set = _subset(load_data(args.data)["train"], args.images)
    model = _network(len(train_set.classes), args.weights, Path(args.project))
    cfg = champion.recipe.model_copy(update={"epochs": args.epochs, "data_init": args.weights == "fresh"})
    result = train(model, train_set, cfg, augment=champion.policy, device=torch.device("cpu"), seed=0,
                   progress=False)
    rates = [m.images_per_s for m in result.history[1:]] or [result.history[0].images_per_s]
    print(json.dumps({"flush": args.flush, "flushed": flushed, "weights": args.weights,
                      "images_per_s": statistics.median(rates), "epochs": [m.images_per_s for m in result.history]}))


def _subset(images: Any, count: int) -> Any:
    import torch

    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
    return images.subset(order)


def _network(num_classes: int, weights: str, project: Path) -> Any:
    """The retrain's network (model.pt's architecture): its trained weights, or fresh ones."""
    import torch

    from pipeline.models import build_model

    state = torch.load(project / "outputs/retrain/model.pt", map_location="cpu", weights_only=False)
    if len(state["classes"]) != num_classes:
        raise SystemExit(f"{project}/outputs/retrain/model.pt has {len(state['classes'])} classes, --data {num_classes}")
    model = build_model(state["config"], num_classes=num_classes, seed=0)
    if weights == "trained":
        model.load_state_dict(state["state_dict"])
    return model


def subnormal_shares(model: Any, images: Any, labels: Any, cfg: Any) -> dict[str, float]:
    """The share of nonzero values that are subnormal (0 < |x| < 2^-126) in ``model``'s weights,
    its leaf layers' outputs for ``images`` (also per layer type: ``activations.GELU``) and its
    gradients for them (fp32, train mode)."""
    import torch
    import torch.nn.functional as F

    from pipeline.train import normalise

    tiny = torch.finfo(torch.float32).tiny
    tally = {"weights": [0, 0], "activations": [0, 0], "gradients": [0, 0]}

    def count(kind: str, x: torch.Tensor) -> None:
        if x.dtype != torch.float32:
            return
        tally.setdefault(kind, [0, 0])
        nonzero = x != 0
        tally[kind][0] += int((nonzero & (x.abs() < tiny)).sum())
        tally[kind][1] += int(nonzero.sum())

    def hook(module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            count("activations", output.detach())
            count(f"activations.{type(module).__name__}", output.detach())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    model.train()
    try:
        logits = model(normalise(images, cfg.channels_last)).float()
        F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing).backward()
    finally:
        for h in handles:
            h.remove()
    for p in model.parameters():
        count("weights", p.detach())
        if p.grad is not None:
            count("gradients", p.grad)
    return {k: (bad / total if total else 0.0) for k, (bad, total) in tally.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the project's data/raw store (or any --data of the benches)")
    p.add_argument("--project", required=True, help="a finished pipeline checkout (outputs/retrain/model.pt)")
    p.add_argument("--images", type=int, default=4096, help="training images per epoch of each timed case")
    p.add_argument("--epochs", type=int, default=4, help="epochs per case (the first is warm-up, not counted)")
    p.add_argument("--batch", type=int, default=512, help="images for the subnormal count")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--flush", choices=("on", "off"), default="off", help=argparse.SUPPRESS)
    p.add_argument("--weights", choices=("fresh", "trained"), default="trained", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return

    import torch

    from bench.common import machine, result_line
    from bench.handmade import read_champion
    from pipeline.data import load_data
    from pipeline.device import autocast_dtype

    project = Path(args.project)
    champion = read_champion(project)
    train_set = load_data(args.data)["train"]
    batch = _subset(train_set, args.batch)
    shares: dict[str, dict[str, float]] = {}
    for weights in ("fresh", "trained"):
        model = _network(len(train_set.classes), weights, project)
        shares[weights] = subnormal_shares(model, batch.images, batch.labels, champion.recipe)
        print(f"{weights} weights: subnormal share of the nonzero values: " +
              ", ".join(f"{k} {v:.2e}" for k, v in shares[weights].items() if v > 0 or "." not in k), flush=True)
    del train_set, batch
    rates: dict[tuple[str, str], float] = {}
    for flush in ("off", "on"):
        for weights in ("fresh", "trained"):
            out = subprocess.run(
                [sys.executable, "-m", "bench.denormal", "--child", "--data", args.data, "--project", args.project,
                 "--images", str(args.images), "--epochs", str(args.epochs), "--flush", flush, "--weights", weights],
                check=True, capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            if flush == "on" and not row["flushed"]:
                raise SystemExit("torch.set_flush_denormal(True) is not supported on this CPU")
            rates[(flush, weights)] = row["images_per_s"]
            print(f"flush {flush}, {weights} weights: {row['images_per_s']:.0f} img/s "
                  f"(epochs: {', '.join(f'{r:.0f}' for r in row['epochs'])})", flush=True)
    print(result_line(
        bench="denormal", arch=champion.seed_point or "searched", images=args.images, epochs=args.epochs,
        precision=str(autocast_dtype(champion.recipe.precision, torch.device("cpu")) or "fp32").replace("torch.", ""),
        fresh_off=rates[("off", "fresh")], trained_off=rates[("off", "trained")],
        fresh_on=rates[("on", "fresh")], trained_on=rates[("on", "trained")],
        trained_vs_fresh=rates[("off", "trained")] / rates[("off", "fresh")],
        flush_speedup=rates[("on", "trained")] / rates[("off", "trained")],
        flush_fresh=rates[("on", "fresh")] / rates[("off", "fresh")],
        sub_act_trained=shares["trained"]["activations"], sub_grad_trained=shares["trained"]["gradients"],
        sub_act_fresh=shares["fresh"]["activations"], machine=machine().replace(" ", "_")))


if __name__ == "__main__":
    main()
