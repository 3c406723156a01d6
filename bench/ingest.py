"""Ingest speed and sample stability on the real data.

Ingest: `RawStore.ingest` of the whole source (decode, 32x32 RGB, content hash, de-duplicate,
write shards) against the usual way of getting CIFAR-10 JPEGs into memory: `tar xzf` and
torchvision's ImageFolder decoding every image with PIL into one uint8 tensor.

Stability: the share of the 10k sample that survives when 10% more training images arrive,
for `stable_sample` against the usual seeded random sample by position (images appended at
the end, same seed), measured by holding out 1/11 of the real training images as "new".

    python -m bench.ingest --data /path/to/cifar10-jpg.tar.gz
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import base_parser, machine, median, result_line, timed
from pipeline.data import ImageSet, RawStore, stable_sample


def ours(source: str) -> int:
    with tempfile.TemporaryDirectory() as d:
        result = RawStore(Path(d) / "raw").ingest(source)
        return sum(result.added.values())


def peer(source: str) -> int:
    from torchvision.datasets import ImageFolder

    with tempfile.TemporaryDirectory() as d:
        if Path(source).is_dir():
            root = Path(source)
        else:
            subprocess.run(["tar", "xzf", source, "-C", d], check=True)
            root = Path(d)
        train = next(root.rglob("train"))
        n = 0
        for split_dir in (train, train.parent / "test"):
            if not split_dir.is_dir():
                continue
            ds = ImageFolder(str(split_dir))
            arr = np.stack([np.asarray(ds[i][0], dtype=np.uint8) for i in range(len(ds))])
            n += len(torch.from_numpy(arr))
        return n


def positional_sample(pool: ImageSet, size: int, seed: int) -> set[str]:
    """The usual way: a seeded permutation of positions, first size/C of each class."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pool), generator=g).tolist()
    per_class = size // len(pool.classes)
    taken: dict[int, int] = {}
    chosen = []
    for i in order:
        c = int(pool.labels[i])
        if taken.get(c, 0) < per_class:
            taken[c] = taken.get(c, 0) + 1
            chosen.append(pool.ids[i])
    return set(chosen)


def survival(train: ImageSet, size: int, seeds: list[int]) -> tuple[list[float], list[float]]:
    ours_kept, peer_kept = [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(1000 + seed)
        perm = torch.randperm(len(train), generator=g)
        n_old = round(len(train) / 1.1)
        old = train.subset(perm[:n_old])
        grown = train.subset(perm)  # old images first, the new 10% appended at the end
        before, after = set(stable_sample(old, size, seed).ids), set(stable_sample(grown, size, seed).ids)
        ours_kept.append(len(before & after) / size)
        pb, pa = positional_sample(old, size, seed), positional_sample(grown, size, seed)
        peer_kept.append(len(pb & pa) / len(pb))
    return ours_kept, peer_kept


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    repeats = 1 if args.quick else 3
    t_ours, n_ours = timed(lambda: ours(args.data), repeats)
    print(f"autoaug ingest: {n_ours} images, seconds per run {[round(t, 2) for t in t_ours]}")
    have_tar = shutil.which("tar") is not None
    t_peer, n_peer = timed(lambda: peer(args.data), repeats) if have_tar else ([float("nan")], 0)
    print(f"tar xzf + ImageFolder: {n_peer} images, seconds per run {[round(t, 2) for t in t_peer]}")

    with tempfile.TemporaryDirectory() as d:
        store = RawStore(Path(d) / "raw")
        store.ingest(args.data)
        train = store.split("train")
    size = min(10_000, len(train) // 2)
    seeds = [0] if args.quick else [0, 1, 2]
    kept, kept_peer = survival(train, size, seeds)
    print(f"sample survival after +10% data: stable {kept}, positional {kept_peer}")
    print(result_line(
        images=n_ours, ingest_s=median(t_ours), peer_s=median(t_peer),
        speedup=median(t_peer) / median(t_ours), sample=size,
        kept_after_10pct=min(kept), kept_peer=median(kept_peer), machine=machine(),
    ))


if __name__ == "__main__":
    main()
