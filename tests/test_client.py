"""The policy client against a real uvicorn server: fetch, 304 from the cache, offline fallback."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from pipeline.augment import ImageTransform
from pipeline.client import (
    PolicyFetchError,
    StalePolicyWarning,
    fetch_policy,
    fetch_served_policy,
    policy_url,
)
from service.app import create_app
from service.settings import Settings

from .publishing import FINGERPRINT, RUN_ID, add_policy, tiny_policy
from .service.live import running_server


def test_fetch_then_not_modified_then_new_then_offline(tmp_path: Path) -> None:
    root, cache = tmp_path / "published", tmp_path / "cache"
    add_policy(root, magnitude=0.5)
    with running_server(create_app(Settings(published_dir=root))) as url:
        first = fetch_served_policy(url, cache_dir=cache)
        assert (first.source, first.version) == ("downloaded", 1)
        assert first.policy == tiny_policy(0.5) and first.etag and first.etag.startswith('"policy-1-')
        assert (first.fingerprint, first.mlflow_run_id) == (FINGERPRINT, RUN_ID)
        assert first.policy.metadata["served"]["version"] == 1 and first.policy.metadata["source"] == "tests"
        assert len(list(cache.iterdir())) == 1

        again = fetch_served_policy(url + "/", cache_dir=cache)  # same endpoint: answered 304
        assert (again.source, again.version, again.policy) == ("not-modified", 1, first.policy)

        add_policy(root, magnitude=0.9)
        new = fetch_served_policy(url, cache_dir=cache)
        assert (new.source, new.version, new.policy) == ("downloaded", 2, tiny_policy(0.9))

        pinned = fetch_served_policy(f"{url}/policies/1", cache_dir=cache)  # a fixed version
        assert (pinned.version, pinned.policy) == (1, tiny_policy(0.5))
        with pytest.raises(PolicyFetchError, match=r"HTTP 404: policy version 9 is not published"):
            fetch_policy(f"{url}/policies/9", cache_dir=cache)

    # the server is gone: the cached copy, with a warning naming what happened
    with pytest.warns(StalePolicyWarning, match=r"cannot reach .*/policy .*cached policy version 2"):
        offline = fetch_served_policy(url, cache_dir=cache, timeout=5)
    assert (offline.source, offline.version, offline.policy) == ("offline-cache", 2, tiny_policy(0.9))
    with pytest.raises(PolicyFetchError, match="nothing is cached"):
        fetch_policy(url, cache_dir=tmp_path / "empty-cache", timeout=5)


def test_nothing_published_uses_cache_or_fails_clearly(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    empty = create_app(Settings(published_dir=tmp_path / "published"))
    with running_server(empty) as url, pytest.raises(PolicyFetchError, match=r"HTTP 503: no policy published yet .*dvc repro"):
        fetch_policy(url, cache_dir=cache)
    # a damaged cache file is ignored, not trusted
    add_policy(tmp_path / "other")
    with running_server(create_app(Settings(published_dir=tmp_path / "other"))) as url:
        fetch_policy(url, cache_dir=cache)
        for path in cache.iterdir():
            path.write_text("{broken")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no stale-cache warning: the server answered
            assert fetch_served_policy(url, cache_dir=cache).source == "downloaded"


def test_served_policy_in_a_torchvision_dataloader(tmp_path: Path) -> None:
    add_policy(tmp_path / "published")
    with running_server(create_app(Settings(published_dir=tmp_path / "published"))) as url:
        policy = fetch_policy(url, cache_dir=tmp_path / "cache")
    assert policy == tiny_policy()
    train_set = datasets.FakeData(
        size=8, image_size=(3, 32, 32), num_classes=10, random_offset=0,
        transform=transforms.Compose([ImageTransform(policy), transforms.PILToTensor()]),
    )
    torch.manual_seed(0)
    images, labels = next(iter(DataLoader(train_set, batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8 and labels.shape == (4,)
    plain = torch.stack([transforms.PILToTensor()(datasets.FakeData(size=8, image_size=(3, 32, 32))[i][0])
                         for i in range(4)])
    assert not torch.equal(images, plain)  # the policy changed the pictures (Rotate fires always)


def test_policy_url() -> None:
    assert policy_url("http://host:8000") == "http://host:8000/policy"
    assert policy_url("http://host:8000/") == "http://host:8000/policy"
    assert policy_url("https://h/x/policies/3") == "https://h/x/policies/3"
    assert policy_url("http://host:8000/policy") == "http://host:8000/policy"
    # behind a reverse proxy under a path prefix: still the service's base URL
    assert policy_url("https://h/autoaug/") == "https://h/autoaug/policy"
    assert policy_url("https://h/autoaug") == "https://h/autoaug/policy"
    assert policy_url("https://h/autoaug/policy?x=1") == "https://h/autoaug/policy?x=1"
    with pytest.raises(PolicyFetchError, match="not an http"):
        policy_url("ftp://host/policy")
