"""The paper's claims against SN-Net (docs/METHOD.md §5), computed from measured results.

``methods`` maps a method name to ``{"stored_params": int, "configs": [{"key", "params", "flops", "top1"}]}``.
Names used: ``lgp_d6_learned``, ``lgp_d6_lstsq``, ``lgp_d9_learned``, ``lgp_d9_lstsq``, ``snnet``.
"""

from __future__ import annotations

import re
from typing import Any

from lgp_edge.errors import UsageError

LGP_METHOD = ("lgp_d6_learned", "lgp_d9_learned")  # the paper's method: learned stitch init, both depths
STORAGE_HELD_BELOW = 0.5  # "far less storage": the paper's pool is 0.40x SN-Net's (47.8 M vs 118.4 M)

PAPER = {  # reference points at DeiT scale (docs/METHOD.md §2, §4, §5)
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


def family(key: str) -> str:
    """Which widths a descendant runs, in order: ``ti12.0-2+s12.1-11`` -> ``ti->s``, ``b6.0-5`` -> ``b``."""
    return "->".join(re.match(r"[a-z]+", part).group() for part in key.split("+"))


def family_ranges(configs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per family, in order of first appearance by FLOPs: how many descendants and their top-1 range."""
    out: dict[str, dict[str, Any]] = {}
    for c in sorted(configs, key=lambda r: (r["flops"], r["key"])):
        f = out.setdefault(family(c["key"]), {"count": 0, "top1_min": c["top1"], "top1_max": c["top1"]})
        f["count"] += 1
        f["top1_min"], f["top1_max"] = min(f["top1_min"], c["top1"]), max(f["top1_max"], c["top1"])
    return out


def front_by_family(deltas: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``front_deltas`` grouped by the SN-Net config's family: how many configs, how many the LGP front matches
    or beats, and the worst of them."""
    out: dict[str, dict[str, Any]] = {}
    for d in deltas:
        f = out.setdefault(family(d["snnet_key"]), {"configs": 0, "lgp_at_or_ahead": 0, "worst": d})
        f["configs"] += 1
        f["lgp_at_or_ahead"] += d["delta"] >= 0
        if d["delta"] < f["worst"]["delta"]:
            f["worst"] = d
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


# The accuracy goals of this package's recipe (the default stitch init, both depths) against SN-Net.
GOALS = {"front_share_at_least": 0.9, "front_delta_min_at_least": -1.0, "storage_ratio_at_most": 0.45,
         "min_flops_ratio_at_most": 0.55}


def init_table(methods: dict[str, Any], depth: int = 6) -> list[dict[str, Any]]:
    """Per stitch init at one depth: mean stitch R^2 on held-out features, mean stitched top-1 before and
    after fine-tuning (descendants that use a stitch layer), from the ``lgp_d{depth}_{init}`` results."""
    rows = []
    for name, m in methods.items():
        if not name.startswith(f"lgp_d{depth}_") or "top1_before_finetune" not in m:
            continue
        stitched = [r for r in m["configs"] if "+" in r["key"]]
        before = [m["top1_before_finetune"][r["key"]] for r in stitched if r["key"] in m["top1_before_finetune"]]
        rows.append({"init": m.get("stitch_init", name.split("_", 2)[-1]), "method": name,
                     "stitch_r2_mean": m.get("stitch_r2_mean"),
                     "stitched_top1_before_mean": round(sum(before) / len(before), 3) if before else None,
                     "stitched_top1_after_mean": round(sum(r["top1"] for r in stitched) / len(stitched), 3)
                     if stitched else None,
                     "top1_after_min": min(r["top1"] for r in m["configs"]),
                     "top1_after_max": max(r["top1"] for r in m["configs"])})
    return rows


def compute_goals(methods: dict[str, Any], default_init: str) -> dict[str, Any]:
    """The package's goals with the default init: the front against SN-Net, storage, smallest model, and
    instances alone no worse after fine-tuning than right after distillation. The front draws on every depth
    group; the storage goal counts the depth-6 pool, as the paper does, and ``front_storage_ratio`` counts
    every pool the front draws on."""
    names = [f"lgp_d{d}_{default_init}" for d in (6, 9) if f"lgp_d{d}_{default_init}" in methods]
    _need(methods, "snnet", *(names or [f"lgp_d6_{default_init}"]))
    snnet = methods["snnet"]["configs"]
    lgp = [dict(r, method=m) for m in names for r in methods[m]["configs"]]
    deltas = front_deltas(lgp, snnet)
    share = sum(d["delta"] >= 0 for d in deltas) / len(deltas) if deltas else 0.0
    worst = min((d["delta"] for d in deltas), default=None)
    storage = methods[names[0]]["stored_params"] / methods["snnet"]["stored_params"]
    # the front draws on every depth group; a user who wants that front stores all of them
    front_storage = sum(methods[m]["stored_params"] for m in names) / methods["snnet"]["stored_params"]
    min_ratio = min(r["flops"] for r in lgp) / min(r["flops"] for r in snnet)
    instances = {}
    for m in names:
        after = {r["key"]: r["top1"] for r in methods[m]["configs"]}
        for key, top1 in (methods[m].get("instances_after_distill") or {}).items():
            instances[f"{m}:{key}"] = {"after_distill": top1, "after_finetune": after.get(key),
                                       "held": after.get(key) is not None and after[key] >= top1}
    return {
        "methods": names, "default_init": default_init, "criteria": GOALS,
        "front_share": round(share, 4), "front_delta_min": worst,
        "front_held": share >= GOALS["front_share_at_least"] and worst is not None
        and worst >= GOALS["front_delta_min_at_least"],
        "storage_ratio": round(storage, 4), "storage_held": storage <= GOALS["storage_ratio_at_most"],
        "front_storage_ratio": round(front_storage, 4),
        "min_flops_ratio": round(min_ratio, 4), "min_flops_held": min_ratio <= GOALS["min_flops_ratio_at_most"],
        "instances": instances, "instances_held": bool(instances) and all(v["held"] for v in instances.values()),
        "every_descendant_min_top1": min(r["top1"] for m in names for r in methods[m]["configs"]),
        "front_by_snnet_family": front_by_family(deltas),
        "families": {m: family_ranges(methods[m]["configs"]) for m in (*names, "snnet")},
    }
