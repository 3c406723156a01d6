"""The published-artifacts contract: layout, versions, history, atomic pointer, readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pipeline.artifacts as artifacts
from pipeline.artifacts import (
    ArtifactError,
    UnknownVersionError,
    current_model,
    current_policy,
    get_model,
    get_policy,
    model_history,
    policy_history,
    publish_model,
    publish_policy,
    read_current,
)
from pipeline.models import build_model, count_macs, count_params
from pipeline.train import normalise

from .publishing import (
    CLASSES,
    FINGERPRINT,
    RUN_ID,
    add_model,
    add_policy,
    tiny_config,
    tiny_model,
    tiny_policy,
)


def test_nothing_published(tmp_path: Path) -> None:
    assert current_policy(tmp_path) is None and current_model(tmp_path) is None
    assert policy_history(tmp_path) == [] and model_history(tmp_path) == []
    assert read_current(tmp_path / "missing").model is None
    with pytest.raises(UnknownVersionError, match="policy version 1 is not published .none published yet"):
        get_policy(tmp_path, 1)


def test_policy_round_trip(tmp_path: Path) -> None:
    record = add_policy(tmp_path)
    assert record.version == 1 and record.path == tmp_path / "policies" / "0001"
    assert record.policy() == tiny_policy() and record.policy().metadata == {"source": "tests"}
    assert record.grid_path is not None and record.grid_path.read_bytes().startswith(b"\x89PNG")
    meta = json.loads((record.path / "meta.json").read_text())
    assert meta["fingerprint"] == FINGERPRINT and meta["mlflow_run_id"] == RUN_ID
    assert meta["summary"] == {"score": 0.8, "trials": 12} and meta["studies"][0].startswith("search_policy")
    assert meta["published_at"].endswith("+00:00")
    current = current_policy(tmp_path)
    assert current is not None and current.version == 1 and current.policy() == tiny_policy()
    assert read_current(tmp_path).model is None
    assert add_policy(tmp_path, grid=False).grid_path is None


def test_model_round_trip_and_export(tmp_path: Path) -> None:
    model = tiny_model(3)
    record = add_model(tmp_path, seed=3, accuracy=0.61)
    assert record.version == 1 and record.classes == CLASSES and record.config == tiny_config()
    assert record.meta["params"] == count_params(model) and record.meta["macs"] == count_macs(model) > 0
    assert record.meta["metrics"]["test_accuracy"] == 0.61
    assert record.meta["lineage"]["mlflow_run_ids"]["retrain"] == RUN_ID
    assert record.meta["export_error"] is None and record.exported_path is not None

    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(normalise(images, channels_last=False))
        loaded = record.load()
        assert not loaded.training
        torch.testing.assert_close(loaded(normalise(images, channels_last=False)), expected)
        exported = torch.export.load(str(record.exported_path)).module()
        torch.testing.assert_close(exported(images.float() / 255), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(exported(images[:1].float() / 255), expected[:1], atol=1e-5, rtol=1e-4)
    # the weights alone rebuild through build_model, as the contract says
    rebuilt = build_model(record.config, len(record.classes))
    rebuilt.load_state_dict(torch.load(record.state_dict_path, weights_only=True))


def test_exported_model_loads_without_autoaug(tmp_path: Path) -> None:
    record = add_model(tmp_path)
    script = (
        "import sys, torch\n"
        f"m = torch.export.load({str(record.exported_path)!r}).module()\n"
        "print(tuple(m(torch.rand(3, 3, 32, 32)).shape), 'pipeline' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.split()[-3:] == ["(3,", "10)", "False"]


def test_export_failure_is_recorded_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported op\nmore detail")

    monkeypatch.setattr(artifacts, "export_model", broken)
    with pytest.warns(UserWarning, match="torch.export failed"):
        record = add_model(tmp_path)
    assert record.exported_path is None and record.meta["export_error"] == "RuntimeError: unsupported op"
    assert record.meta["files"]["exported"] is None
    assert record.load() is not None
    assert add_model(tmp_path, export=False).meta["export_error"] == "export=False"


def test_versions_history_and_pointers(tmp_path: Path) -> None:
    for magnitude in (0.1, 0.2, 0.3):
        add_policy(tmp_path, magnitude)
    add_model(tmp_path, export=False)
    add_model(tmp_path, seed=1, export=False)
    assert [r.version for r in policy_history(tmp_path)] == [3, 2, 1]
    assert [r.policy().sub_policies[0].ops[0].magnitude for r in policy_history(tmp_path)] == [0.3, 0.2, 0.1]
    assert [r.version for r in model_history(tmp_path)] == [2, 1]
    current = read_current(tmp_path)
    assert (current.policy, current.model) == (3, 2)  # publishing one kind keeps the other pointer
    assert get_policy(tmp_path, 2).policy().sub_policies[0].ops[0].magnitude == 0.2
    with pytest.raises(LookupError, match=r"model version 7 is not published \(published: 1-2\)"):
        get_model(tmp_path, 7)
    # promote=False: in the history, not current
    record = publish_policy(tmp_path, tiny_policy(0.9), fingerprint="x", mlflow_run_id=None, summary={},
                            promote=False)
    assert record.version == 4 and read_current(tmp_path).policy == 3


def test_interrupted_publish_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_policy(tmp_path)

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "_set_current", crash)  # dies after the folder, before the pointer
    with pytest.raises(KeyboardInterrupt):
        add_policy(tmp_path, 0.9)
    monkeypatch.undo()
    assert read_current(tmp_path).policy == 1 and current_policy(tmp_path) is not None
    # a crash while writing the folder leaves no temporary folder and no version
    monkeypatch.setattr(artifacts, "_dump", crash)
    with pytest.raises(KeyboardInterrupt):
        add_policy(tmp_path, 0.7)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "policies").iterdir()) == ["0001", "0002"]
    assert add_policy(tmp_path, 0.4).version == 3


def test_reader_during_publish_sees_one_whole_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At every file-system step of a publish, a reader sees version 1 or version 2, complete."""
    add_model(tmp_path, seed=0, classes=["a", "b"], accuracy=0.1, export=False)
    seen: list[tuple[int, float, list[str]]] = []

    def read() -> None:
        record = current_model(tmp_path)
        assert record is not None
        meta = json.loads((record.path / "meta.json").read_text())
        record.load()  # the weights of the same folder fit its config and classes
        seen.append((record.version, meta["metrics"]["test_accuracy"], meta["classes"]))

    real_rename, real_replace = os.rename, os.replace

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        read()
        real_rename(src, dst)
        read()

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        read()
        real_replace(src, dst)
        read()

    monkeypatch.setattr(artifacts.os, "rename", rename)
    monkeypatch.setattr("pipeline.files.os.replace", replace)
    add_model(tmp_path, seed=1, classes=["a", "b", "c"], accuracy=0.9, export=False)
    assert len(seen) == 4
    assert set(map(str, seen)) == {str((1, 0.1, ["a", "b"])), str((2, 0.9, ["a", "b", "c"]))}
    assert seen[0][0] == 1 and seen[-1][0] == 2


