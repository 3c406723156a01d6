"""bench/denormal.py: the subnormal count by hand, and a run on a fake finished project (its four
timed cases, each in its own process, and the RESULT line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.denormal import subnormal_shares
from pipeline.config import RETRAIN
from pipeline.models import build_model

from ..data.trees import write_tree
from .test_handmade_bench import CHAMPION, REPO, make_project

TINY = torch.finfo(torch.float32).tiny


class Scaled(nn.Module):
    """A linear layer whose output is multiplied by ``factor`` (a leaf: its output is counted)."""

    def __init__(self, weight: torch.Tensor, factor: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, : self.weight.shape[1]] @ self.weight.t() * self.factor


def test_the_subnormal_shares_count_weights_activations_and_gradients() -> None:
    # two of four weights subnormal (the two zeros are not counted either way); the output of a
    # tiny factor is all subnormal, its gradient w.r.t. the weights too
    weight = torch.tensor([[TINY / 4, 0.0], [1.0, TINY / 8]])
    weight = torch.cat([weight, torch.tensor([[0.0, 2.0]])])  # 3 x 2: four nonzero, two subnormal
    model = nn.Sequential(Scaled(weight, 1e-39))
    images = torch.full((4, 3, 2, 2), 200, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0])
    shares = subnormal_shares(model, images, labels, RETRAIN.build(channels_last=False))
    assert shares["weights"] == pytest.approx(2 / 4)
    assert shares["activations"] == 1.0 and shares["activations.Scaled"] == 1.0
    assert 0 < shares["gradients"] <= 1.0
    # a plain network from fresh weights: no subnormal anywhere
    fresh = subnormal_shares(build_model("resnet20"), torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8),
                             labels, RETRAIN.build())
    assert fresh["weights"] == 0.0 and fresh["activations"] == 0.0


@pytest.mark.slow
def test_a_run_times_four_cases_and_prints_a_result_line(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    data = write_tree(tmp_path / "tree", 4, test_per_class=1)
    classes = sorted(p.name for p in (data / "train").iterdir())
    model = build_model(CHAMPION, num_classes=len(classes), seed=0)
    torch.save({"config": CHAMPION, "classes": classes, "state_dict": model.state_dict()},
               project / "outputs/retrain/model.pt")
    command = [sys.executable, "-m", "bench.denormal", "--data", str(data), "--project", str(project),
               "--images", "16", "--epochs", "2", "--batch", "8"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    for case in ("flush off, fresh", "flush off, trained", "flush on, fresh", "flush on, trained"):
        assert case in out
    line = next(x for x in out.splitlines() if x.startswith("RESULT bench=denormal"))
    fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    assert fields["arch"] == "airbench_like" and fields["precision"] in ("fp32", "bfloat16")
    assert float(fields["trained_vs_fresh"]) > 0 and float(fields["flush_speedup"]) > 0
