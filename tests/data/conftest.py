from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .trees import write_tree


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(per_class: int = 4, **kw) -> Path:
        return write_tree(tmp_path / f"tree{next(counter)}", per_class, **kw)

    return make
