"""MLflow tracking: one experiment per stage, a parent run per stage execution, nested runs.

Everything goes through an explicit ``MlflowClient`` (no fluent global state), so stages and
tests can point at different stores. Runs are tagged with the data fingerprint, the study name,
the git commit and the DVC stage, so a served policy or model traces back to its data.

Interruptions: a stage run is found again by its resume-key tag (``names.RESUME_KEY``) and reused while it
is unfinished, and child runs are keyed by a tag (e.g. the Optuna trial number), so a stage that
is killed and restarted continues its runs instead of duplicating them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pipeline import names
from pipeline.errors import ConfigError, first_line
from pipeline.files import ensure_sqlite_dir, sqlite_setup_lock

RESUME_KEY = names.RESUME_KEY
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
PARENT = "mlflow.parentRunId"
T = TypeVar("T")
MAX_PARAM_CHARS = 6000


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _quiet_mlflow() -> None:
    # MLflow's alembic migrations and telemetry are noise in a stage's output.
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # With a tracking server MLflow prints two "View run" lines per finished run: with a nested
    # run per trial, hundreds of lines that bury the progress bar.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import logging

    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking", "mlflow.store"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _check_server(uri: str) -> None:
    """An http(s) tracking server answers its health endpoint within seconds, or the URI is
    reported at once (MLflow's own client retries with back-off for about four minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
            pass
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"tracking.mlflow_uri = {uri!r}: cannot reach the MLflow server ({reason})") from None


class Tracker:
    """Connection to an MLflow tracking store, with the project's naming conventions."""

    def __init__(self, uri: str, prefix: str = "autoaug") -> None:
        _quiet_mlflow()
        from mlflow import MlflowClient

        ensure_sqlite_dir(uri)
        _check_server(uri)
        self.uri = uri
        self.prefix = prefix
        try:
            with sqlite_setup_lock(uri):  # a new SQLite store is migrated by one process at a time
                self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                self.client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure here means "unreachable" to the user
            raise ConfigError(f"tracking.mlflow_uri = {uri!r}: cannot reach the MLflow store ({first_line(exc)})") from None

    def experiment_id(self, stage: str) -> str:
        """The stage's experiment, created on first use. Tagged as model development so the
        MLflow 3 UI opens it on its training runs, not on the (empty) GenAI overview."""
        name = f"{self.prefix}-{stage}"
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return str(self.client.create_experiment(name, tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT}))
        if exp.tags.get(EXPERIMENT_KIND) != MODEL_DEVELOPMENT:  # made by an older version
            self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
        return str(exp.experiment_id)

    # Registry primitives; what the @champion is (and how its files are read) is pipeline.champion's.

    def version_by_alias(self, model_name: str, alias: str) -> Any | None:
        """The registered model's version under ``alias``, or None (no such model or alias yet)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(model_name, alias)
        except MlflowException:
            return None

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name, alias, version)

    def artifact(self, run_id: str, path: str, read: Callable[[Path], T]) -> T | None:
        """``read`` applied to a run's artifact (downloaded to a temporary folder), or None when
        the run has no such artifact. Other failures (an unreachable store) propagate."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, path, tmp)
            except FileNotFoundError:
                return None
            except MlflowException as e:
                if e.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                    raise
                return None
            return read(Path(local))

    def find_stage_run(self, stage: str, resume_key: str) -> tuple[RunLogger, str] | None:
        """The latest parent run of ``stage`` with ``resume_key`` and its status, or None (what a
        worker joins: it logs trials under the stage's run and never creates or ends one)."""
        exp = self.client.get_experiment_by_name(f"{self.prefix}-{stage}")
        if exp is None:
            return None
        runs = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`{RESUME_KEY}` = '{resume_key}'",
                                       max_results=10, order_by=["attributes.start_time DESC"])
        found = [r for r in runs if PARENT not in r.data.tags]
        if not found:
            return None
        return RunLogger(self, exp.experiment_id, found[0].info.run_id, resumed=True), found[0].info.status

    @contextlib.contextmanager
    def stage_run(self, stage: str, *, resume_key: str, tags: Mapping[str, Any] | None = None,
                  params: Mapping[str, Any] | None = None) -> Iterator[RunLogger]:
        """The parent run of one stage execution; an unfinished run with the same key is resumed."""
        exp_id = self.experiment_id(stage)
        tags = {RESUME_KEY: resume_key, names.DVC_STAGE: stage, **(tags or {})}
        commit = git_commit()
        if commit:
            tags.setdefault("mlflow.source.git.commit", commit)
        unfinished = self.client.search_runs(
            [exp_id], filter_string=f"tags.`{RESUME_KEY}` = '{resume_key}' and attributes.status != 'FINISHED'",
            max_results=10, order_by=["attributes.start_time DESC"],
        )
        found = [r for r in unfinished if PARENT not in r.data.tags]
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            resumed = True
        else:
            run_id = self.client.create_run(exp_id, tags={k: str(v) for k, v in tags.items()}, run_name=stage).info.run_id
            resumed = False
        logger = RunLogger(self, exp_id, run_id, resumed=resumed)
        if params and not resumed:
            logger.log_params(params)
        try:
            yield logger
        except KeyboardInterrupt:
            self.client.set_terminated(run_id, status="KILLED")
            raise
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as dotted keys; values JSON-encoded when not scalar, cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:MAX_PARAM_CHARS]
    return out


