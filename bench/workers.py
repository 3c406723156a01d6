"""Distributed search: trials per minute with 1 and 2 processes on one PostgreSQL study, and the
cost of PostgreSQL + an MLflow server against the embedded SQLite default.

Two measurements:

1. Bookkeeping per trial, without any compute: a no-op objective that makes the same suggest
   calls as a Fast AutoAugment trial (n_sub x ops_per_sub x 3), run through the Optuna storage;
   and one nested MLflow trial run logged the way the runner logs it. SQLite files against
   PostgreSQL and an `mlflow server` on PostgreSQL. This is the ceiling of the whole deployment:
   every host's trials go through the same database and tracking server.
2. Real policy-search trials on the sample (`autoaug search-policy`, the stage, in a subprocess;
   children trained once into a shared cache first, so only trials are timed): the embedded
   default, then PostgreSQL + MLflow server with the stage alone, then with one
   `autoaug worker search_policy` beside it. Trials per minute = finished trials over the time
   between the first trial's start and the last one's end, per fold, summed.

    python -m bench.workers --data data/raw --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import yaml

from bench.common import base_parser, machine, result_line
from pipeline.config import Params, load_params
from pipeline.data import load_data, stable_sample, write_sample
from pipeline.names import STUDY, TRIAL, WORKER_ATTR
from pipeline.search.studies import open_storage
from pipeline.tracking import Tracker

BIN = Path(sys.executable).parent


@contextmanager
def databases(pg_url: str, names: list[str]) -> Iterator[dict[str, str]]:
    import psycopg

    tag = uuid.uuid4().hex[:8]
    dbs = {n: f"autoaug_bench_{tag}_{n}" for n in names}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for db in dbs.values():
            conn.execute(f'CREATE DATABASE "{db}"')
    base = pg_url.replace("postgresql://", "postgresql+psycopg://", 1).rsplit("/", 1)[0]
    try:
        yield {n: f"{base}/{db}" for n, db in dbs.items()}
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for db in dbs.values():
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
                conn.execute(f'DROP DATABASE IF EXISTS "{db}"')


@contextmanager
def mlflow_server(backend: str, artifacts: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", backend, "--serve-artifacts",
                             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def bookkeeping(storage_url: str, tracking_uri: str, params: Params, trials: int) -> tuple[float, float]:
    """(ms of Optuna storage per trial, ms of MLflow logging per trial run)."""
    cfg = params.policy_search
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name=f"bench-{uuid.uuid4().hex[:8]}", storage=storage,
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def noop(trial: optuna.Trial) -> float:
        for i in range(cfg.n_sub):
            for j in range(cfg.ops_per_sub):
                trial.suggest_categorical(f"op_{i}_{j}", list(cfg.ops))
                trial.suggest_float(f"prob_{i}_{j}", 0.0, 1.0)
                trial.suggest_float(f"mag_{i}_{j}", 0.0, 1.0)
        trial.set_user_attr("accuracy", 0.5)
        return 0.5

    study.optimize(noop, n_trials=3)  # connections, caches
    t0 = time.perf_counter()
    study.optimize(noop, n_trials=trials)
    storage_ms = (time.perf_counter() - t0) / trials * 1000
    tracker = Tracker(tracking_uri, f"bench-{uuid.uuid4().hex[:8]}")
    with tracker.stage_run("search_policy", resume_key="bench") as run:
        done = study.trials[-trials:]
        t0 = time.perf_counter()
        for t in done:
            run.log_finished_child(f"trial{t.number:03d}", key_tag=TRIAL, key=str(t.number),
                                   params=t.params, metrics={"score": 0.5, "accuracy": 0.5},
                                   tags={STUDY: study.study_name}, dicts={"policy.json": {"n": 1}})
        mlflow_ms = (time.perf_counter() - t0) / len(done) * 1000
    return storage_ms, mlflow_ms


def trial_rate(storage_url: str) -> tuple[float, int, dict[str, int]]:
    """(trials per minute, finished trials, trials per process) over every study in the storage."""
    storage = optuna.storages.RDBStorage(storage_url)
    minutes, n = 0.0, 0
    owners: dict[str, int] = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if not done:
            continue
        start = min(t.datetime_start for t in done if t.datetime_start)
        end = max(t.datetime_complete for t in done if t.datetime_complete)
        minutes += (end - start).total_seconds() / 60
        n += len(done)
        for t in done:
            owner = str(t.user_attrs.get(WORKER_ATTR, "?")).split(":")[1]
            owners[owner] = owners.get(owner, 0) + 1
    return (n / minutes if minutes else 0.0), n, owners


def write_bench_sample(data: str, work: Path, params: Params, quick: bool) -> int:
    """Write ``work/sample``, the stable sample of ``data``'s training split (1,000 images with
    ``quick``); returns its size."""
    train = load_data(data)["train"]
    sample = stable_sample(train, 1000 if quick else params.sample.size, params.sample.seed)
    write_sample(sample, work / "sample", seed=params.sample.seed, pool=train)
    return len(sample)


def run_stage(work: Path, params_path: Path, sample: Path, env: dict[str, str], workers: int) -> float:
    """Wall seconds of the stage with ``workers`` worker processes beside it."""
    full = {**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    common = ["--params", str(params_path), "--sample", str(sample), "--cache-dir", str(work / "cache"),
              "--no-progress"]
    procs = [subprocess.Popen([str(BIN / "autoaug"), "worker", "search_policy", "--wait", "600", *common],
                              cwd=work, env=full) for _ in range(workers)]
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "autoaug"), "search-policy", "--out", str(work / f"out-{uuid.uuid4().hex[:6]}"),
                    *common], cwd=work, env=full, check=True)
    for p in procs:
        p.wait(timeout=900)
    return time.perf_counter() - t0


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--postgres", default=os.environ.get("AUTOAUG_TEST_POSTGRES_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--trials-per-fold", type=int, default=30)
    p.add_argument("--bookkeeping-trials", type=int, default=50)
    args = p.parse_args()
    params = load_params("params.yaml")
    per_fold = 4 if args.quick else args.trials_per_fold
    work = Path(tempfile.mkdtemp(prefix="autoaug-bench-workers-"))
    size = write_bench_sample(args.data, work, params, args.quick)
    raw: dict[str, Any] = params.model_dump()
    raw["policy_search"].update(folds=2, trials_per_fold=per_fold, warm_start=0,
                                top_n=min(params.policy_search.top_n, per_fold))
    if args.quick:
        raw["policy_search"]["child"]["epochs"] = 1
    print(f"{size} sample images, 2 folds x {per_fold} trials; {machine()}", flush=True)

    fields: dict[str, Any] = {"bench": "workers", "quick": args.quick}
    with databases(args.postgres, ["mlflow", "optuna_bk", "optuna_1", "optuna_2"]) as dbs, \
            mlflow_server(dbs["mlflow"], work / "mlartifacts") as server:
        n = 10 if args.quick else args.bookkeeping_trials
        sq_storage, sq_mlflow = bookkeeping(f"sqlite:///{work}/bk-optuna.db", f"sqlite:///{work}/bk-mlflow.db", params, n)
        pg_storage, pg_mlflow = bookkeeping(dbs["optuna_bk"], server, params, n)
        print(f"bookkeeping per trial: Optuna storage SQLite {sq_storage:.0f} ms, PostgreSQL {pg_storage:.0f} ms; "
              f"MLflow trial run SQLite {sq_mlflow:.0f} ms, server {pg_mlflow:.0f} ms", flush=True)
        fields.update(storage_ms_sqlite=sq_storage, storage_ms_pg=pg_storage, mlflow_ms_sqlite=sq_mlflow,
                      mlflow_ms_server=pg_mlflow)

        runs = {"sqlite_1": ({"AUTOAUG_OPTUNA_STORAGE": f"sqlite:///{work}/optuna.db",
                              "AUTOAUG_MLFLOW_URI": f"sqlite:///{work}/mlflow.db"}, 0),
                "pg_1": ({"AUTOAUG_OPTUNA_STORAGE": dbs["optuna_1"], "AUTOAUG_MLFLOW_URI": server}, 0),
                "pg_2": ({"AUTOAUG_OPTUNA_STORAGE": dbs["optuna_2"], "AUTOAUG_MLFLOW_URI": server}, 1)}
        for name, (env, extra) in runs.items():
            params_path = work / f"params-{name}.yaml"
            raw["tracking"]["experiment_prefix"] = f"bench-{name}"
            params_path.write_text(yaml.safe_dump(raw))
            if name == "sqlite_1":  # children into the shared cache, untimed
                run_stage(work, params_path, work / "sample",
                          {**env, "AUTOAUG_OPTUNA_STORAGE": f"sqlite:///{work}/warmup.db"}, 0)
            wall = run_stage(work, params_path, work / "sample", env, extra)
            rate, trials, owners = trial_rate(env["AUTOAUG_OPTUNA_STORAGE"])
            print(f"{name}: {trials} trials, {rate:.1f} trials/min, stage wall {wall:.0f} s, "
                  f"trials per process {sorted(owners.values(), reverse=True)}", flush=True)
            fields[f"{name}_trials_per_min"] = rate
            fields[f"{name}_wall_s"] = wall
    fields["pg_overhead"] = fields["sqlite_1_trials_per_min"] / fields["pg_1_trials_per_min"]
    fields["speedup_2_workers"] = fields["pg_2_trials_per_min"] / fields["pg_1_trials_per_min"]
    fields["bookkeeping_ceiling_trials_per_min"] = 60_000 / (pg_storage + pg_mlflow)
    print(result_line(**fields, cores=os.cpu_count(), machine=machine()))


if __name__ == "__main__":
    main()
