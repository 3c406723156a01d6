"""Policy-search cost at a given size, by default the paper's (K=5 folds, B=200 trials, N=10):
children and trials measured on the real sample, set beside Fast AutoAugment's 3.5 GPU-hours.

The stage itself (`autoaug search-policy`, embedded SQLite stores) runs in a subprocess on the
stable sample. `--cap-s` stops it early (the stage is interruption-safe); the full search's
cost is then extrapolated from what finished, and the RESULT line says `extrapolated=True`:
children from the `child_train_seconds` each finished fold logged, trials from trials per
minute (first trial's start to last trial's end, per fold, summed over folds).

    python -m bench.searchcost --data /tmp/raw                       # the paper's size, to the end
    python -m bench.searchcost --data /tmp/raw --cap-s 150           # the GPU script's capped run
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import base_parser, machine, result_line
from bench.workers import BIN, trial_rate, write_bench_sample
from pipeline.config import load_params

FAA_GPU_HOURS = 3.5  # Fast AutoAugment's reported search cost on CIFAR-10 (K=5, B=200, WRN-40-2 children)


def child_seconds(tracking_uri: str) -> list[float]:
    """``child_train_seconds`` of every fold run that logged it (a fold logs it once its child is trained)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="metrics.child_train_seconds >= 0",
                              output_format="list")
    # the fold runs (nested under the stage run, which logs the folds' sum under the same name)
    return [float(r.data.metrics["child_train_seconds"]) for r in runs if "mlflow.parentRunId" in r.data.tags]


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--trials-per-fold", type=int, default=200)
    p.add_argument("--top-n", type=int, default=10)
    p.add_argument("--cap-s", type=float, default=0, help="stop the stage after this many seconds (0: no cap)")
    p.add_argument("--params", default="params.yaml", help="every other policy_search setting")
    args = p.parse_args()
    params = load_params(args.params)
    folds, per_fold, top_n = (2, 4, 2) if args.quick else (args.folds, args.trials_per_fold, args.top_n)
    work = Path(tempfile.mkdtemp(prefix="autoaug-bench-searchcost-"))
    size = write_bench_sample(args.data, work, params, args.quick)
    raw: dict[str, Any] = params.model_dump()
    raw["policy_search"].update(folds=folds, trials_per_fold=per_fold, top_n=top_n, warm_start=0)
    if args.quick:
        raw["policy_search"]["child"]["epochs"] = 1
    storage, tracking = f"sqlite:///{work}/optuna.db", f"sqlite:///{work}/mlflow.db"
    raw["tracking"].update(optuna_storage=storage, mlflow_uri=tracking)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    cfg = raw["policy_search"]
    print(f"{size} sample images; K={folds} B={per_fold} N={top_n}, child {cfg['child_model']} "
          f"{cfg['child']['epochs']} epochs; cap {args.cap_s or 'none'} s; {machine()}", flush=True)

    env = {**os.environ, "AUTOAUG_OPTUNA_STORAGE": storage, "AUTOAUG_MLFLOW_URI": tracking,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.perf_counter()
    try:
        subprocess.run([str(BIN / "autoaug"), "search-policy", "--params", str(work / "params.yaml"),
                        "--sample", str(work / "sample"), "--out", str(work / "out"), "--cache-dir", str(work / "cache"),
                        "--no-progress"], cwd=work, env=env, check=True, timeout=args.cap_s or None)
        capped = False
    except subprocess.TimeoutExpired:
        capped = True
    wall = time.perf_counter() - t0

    rate, trials, _ = trial_rate(storage)
    children = child_seconds(tracking)
    total_s = wall
    if capped:  # finished children and trials, scaled to the whole search
        child_total = sum(children) / len(children) * folds if children else float("nan")
        total_s = child_total + folds * per_fold / rate * 60 if rate else float("nan")
    print(f"{'capped after' if capped else 'finished in'} {wall:.0f} s: {len(children)} children "
          f"({', '.join(f'{s:.1f}' for s in children)} s), {trials} trials at {rate:.1f}/min; "
          f"{'extrapolated' if capped else 'measured'} whole search {total_s / 60:.1f} min "
          f"({total_s / 3600 / FAA_GPU_HOURS:.3f} x Fast AutoAugment's {FAA_GPU_HOURS} GPU-hours)", flush=True)
    print(result_line(bench="searchcost", quick=args.quick, folds=folds, trials_per_fold=per_fold, top_n=top_n,
                      child_model=cfg["child_model"], child_epochs=cfg["child"]["epochs"],
                      children_done=len(children), trials_done=trials, trials_per_min=round(rate, 1),
                      child_s_mean=round(sum(children) / len(children), 1) if children else None,
                      wall_s=round(wall, 1), extrapolated=capped, search_min=round(total_s / 60, 2),
                      ratio_to_faa=round(total_s / 3600 / FAA_GPU_HOURS, 4), machine=machine()))


if __name__ == "__main__":
    main()
