"""The whitening stem's bias frozen after airbench's 3 epochs (``TrainConfig.whiten_bias_epochs``): the step it saves.

While the stem's bias trains, autograd computes the gradient of the first trained conv's input
(the whitened 31x31 image, 24 channels) and of the stem's GELU; once it is frozen, the backward
pass ends at that conv's weight. This bench times the trainer's own SGD step
(``pipeline.train.step_times``: channels_last, autocast where the CPU runs bf16 natively, the
optimiser; lookahead off) of each network at the retrain's batch size (512), with the bias
training (the peer: ``whiten_bias_epochs`` null, how every epoch trained before) and frozen (a
24-epoch retrain's steady state), in alternating rounds of ``--steps`` steps on the same process
and network, so a drift in the machine's speed slows both alike. Printed: the median step of
each, and ``ratio``, the peer's over the frozen one's (above 1: freezing is faster). The images
are random pixels, and the bench needs no data.

    python -m bench.frozenbias [--models airbench_small airbench94] [--rounds 5] [--steps 6] [--quick]
"""

from __future__ import annotations

import argparse
import statistics

from bench.common import machine, result_line
from pipeline.config import RETRAIN
from pipeline.models import SPACE_POINTS, build_model
from pipeline.train import step_times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["airbench_small", "airbench94"], help="SPACE_POINTS names")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of both settings")
    p.add_argument("--steps", type=int, default=6, help="timed steps per round and setting (after one warm-up)")
    p.add_argument("--batch", type=int, default=512, help="SGD batch size (the retrain's)")
    p.add_argument("--quick", action="store_true", help="airbench_small at batch 32, 1 step, 2 rounds")
    args = p.parse_args()
    if args.quick:
        args.models, args.rounds, args.steps, args.batch = ["airbench_small"], 2, 1, 32
    base = RETRAIN.build().model_copy(update={"epochs": 24, "batch_size": args.batch, "lookahead": False})
    settings = {"training": base.model_copy(update={"whiten_bias_epochs": None}),
                "frozen": base.model_copy(update={"whiten_bias_epochs": 3})}
    fields: dict[str, float] = {}
    print("| network | step s, bias training | step s, bias frozen | ratio |\n|---|---|---|---|")
    for name in args.models:
        model = build_model(SPACE_POINTS[name], seed=0)
        times: dict[str, list[float]] = {k: [] for k in settings}
        for r in range(args.rounds):
            for key in settings if r % 2 == 0 else reversed(settings):
                times[key] += step_times(model, settings[key], num_classes=10, device="cpu", steps=args.steps + 1)[0][1:]
        train_s, frozen_s = statistics.median(times["training"]), statistics.median(times["frozen"])
        print(f"| {name} | {train_s:.3f} | {frozen_s:.3f} | **{train_s / frozen_s:.2f}x** |", flush=True)
        fields[f"{name}_step_training_s"], fields[f"{name}_step_frozen_s"] = train_s, frozen_s
        fields[f"{name}_ratio"] = train_s / frozen_s
    print(result_line(bench="frozenbias", batch=args.batch, steps=args.steps, rounds=args.rounds, quick=args.quick,
                      **fields, machine=machine().replace(" ", "_")))


if __name__ == "__main__":
    main()
