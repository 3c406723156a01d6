"""bench/handmade.py end to end with --quick on a fake finished project: it reads the project's
files, trains every network (the hand-made ones, two front members, the champion again), and
prints the table and the RESULT line; and the project reading on its own (the recipe's fallback)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bench.handmade import (
    champion_from_plan,
    champion_plan,
    networks,
    read_champion,
    smallest_within_reference,
)
from pipeline.augment import Policy
from pipeline.config import RETRAIN
from pipeline.contracts import Chosen, FoundRecipeFile, Pareto, RetrainMetrics, ScoredModel
from pipeline.models import SPACE_POINTS, build_model, count_macs, count_params

from ..data.trees import write_tree

REPO = Path(__file__).resolve().parents[2]
CHAMPION = SPACE_POINTS["airbench_like"]  # a seed point (640 k parameters)


def small_resnet() -> dict:
    """resnet20 with one block per stage: 78 k parameters, under 100 k."""
    config = copy.deepcopy(SPACE_POINTS["resnet20"])
    for block in config["blocks"]:
        block["repeats"] = 1
    return config


def scored(config: dict | str, accuracy: float, trial: int | None) -> ScoredModel:
    model = build_model(config)
    return ScoredModel(config=config, accuracy=accuracy, params=count_params(model), macs=count_macs(model),
                       trial=trial)


def make_project(root: Path, *, with_recipe: bool = True) -> Path:
    """A finished checkout as the stages leave it: params.yaml and outputs/."""
    for stage in ("search_model", "retrain", "search_recipe", "search_policy"):
        (root / "outputs" / stage).mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump({
        "model_search": {"max_params": 1_000_000, "references": ["resnet20", "mobilenetv2"]},
        "retrain": {"recipe": {"epochs": 3, "batch_size": 256}}}))
    champion = scored(CHAMPION, 0.70, trial=3)
    front = [champion, scored(SPACE_POINTS["resnet20"], 0.65, trial=4), scored(small_resnet(), 0.595, trial=5)]
    Pareto(fingerprint="fp", study="s", objectives=["accuracy", "params"], max_params=1_000_000, max_macs=None,
           max_train_cost=None, front=front, references={"mobilenetv2": scored("mobilenetv2", 0.60, None)},
           picks={"most_accurate": 3}).write(root / "outputs/search_model/pareto.json")
    Chosen(config=CHAMPION, accuracy=0.70, params=champion.params, macs=champion.macs, trial=3,
           seed_point="airbench_like").write(root / "outputs/search_model/chosen.json")
    RetrainMetrics(test_accuracy=0.5, tta="flip+translate", params=champion.params, macs=champion.macs,
                   train_minutes=0.5, epochs=2, train_images=24).write(root / "outputs/retrain/metrics.json")
    if with_recipe:
        FoundRecipeFile(searched=True, values={"epochs": 2}, recipe=RETRAIN.build(epochs=2).model_dump(),
                        architecture=CHAMPION).write(root / "outputs/search_recipe/recipe.json")
    policy = Policy([[("Rotate", 0.5, 0.3)], [("Invert", 0.2, 0.0), ("Color", 0.9, 0.6)]])
    (root / "outputs/search_policy/policy.json").write_text(policy.to_json())
    return root


def test_the_project_files_are_read_and_the_networks_listed_once(tmp_path: Path) -> None:
    found = read_champion(make_project(tmp_path / "a"))
    assert found.recipe.epochs == 2 and found.recipe_source.endswith("recipe.json")
    assert found.seed_point == "airbench_like" and found.max_params == 1_000_000 and found.policy is not None
    # without recipe.json: params.yaml's retrain.recipe
    fallback = read_champion(make_project(tmp_path / "b", with_recipe=False))
    assert (fallback.recipe.epochs, fallback.recipe.batch_size) == (3, 256) and fallback.recipe_source.startswith("params")
    listed = networks(found, retrain_champion=False)
    # resnet20 is also the front's largest under 300 k: one row, noted; the 78 k member is its own row
    assert [n.key for n in listed] == ["airbench94", "airbench_like", "airbench_small", "resnet20", "mobilenetv2",
                                       "trial5"]
    assert any("under 300 k" in note for note in listed[3].notes)
    assert any("champion's configuration" in note for note in listed[1].notes)
    near = smallest_within_reference(found.pareto)
    assert near is not None and near.trial == 5  # 0.595 is within 1 point of MobileNetV2's 0.60


@pytest.mark.slow
def test_quick_run_prints_the_table_and_a_result_line(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    data = write_tree(tmp_path / "tree", 8, test_per_class=4)
    command = [sys.executable, "-m", "bench.handmade", "--quick", "--data", str(data), "--project", str(project),
               "--retrain-champion"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"network", "champion (trial 3)", "champion (re-trained here)", "airbench94",
                         "airbench_small", "resnet20", "mobilenetv2", "trial 5"}
    assert "seed point airbench_like" in rows["champion (trial 3)"]
    assert "not re-trained here" in rows["champion (trial 3)"]
    assert "= airbench_like" in rows["champion (re-trained here)"]
    cells = [c.strip() for c in rows["airbench94"].split("|")[1:-1]]
    assert int(cells[1].replace(",", "")) > 1_900_000 and cells[3] == "1" and cells[6] == "no"  # outside 1 M
    assert [c.strip() for c in rows["trial 5"].split("|")[1:-1]][6] == "yes"
    assert lines[-1].startswith("RESULT ")
    fields = dict(item.split("=", 1) for item in shlex.split(lines[-1])[1:])
    assert fields["bench"] == "handmade" and fields["quick"] == "True" and fields["champion_source"] == "retrained"
    assert fields["champion_seed_point"] == "airbench_like" and fields["budget_params"] == "1000000"
    assert fields["best_handmade"] in {"airbench_small", "resnet20"}  # within 1 M and not the champion's
    assert 0 <= float(fields["best_handmade_acc"]) <= 1 and fields["met"] in {"True", "False"}
    assert fields["met"] == str(float(fields["best_handmade_acc"]) <= float(fields["champion_acc"]))
    assert (fields["smallest_within_mobilenetv2"], fields["mobilenetv2_val_acc"]) == ("trial5", "0.6")
    assert fields["smallest_within_mobilenetv2_params"] == "78042" and fields["train_images"] == "24"
    assert fields["recipe"] == "recipe.json" and fields["tta"] == "flip+translate" and "machine" in fields


def test_minutes_must_be_positive(tmp_path: Path) -> None:
    """--minutes replaces the champion's minutes as the hand-made rows' budget; a budget of no
    time is refused in one line before any data is read."""
    project = make_project(tmp_path / "proj")
    command = [sys.executable, "-m", "bench.handmade", "--data", str(tmp_path / "none"), "--project", str(project),
               "--minutes", "0"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "--minutes must be positive, got 0.0" in result.stderr


@pytest.mark.slow
def test_a_run_with_out_resumes_from_the_file_alone(tmp_path: Path) -> None:
    """--out keeps the plan and each training: a second run with the project gone trains only what
    is new, reads the rest back, and its table holds both; a project whose champion is not the
    plan's is refused in one line; on another machine new rows are matched to the champion's
    predicted retrain there, and say so."""
    project = make_project(tmp_path / "proj")
    data = write_tree(tmp_path / "tree", 8, test_per_class=4)
    out = tmp_path / "handmade.json"

    def bench(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "bench.handmade", "--quick", "--data", str(data), "--out", str(out), *extra]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)

    first = bench("--project", str(project), "--only", "trial5")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    kept = json.loads(out.read_text())
    assert list(kept["rows"]) == ["trial5:0:24:quick"] and kept["plan"]["champion"]["chosen"]["trial"] == 3
    assert first.stdout.strip().splitlines()[-1].endswith("partial=trial5")

    other = make_project(tmp_path / "other")  # another project's champion: not this plan's
    RetrainMetrics(test_accuracy=0.6, tta="flip+translate", train_minutes=0.5, epochs=2,
                   train_images=24).write(other / "outputs/retrain/metrics.json")
    refused = bench("--project", str(other))
    assert refused.returncode == 2 and "not the one" in refused.stderr
    # the plan fixes the seeds and whether the champion is re-trained: the rows' minutes depend on them;
    # a resume may add seeds of the rows it names
    refused = bench("--seeds", "0", "1")
    assert refused.returncode == 2 and "plan trains seeds [0]; more seeds of some rows: name them with --only" \
        in refused.stderr
    refused = bench("--retrain-champion")
    assert refused.returncode == 2 and "leave out --retrain-champion" in refused.stderr

    shutil.rmtree(project)
    second = bench("--only", "resnet20")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "trial 5 seed 0 (from --out)" in second.stdout and "resnet20 seed 0 (trained)" in second.stdout
    table_rows = [line.split("|")[1].strip() for line in second.stdout.splitlines()
                  if line.startswith("| ") and "---" not in line]
    assert table_rows == ["network", "champion (trial 3)", "resnet20", "trial 5"]
    assert second.stdout.strip().splitlines()[-1].endswith("partial=resnet20,trial5")
    assert set(json.loads(out.read_text())["rows"]) == {"trial5:0:24:quick", "resnet20:0:24:quick"}
    more = bench("--seeds", "0", "1", "--only", "trial5")
    assert more.returncode == 0, more.stdout[-2000:] + more.stderr[-3000:]
    assert "trial 5 seed 0 (from --out)" in more.stdout and "trial 5 seed 1 (trained)" in more.stdout
    notes = {line.split("|")[1].strip(): line.split("|")[-2] for line in more.stdout.splitlines()
             if line.startswith("| ") and "---" not in line}
    assert "median of 2 seeds" in notes["trial 5"] and "seeds" not in notes["resnet20"]
    kept = json.loads(out.read_text())
    assert kept["plan"]["seeds"] == [0] and kept["rows"]["trial5:1:24:quick"]["epochs"] == 1
    again = bench("--only", "resnet20")  # the plan's seeds for new work; the extra one is still shown
    assert again.returncode == 0 and "trial 5 seed 1 (from --out)" in again.stdout
    assert "resnet20 seed 1" not in again.stdout

    # a plan made on another CPU: a new row is matched to the champion's retrain predicted here
    moved = json.loads(out.read_text())
    moved["plan"]["machine"] = "cpu='another' simd=AVX2 bf16=none threads=2 gpu='none'"
    for row in moved["rows"].values():  # the rows so far trained there too
        row["machine"] = moved["plan"]["machine"]
    out.write_text(json.dumps(moved))
    moved["plan"]["retrain_champion"] = True
    out.write_text(json.dumps(moved))
    refused = bench("--retrain-champion")
    assert refused.returncode == 2 and "this machine is" in refused.stderr
    refused = bench("--retrain-champion", "--seeds", "0", "1", "--only", "resnet20")
    assert refused.returncode == 2 and "its champion is re-trained" in refused.stderr
    moved["plan"]["retrain_champion"] = False
    out.write_text(json.dumps(moved))
    elsewhere = bench("--only", "airbench_small")
    assert elsewhere.returncode == 0, elsewhere.stdout[-2000:] + elsewhere.stderr[-3000:]
    assert "predicted on this machine, not the plan's cpu='another'" in elsewhere.stdout
    notes = {line.split("|")[1].strip(): line.split("|")[-2] for line in elsewhere.stdout.splitlines()
             if line.startswith("| ") and "---" not in line}
    assert "not the champion's machine" in notes["airbench_small"] and "machine" not in notes["resnet20"]
    assert "partial=airbench_small,resnet20,trial5 minutes_matched_here=" in elsewhere.stdout.strip().splitlines()[-1]
    kept = json.loads(out.read_text())["rows"]["airbench_small:0:24:quick"]
    assert kept["matched_to"] == "the champion's retrain predicted here" and kept["machine"] != moved["plan"]["machine"]
    # a later seed of a row trained there trains that row's epochs: nothing is predicted for it
    seed2 = bench("--seeds", "2", "--only", "resnet20")
    assert seed2.returncode == 0 and "resnet20 seed 2 (trained)" in seed2.stdout
    assert "predicted on this machine" not in seed2.stdout
    assert json.loads(out.read_text())["rows"]["resnet20:2:24:quick"]["matched_to"] == "the champion's minutes"
    # another bench's file is not this one's plan
    fidelity_out = tmp_path / "fidelity.json"
    fidelity_out.write_text(json.dumps({"plan": {"format": 1, "bench": "fidelity"}, "retrains": {}}))
    result = subprocess.run([sys.executable, "-m", "bench.handmade", "--data", str(data), "--out", str(fidelity_out)],
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and "holds no bench/handmade plan" in result.stderr


def test_the_champion_kept_in_a_plan_is_the_one_read(tmp_path: Path) -> None:
    found = read_champion(make_project(tmp_path / "a"))
    again = champion_from_plan(json.loads(json.dumps(champion_plan(found))))
    assert again == found


def test_rows_are_keyed_by_their_budget_and_matched_away_by_the_champions_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row's key says what its minutes were matched to (the champion's, --minutes, the recipe);
    away from the plan's machine the champion's retrain is predicted from its step here, for the
    epochs of a retrain from scratch (a fine-tune's are the recipe's)."""
    from bench import handmade

    found = read_champion(make_project(tmp_path / "a"))
    net = handmade.Network("resnet20", "resnet20", "resnet20", "hand-made")
    assert handmade.row_key(net, 1, 50_000, None, quick=False) == "resnet20:1:50000:matched"
    assert handmade.row_key(net, 1, 50_000, 25.0, quick=False) == "resnet20:1:50000:25min"
    assert handmade.row_key(net, 0, 24, None, quick=True) == "resnet20:0:24:quick"
    champ = handmade.Network("champion_retrained", "champion", CHAMPION, "champion")
    assert handmade.row_key(champ, 0, 50_000, None, quick=False) == "champion_retrained:0:50000:recipe"

    monkeypatch.setattr(handmade, "step_of", lambda *args, **kwargs: 0.5)
    train_set = type("Images", (), {"__len__": lambda self: 50_000, "classes": list(range(10))})()
    # metrics.json's retrain trained 2 epochs from scratch; the recipe's batch is the retrain's
    steps = math.ceil(50_000 / found.recipe.batch_size)
    assert found.epochs == 2
    assert handmade.champion_minutes_here(found, train_set, torch.device("cpu"), quick=False) == \
        pytest.approx(0.5 * steps * 2 / 60)
    tuned = dataclasses.replace(found, metrics=found.metrics.model_copy(
        update={"warm_start_from_version": 3, "epochs": 1}), recipe=found.recipe.model_copy(update={"epochs": 6}))
    assert tuned.epochs == 6 and tuned.minutes == pytest.approx(0.5 * 6)
    assert handmade.champion_minutes_here(tuned, train_set, torch.device("cpu"), quick=False) == \
        pytest.approx(0.5 * steps * 6 / 60)


