"""Fixtures: published folders built with pipeline.artifacts from a tiny untrained model."""

from __future__ import annotations

import io
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings

from ..publishing import add_model, add_policy

with warnings.catch_warnings():  # starlette nags about httpx vs httpx2; irrelevant for tests
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="session")
def _published_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Policy v1 (with grid) and model v1 (with model.pt2), built once per session."""
    root = tmp_path_factory.mktemp("published-base")
    add_policy(root)
    add_model(root, accuracy=0.5)
    return root


@pytest.fixture
def published(_published_once: Path, tmp_path: Path) -> Path:
    """A private copy of the base published folder (tests may publish more into it)."""
    root = tmp_path / "published"
    shutil.copytree(_published_once, root)
    return root


@pytest.fixture
def make_client() -> Callable[..., TestClient]:
    def make(root: Path, **settings: object) -> TestClient:
        return TestClient(create_app(Settings(published_dir=root, **settings)))  # type: ignore[arg-type]

    return make


@pytest.fixture
def client(published: Path, make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(published)


def image_bytes(size: tuple[int, int] = (32, 32), mode: str = "RGB", fmt: str = "PNG", seed: int = 0) -> bytes:
    """A small test picture: a colour gradient (any size, mode and format PIL writes)."""
    width, height = size
    img = Image.new("RGB", size)
    img.putdata([((x * 255) // max(width - 1, 1), (y * 255) // max(height - 1, 1), (seed * 70) % 256)
                 for y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    img.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()
