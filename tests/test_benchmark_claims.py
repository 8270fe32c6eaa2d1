"""The benchmark's claims, computed from a small hand-made result set."""

from __future__ import annotations

import pytest

from lgp_edge.baselines.claims import (
    compute_claims,
    compute_goals,
    family,
    family_ranges,
    front_by_family,
    front_deltas,
)
from lgp_edge.errors import UsageError


def rows(*triples: tuple[str, int, float], params: int = 1) -> list[dict]:
    return [{"key": k, "params": params, "flops": f, "top1": t} for k, f, t in triples]


def results(sn_top1_mid: float = 80.0, lstsq_shift: float = -1.0) -> dict:
    d6 = rows(("ti6", 50, 70.0), ("mix", 150, 84.0), ("b6", 300, 88.0))
    return {
        "lgp_d6_learned": {"stored_params": 40, "configs": d6},
        "lgp_d6_lstsq": {"stored_params": 40, "configs": [dict(r, top1=r["top1"] + lstsq_shift) for r in d6]},
        "lgp_d9_learned": {"stored_params": 60, "configs": rows(("ti9", 75, 72.0), ("b9", 450, 89.0))},
        "snnet": {"stored_params": 100, "configs": rows(("ti12", 100, 74.0), ("mid", 200, sn_top1_mid),
                                                         ("b12", 600, 90.0), ("tiny", 40, 60.0))},
    }


def test_claims_hand_computed() -> None:
    c = compute_claims(results())
    assert c["storage_ratio"] == pytest.approx(0.4) and c["storage_ratio_held"]
    assert c["min_flops_ratio"] == pytest.approx(50 / 40) and not c["min_flops_ratio_held"]
    # ti12 (100): best LGP <= 100 is ti9 72 -> -2; mid (200): mix 84 -> +4; b12 (600): b9 89 -> -1; tiny skipped
    assert c["front_delta_min"] == pytest.approx(-2.0) and not c["front_delta_min_held"]
    assert c["front_detail"]["compared_snnet_configs"] == 3
    assert c["front_detail"]["worst"]["snnet_key"] == "ti12"
    assert c["init_delta_mean"] == pytest.approx(1.0) and c["init_delta_mean_held"]
    assert c["init_detail"]["learned_better"] == 3


def test_claims_front_held_and_init_not() -> None:
    r = results(lstsq_shift=+0.5)
    r["snnet"]["configs"] = rows(("ti12", 100, 71.0), ("b12", 600, 88.5))
    c = compute_claims(r)
    assert c["front_delta_min"] == pytest.approx(0.5) and c["front_delta_min_held"]  # b9 89 vs 88.5
    assert c["min_flops_ratio"] == pytest.approx(0.5) and c["min_flops_ratio_held"]
    assert c["init_delta_mean"] == pytest.approx(-0.5) and not c["init_delta_mean_held"]


def test_goals_count_the_storage_of_every_pool_the_front_draws_on() -> None:
    r = results()
    r["lgp_d9_learned"]["configs"] = rows(("ti9", 75, 75.0), ("b9", 450, 91.0))
    g = compute_goals(r, "learned")
    assert g["methods"] == ["lgp_d6_learned", "lgp_d9_learned"]
    # ti12 (100): ti9 75 -> +1; mid (200): mix 84 -> +4; b12 (600): b9 91 -> +1; tiny (40) unreachable
    assert g["front_share"] == 1.0 and g["front_delta_min"] == pytest.approx(1.0) and g["front_held"]
    assert g["storage_ratio"] == pytest.approx(0.4) and g["storage_held"] is True  # depth 6, as the paper counts
    assert g["front_storage_ratio"] == pytest.approx(1.0)  # both depth groups: 40 + 60 of SN-Net's 100
    del r["lgp_d9_learned"]
    assert compute_goals(r, "learned")["front_storage_ratio"] == pytest.approx(0.4)


def test_front_by_family_groups_the_same_deltas() -> None:
    assert family("ti12.0-2+s12.1-11") == "ti->s" and family("b6.0-5") == "b"
    sn = rows(("ti12.0-11", 100, 74.0), ("ti12.0-3+s12.4-11", 150, 80.0), ("ti12.0-5+s12.6-11", 120, 60.0),
              ("s12.0-11", 200, 85.0))
    fam = front_by_family(front_deltas(rows(("ti6.0-5", 50, 70.0), ("ti6.0-0+b6.1-5", 140, 82.0)), sn))
    assert list(fam) == ["ti", "ti->s", "s"]
    assert (fam["ti->s"]["configs"], fam["ti->s"]["lgp_at_or_ahead"]) == (2, 2)  # 120: 70 vs 60; 150: 82 vs 80
    assert fam["ti"]["worst"]["delta"] == pytest.approx(-4.0) and fam["s"]["worst"]["lgp_key"] == "ti6.0-0+b6.1-5"
    assert family_ranges(sn)["ti->s"] == {"count": 2, "top1_min": 60.0, "top1_max": 80.0}


def test_front_deltas_skip_levels_lgp_cannot_reach() -> None:
    assert front_deltas(rows(("a", 10, 50.0)), rows(("s", 5, 40.0))) == []


def test_claims_need_every_method() -> None:
    r = results()
    del r["snnet"]
    with pytest.raises(UsageError, match="snnet"):
        compute_claims(r)


def _bench_module():
    from helpers import load_benchmark

    return load_benchmark("paper_replication")


def test_benchmark_pareto_and_plot(tmp_path) -> None:
    bench = _bench_module()
    assert [r["key"] for r in bench.pareto(rows(("a", 1, 50.0), ("b", 2, 40.0), ("c", 3, 60.0)))] == ["a", "c"]
    methods = results()
    methods["scratch"] = {"stored_params": 3, "configs": rows(("x", 60, 65.0))}
    out = {"methods": methods, "claims": compute_claims(methods), "quick": True, "dataset": {"name": "fashion-mnist"}}
    bench.plot(out, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
