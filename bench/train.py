"""Training throughput: the in-memory trainer against the usual PyTorch recipe.

Peer (same model, same initial weights, same batch size, same optimiser, same machine, same
run): a torchvision-style Dataset of PIL images with RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize, a DataLoader with 2 workers, fp32, NCHW.
Ours: `pipeline.train.train` (uint8 tensors in memory, batched flip/crop, channels_last, bf16
autocast where the CPU has native bf16, else fp32). Both are timed in windows of `--window-steps` SGD steps after warm-up;
the figure is the median images/s over the windows.

Roofline, in the same run: training FLOPs per image (torch's FlopCounterMode over a forward and
backward pass) times images/s gives each side's GFLOP/s, set against the best GFLOP/s of a
2048x2048 matmul in the trainer's precision. `ceiling_ratio` is the ratio a trainer running at
100 % of that peak would reach against the measured peer: where it is below a target ratio, no
data-pipeline change can reach the target on this CPU.

    python -m bench.train --data /path/to/cifar10-jpg.tar.gz
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from bench.common import base_parser, machine, median, result_line
from pipeline.data import ImageSet, load_data, stable_sample
from pipeline.device import autocast_dtype
from pipeline.models import build_model
from pipeline.train import CIFAR_MEAN, CIFAR_STD, EpochMetrics, TrainConfig, train


class PILDataset(Dataset):
    """The usual CIFAR pipeline: one PIL image per item, transformed in a worker."""

    def __init__(self, data: ImageSet) -> None:
        self.images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in data.images]
        self.labels = data.labels.tolist()
        self.transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
        ])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), self.labels[i]


def peer_windows(model_name: str, data: ImageSet, cfg: TrainConfig, warmup: int, windows: int,
                 steps: int) -> list[float]:
    torch.manual_seed(0)
    model = build_model(model_name).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.peak_lr * 0.1, momentum=cfg.momentum,
                          nesterov=True, weight_decay=cfg.weight_decay)
    loader = DataLoader(PILDataset(data), batch_size=cfg.batch_size, shuffle=True, num_workers=2,
                        drop_last=True, persistent_workers=True)
    rates: list[float] = []
    done, start = 0, 0.0
    while len(rates) < windows:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup:
                start = time.perf_counter()
            elif done > warmup and (done - warmup) % steps == 0:
                now = time.perf_counter()
                rates.append(steps * cfg.batch_size / (now - start))
                print(f"  peer window {len(rates)}: {rates[-1]:.0f} img/s", flush=True)
                start = now
                if len(rates) == windows:
                    break
    return rates


def trainer_windows(model_name: str, data: ImageSet, cfg: TrainConfig, windows: int,
                    steps: int) -> list[float]:
    # One epoch = one window: train on the first `steps` batches' worth of the sample.
    subset = data.subset(torch.arange(steps * cfg.batch_size))
    torch.manual_seed(0)
    model = build_model(model_name)
    rates: list[float] = []

    def record(m: EpochMetrics) -> None:
        if m.epoch > 1:  # epoch 1 is warm-up (oneDNN primitive creation)
            rates.append(m.images_per_s)
            print(f"  trainer window {len(rates)}: {m.images_per_s:.0f} img/s", flush=True)

    run_cfg = cfg.model_copy(update={"epochs": windows + 1, "eval_every": 0})
    train(model, subset, run_cfg, progress=False, callback=record)
    return rates


def train_flops_per_image(model_name: str) -> float:
    """FLOPs of one training step per image (forward + backward), counted by torch's FlopCounterMode
    (convolutions and matmuls; the memory-bound BN/activation work is not counted)."""
    torch.manual_seed(0)
    model = build_model(model_name).train()
    x = torch.randn(2, 3, 32, 32)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    return counter.get_total_flops() / len(x)


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 8) -> float:
    """Best-of GFLOP/s of a large square matmul on this CPU with torch's threads: what the
    convolutions could reach at best (oneDNN convolutions are GEMM-like)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default="airbench94", help="baseline name (pipeline.models.BASELINES)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-steps", type=int, default=8)
    args = parser.parse_args()

    windows, steps = (2, 2) if args.quick else (args.windows, args.window_steps)
    data = stable_sample(load_data(args.data)["train"], 10_000, seed=0)
    cfg = TrainConfig(batch_size=args.batch_size, lr=0.4, label_smoothing=0.1)
    print(f"model={args.model} batch={cfg.batch_size} windows={windows}x{steps} steps", flush=True)
    ours = trainer_windows(args.model, data, cfg, windows, steps)
    peer = peer_windows(args.model, data, cfg, warmup=2, windows=windows, steps=steps)
    ours_med, peer_med = median(ours), median(peer)
    # Roofline: the trainer's precision and the peer's fp32, each against this CPU's matmul peak.
    flops = train_flops_per_image(args.model)
    ours_dtype = autocast_dtype(cfg.precision, torch.device("cpu")) or torch.float32
    peak_fp32 = matmul_peak_gflops(torch.float32)
    peak_ours = peak_fp32 if ours_dtype == torch.float32 else matmul_peak_gflops(ours_dtype)
    ours_gflops, peer_gflops = ours_med * flops / 1e9, peer_med * flops / 1e9
    print(f"training GFLOP/image {flops / 1e9:.3f}; matmul peak fp32 {peak_fp32:.0f} GFLOP/s"
          + (f", {ours_dtype} {peak_ours:.0f} GFLOP/s" if ours_dtype != torch.float32 else " (trainer in fp32)"))
    print(f"trainer {ours_gflops:.0f} GFLOP/s ({ours_gflops / peak_ours:.0%} of its peak), "
          f"peer {peer_gflops:.0f} GFLOP/s ({peer_gflops / peak_fp32:.0%} of the fp32 peak); "
          f"a trainer at 100% of its peak would be {peak_ours / peer_gflops:.2f}x the peer", flush=True)
    print(result_line(bench="train", model=args.model, batch=cfg.batch_size, windows=windows,
                      window_steps=steps, trainer_img_s=round(ours_med), peer_img_s=round(peer_med),
                      ratio=round(ours_med / peer_med, 2), trainer_dtype=str(ours_dtype).removeprefix("torch."),
                      trainer_peak_frac=round(ours_gflops / peak_ours, 2),
                      ceiling_ratio=round(peak_ours / peer_gflops, 2), machine=machine()))


if __name__ == "__main__":
    main()