def test_a_row_whose_training_collapses_is_kept_scored_as_it_was_and_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A network that diverges or collapses at the champion's recipe ends there: the row keeps its
    score with the error (a row lost would cost its whole training again), and the table says so."""
    from bench import handmade
    from pipeline.data import ImageSet

    from ..fakes import collapsed

    found = read_champion(make_project(tmp_path / "a"))

    def collapses(*args: object, **kwargs: object) -> None:
        raise collapsed(2, 40)

    monkeypatch.setattr(handmade, "train", collapses)
    monkeypatch.setattr(handmade, "step_of", lambda *args, **kwargs: 0.5)
    gen = torch.Generator().manual_seed(0)
    images = ImageSet(torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(20) % 10,
                      [str(c) for c in range(10)], [str(i) for i in range(20)])
    net = handmade.Network("resnet20", "resnet20", "resnet20", "hand-made")
    done: dict = {}
    row = handmade.run_network(net, found, images, images, [0], None, torch.device("cpu"), quick=True, done=done)
    assert done["resnet20:0:20:quick"]["failed"].startswith("training collapsed: training accuracy 0.100 at epoch 2")
    assert 0 <= row.accuracy <= 1 and row.failures == [f"seed 0: {done['resnet20:0:20:quick']['failed']}"]
    line = handmade.table(found, [row], "flip").splitlines()[-1]
    assert "stopped, seed 0: training collapsed" in line and "would start again at half the lr" in line