def test_bad_inputs_are_refused_before_writing(tmp_path: Path) -> None:
    model = tiny_model()
    common = dict(metrics={}, fingerprint="x", lineage={})
    with pytest.raises(ArtifactError, match="model does not match config"):
        publish_model(tmp_path, model, config="resnet20", classes=CLASSES, **common)  # type: ignore[arg-type]
    with pytest.raises(ArtifactError, match="distinct class names"):
        publish_model(tmp_path, model, config=tiny_config(), classes=["a", "a"], **common)  # type: ignore[arg-type]
    with pytest.raises(ArtifactError, match="metrics.test_accuracy: nan is not a finite number"):
        publish_model(tmp_path, model, config=tiny_config(), classes=CLASSES, metrics={"test_accuracy": float("nan")},
                      fingerprint="x", lineage={})
    with pytest.raises(ArtifactError, match="grid_png: not PNG"):
        publish_policy(tmp_path, tiny_policy(), fingerprint="x", mlflow_run_id=None, summary={}, grid_png=b"GIF89a")
    assert model_history(tmp_path) == [] and policy_history(tmp_path) == []
    # numpy / torch scalars in metrics are stored as plain numbers
    record = publish_model(tmp_path, model, config=tiny_config(), classes=CLASSES, export=False,
                           metrics={"test_accuracy": torch.tensor(0.25)}, fingerprint="x", lineage={})
    assert record.meta["metrics"] == {"test_accuracy": 0.25}


def test_corrupt_pointer_is_a_clear_error(tmp_path: Path) -> None:
    add_policy(tmp_path)
    (tmp_path / "current.json").write_text(json.dumps({"policy": 5, "model": None}))
    with pytest.raises(ArtifactError, match="names policy version 5, but .* is missing"):
        current_policy(tmp_path)
    (tmp_path / "current.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="current.json: unreadable"):
        read_current(tmp_path)
