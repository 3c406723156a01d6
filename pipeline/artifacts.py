"""What a published result is: the contract between ``publish``, the service and the client.

Layout under a root folder (``published/`` by default)::

    current.json                  {"policy": 3, "model": 2, "updated_at": "..."}
    policies/0003/policy.json     the policy (``Policy.to_json()``)
    policies/0003/meta.json       version, published_at, fingerprint, mlflow_run_id, studies, summary
    policies/0003/grid.png        optional picture of the policy
    models/0002/meta.json         version, published_at, config, classes, params, macs, metrics,
                                  fingerprint, lineage, files, export_error
    models/0002/state_dict.pt     ``torch.save(state_dict)``: ``build_model(config, len(classes))``
    models/0002/model.pt2         ``torch.export``: float images in [0, 1] -> logits, plain PyTorch

Consistency: a version folder is written completely under a hidden temporary name, renamed into
place (one ``rename``) and never changed afterwards; only then is ``current.json`` replaced
(``os.replace``). A reader that reads ``current.json`` once and then only that version's folder
therefore sees one whole version, the old or the new one, never a mix. Publishers serialise on
a lock file, so two concurrent publishes get distinct versions and neither pointer is lost.

The readers (``current_*``, ``get_*``, ``*_history``) only read; the service and the client use
them. Versions count from 1 per kind (policy, model); history is newest first.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from pipeline.augment import Policy, PolicyError
from pipeline.errors import AutoaugError, first_line
from pipeline.files import write_text_atomic

try:  # POSIX: publishers serialise on a lock file; elsewhere one publisher at a time is assumed
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DEFAULT_ROOT = Path("published")
CURRENT_FILE = "current.json"
META_FILE = "meta.json"
POLICY_FILE = "policy.json"
GRID_FILE = "grid.png"
STATE_DICT_FILE = "state_dict.pt"
EXPORTED_FILE = "model.pt2"
LOCK_FILE = ".publish.lock"
_TMP_PREFIX = ".tmp-"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Kind = Literal["policy", "model"]
_FOLDERS: dict[Kind, str] = {"policy": "policies", "model": "models"}

IMAGE_SIZE = 32
"""The exported model's input: float32 [N, 3, 32, 32] in [0, 1]."""


class ArtifactError(AutoaugError):
    """A published folder cannot be written or read as the contract says."""


class UnknownVersionError(ArtifactError, LookupError):
    """The requested version was never published (or its folder is gone)."""


# ------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class _Record:
    """One published version: ``path`` is its folder, ``meta`` its meta.json."""

    version: int
    path: Path
    meta: dict[str, Any]

    @property
    def published_at(self) -> str:
        return str(self.meta.get("published_at", ""))

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("fingerprint")


@dataclass(frozen=True)
class PolicyRecord(_Record):
    """One published policy version."""

    @property
    def policy_path(self) -> Path:
        return self.path / POLICY_FILE

    @property
    def grid_path(self) -> Path | None:
        """The published grid picture, or None when publish wrote none."""
        path = self.path / GRID_FILE
        return path if path.is_file() else None

    def policy_text(self) -> str:
        """policy.json as published (what the service serves byte for byte)."""
        try:
            return self.policy_path.read_text()
        except OSError as exc:
            raise ArtifactError(f"policy version {self.version}: cannot read {self.policy_path}: "
                                f"{first_line(exc)}") from exc

    def policy(self) -> Policy:
        """The published policy, validated (ArtifactError when what was published is not one)."""
        try:
            return Policy.from_json(self.policy_text())
        except PolicyError as exc:
            raise ArtifactError(f"policy version {self.version}: {self.policy_path} is not a valid policy "
                                f"({first_line(exc)})") from exc


