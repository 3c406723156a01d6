"""Augmentation throughput: batched policies against torchvision's per-image AutoAugment.

Ours: a 25-sub-policy, 2-op policy (ops, probabilities and magnitudes drawn from a fixed seed)
applied by `Policy.__call__` to uint8 batches of real CIFAR-10 images, a different sub-policy
per image, as the trainer uses it.  Also, for a like-for-like figure, torchvision's own CIFAR10
policy imported with `from_torchvision`.
Peers (same run, same images): `torchvision.transforms.v2.AutoAugment(CIFAR10)` applied one
image at a time, as a Dataset does in DataLoader workers: on PIL images and on uint8 tensors.
Every figure is the median images/s of several timed repetitions on different images.
With `--device cuda` ours and the per-tensor peer run on the GPU (each timing ends with a
synchronize, so it counts the kernels, not their launches); the PIL peer stays on the CPU.

    flock /tmp/autoaug-cpu.lock python -m bench.augment --data /path/to/cifar10-jpg.tar.gz
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import v2

from bench.common import base_parser, machine, median, result_line, timed
from pipeline.augment import OPS, Policy, from_torchvision
from pipeline.data import load_data


def random_policy(seed: int = 0, n_sub: int = 25, n_ops: int = 2) -> Policy:
    """The benchmark policy: ops, probabilities and magnitudes uniform from a fixed seed."""
    rng = random.Random(seed)
    names = list(OPS)
    return Policy(
        [
            [(rng.choice(names), rng.random(), rng.random()) for _ in range(n_ops)]
            for _ in range(n_sub)
        ],
        metadata={"source": f"bench random policy seed={seed}"},
    )


def batched_rate(
    policy: Policy,
    images: torch.Tensor,
    batch: int,
    batches: int,
    repeats: int,
    device: torch.device,
) -> list[float]:
    """images/s of ``policy`` over ``batches`` batches, for each of ``repeats`` repetitions."""
    data = images.to(device)
    generator = torch.Generator().manual_seed(0)
    starts = [(i * batch) % (len(data) - batch + 1) for i in range(batches * (repeats + 1))]

    def run(offset: int) -> Callable[[], None]:
        def go() -> None:
            for start in starts[offset : offset + batches]:
                policy(data[start : start + batch], generator)
            synchronize(device)  # CUDA kernels run asynchronously: time their end, not their launch

        return go

    run(0)()  # warm-up (allocator, first-call costs)
    rates = []
    for r in range(1, repeats + 1):
        times, _ = timed(run(r * batches), 1)
        rates.append(batches * batch / times[0])
    return rates


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_image_rate(transform: Callable, items: list, per_repeat: int, repeats: int,
                   device: torch.device | None = None) -> list[float]:
    """images/s of ``transform`` applied to one item at a time (the DataLoader way); tensors
    already on ``device`` are transformed there."""
    torch.manual_seed(0)
    for item in items[:50]:  # warm-up
        transform(item)
    rates = []
    for r in range(repeats):
        chunk = [items[(r * per_repeat + i) % len(items)] for i in range(per_repeat)]

        def one_at_a_time(chunk: list = chunk) -> None:
            for item in chunk:
                transform(item)
            if device is not None:
                synchronize(device)

        times, _ = timed(one_at_a_time, 1)
        rates.append(per_repeat / times[0])
    return rates


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")

    repeats = 3 if args.quick else 7
    batches = 3 if args.quick else 20  # batches per timed repetition
    peer_images = 300 if args.quick else 2000  # per repetition, per-image peers
    tensor_peer_images = 100 if args.quick else 500  # the tensor peer is ~10x slower

    train = load_data(args.data)["train"]
    pool = train.images[: max(batches * args.batch_size * 2, peer_images * repeats)]
    print(
        f"data: {len(train)} train images, using {len(pool)}; device={device}; "
        f"torch threads={torch.get_num_threads()}"
    )

    policy = random_policy()
    ours = batched_rate(policy, pool, args.batch_size, batches, repeats, device)
    print(
        f"ours, random 25x2 policy, batch {args.batch_size}: median {median(ours):,.0f} img/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in ours)})"
    )
    tv_policy = from_torchvision("CIFAR10")
    ours_tv = batched_rate(tv_policy, pool, args.batch_size, batches, repeats, device)
    print(
        f"ours, torchvision CIFAR10 policy imported, batch {args.batch_size}: "
        f"median {median(ours_tv):,.0f} img/s"
    )

    peer = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    n_peer = peer_images * repeats
    pil_images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in pool[:n_peer]]
    peer_pil = per_image_rate(peer, pil_images, peer_images, repeats)
    print(
        f"peer, torchvision v2 AutoAugment(CIFAR10) per PIL image: median {median(peer_pil):,.0f} img/s"
    )
    tensors = list(pool[: tensor_peer_images * repeats].to(device))  # on the same device as ours
    peer_tensor = per_image_rate(peer, tensors, tensor_peer_images, repeats, device)
    print(
        f"peer, torchvision v2 AutoAugment(CIFAR10) per uint8 tensor on {device.type}: "
        f"median {median(peer_tensor):,.0f} img/s"
    )

    ratio_pil = median(ours) / median(peer_pil)
    ratio_tensor = median(ours) / median(peer_tensor)
    print(
        f"ours / peer: {ratio_pil:.1f}x vs PIL per image, {ratio_tensor:.1f}x vs tensor per image"
    )
    print(
        result_line(
            bench="augment",
            device=device.type,
            batch=args.batch_size,
            repeats=repeats,
            ours_img_s=round(median(ours)),
            ours_tv_cifar10_img_s=round(median(ours_tv)),
            peer_pil_img_s=round(median(peer_pil)),
            peer_tensor_img_s=round(median(peer_tensor)),
            ratio_vs_pil=ratio_pil,
            ratio_vs_tensor=ratio_tensor,
            quick=args.quick,
            torch_threads=torch.get_num_threads(),
            machine=machine(),
        )
    )


if __name__ == "__main__":
    main()
