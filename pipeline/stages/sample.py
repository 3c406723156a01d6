"""The `sample` stage: the stable stratified sample of the raw store's training images."""

from __future__ import annotations

import os

from pipeline.config import Params
from pipeline.contracts import SampleManifest
from pipeline.data import RawStore, stable_sample, write_sample


def sample_stage(params: Params, store_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> SampleManifest:
    """Write ``images.pt`` and ``manifest.json`` (``SampleManifest``) into ``out_dir``; returns the manifest."""
    pool = RawStore(store_dir).split("train")
    sample = stable_sample(pool, params.sample.size, params.sample.seed)
    return SampleManifest.model_validate(write_sample(sample, out_dir, seed=params.sample.seed, pool=pool))