@dataclass(frozen=True)
class ModelRecord(_Record):
    """One published model version."""

    def _field(self, key: str) -> Any:
        try:
            return self.meta[key]
        except KeyError:
            raise ArtifactError(f"model version {self.version}: {self.path / META_FILE} has no {key!r}") from None

    @property
    def classes(self) -> list[str]:
        classes = self._field("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ArtifactError(f"model version {self.version}: 'classes' must be a list of names")
        return list(classes)

    @property
    def config(self) -> dict[str, Any] | str:
        """A search-space config dict or a baseline name (``pipeline.models.build_model``)."""
        return copy.deepcopy(self._field("config"))

    def count(self, key: str) -> int:
        """An integer of meta.json (``params``, ``macs``), ArtifactError when missing or not one."""
        value = self._field(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ArtifactError(f"model version {self.version}: {key!r} must be an integer, got {value!r}")
        return int(value)

    @property
    def state_dict_path(self) -> Path:
        return self.path / STATE_DICT_FILE

    @property
    def exported_path(self) -> Path | None:
        """model.pt2 (plain-PyTorch ``torch.export`` program), or None if export failed."""
        path = self.path / EXPORTED_FILE
        return path if path.is_file() else None

    def load(self, device: str | torch.device = "cpu") -> nn.Module:
        """The network rebuilt from its config with the published weights, in eval mode."""
        from pipeline.models import build_model

        try:
            model = build_model(self.config, len(self.classes))
            state = torch.load(self.state_dict_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            raise ArtifactError(
                f"model version {self.version}: cannot load {self.state_dict_path}: {first_line(exc)}"
            ) from exc
        return model.to(device).eval()


@dataclass(frozen=True)
class Current:
    """The pointers of current.json: which version of each kind is current (None: none yet)."""

    policy: int | None
    model: int | None
    updated_at: str | None


# ------------------------------------------------------------------------------ readers


def read_current(root: str | os.PathLike[str] = DEFAULT_ROOT) -> Current:
    """current.json (all None when nothing was published yet)."""
    path = Path(root) / CURRENT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Current(None, None, None)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable ({first_line(exc)})") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")

    def pointer(key: str) -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArtifactError(f"{path}: {key!r} must be a positive version number, got {value!r}")
        return value

    return Current(pointer("policy"), pointer("model"), data.get("updated_at"))


def _version_dir(root: Path, kind: Kind, version: int) -> Path:
    return root / _FOLDERS[kind] / f"{version:04d}"


def _versions(root: Path, kind: Kind) -> list[int]:
    """Published versions of ``kind``, ascending (only complete folders: temporary ones are hidden)."""
    folder = root / _FOLDERS[kind]
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / META_FILE).is_file())


def _read_meta(root: Path, kind: Kind, version: int) -> tuple[Path, dict[str, Any]]:
    path = _version_dir(root, kind, version)
    try:
        meta = json.loads((path / META_FILE).read_text())
    except FileNotFoundError:
        known = _versions(root, kind)
        have = f"published: {_ranges(known)}" if known else "none published yet"
        raise UnknownVersionError(f"{kind} version {version} is not published ({have})") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path / META_FILE}: unreadable ({first_line(exc)})") from exc
    return path, meta


