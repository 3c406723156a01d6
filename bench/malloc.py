"""Freed memory kept for the next step (``pipeline.device.keep_freed_memory``) against glibc's default.

glibc's malloc serves each allocation over 32 MiB with its own ``mmap`` and unmaps it on free, so
every training step of a CPU network with large activations (an airbench network's first block at
batch 512: 63 MiB per tensor in bf16) faults its pages in anew, one minor fault per 4 KiB. The
trainer turns that off (``M_MMAP_MAX`` 0, the heap trimmed only above 2 GiB); the peer is the
same process with ``AUTOAUG_KEEP_FREED_MEMORY=0``, glibc's default.

For each network (``--models``: names of ``pipeline.models`` baselines or ``SPACE_POINTS``) and
each setting, a fresh process (the setting must hold from the first allocation) times:

- ``train``: the trainer's own SGD step (``pipeline.train.step_times``: channels_last, autocast
  where the CPU has native bf16, the optimiser, lookahead off as in ``step_seconds``) at
  ``--batch`` (the retrain's 512), the median of ``--steps`` after two warm-up steps;
- ``eval``: ``pipeline.train.evaluate`` of ``--eval-images`` images at its batch of 1,000 (the
  policy search scores every candidate policy this way), the median of three after one warm-up;

with the minor page faults per step and the process's peak resident memory. The processes of
the two settings alternate (``--rounds`` rounds, the order swapped each round), so a drift in
the machine's speed slows both alike; the figures are medians over the rounds, and ``ratio`` is
the default's time over the kept memory's (above 1: keeping it is faster). The images are random
pixels: a step's cost does not depend on what they show, and the bench needs no data.

    python -m bench.malloc [--models airbench_small airbench_half resnet20] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.common import machine, result_line

SETTINGS = ("default", "kept")
DEFAULT_MODELS = ["airbench_small", "airbench_half", "resnet20"]


def _child(args: argparse.Namespace) -> None:
    """One network under one setting, in this fresh process; prints one JSON line."""
    import torch

    from pipeline.config import RETRAIN
    from pipeline.data import ImageSet
    from pipeline.device import keep_freed_memory
    from pipeline.models import SPACE_POINTS, build_model
    from pipeline.train import evaluate, place_model, step_times

    kept = keep_freed_memory()
    model = build_model(SPACE_POINTS.get(args.child, args.child), seed=0)
    cfg = RETRAIN.build().model_copy(update={"batch_size": args.batch, "lookahead": False})
    warmup = 2
    marks: list[int] = []  # minor faults so far, after each step

    def mark(times: list[list[float]]) -> bool:
        marks.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        return False

    steps = step_times(model, cfg, num_classes=10, device="cpu", steps=args.steps + warmup, until=mark)[0][warmup:]
    faults = (marks[-1] - marks[warmup - 1]) / args.steps  # the timed steps' only
    gen = torch.Generator().manual_seed(1)
    n = args.eval_images
    data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                    torch.randint(0, 10, (n,), generator=gen), [str(c) for c in range(10)], [str(i) for i in range(n)])
    place_model(model, torch.device("cpu"), cfg)
    evals = []
    for _ in range(4):
        start = time.perf_counter()
        evaluate(model, data, device="cpu")
        evals.append(time.perf_counter() - start)
    print(json.dumps({
        "model": args.child, "kept": kept, "train_s": statistics.median(steps), "eval_s": statistics.median(evals[1:]),
        "faults_per_step": faults, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def run_case(model: str, setting: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "AUTOAUG_KEEP_FREED_MEMORY": "1" if setting == "kept" else "0"}
    cmd = [sys.executable, "-m", "bench.malloc", "--child", model, "--batch", str(args.batch),
           "--steps", str(args.steps), "--eval-images", str(args.eval_images)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    row: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if row["kept"] != (setting == "kept"):
        raise SystemExit(f"{model}: the {setting} process reports kept={row['kept']} (not glibc, or mallopt refused)")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="baseline names or SPACE_POINTS names")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of both settings")
    p.add_argument("--steps", type=int, default=8, help="timed SGD steps per process (after 2 warm-up steps)")
    p.add_argument("--batch", type=int, default=512, help="SGD batch size (the retrain's)")
    p.add_argument("--eval-images", type=int, default=4000, help="images evaluate scores per timing")
    p.add_argument("--quick", action="store_true", help="resnet20 at batch 64, 2 steps, one round")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    if args.quick:
        args.models, args.rounds, args.steps, args.batch, args.eval_images = ["resnet20"], 1, 2, 64, 1000
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for model in args.models:
            for setting in SETTINGS if r % 2 == 0 else reversed(SETTINGS):
                row = run_case(model, setting, args)
                rows.setdefault((model, setting), []).append(row)
                print(f"round {r + 1} {model:>16} {setting:>7}: step {row['train_s']:.3f} s, eval {row['eval_s']:.3f} s, "
                      f"{row['faults_per_step']:.0f} faults/step, peak {row['max_rss_mb']:.0f} MB", flush=True)

    def med(model: str, setting: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[(model, setting)])

    print(f"\n| network | step s, default | step s, kept | ratio | eval s, default | eval s, kept | ratio "
          f"| faults/step default / kept | peak MB default / kept |\n|{'---|' * 9}")
    fields: dict[str, Any] = {}
    for model in args.models:
        d, k = med(model, "default", "train_s"), med(model, "kept", "train_s")
        de, ke = med(model, "default", "eval_s"), med(model, "kept", "eval_s")
        print(f"| {model} | {d:.3f} | {k:.3f} | **{d / k:.2f}x** | {de:.3f} | {ke:.3f} | {de / ke:.2f}x "
              f"| {med(model, 'default', 'faults_per_step'):.0f} / {med(model, 'kept', 'faults_per_step'):.0f} "
              f"| {med(model, 'default', 'max_rss_mb'):.0f} / {med(model, 'kept', 'max_rss_mb'):.0f} |")
        fields[f"{model}_train_ratio"] = d / k
        fields[f"{model}_eval_ratio"] = de / ke
        fields[f"{model}_peak_mb_kept_over_default"] = med(model, "kept", "max_rss_mb") / med(model, "default", "max_rss_mb")
    print(result_line(bench="malloc", batch=args.batch, steps=args.steps, rounds=args.rounds, quick=args.quick,
                      **fields, machine=machine().replace(" ", "_")))


if __name__ == "__main__":
    main()
