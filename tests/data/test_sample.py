from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.data import (
    ImageSet,
    fingerprint,
    holdout_split,
    read_manifest,
    stable_sample,
    write_sample,
)
from pipeline.data.sample import class_quotas
from pipeline.errors import DataError


def _pool(n_per_class: list[int], seed: int = 0, id_prefix: str = "") -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    n = int(labels.numel())
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    ids = [f"{id_prefix}{seed:02d}{i:06d}" for i in range(n)]
    return ImageSet(images, labels, [f"c{i}" for i in range(len(n_per_class))], ids)


def test_sample_is_stratified_and_equal_per_class() -> None:
    sample = stable_sample(_pool([300, 250, 400, 280]), 400, seed=3)
    assert len(sample) == 400
    assert set(sample.class_counts().values()) == {100}


def test_small_classes_give_all_and_the_rest_is_spread() -> None:
    quotas = class_quotas([10, 500, 500, 500], 400)
    assert quotas[0] == 10 and sum(quotas) == 400 and max(quotas[1:]) - min(quotas[1:]) <= 1


def test_sample_larger_than_pool_is_an_error() -> None:
    with pytest.raises(DataError, match="exceeds the 40 training images"):
        stable_sample(_pool([20, 20]), 41)


def test_sample_depends_on_content_not_position() -> None:
    pool = _pool([200, 200, 200])
    shuffled = pool.subset(torch.randperm(len(pool), generator=torch.Generator().manual_seed(1)))
    assert set(stable_sample(pool, 150).ids) == set(stable_sample(shuffled, 150).ids)
    assert set(stable_sample(pool, 150, seed=0).ids) != set(stable_sample(pool, 150, seed=1).ids)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_appending_ten_percent_keeps_at_least_85_percent(seed: int) -> None:
    old = _pool([1000] * 5, seed=seed)
    new = _pool([100] * 5, seed=seed + 50, id_prefix="new")
    grown = ImageSet(torch.cat([old.images, new.images]), torch.cat([old.labels, new.labels]),
                     old.classes, old.ids + new.ids)
    before = set(stable_sample(old, 1000, seed=seed).ids)
    after = set(stable_sample(grown, 1000, seed=seed).ids)
    kept = len(before & after) / len(before)
    assert kept >= 0.85, kept
    assert kept < 1.0  # new images must be able to enter the sample


def test_fingerprint_is_order_free_and_content_sensitive() -> None:
    pool = _pool([20, 20])
    rev = pool.subset(torch.arange(len(pool) - 1, -1, -1))
    assert fingerprint(pool) == fingerprint(rev)
    assert fingerprint(pool) != fingerprint(pool.subset(torch.arange(len(pool) - 1)))


def test_write_sample_manifest_round_trip(tmp_path: Path) -> None:
    pool = _pool([50, 50])
    sample = stable_sample(pool, 40)
    manifest = write_sample(sample, tmp_path / "s", seed=0, pool=pool)
    assert read_manifest(tmp_path / "s") == json.loads(json.dumps(manifest))
    assert manifest["class_counts"] == {"c0": 20, "c1": 20}
    loaded = ImageSet.load(tmp_path / "s" / "images.pt")
    assert loaded.ids == sample.ids and torch.equal(loaded.images, sample.images)
    assert manifest["fingerprint"] == fingerprint(loaded)


def test_holdout_split_is_stratified_outside_the_sample_and_stable() -> None:
    pool = _pool([300, 300, 300])
    sample = stable_sample(pool, 300)
    holdout = holdout_split(pool, sample, 150, seed=1)
    assert len(holdout) == 150 and set(holdout.class_counts().values()) == {50}
    assert not set(holdout.ids) & set(sample.ids)
    assert holdout_split(pool, set(sample.ids), 150, seed=1).ids == holdout.ids  # ids or the set itself
    shuffled = pool.subset(torch.randperm(len(pool), generator=torch.Generator().manual_seed(1)))
    assert set(holdout_split(shuffled, sample, 150, seed=1).ids) == set(holdout.ids)  # content, not position
    assert set(holdout_split(pool, sample, 150, seed=2).ids) != set(holdout.ids)


def test_holdout_split_takes_what_is_left_when_asked_for_more() -> None:
    pool = _pool([30, 30])
    sample = stable_sample(pool, 40)
    assert sorted(holdout_split(pool, sample, 1000, seed=1).ids) == sorted(set(pool.ids) - set(sample.ids))
    assert len(holdout_split(pool, pool, 10, seed=1)) == 0
    assert len(holdout_split(pool, sample, 0, seed=1)) == 0
    with pytest.raises(DataError, match="holdout size"):
        holdout_split(pool, sample, -1, seed=1)
