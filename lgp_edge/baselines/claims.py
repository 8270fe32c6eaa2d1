"""The paper's claims against SN-Net (METHOD.md §5), computed from measured results (benchmark issue §4).

``methods`` maps a method name to ``{"stored_params": int, "configs": [{"key", "params", "flops", "top1"}]}``.
Names used: ``lgp_d6_learned``, ``lgp_d6_lstsq``, ``lgp_d9_learned``, ``lgp_d9_lstsq``, ``snnet``.
"""

from __future__ import annotations

from typing import Any

from lgp_edge.errors import UsageError

LGP_METHOD = ("lgp_d6_learned", "lgp_d9_learned")  # the paper's method: learned stitch init, both depths
STORAGE_HELD_BELOW = 0.5  # "far less storage": the paper's pool is 0.40x SN-Net's (47.8 M vs 118.4 M)

PAPER = {  # reference points at DeiT scale (METHOD.md §2, §4, §5)
    "storage_ratio": round(47.8e6 / 118_403_448, 3),
    "min_flops_ratio": round(0.64e9 / 1_258_411_200, 3),
}


def _need(methods: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if n not in methods or not methods[n].get("configs")]
    if missing:
        raise UsageError(f"claims need results for {', '.join(missing)}")


def front_deltas(lgp: list[dict[str, Any]], snnet: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per SN-Net config: best LGP top-1 among descendants with FLOPs <= its FLOPs, minus its top-1.

    Configs below the smallest LGP descendant's FLOPs are skipped (no LGP model reaches that level).
    """
    out = []
    for c in sorted(snnet, key=lambda r: (r["flops"], r["key"])):
        cands = [r for r in lgp if r["flops"] <= c["flops"]]
        if not cands:
            continue
        best = max(cands, key=lambda r: r["top1"])
        out.append({"snnet_key": c["key"], "snnet_flops": c["flops"], "snnet_top1": c["top1"],
                    "lgp_key": best["key"], "lgp_flops": best["flops"], "lgp_top1": best["top1"],
                    "delta": round(best["top1"] - c["top1"], 3)})
    return out


def compute_claims(methods: dict[str, Any]) -> dict[str, Any]:
    """``storage_ratio``, ``min_flops_ratio``, ``front_delta_min``, ``init_delta_mean``, each with ``*_held``."""
    _need(methods, "lgp_d6_learned", "lgp_d6_lstsq", "snnet")
    snnet = methods["snnet"]["configs"]
    lgp = [dict(r, method=m) for m in LGP_METHOD if m in methods for r in methods[m]["configs"]]

    storage_ratio = methods["lgp_d6_learned"]["stored_params"] / methods["snnet"]["stored_params"]
    min_lgp = min(lgp, key=lambda r: r["flops"])
    min_sn = min(snnet, key=lambda r: r["flops"])
    min_flops_ratio = min_lgp["flops"] / min_sn["flops"]

    deltas = front_deltas(lgp, snnet)
    worst = min(deltas, key=lambda d: d["delta"]) if deltas else None

    learned = {r["key"]: r["top1"] for r in methods["lgp_d6_learned"]["configs"]}
    lstsq = {r["key"]: r["top1"] for r in methods["lgp_d6_lstsq"]["configs"]}
    common = sorted(set(learned) & set(lstsq))
    if not common:
        raise UsageError("the depth-6 learned and lstsq pools share no descendant")
    init_deltas = {k: round(learned[k] - lstsq[k], 3) for k in common}
    init_delta_mean = sum(init_deltas.values()) / len(common)

    return {
        "storage_ratio": round(storage_ratio, 4),
        "storage_ratio_held": storage_ratio < STORAGE_HELD_BELOW,
        "storage_detail": {"lgp_d6_stored_params": methods["lgp_d6_learned"]["stored_params"],
                           "snnet_stored_params": methods["snnet"]["stored_params"],
                           "criterion": f"held if < {STORAGE_HELD_BELOW} (far less storage)",
                           "paper": PAPER["storage_ratio"]},
        "min_flops_ratio": round(min_flops_ratio, 4),
        "min_flops_ratio_held": min_flops_ratio < 1.0,
        "min_flops_detail": {"lgp_key": min_lgp["key"], "lgp_method": min_lgp["method"],
                             "lgp_flops": min_lgp["flops"], "lgp_top1": min_lgp["top1"],
                             "snnet_key": min_sn["key"], "snnet_flops": min_sn["flops"], "snnet_top1": min_sn["top1"],
                             "criterion": "held if < 1 (LGP reaches below SN-Net's smallest anchor)",
                             "paper": PAPER["min_flops_ratio"]},
        "front_delta_min": None if worst is None else worst["delta"],
        "front_delta_min_held": worst is not None and worst["delta"] >= 0.0,
        "front_detail": {"lgp_methods": [m for m in LGP_METHOD if m in methods],
                         "compared_snnet_configs": len(deltas), "snnet_configs": len(snnet),
                         "lgp_better_or_equal": sum(d["delta"] >= 0 for d in deltas),
                         "delta_mean": round(sum(d["delta"] for d in deltas) / len(deltas), 3) if deltas else None,
                         "worst": worst,
                         "criterion": "held if >= 0 points: at every FLOPs level both reach, the best LGP "
                                      "descendant within that SN-Net config's FLOPs is at least as accurate",
                         "per_config": deltas},
        "init_delta_mean": round(init_delta_mean, 3),
        "init_delta_mean_held": init_delta_mean > 0.0,
        "init_detail": {"descendants": len(common), "learned_better": sum(v > 0 for v in init_deltas.values()),
                        "criterion": "held if > 0 points (learned init beats lstsq init on average, depth 6)",
                        "per_descendant": init_deltas},
    }
