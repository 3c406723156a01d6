from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import EXIT_USER_ERROR, main
from pipeline.data import ImageSet, read_manifest

from .data.trees import write_tree


def test_ingest_and_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    tree = write_tree(tmp_path / "src", 10, test_per_class=2)
    assert main(["ingest", str(tree), "--store", "raw", "--no-dvc"]) == 0
    assert "added 30 train, 6 test" in capsys.readouterr().out
    (tmp_path / "params.yaml").write_text("sample:\n  size: 12\n")
    assert main(["sample", "--store", "raw", "--out", "sample"]) == 0
    manifest = read_manifest(tmp_path / "sample")
    assert manifest["class_counts"] == {"cat": 4, "dog": 4, "frog": 4}
    assert len(ImageSet.load(tmp_path / "sample" / "images.pt")) == 12


@pytest.mark.parametrize(
    "argv,params,message",
    [
        (["ingest", "does-not-exist", "--no-dvc"], None, "does-not-exist: no such file or directory"),
        (["sample", "--store", "raw"], None, "no raw store here yet"),
        (["sample"], "sample:\n  size: 0\n", "sample.size = 0"),
        (["search-model"], "model_search:\n  objectives: [params]\n",
         "model_search: objectives = ['params']: start with accuracy"),
        (["search-model"], "model_search:\n  choose: {reference: vgg}\n",
         "choose.reference = 'vgg' must be one of references"),
        (["search-model"], "model_search:\n  choose: {rule: under_budget}\n", "under_budget needs budget_params"),
        (["search-model"], None, "no policy file; run `dvc repro search_policy` first"),
        (["retrain"], "retrain:\n  recipe: {epochs: 0}\n", "retrain.recipe.epochs = 0"),
        (["retrain"], None, "no chosen model; run `dvc repro search_model` first"),
        (["retrain"], "retrain:\n  recipe: {label_smoothing: 1.5}\n", "retrain.recipe.label_smoothing = 1.5"),
        (["search-recipe"], "recipe_search:\n  lr: [0.5, 0.1]\n", "recipe_search: lr = [0.5, 0.1]"),
        (["search-recipe"], "recipe_search:\n  epochs: [0, 10]\n", "recipe_search: epochs = [0, 10]"),
        (["search-recipe"], None, "no chosen model; run `dvc repro search_model` first"),
        (["publish"], "publish:\n  margin: 2\n", "publish.margin = 2"),
        (["publish"], None, "no retrain metrics; run `dvc repro retrain` first"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: list[str], params: str | None, message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if params:
        (tmp_path / "params.yaml").write_text(params)
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    autoaug = Path(sys.executable).parent / "autoaug"  # the installed entry point
    done = subprocess.run([str(autoaug), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # commands are the first word of the lines indented by four spaces under COMMAND
    listed = {line.split()[0] for line in done.stdout.splitlines()
              if line.startswith("    ") and not line.startswith("     ")}
    assert {"ingest", "sample", "search-policy", "search-model", "search-recipe", "retrain", "publish",
            "serve"} <= listed
    for command in ("search-model", "retrain", "publish", "serve"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert f"usage: autoaug {command}" in capsys.readouterr().out
