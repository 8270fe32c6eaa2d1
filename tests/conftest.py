"""Shared fixtures: tiny pools (dim 32, 16 px) built in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_tiny_pool


@pytest.fixture(autouse=True)
def _private_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's measurement store (~/.local/share/lgp-edge)."""
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path_factory.mktemp("store") / "measurements.sqlite"))


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved random tiny pool, depth 6, with (made-up, marked synthetic) top-1 per descendant. Read-only."""
    return make_tiny_pool(tmp_path_factory.mktemp("pool") / "tiny")
