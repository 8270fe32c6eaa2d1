"""Shared fixtures: tiny pools (dim 32, 16 px) built in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lgp_edge.models.ancestry import create_ancestry
from lgp_edge.models.instances import plan_instances
from lgp_edge.pool.pool import LearngenePool, PoolManifest, save_pool
from lgp_edge.specs import PoolSpec, PreprocessSpec

TINY = "lgp_test_tiny"


def make_tiny_pool(out: Path, depth: int = 6, widths: tuple[str, ...] = ("ti", "b"), seed: int = 0,
                   with_records: bool = True) -> Path:
    """A random-weight pool of the tiny ancestry, saved to ``out`` (for tests that need any pool)."""
    torch.manual_seed(seed)
    ancestry, aspec = create_ancestry(TINY)
    spec = PoolSpec(aspec, depth, plan_instances(aspec, depth, widths))
    pool = LearngenePool(spec).eval()
    pre = PreprocessSpec(img_size=aspec.img_size, in_chans=aspec.in_chans, mean=(0.286,), std=(0.353,),
                         labels=tuple(f"c{i}" for i in range(aspec.num_classes)))
    records = tuple(pool.record(d, top1=float(10 + i)) for i, d in enumerate(pool.descendants())) \
        if with_records else ()
    manifest = PoolManifest(spec=spec, preprocess=pre, data="synthetic", stitch_init="learned", stage="distilled",
                            descendants=records)
    save_pool(out, pool, manifest, ancestry=ancestry)
    return out


@pytest.fixture(autouse=True)
def _private_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's measurement store (~/.local/share/lgp-edge)."""
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path_factory.mktemp("store") / "measurements.sqlite"))


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved random tiny pool, depth 6, with (made-up, marked synthetic) top-1 per descendant. Read-only."""
    return make_tiny_pool(tmp_path_factory.mktemp("pool") / "tiny")
