"""Study identity, storage and warm start.

Study identity = stage + hash of the search space + data fingerprint. A new fingerprint means a
new study; it is warm-started from the most recent prior study with the same stage and space
hash by re-evaluating that study's best configurations first (``enqueue_trial``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from pipeline.errors import ConfigError, first_line
from pipeline.files import ensure_sqlite_dir


def space_hash(space: Any) -> str:
    """A short, order-independent hash of a JSON-serialisable search-space description."""
    text = json.dumps(space, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def study_name(stage: str, space: str, fingerprint: str, part: str | None = None) -> str:
    name = f"{stage}-{space}-{fingerprint}"
    return f"{name}-{part}" if part else name


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage, or a ConfigError naming the URL when it cannot be reached.

    The heartbeat lets a restarted stage (or another worker sharing the storage) mark trials of
    a killed process as failed instead of waiting on them for ever.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ensure_sqlite_dir(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90)
        if url.startswith("sqlite"):
            _fast_sqlite(storage)
        storage.get_all_studies()
    except Exception as exc:  # noqa: BLE001 - connection, driver or URL errors all mean "unusable"
        raise ConfigError(
            f"tracking.optuna_storage = {url!r}: cannot open the study storage ({first_line(exc)[:200]})"
        ) from None
    return storage


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """WAL journal + synchronous=NORMAL: Optuna commits once per suggested parameter, and with
    SQLite's default (a full fsync per commit) that bookkeeping cost more than scoring a policy.
    WAL stays crash-safe: a power cut can lose the last commits, never corrupt the file."""
    from sqlalchemy import event

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened during set-up reconnect with the pragmas


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def prior_study(storage: optuna.storages.BaseStorage, stage: str, space: str, fingerprint: str,
                part: str | None = None) -> optuna.Study | None:
    """The most recent study of the same stage, space and part on other data, if any."""
    prefix = f"{stage}-{space}-"
    candidates = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        name = s.study_name
        if not name.startswith(prefix) or fingerprint in name:
            continue
        if part is not None and not name.endswith(f"-{part}"):
            continue
        if s.n_trials == 0 or s.datetime_start is None:
            continue
        candidates.append((s.datetime_start, name))
    if not candidates:
        return None
    return optuna.load_study(study_name=max(candidates)[1], storage=storage)


def warm_start(study: optuna.Study, prior: optuna.Study, top_k: int, maximize: bool = True) -> int:
    """Enqueue the ``top_k`` best configurations of ``prior``; returns how many were enqueued.

    Only done once per study (a study that already has trials was warm-started or has its own
    history), so a resumed stage does not enqueue them again.
    """
    if study.get_trials(deepcopy=False):
        return 0
    trials = [t for t in completed(prior) if t.value is not None]
    trials.sort(key=lambda t: t.value if t.value is not None else 0.0, reverse=maximize)
    seen: set[str] = set()
    n = 0
    for t in trials:
        key = json.dumps(t.params, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        study.enqueue_trial(t.params, user_attrs={"warm_start_from": prior.study_name})
        n += 1
        if n >= top_k:
            break
    return n
