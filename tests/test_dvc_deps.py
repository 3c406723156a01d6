"""dvc.yaml's code deps are exactly the code each stage runs.

A stage `X` runs `autoaug x`, which calls `pipeline.stages.X`; the code it runs is that
module's import closure within `pipeline/` (imports inside functions included; `cli.py` only
parses arguments and is left out so that a new command does not re-run every stage). Listing
less would let `dvc repro` skip a stage whose code changed; listing more re-runs it for
nothing. On failure the message prints the deps to paste into dvc.yaml.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _module_file(name: str) -> Path | None:
    base = REPO / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Every `pipeline.*` module ``path`` imports (packages on the way included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] != "pipeline":
                continue
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {n for n in found if _module_file(n) is not None}


def import_closure(module: str) -> set[Path]:
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        assert path is not None, f"{name} has no source file"
        todo.extend(_imports(path) - seen)
    return {_module_file(n).relative_to(REPO) for n in seen}  # type: ignore[union-attr]


def _covered(deps: list[str]) -> set[Path]:
    files: set[Path] = set()
    for dep in deps:
        path = REPO / dep
        if path.is_dir():
            files.update(p.relative_to(REPO) for p in path.rglob("*.py"))
        elif path.suffix == ".py":
            files.add(path.relative_to(REPO))
    return files


def _suggest(closure: set[Path]) -> list[str]:
    """The shortest dep list covering exactly ``closure``: whole folders where all is used."""
    out: set[str] = set()
    for path in sorted(closure):
        chosen = path
        for parent in path.parents:
            if parent == Path(".") or parent == Path("pipeline"):
                break
            if all(p.relative_to(REPO) in closure for p in (REPO / parent).rglob("*.py")):
                chosen = parent
        out.add(str(chosen))
    return sorted(out)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_the_stage_modules_import_closure(stage: str) -> None:
    closure = import_closure(f"pipeline.stages.{stage}")
    listed = [d for d in STAGES[stage].get("deps", []) if str(d).startswith("pipeline")]
    assert _covered(listed) == closure, (
        f"dvc.yaml stage {stage!r}: code deps should be {_suggest(closure)}; "
        f"missing {sorted(map(str, closure - _covered(listed)))}, "
        f"not run {sorted(map(str, _covered(listed) - closure))}"
    )


def params_read(path: Path) -> set[str]:
    """The params.yaml keys a stage module reads as ``params.<section>[.<key>]`` (a method such as
    ``model_dump`` or a whole section taken as ``cfg = params.<section>`` counts as the section)."""
    tree = ast.parse(path.read_text())
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    keys: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue
        parts, base = [], node
        while isinstance(base, ast.Attribute):
            parts.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id == "params":
            parts = [p for p in parts if p not in ("model_dump", "model_copy")][:2]
            if parts:  # ``params.model_copy(...)`` alone copies, it reads no key
                keys.add(".".join(parts))
    return keys


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_params_a_stage_reads_are_its_dvc_params(stage: str) -> None:
    # Otherwise changing such a key in params.yaml would not re-run the stage that reads it.
    listed = [str(p) for p in STAGES[stage].get("params", [])]
    read = params_read(REPO / "pipeline" / "stages" / f"{stage}.py")
    missing = sorted(k for k in read if not any(k == p or k.startswith(p + ".") for p in listed))
    assert not missing, f"dvc.yaml stage {stage!r} reads params {missing} that it does not list"
