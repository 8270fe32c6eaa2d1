"""benchmarks/ti_front.py on the shipped demo pool and real data, with few images: the model it builds is the
pool's descendant when given the pool's stitch, and the JSON it writes holds every front it measured."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers import load_benchmark

from lgp_edge.pool.manifest import demo_pool_dir
from lgp_edge.pool.pool import load_pool


def _bench():
    return load_benchmark("ti_front", "bench_ti_front")


def test_a_ti_front_with_the_pools_stitch_is_the_pools_descendant() -> None:
    bench = _bench()
    pool, _ = load_pool(demo_pool_dir())
    pool.eval()
    x = torch.randn(4, 1, 28, 28)
    for key in ("ti6.0-0+b6.0-5", "ti6.0-2+b6.3-5", "ti6.0-4+b6.5-5"):
        spec = pool.find(key)
        j, k = spec.segments[0].last, spec.segments[1].first
        model = bench.TiFront(pool.models["ti6"], j, pool.stitches[spec.stitches[0]], pool.models["b6"], k).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), pool.descendant(key)(x))


def test_ti_front_benchmark_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "tf.json"
    assert _bench().main(["--images", "200", "--fit-images", "200", "--held-images", "50", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["test_images"] == 200 and res["code_version"] and res["cpu"]
    ti, b = res["embedding"]["ti6"], res["embedding"]["b6"]
    assert (ti["dim"], ti["pixels"], b["dim"]) == (32, 49, 128)
    assert 0.9 < ti["pixel_r2"] <= ti["pca_bound"] + 1e-4 < 1.0 and b["pixel_r2"] > 0.999  # 32 < 49 < 128 channels
    fronts = res["fronts"]
    assert [(f["ti_blocks"], f["b_blocks"]) for f in fronts] == [(0, 6), (1, 6), (1, 5), (2, 4), (3, 3), (4, 2),
                                                                  (5, 1)]
    assert fronts[0]["descendant"] is None and fronts[0]["top1_pool_finetuned"] is None
    for f in fronts[1:]:
        assert f["descendant"].startswith("ti6.0-") and 0 <= f["top1_pool_finetuned"] <= 100
    assert all(0 <= f["top1_lstsq_untrained"] <= 100 and f["stitch_r2"] <= 1 for f in fronts)
    assert fronts[0]["stitch_r2"] > 0.9  # Ti's embedding maps onto B's almost linearly
    assert set(res["references"]) == {"ti6.0-5", "b6.0-5"}
