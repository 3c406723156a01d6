"""params.yaml and its reference page, rendered from pipeline/config.py.

The defaults, their units and the reasons for their values live once, in config.py's models
(each field's default and ``Field(description=...)``; each recipe's ``Recipe.shown`` notes).
This module writes them out twice for people: ``params.yaml`` (the file DVC and the stages read,
the descriptions as YAML comments, in the models' order) and ``docs/params.md`` (every key,
including the recipe keys params.yaml leaves out). A test keeps both equal to the rendering::

    python -m pipeline.params_file --write    # after changing a default or a description
    python -m pipeline.params_file --check    # what the test does
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from pipeline.config import RECIPE_OF, Params, TrainConfig

PARAMS_PATH = Path("params.yaml")
REFERENCE_PATH = Path("docs/params.md")
REGENERATE = "python -m pipeline.params_file --write"

WIDTH = 110  # params.yaml's lines (comments wrap at it)
COMMENT_COLUMN = 27  # inline comments start here, or two spaces after a longer key: value

HEADER = f"""\
# autoaug parameters, validated by pipeline/config.py before any compute.
# Rendered from pipeline/config.py by `{REGENERATE}`: the values below are the
# code's defaults, so a key left out of a params file means the value written here. Edit a value
# here to run with it; change a default (or its description) in config.py and re-render to change
# what ships.
# dvc.yaml names the exact keys each stage reads, so changing one re-runs only those stages.
# Every key, including the recipe keys not written out here: docs/params.md.
"""


def _scalar(value: Any) -> str:
    """One value in YAML's flow style, as a reader would write it (``null``, ``0.0005``, ``[a, b]``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False)
    return text.removesuffix("\n...\n").removesuffix("\n")


def _words_to_lines(text: str, first_width: int, width: int) -> list[str]:
    """``text`` broken at spaces into a first line of ``first_width`` characters and then ``width``."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        limit = first_width if not lines else width
        if current and len(current) + 1 + len(word) > limit:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines


def _with_comment(code: str, comment: str) -> list[str]:
    """``code`` with ``comment`` after it, aligned at COMMENT_COLUMN and wrapped under itself."""
    if not comment:
        return [code]
    column = max(COMMENT_COLUMN, len(code) + 2)
    first_width = max(WIDTH - column - 2, 30)
    lines = _words_to_lines(comment, first_width, max(WIDTH - COMMENT_COLUMN - 2, 30))
    out = [f"{code.ljust(column)}# {lines[0]}"]
    out += [f"{' ' * COMMENT_COLUMN}# {line}" for line in lines[1:]]
    return out


def _block_comment(text: str, indent: str) -> list[str]:
    width = WIDTH - len(indent) - 2
    return [f"{indent}# {line}" for line in _words_to_lines(text, width, width)]


def _model_lines(model: BaseModel, path: str, indent: str) -> Iterator[str]:
    """The keys of one section (or sub-section), each with its description as its comment."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{path}.{name}"
        comment = field.description or ""
        if isinstance(value, TrainConfig):
            yield from _with_comment(f"{indent}{name}:", comment)
            recipe = RECIPE_OF.get(key)
            if recipe is None:
                raise KeyError(f"{key}: a TrainConfig section needs its Recipe in pipeline.config.RECIPE_OF")
            for field_name, note in recipe.shown.items():
                yield from _with_comment(f"{indent}  {field_name}: {_scalar(getattr(value, field_name))}", note)
        elif isinstance(value, BaseModel):
            yield from _with_comment(f"{indent}{name}:", comment)
            yield from _model_lines(value, key, indent + "  ")
        else:
            code = f"{indent}{name}: {_scalar(value)}"
            if len(code) > WIDTH and isinstance(value, list):
                # a long list (of names: no spaces inside an item): its comment above it, the list
                # wrapped in flow style, continued one indent deeper
                yield from _block_comment(comment, indent) if comment else ()
                items = [_scalar(item) for item in value]
                lines = _words_to_lines(", ".join(items), WIDTH - len(indent) - len(name) - 4,
                                        WIDTH - len(indent) - 4)
                for i, line in enumerate(lines):
                    start = f"{indent}{name}: [" if i == 0 else f"{indent}  "
                    yield start + line + ("]" if i == len(lines) - 1 else "")
            else:
                yield from _with_comment(code, comment)


