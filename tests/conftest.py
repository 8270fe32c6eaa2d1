"""Shared fixtures: tiny pools (dim 32, 16 px) built in seconds."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Under pytest-xdist (``-n``, see pyproject.toml) each worker gets its share of the cores, set before torch
# is imported so that the processes a test starts inherit it: a full-width thread pool in every worker
# oversubscribes the CPUs and makes the suite slower than one serial run.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _CORES // _WORKERS)))

# One exported-graph cache for the whole run (lgp_edge/export/graph_cache.py), never the user's own
# ~/.cache/lgp-edge: made by the process that starts the xdist workers (it loads this file first), shared by every
# worker and every process a test starts, as two lgp-edge commands of one user share theirs, and removed when that
# process ends. A model exported by one test is read back by the next, as in a user's profile-then-export.
if os.environ.get("PYTEST_XDIST_WORKER") and os.path.isdir(os.environ.get("LGP_EDGE_TEST_RUN_CACHE", "")):
    _CACHE = os.environ["LGP_EDGE_TEST_RUN_CACHE"]
else:
    _CACHE = tempfile.mkdtemp(prefix="lgp-edge-test-cache-")
    os.environ["LGP_EDGE_TEST_RUN_CACHE"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, True)
os.environ["LGP_EDGE_CACHE"] = _CACHE

import pytest  # noqa: E402
from helpers import make_tiny_pool  # noqa: E402


@pytest.fixture(autouse=True)
def _private_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's measurement store (~/.local/share/lgp-edge)."""
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path_factory.mktemp("store") / "measurements.sqlite"))


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved random tiny pool, depth 6, with (made-up, marked synthetic) top-1 per descendant. Read-only."""
    return make_tiny_pool(tmp_path_factory.mktemp("pool") / "tiny")
