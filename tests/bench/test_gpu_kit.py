"""The parts of the GPU checks (bench/gpu.sh) that can be checked without a GPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import torch

from bench.airbench_peer import write_airbench_data
from bench.searchcost import child_seconds
from pipeline.data import ImageSet

REPO = Path(__file__).resolve().parents[2]


def _images(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 2, ["cat", "dog"], [f"{seed}{i:015x}" for i in range(n)])


def test_the_peer_reads_our_images_in_its_own_layout(tmp_path: Path) -> None:
    splits = {"train": _images(6, 0), "test": _images(4, 1)}
    folder = write_airbench_data(splits, tmp_path)
    assert folder == tmp_path / "cifar10"  # airbench's CifarLoader('cifar10') under the working directory
    for name, data in splits.items():
        saved = torch.load(folder / f"{name}.pt")
        assert saved["images"].dtype == torch.uint8
        assert saved["images"].shape == (len(data), 32, 32, 3)  # NHWC, as torchvision's CIFAR10.data
        assert torch.equal(saved["images"].permute(0, 3, 1, 2), data.images)
        assert torch.equal(saved["labels"], data.labels)
        assert saved["classes"] == ["cat", "dog"]


def test_child_seconds_are_the_folds_not_the_stage_runs_sum(tmp_path: Path) -> None:
    uri, before = f"sqlite:///{tmp_path}/mlflow.db", mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run():
            mlflow.log_metric("child_train_seconds", 5.0)  # the stage run logs the sum
            for seconds in (2.0, 3.0):
                with mlflow.start_run(nested=True):
                    mlflow.log_metric("child_train_seconds", seconds)
            with mlflow.start_run(nested=True):  # a fold whose child is not trained yet
                mlflow.log_metric("trials", 1.0)
        assert sorted(child_seconds(uri)) == [2.0, 3.0]
    finally:
        mlflow.set_tracking_uri(before)


def test_the_gpu_script_parses_and_says_how_it_is_called() -> None:
    script = REPO / "bench" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 2 and "prepare TARBALL | run" in done.stderr
    # prepare takes the data by path (nothing is assumed about where it lies) and stops before any download
    done = subprocess.run(["bash", str(script), "prepare"], capture_output=True, text=True)
    assert done.returncode != 0 and "usage: bash bench/gpu.sh prepare PATH" in done.stderr
