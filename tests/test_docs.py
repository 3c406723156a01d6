"""The documentation builds, lists every page, and its links lead somewhere.

README.md is the short entry point; the topic pages live in docs/ and build with MkDocs
(mkdocs.yml). These tests keep the three consistent: a page missing from the nav, a broken link
between pages (``--strict``) or a README link to a moved page fails here, not for a reader.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MKDOCS = Path(sys.executable).parent / "mkdocs"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), not images


def nav_pages(nav: list) -> list[str]:
    pages: list[str] = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings, as GitHub and MkDocs' toc both spell them."""
    out = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", title)))
    return out


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    assert MKDOCS.exists(), f"{MKDOCS} is missing: install the dev extra (pip install -e '.[dev]')"
    done = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    listed = nav_pages(config["nav"])
    pages = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(listed) == pages
    assert len(set(listed)) == len(listed)


def test_the_readme_links_resolve() -> None:
    readme = (REPO / "README.md").read_text()
    targets = [target for target in LINK.findall(readme) if "://" not in target and not target.startswith("mailto:")]
    assert targets, "the README links to the docs"
    for target in targets:
        path, _, anchor = target.partition("#")
        resolved = REPO / path if path else REPO / "README.md"
        assert resolved.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(resolved.read_text()), f"README.md links to {target}: no such heading"


def test_the_readme_links_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [page.name for page in DOCS.glob("*.md") if page.name != "index.md" and f"docs/{page.name}" not in readme]
    assert not missing, f"README.md does not link {missing}"


def test_the_readme_fits_a_few_screens() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 130


@pytest.mark.parametrize("name", ["README.md", "BENCHMARKS.md", *(f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")))])
def test_benchmarks_are_run_as_modules(name: str) -> None:
    # `python bench/x.py` no longer finds the packages (bench/ does not edit sys.path)
    assert not re.search(r"python3?\s+bench/\w+\.py", (REPO / name).read_text()), \
        f"{name}: run a benchmark as `python -m bench.<name>`"
