from __future__ import annotations

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
