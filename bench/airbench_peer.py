"""The accuracy anchor on a GPU: the `airbench` package's own train94 on our ingested images.

The shared CIFAR-10 copy is JPEG (quality 75, 4:2:0 chroma), so airbench94's published 94.0 %
(on the original pixels) is not a target we can check as it stands. This trains the peer
itself, airbench (PyPI, MIT; GPU-only, fp16) with its own train94 recipe, on the same images
that `bench/accuracy.py --setting 50k-gpu` trains our trainer on, so both accuracies and times
sit side by side from one machine.

airbench's CifarLoader reads ``cifar10/train.pt`` and ``cifar10/test.pt`` (uint8 NHWC images,
labels, classes) under the working directory; this writes them from ``--data`` into
``--workdir`` and runs there. One untimed warm-up run (CUDA context, cuDNN autotuning), then
``--runs`` timed ones; the time is the wall clock of train94 (preprocessing included, as its own
per-epoch timer excludes nothing but evaluation), the accuracy airbench's flip+translate TTA.

    python -m bench.airbench_peer --data /tmp/raw --runs 3   # needs CUDA and `pip install airbench`
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from bench.common import base_parser, machine, median, result_line
from pipeline.data import ImageSet, load_data


def write_airbench_data(splits: dict[str, ImageSet], root: Path) -> Path:
    """``root/cifar10/{train,test}.pt`` in airbench's layout: uint8 [N, 32, 32, 3], int64 labels."""
    out = root / "cifar10"
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        data = splits[split]
        torch.save({"images": data.images.permute(0, 2, 3, 1).contiguous(), "labels": data.labels.clone(),
                    "classes": list(data.classes)}, out / f"{split}.pt")
    return out


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="timed train94 runs after one warm-up")
    p.add_argument("--workdir", default="/tmp/airbench-peer", help="where cifar10/{train,test}.pt are written")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/airbench_peer.py: airbench trains on CUDA only (fp16, cuda events); no CUDA device here")
    try:
        import airbench
    except ImportError:
        sys.exit("bench/airbench_peer.py: the peer is not installed: pip install airbench")

    splits = load_data(args.data)
    if "test" not in splits:
        sys.exit(f"{args.data}: no test split")
    workdir = Path(args.workdir)
    write_airbench_data(splits, workdir)
    os.chdir(workdir)  # airbench reads 'cifar10/...' relative to the working directory
    runs = 1 if args.quick else args.runs
    print(f"airbench {getattr(airbench, '__version__', '?')}: train {len(splits['train'])} "
          f"test {len(splits['test'])} images, {runs} timed run(s)", flush=True)

    test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    airbench.warmup94(verbose=False)
    accs, seconds = [], []
    for run in range(runs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        model = airbench.train94(verbose=False)
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        accs.append(float(airbench.evaluate(model, test_loader, tta_level=2)))
        print(f"run {run}: accuracy {accs[-1]:.4f} in {seconds[-1]:.2f} s", flush=True)
    print(result_line(bench="airbench_peer", recipe="train94", runs=runs, acc_median=round(median(accs), 4),
                      acc_min=round(min(accs), 4), acc_max=round(max(accs), 4),
                      seconds_median=round(median(seconds), 2), machine=machine()))


if __name__ == "__main__":
    main()
