"""The memory number lgp-edge charges a model, and what an export of a named descendant says about budgets."""

from __future__ import annotations

import json

from helpers import run_cli

from lgp_edge.pool.manifest import read_manifest
from lgp_edge.pool.pool import resolve_pool
from lgp_edge.select import memory_mb


def test_a_named_descendant_that_breaks_the_budgets_is_exported_with_a_warning_and_recorded(tmp_path, capsys,
                                                                                            caplog):
    """export --descendant ignored both budgets silently: the manifest recorded a 1 MB budget beside a model
    charged 4.66 MB, with nothing saying it does not fit."""
    out = tmp_path / "exp"
    rc, err = run_cli(["export", "--target", "android-arm64", "--memory-mb", "1", "--budget-ms", "0.01",
                       "--descendant", "b6.0-5", "--format", "onnx", "--val-images", "16", "--out", str(out)], capsys)
    assert rc == 0, err
    assert "b6.0-5 does not fit" in caplog.text and "MB > 1 MB" in caplog.text and "ms >" in caplog.text
    mf = json.loads((out / "manifest.json").read_text())
    pm = read_manifest(resolve_pool(None))
    record = next(r for r in pm.descendants if r.key == "b6.0-5")
    expected = memory_mb(pm.spec, record, "fp32", 1)
    assert mf["selection"]["fits_memory"] is False and mf["selection"]["fits_latency"] is False
    assert mf["selection"]["memory_mb"] == expected
    assert mf["descendant"]["memory_mb"] == expected  # every export says what it was charged


def test_a_named_descendant_within_the_budgets_exports_without_a_warning(tmp_path, capsys, caplog):
    out = tmp_path / "exp"
    rc, err = run_cli(["export", "--target", "cpu", "--descendant", "ti6.0-5", "--format", "onnx", "--val-images",
                       "16", "--out", str(out)], capsys)
    assert rc == 0, err
    assert "does not fit" not in caplog.text
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["selection"]["fits_memory"] is True and mf["descendant"]["memory_mb"] > 0