def render_params(params: Params | None = None) -> str:
    """params.yaml for ``params`` (the defaults when None): sections in Params' order, each
    section's description above it, every key's description as its comment."""
    params = params or Params()
    out = [HEADER.rstrip("\n")]
    for name, field in Params.model_fields.items():
        out.append("")
        if field.description:
            out += _block_comment(field.description, "")
        out.append(f"{name}:")
        out += _model_lines(getattr(params, name), name, "  ")
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _reference_rows(model: BaseModel, path: str) -> Iterator[str]:
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{path}.{name}"
        if isinstance(value, TrainConfig):
            yield f"| `{key}` | [a training recipe](#training-recipes) | {_cell(field.description or '')} |"
        elif isinstance(value, BaseModel):
            yield from _reference_rows(value, key)
        else:
            yield f"| `{key}` | `{_cell(_scalar(value))}` | {_cell(field.description or '')} |"


def render_reference(params: Params | None = None) -> str:
    """docs/params.md: every key of params.yaml with its default and meaning, the three
    training recipes side by side."""
    params = params or Params()
    out = [
        "# Configuration reference",
        "",
        f"Rendered from `pipeline/config.py` by `{REGENERATE}` (a test keeps it current): every key of",
        "`params.yaml`, its default and what it means. A key left out of a params file takes its default.",
        "How to change them: [configuration](configuration.md).",
    ]
    for name, field in Params.model_fields.items():
        out += ["", f"## `{name}`", ""]
        if field.description:
            out += [field.description, ""]
        out += ["| key | default | meaning |", "|---|---|---|"]
        out += _reference_rows(getattr(params, name), name)
    recipes = {path: _get(params, path) for path in RECIPE_OF}
    out += ["", "## Training recipes", "",
            "Every TrainConfig key (`pipeline/config.py`), with its value in each recipe. A recipe section in",
            "params.yaml starts from its recipe; each key given there replaces the recipe's value. The trainer's",
            "peak learning rate is `lr x batch_size / lr_batch_size` (`TrainConfig.peak_lr`), so changing",
            "`batch_size` alone scales the learning rate linearly.", "",
            "| key | " + " | ".join(f"`{path}`" for path in recipes) + " | meaning |",
            "|---|" + "---|" * len(recipes) + "---|"]
    for key, field in TrainConfig.model_fields.items():
        values = " | ".join(f"`{_cell(_scalar(getattr(recipe, key)))}`" for recipe in recipes.values())
        out.append(f"| `{key}` | {values} | {_cell(field.description or '')} |")
    return "\n".join(out) + "\n"


def _get(params: Params, path: str) -> TrainConfig:
    node: Any = params
    for part in path.split("."):
        node = getattr(node, part)
    assert isinstance(node, TrainConfig)
    return node


def rendered_files() -> dict[Path, str]:
    """Each rendered file (relative to the repository root) and its text."""
    return {PARAMS_PATH: render_params(), REFERENCE_PATH: render_reference()}


def stale_files(root: Path) -> list[Path]:
    """The rendered files under ``root`` that differ from the rendering (or are missing)."""
    return [path for path, text in rendered_files().items()
            if not (root / path).is_file() or (root / path).read_text() != text]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.params_file", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="write params.yaml and docs/params.md")
    action.add_argument("--check", action="store_true", help="exit 1 when either differs from the rendering")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: .)")
    args = parser.parse_args(argv)
    if args.write:
        for path, text in rendered_files().items():
            (args.root / path).parent.mkdir(parents=True, exist_ok=True)
            (args.root / path).write_text(text)
            print(f"wrote {path}")
        return 0
    stale = stale_files(args.root)
    if stale:
        print(f"{', '.join(map(str, stale))}: not what pipeline/config.py renders; run: {REGENERATE}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
