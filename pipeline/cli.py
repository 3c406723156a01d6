"""`autoaug <stage>`: thin entry points that dvc.yaml calls.

Each command validates params.yaml first, calls library functions and writes its declared
outputs. User mistakes (AutoaugError) end with one line on stderr and exit code 2; Ctrl-C ends
with exit code 130 and whatever the stage had finished kept.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from pipeline.errors import AutoaugError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _track_with_dvc(path: Path) -> str | None:
    """`dvc add` the raw store when the working directory is a DVC project, so every data
    version is recorded (data/raw.dvc goes into git). Returns a note for the user."""
    root = Path.cwd()
    if not (root / ".dvc").is_dir():
        return None
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return f"{path} is outside the DVC project at {root}; not tracked"
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        repo.add(str(rel))
    return f"tracked with DVC: commit {rel}.dvc to record this data version"


def cmd_ingest(args: argparse.Namespace) -> None:
    from pipeline.data import RawStore

    store = RawStore(args.store)
    result = store.ingest(args.source, cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    print(f"ingest {args.source} -> {args.store}: {result.summary()}")
    if not args.no_dvc:
        note = _track_with_dvc(Path(args.store))
        if note:
            print(note)


def cmd_sample(args: argparse.Namespace) -> None:
    from pipeline.data import RawStore, stable_sample, write_sample

    params = load_params(args.params)
    pool = RawStore(args.store).split("train")
    sample = stable_sample(pool, params.sample.size, params.sample.seed)
    manifest = write_sample(sample, args.out, seed=params.sample.seed, pool=pool)
    counts = ", ".join(f"{c} {n}" for c, n in manifest["class_counts"].items())
    print(f"sample: {manifest['size']} of {manifest['pool_size']} images -> {args.out} "
          f"(fingerprint {manifest['fingerprint']}); per class: {counts}")


def cmd_search_policy(args: argparse.Namespace) -> None:
    from pipeline.search.policy_stage import search_policy_stage

    params = load_params(args.params)
    summary = search_policy_stage(params, args.sample, args.out, args.cache_dir, progress=not args.no_progress)
    print(f"search_policy: {summary['sub_policies']} sub-policies from {summary['trials']} trials "
          f"in {summary['wall_seconds'] / 60:.1f} min -> {args.out}/policy.json")


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
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
