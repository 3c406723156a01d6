"""`autoaug <stage>`: thin entry points that dvc.yaml calls.

Each command validates params.yaml first, calls library functions and writes its declared
outputs. User mistakes (AutoaugError) end with one line on stderr and exit code 2; Ctrl-C ends
with exit code 130 and whatever the stage had finished kept.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pipeline import interrupt
from pipeline.config import DEFAULT_PARAMS, load_params
from pipeline.errors import AutoaugError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def cmd_ingest(args: argparse.Namespace) -> None:
    from pipeline.stages.ingest import ingest

    result, note = ingest(args.source, args.store, cache_dir=args.cache_dir, dvc=not args.no_dvc)
    print(f"ingest {args.source} -> {args.store}: {result.summary()}")
    if note:
        print(note)


def cmd_sample(args: argparse.Namespace) -> None:
    from pipeline.stages.sample import sample_stage

    manifest = sample_stage(load_params(args.params), args.store, args.out)
    counts = ", ".join(f"{c} {n}" for c, n in manifest.class_counts.items())
    print(f"sample: {manifest.size} of {manifest.pool_size} images -> {args.out} "
          f"(fingerprint {manifest.fingerprint}); per class: {counts}")


def cmd_search_policy(args: argparse.Namespace) -> None:
    from pipeline.stages.search_policy import search_policy_stage

    params = load_params(args.params)
    summary = search_policy_stage(params, args.sample, args.out, args.cache_dir, progress=not args.no_progress)
    print(f"search_policy: {summary['sub_policies']} sub-policies from {summary['trials']} trials "
          f"in {summary['wall_seconds'] / 60:.1f} min -> {args.out}/policy.json")


def cmd_search_model(args: argparse.Namespace) -> None:
    from pipeline.stages.search_model import search_model_stage

    summary = search_model_stage(load_params(args.params), args.sample, args.policy, args.out, args.cache_dir,
                                 progress=not args.no_progress)
    print(f"search_model: {summary['pareto_size']} Pareto-optimal of {summary['trials']} trials in "
          f"{summary['wall_seconds'] / 60:.1f} min; chosen: trial {summary['chosen_trial']}, "
          f"{summary['chosen_params']} parameters, validation accuracy {summary['chosen_accuracy']:.4f}")


def cmd_search_recipe(args: argparse.Namespace) -> None:
    from pipeline.stages.search_recipe import search_recipe_stage

    found = search_recipe_stage(load_params(args.params), args.sample, args.chosen, args.policy, args.out,
                                progress=not args.no_progress)
    values = found["values"]
    how = (f"trial {found['trial']}, proxy validation accuracy {found['accuracy']:.4f}" if found["searched"]
           else "not searched (recipe_search.trials 0): retrain.recipe as written")
    if found.get("kept_params_recipe"):
        how += f"; retrain.recipe kept: the best trial ({found['best_accuracy']:.4f}) is within recipe_search.margin"
    print(f"search_recipe: lr {values['lr']:.3g}, weight_decay {values['weight_decay']:.3g}, label_smoothing "
          f"{values['label_smoothing']:.2f}, {values['epochs']} epochs ({how}) -> {args.out}/recipe.json")


def cmd_retrain(args: argparse.Namespace) -> None:
    from pipeline.contracts import RetrainMetrics
    from pipeline.stages.retrain import retrain_stage

    metrics = RetrainMetrics.model_validate(retrain_stage(load_params(args.params), args.store, args.chosen,
                                                          args.policy, args.out, progress=not args.no_progress,
                                                          recipe_path=args.recipe or None))
    print(f"retrain: test accuracy {metrics.test_accuracy:.4f} ({metrics.tta} TTA), "
          f"{metrics.params} parameters, {metrics.train_minutes or 0:.1f} training minutes; "
          f"registered {metrics.registered_model} version {metrics.model_version}")


def cmd_publish(args: argparse.Namespace) -> None:
    from pipeline.contracts import Decision
    from pipeline.stages.publish import publish_stage

    decision = Decision.model_validate(publish_stage(load_params(args.params), args.retrain, args.policy,
                                                     args.published, args.out))
    print(f"publish: {decision.reason}")


def cmd_worker(args: argparse.Namespace) -> None:
    from pipeline.stages.worker import run_worker

    params = load_params(args.params)
    for stage in args.stages:
        done = run_worker(params, stage, sample_dir=args.sample, policy_path=args.policy, cache_dir=args.cache_dir,
                          wait=args.wait, progress=not args.no_progress, chosen_path=args.chosen)
        print(f"worker {done['stage']}: {done['trials']} trials run in {done['parts']} part(s) of {done['study']}")


def cmd_history(args: argparse.Namespace) -> None:
    from pipeline.history import data_versions, format_table
    from pipeline.tracking import Tracker

    params = load_params(args.params)
    tracker = Tracker(params.tracking.mlflow_uri, params.tracking.experiment_prefix)
    print(format_table([v.row() for v in data_versions(tracker)]))


def cmd_serve(args: argparse.Namespace) -> None:
    from service.app import serve

    serve(args.host, args.port, args.published, args.mlflow_ui_url, args.workers)


def _add_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoaug", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="add images to the raw store (de-duplicated by content)")
    p.add_argument("source", help="'cifar10' (download), the CIFAR-10 python archive, an image-folder tree "
                                  "(train/<class>/*, optional test/<class>/*) or a .tar/.tar.gz of one")
    p.add_argument("--store", default="data/raw", help="raw store folder (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="where 'cifar10' is downloaded (default: ~/.cache/autoaug)")
    p.add_argument("--no-dvc", action="store_true", help="do not `dvc add` the store afterwards")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("sample", help="DVC stage: stable stratified sample of the training images")
    _add_params(p)
    p.add_argument("--store", default="data/raw")
    p.add_argument("--out", default="data/sample")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("search-policy", help="DVC stage: Fast AutoAugment (or RandAugment) policy search")
    _add_params(p)
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--out", default="outputs/search_policy")
    p.add_argument("--cache-dir", default=".autoaug/cache", help="trained child models, reused on resume")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_search_policy)

    p = sub.add_parser("search-model", help="DVC stage: multi-objective architecture search (accuracy vs size)")
    _add_params(p)
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--policy", default="outputs/search_policy/policy.json")
    p.add_argument("--out", default="outputs/search_model")
    p.add_argument("--cache-dir", default=".autoaug/cache", help="trained reference models, reused on re-runs")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_search_model)

    p = sub.add_parser("search-recipe", help="DVC stage: the retrain recipe (lr, weight decay, label smoothing, "
                       "epochs) searched on the chosen model")
    _add_params(p)
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--chosen", default="outputs/search_model/chosen.json")
    p.add_argument("--policy", default="outputs/search_policy/policy.json")
    p.add_argument("--out", default="outputs/search_recipe")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_search_recipe)

    p = sub.add_parser("retrain", help="DVC stage: train the chosen model on all training images")
    _add_params(p)
    p.add_argument("--store", default="data/raw")
    p.add_argument("--chosen", default="outputs/search_model/chosen.json")
    p.add_argument("--policy", default="outputs/search_policy/policy.json")
    p.add_argument("--recipe", default="",
                   help="the recipe search's recipe.json (outputs/search_recipe/recipe.json in dvc.yaml), whose recipe "
                        "replaces retrain.recipe (default: params.yaml's)")
    p.add_argument("--out", default="outputs/retrain")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("publish", help="DVC stage: promote the model if it beats the champion; write published/")
    _add_params(p)
    p.add_argument("--retrain", default="outputs/retrain")
    p.add_argument("--policy", default="outputs/search_policy", help="the search_policy stage's output folder")
    p.add_argument("--published", default="published")
    p.add_argument("--out", default="outputs/publish")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("worker", help="join the running search of a stage (more processes or hosts for it)")
    p.add_argument("stages", nargs="+", choices=["search_policy", "search_model", "search_recipe"], metavar="STAGE",
                   help="the search stage(s) to join, in order: search_policy, search_model and/or search_recipe")
    _add_params(p)
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--policy", default="outputs/search_policy/policy.json", help="for search_model and search_recipe")
    p.add_argument("--chosen", default="outputs/search_model/chosen.json", help="for search_recipe")
    p.add_argument("--cache-dir", default=".autoaug/cache", help="children, shared with the stage when on one host")
    p.add_argument("--wait", type=float, nargs="?", const=3600.0, default=0.0, metavar="SECONDS",
                   help="wait (with back-off) for the stores, the sample and the stage to start; "
                        "--wait alone = an hour (default: fail at once)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("history", help="one line per data version: scores, champion, MLflow run ids")
    _add_params(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("serve", help="HTTP service: the published policy and champion (FastAPI on uvicorn)")
    p.add_argument("--host", default=None, help="default: $AUTOAUG_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: $AUTOAUG_PORT or 8000")
    p.add_argument("--published", "--published-dir", dest="published", default=None,
                   help="what `publish` writes (default: $AUTOAUG_PUBLISHED_DIR or published)")
    p.add_argument("--mlflow-ui-url", default=None, help="MLflow UI base URL for links to runs ($AUTOAUG_MLFLOW_UI_URL)")
    p.add_argument("--workers", type=int, default=None,
                   help="uvicorn worker processes, for more cores (default: $AUTOAUG_WORKERS or 1)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        with interrupt.handling():  # a Ctrl-C dropped inside a finalizer still stops the long loops
            func(args)
    except AutoaugError as exc:
        print(f"autoaug {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"autoaug {args.command}: interrupted; finished work was kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