def _ranges(versions: Sequence[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5' (for error messages)."""
    parts: list[str] = []
    for v in sorted(versions):
        if parts and parts[-1].split("-")[-1] == str(v - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        else:
            parts.append(str(v))
    return ", ".join(parts)


def get_policy(root: str | os.PathLike[str], version: int) -> PolicyRecord:
    """Policy ``version``; raises UnknownVersionError (a LookupError) if it was never published."""
    path, meta = _read_meta(Path(root), "policy", version)
    return PolicyRecord(version, path, meta)


def get_model(root: str | os.PathLike[str], version: int) -> ModelRecord:
    """Model ``version``; raises UnknownVersionError (a LookupError) if it was never published."""
    path, meta = _read_meta(Path(root), "model", version)
    return ModelRecord(version, path, meta)


def _current_record(root: Path, kind: Kind, version: int | None) -> Any:
    if version is None:
        return None
    try:
        return get_policy(root, version) if kind == "policy" else get_model(root, version)
    except UnknownVersionError:
        raise ArtifactError(
            f"{root / CURRENT_FILE} names {kind} version {version}, but "
            f"{_version_dir(root, kind, version)} is missing; run publish again"
        ) from None


def current_policy(root: str | os.PathLike[str] = DEFAULT_ROOT) -> PolicyRecord | None:
    """The current policy, or None when no policy was published yet."""
    root = Path(root)
    record: PolicyRecord | None = _current_record(root, "policy", read_current(root).policy)
    return record


def current_model(root: str | os.PathLike[str] = DEFAULT_ROOT) -> ModelRecord | None:
    """The current model (the champion), or None when no model was published yet."""
    root = Path(root)
    record: ModelRecord | None = _current_record(root, "model", read_current(root).model)
    return record


def policy_history(root: str | os.PathLike[str] = DEFAULT_ROOT) -> list[PolicyRecord]:
    """Every published policy, newest first."""
    root = Path(root)
    return [get_policy(root, v) for v in reversed(_versions(root, "policy"))]


def model_history(root: str | os.PathLike[str] = DEFAULT_ROOT) -> list[ModelRecord]:
    """Every published model, newest first."""
    root = Path(root)
    return [get_model(root, v) for v in reversed(_versions(root, "model"))]


# ------------------------------------------------------------------------------ writers


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON values from what stages hand over (numpy/torch scalars, tuples, paths)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ArtifactError(f"{where}: {value} is not a finite number")
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return _jsonable(item(), where)
    raise ArtifactError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def _dump(meta: Mapping[str, Any]) -> str:
    return json.dumps(_jsonable(meta, "meta"), indent=2, allow_nan=False) + "\n"


@contextlib.contextmanager
def _publish_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(root / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clear_stale_tmp(folder: Path) -> None:
    """Temporary folders left by an interrupted publish (safe: we hold the publish lock)."""
    for path in folder.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


def _set_current(root: Path, kind: Kind, version: int) -> None:
    current = read_current(root)
    pointers = {"policy": current.policy, "model": current.model}
    pointers[kind] = version
    write_text_atomic(root / CURRENT_FILE, json.dumps({**pointers, "updated_at": _now()}, indent=2) + "\n")


@contextlib.contextmanager
def _new_version(root: Path, kind: Kind) -> Iterator[tuple[int, Path]]:
    """Yield (version, temporary folder) to fill; on success the folder is renamed into place.

    Callers hold the publish lock, so the version number is free; ``rename`` refuses to replace
    a non-empty folder, so even a publisher without the lock cannot overwrite a version.
    """
    folder = root / _FOLDERS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    _clear_stale_tmp(folder)
    version = (max(_versions(root, kind), default=0)) + 1
    tmp = folder / f"{_TMP_PREFIX}{version:04d}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield version, tmp
        target = _version_dir(root, kind, version)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            raise ArtifactError(f"{target} already exists: another publisher wrote {kind} {version}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_policy(
    root: str | os.PathLike[str],
    policy: Policy,
    *,
    fingerprint: str,
    mlflow_run_id: str | None,
    summary: Mapping[str, Any],
    grid_png: bytes | None = None,
    studies: Sequence[str] = (),
    promote: bool = True,
) -> PolicyRecord:
    """Publish ``policy`` as the next policy version and (``promote``) make it current.

    summary: free-form numbers about the search (score, trials, ...), shown by the service.
    grid_png: a picture of the policy (``pipeline.augment.policy_grid``), optional.
    promote=False adds the version to the history without switching the service to it.
    """
    if grid_png is not None and not grid_png.startswith(_PNG_SIGNATURE):
        raise ArtifactError("grid_png: not PNG data")
    text = policy.to_json()
    summary = _jsonable(summary, "summary")
    root = Path(root)
    with _publish_lock(root):
        with _new_version(root, "policy") as (version, tmp):
            meta = {
                "kind": "policy",
                "version": version,
                "published_at": _now(),
                "fingerprint": fingerprint,
                "mlflow_run_id": mlflow_run_id,
                "studies": list(studies),
                "summary": dict(summary),
                "sub_policies": len(policy),
                "policy_sha256": hashlib.sha256(text.encode()).hexdigest(),
            }
            (tmp / POLICY_FILE).write_text(text)
            if grid_png is not None:
                (tmp / GRID_FILE).write_bytes(grid_png)
            (tmp / META_FILE).write_text(_dump(meta))
        if promote:
            _set_current(root, "policy", version)
    return get_policy(root, version)


class NormalisedClassifier(nn.Module):
    """What model.pt2 holds: float images in [0, 1], [N, 3, 32, 32] -> logits.

    Normalises with the CIFAR-10 statistics exactly as training did
    (``pipeline.train.normalise`` on uint8 = this on uint8 / 255).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from pipeline.train import CIFAR_MEAN, CIFAR_STD

        self.model = model
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


def export_model(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``model`` (CPU, eval mode) wrapped in NormalisedClassifier as a torch.export
    program with a dynamic batch dimension: ``torch.export.load(path).module()(images)``."""
    wrapper = NormalisedClassifier(model).eval()
    example = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with torch.no_grad():
        program = torch.export.export(wrapper, (example,), dynamic_shapes={"images": {0: batch}})
    torch.export.save(program, os.fspath(path))


def publish_model(
    root: str | os.PathLike[str],
    model: nn.Module,
    *,
    config: dict[str, Any] | str,
    classes: Sequence[str],
    metrics: Mapping[str, Any],
    fingerprint: str,
    lineage: Mapping[str, Any],
    export: bool = True,
    promote: bool = True,
) -> ModelRecord:
    """Publish ``model`` as the next model version and (``promote``) make it the champion.

    config: what ``pipeline.models.build_model`` builds the network from (a search-space dict
    or a baseline name); the weights are checked to load into it before anything is written.
    metrics: test_accuracy, per_class_accuracy {class: accuracy}, tta, latency_ms, ...
    lineage: where it came from, by convention ``{"mlflow_run_ids": {stage: run id},
    "registry": {"name": ..., "version": ...}, "policy_version": 3, "studies": [...]}``.
    export=False skips model.pt2 (recorded in meta as ``export_error``); if torch.export fails
    the model is published without it, with the reason in ``export_error`` and a warning.
    """
    from pipeline.models import build_model, count_macs, count_params

    classes = [str(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ArtifactError(f"classes: expected distinct class names, got {classes!r}")
    # Fail on unserialisable metadata before the (slow) export, not after it.
    config, metrics, lineage = (
        _jsonable(config, "config"), _jsonable(metrics, "metrics"), _jsonable(lineage, "lineage")
    )
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    try:
        rebuilt = build_model(copy.deepcopy(config), len(classes))
        rebuilt.load_state_dict(state)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ArtifactError(f"model does not match config {config!r}: {first_line(exc)}") from exc
    rebuilt.eval()
    root = Path(root)
    with _publish_lock(root):
        with _new_version(root, "model") as (version, tmp):
            torch.save(state, tmp / STATE_DICT_FILE)
            export_error: str | None = "export=False" if not export else None
            if export:
                try:
                    export_model(rebuilt, tmp / EXPORTED_FILE)
                except Exception as exc:  # torch.export raises many types; publishing goes on
                    export_error = f"{type(exc).__name__}: {first_line(exc)}"
                    (tmp / EXPORTED_FILE).unlink(missing_ok=True)
                    warnings.warn(f"model {version}: torch.export failed, no model.pt2 ({export_error})",
                                  stacklevel=2)
            meta = {
                "kind": "model",
                "version": version,
                "published_at": _now(),
                "config": config,
                "classes": classes,
                "params": count_params(rebuilt),
                "macs": count_macs(rebuilt),
                "metrics": dict(metrics),
                "fingerprint": fingerprint,
                "lineage": dict(lineage),
                "files": {
                    "state_dict": STATE_DICT_FILE,
                    "exported": EXPORTED_FILE if export_error is None else None,
                },
                "export_error": export_error,
                "input": {
                    "shape": ["N", 3, IMAGE_SIZE, IMAGE_SIZE],
                    "dtype": "float32",
                    "range": [0.0, 1.0],
                    "normalisation": "inside model.pt2 (CIFAR-10 mean/std)",
                },
                "torch_version": torch.__version__,
            }
            (tmp / META_FILE).write_text(_dump(meta))
        if promote:
            _set_current(root, "model", version)
    return get_model(root, version)


__all__ = [
    "DEFAULT_ROOT",
    "ArtifactError",
    "Current",
    "ModelRecord",
    "NormalisedClassifier",
    "PolicyRecord",
    "UnknownVersionError",
    "current_model",
    "current_policy",
    "export_model",
    "get_model",
    "get_policy",
    "model_history",
    "policy_history",
    "publish_model",
    "publish_policy",
    "read_current",
]