class RunLogger:
    """Logging into one run (and creating nested runs below it)."""

    def __init__(self, tracker: Tracker, experiment_id: str, run_id: str, *, resumed: bool = False) -> None:
        self.tracker = tracker
        self.client = tracker.client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.resumed = resumed

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, v) for k, v in flatten(params).items() if k not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / Path(artifact_file).name
            path.write_bytes(data)
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(self.run_id, str(path), None if parent == "." else parent)

    def children_runs(self, key_tag: str) -> dict[str, list[str]]:
        """Existing nested runs of this run by the value of ``key_tag``, oldest first (more than
        one only when two processes raced to create the same one)."""
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{PARENT}` = '{self.run_id}'",
                                       max_results=5000, order_by=["attributes.start_time ASC"])
        out: dict[str, list[str]] = {}
        for r in runs:
            if key_tag in r.data.tags:
                out.setdefault(r.data.tags[key_tag], []).append(r.info.run_id)
        return out

    def children(self, key_tag: str) -> dict[str, str]:
        """Existing nested runs of this run, by the value of ``key_tag`` (the oldest of each)."""
        return {key: ids[0] for key, ids in self.children_runs(key_tag).items()}

    def child(self, name: str, *, key_tag: str, key: str, tags: Mapping[str, Any] | None = None) -> RunLogger:
        """The nested run keyed ``key_tag=key``, created if it does not exist yet."""
        existing = self.children(key_tag).get(key)
        if existing:
            return RunLogger(self.tracker, self.experiment_id, existing, resumed=True)
        all_tags = {PARENT: self.run_id, key_tag: key, **(tags or {})}
        run = self.client.create_run(self.experiment_id, tags={k: str(v) for k, v in all_tags.items()}, run_name=name)
        return RunLogger(self.tracker, self.experiment_id, run.info.run_id)

    def log_finished_child(
        self, name: str, *, key_tag: str, key: str, params: Mapping[str, Any], metrics: Mapping[str, float],
        tags: Mapping[str, Any] | None = None, dicts: Mapping[str, Mapping[str, Any]] | None = None,
        curves: Mapping[str, Sequence[float]] | None = None,
    ) -> str:
        """One finished nested run written in a single batch (+ small JSON artifacts).

        ``curves`` are per-epoch series (e.g. a candidate's validation accuracy), logged as
        metric histories with the epoch as step so the MLflow UI draws them."""
        from mlflow.entities import Metric, Param, RunTag

        all_tags = {PARENT: self.run_id, key_tag: key, **(tags or {})}
        run = self.client.create_run(self.experiment_id, tags={k: str(v) for k, v in all_tags.items()}, run_name=name)
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        series = [Metric(k, float(v), now, step) for k, values in (curves or {}).items()
                  for step, v in enumerate(values, start=1)]
        self.client.log_batch(
            run_id,
            params=[Param(k, v) for k, v in flatten(params).items()],
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()] + series,
            tags=[RunTag(names.KIND, "trial")],
        )
        for artifact_file, data in (dicts or {}).items():
            self.client.log_dict(run_id, dict(data), artifact_file)
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id

    def log_model(self, model: Any, *, name: str, example: Any, registered_model: str | None = None,
                  tags: Mapping[str, Any] | None = None) -> str | None:
        """Log ``model`` (an ``nn.Module`` taking float images in [0, 1]) with MLflow's PyTorch
        flavour and register it as a new version of ``registered_model``; returns the version.

        Format: ``pt2`` (``torch.export``), chosen on purpose: it loads back without autoaug's
        code (``mlflow.pytorch.load_model`` in a plain environment), unlike ``pickle``. It
        needs an example input, which also fixes the signature; batch size > 1 keeps the
        batch dimension dynamic."""
        import mlflow
        import mlflow.pytorch

        mlflow.set_tracking_uri(self.tracker.uri)
        mlflow.set_registry_uri(self.tracker.uri)
        example_np = example.float().div(255).numpy() if hasattr(example, "numpy") else example
        with mlflow.start_run(run_id=self.run_id):
            # Requirements given, not inferred: inference re-imports the model in a subprocess
            # (~15 s) and a pt2 program needs nothing but torch.
            import torch

            info = mlflow.pytorch.log_model(model, name=name, input_example=example_np, serialization_format="pt2",
                                            registered_model_name=registered_model, await_registration_for=0,
                                            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        # start_run's context ends the run; the stage run's own context sets its final status.
        self.client.update_run(self.run_id, status="RUNNING")
        version = getattr(info, "registered_model_version", None)
        if registered_model is not None and version is not None:
            for key, value in (tags or {}).items():
                self.client.set_model_version_tag(registered_model, str(version), key, str(value))
        return str(version) if version is not None else None

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
