"""``pool info`` and ``pool plan`` print counts: they are computed from the spec (``models.plan``), without torch.

Both used to import torch, timm and torchvision and build the models (``pool info`` loaded the whole pool, ``pool
plan`` built a random-weight pool, DeiT-B's included): 4-6 s and 870 MB for the demo pool's ``pool info``, 16 s
and 1.26 GB for ``pool plan --ancestry deit_base_patch16_224``. The numbers are the ones counting the built
modules gives, checked here against built pools.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import cli_imports, error_lines, make_tiny_pool, run_cli

from lgp_edge.baselines.snnet import snnet_spec
from lgp_edge.cli import main
from lgp_edge.models.ancestry import ancestry_spec, create_ancestry
from lgp_edge.models.descendant import count_params
from lgp_edge.models.plan import (
    descendant_params,
    instance_params,
    plan_instances,
    pool_shapes,
    stitch_params,
    stored_params,
)
from lgp_edge.pool.manifest import demo_pool_dir
from lgp_edge.pool.pool import LearngenePool, load_pool
from lgp_edge.specs import PoolSpec


def _probe(argvs: list[list[str]]) -> dict[str, Any]:
    got = cli_imports(argvs)
    return {"codes": got["codes"], "imported": got["imported"]}


def test_pool_info_plan_and_ancestry_list_do_not_import_torch(tiny_pool: Path) -> None:
    argvs = [["pool", "info"], ["pool", "info", "--json"], ["pool", "info", str(tiny_pool)],
             ["pool", "info", str(tiny_pool), "--json"],
             ["pool", "plan", "--ancestry", "lgp_test_tiny"], ["pool", "plan", "--ancestry", "lgp_vit_fmnist",
                                                               "--depth", "9", "--widths", "ti,s,b", "--chains",
                                                               "tsb", "--json"],
             ["ancestry", "list"], ["ancestry", "list", "--json"]]
    assert _probe(argvs) == {"codes": [0] * len(argvs), "imported": []}


def test_pool_info_refusals_do_not_import_torch(tiny_pool: Path, tmp_path: Path) -> None:
    """A damaged pool is refused (exit 2) from the weights file's hash and header, not by loading it."""
    p = Path(shutil.copytree(tiny_pool, tmp_path / "pool"))
    mf = json.loads((p / "pool.json").read_text())
    mf["spec"]["instances"][0]["embed_dim"] = 64
    mf["descendants"] = []
    (p / "pool.json").write_text(json.dumps(mf))
    assert _probe([["pool", "info", str(p)]]) == {"codes": [2], "imported": []}


def _meta_pool(spec: PoolSpec) -> LearngenePool:
    with torch.device("meta"):
        return LearngenePool(spec, init=False)


def _check_counts(spec: PoolSpec, pool: LearngenePool) -> None:
    """The arithmetic against the modules of ``pool`` (built from ``spec``)."""
    assert list(pool_shapes(spec).items()) == [(k, tuple(v.shape)) for k, v in pool.state_dict().items()]
    assert stored_params(spec) == count_params(pool) == pool.stored_params()
    assert stitch_params(spec) == count_params(pool.stitches)
    for inst in spec.instances:
        assert instance_params(spec, inst) == count_params(pool.models[inst.name].blocks), inst.name
    for d in pool.descendants():
        assert descendant_params(spec, d) == count_params(pool.descendant(d)), d.key


def test_sizes_are_those_of_the_built_pools(tiny_pool: Path) -> None:
    """The tiny and the demo pool as loaded (weights and all), and families built here: Ti->S->B chains, SN-Net's
    full-depth anchors, DeiT-B's depth groups (on the meta device)."""
    for path in (tiny_pool, demo_pool_dir()):
        pool, manifest = load_pool(path)
        _check_counts(manifest.spec, pool)
    tiny = ancestry_spec("lgp_test_tiny")
    torch.manual_seed(0)
    _check_counts(PoolSpec(tiny, 9, plan_instances(tiny, 9, ("ti", "s", "b")), chains="tsb"),
                  LearngenePool(PoolSpec(tiny, 9, plan_instances(tiny, 9, ("ti", "s", "b")), chains="tsb")))
    _check_counts(snnet_spec(tiny), LearngenePool(snnet_spec(tiny)))
    deit = ancestry_spec("deit_base_patch16_224")
    for depth in (6, 9):
        spec = PoolSpec(deit, depth, plan_instances(deit, depth, ("ti", "s", "b")), chains="tsb")
        _check_counts(spec, _meta_pool(spec))


@pytest.mark.parametrize("name", ["lgp_test_tiny", "lgp_vit_fmnist", "lgp_vit_fmnist_192", "deit_base_patch16_224",
                                  "deit_small_patch16_224", "vit_base_patch32_384"])
def test_ancestry_spec_is_the_built_ancestrys(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``pool plan`` plans from is the spec of the ancestry ``create_ancestry`` builds; timm's models are
    built on the meta device (nothing allocated)."""
    import timm

    built: list[str] = []
    create = timm.create_model

    def spy(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = create(*args, **kwargs)
        built.extend({p.device.type for p in model.parameters()})
        return model

    monkeypatch.setattr(timm, "create_model", spy)
    spec = ancestry_spec(name)
    assert set(built) <= {"meta"}
    monkeypatch.setattr(timm, "create_model", create)
    assert spec == create_ancestry(name)[1]


def _old_summary(path: Path) -> dict[str, Any]:
    """``pool info``'s numbers as they were computed: on the loaded pool."""
    pool, manifest = load_pool(path)
    known = {r.key: r for r in manifest.descendants}
    rows = [known.get(d.key) or pool.record(d) for d in pool.descendants()]
    return {"pool_id": pool.pool_id, "stitch_layers": len(pool.stitches), "stitch_params": count_params(pool.stitches),
            "stored_params": pool.stored_params(),
            "instances": [count_params(pool.models[i.name].blocks) for i in manifest.spec.instances],
            "descendants": [{"key": r.key, "blocks": r.blocks, "params": r.params, "flops": r.flops, "top1": r.top1}
                            for r in rows]}


def test_info_numbers_are_the_loaded_pools(tiny_pool: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    unevaluated = make_tiny_pool(tmp_path / "unevaluated", depth=9, widths=("ti", "s", "b"), with_records=False)
    for path in (demo_pool_dir(), tiny_pool, unevaluated):
        capsys.readouterr()
        assert main(["pool", "info", str(path), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        info["instances"] = [i["params"] for i in info["instances"]]
        assert {k: info[k] for k in ("pool_id", "stitch_layers", "stitch_params", "stored_params", "instances",
                                     "descendants")} == _old_summary(path)


@pytest.mark.parametrize(("ancestry", "depth", "widths", "chains"), [
    ("lgp_test_tiny", 6, ("ti", "b"), "pairs"), ("lgp_test_tiny", 9, ("ti", "s", "b"), "tsb"),
    ("lgp_vit_fmnist", 6, ("s", "b"), "pairs"), ("deit_base_patch16_224", 6, ("ti", "b"), "pairs")])
def test_plan_numbers_are_the_built_pools(ancestry: str, depth: int, widths: tuple[str, ...], chains: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["pool", "plan", "--ancestry", ancestry, "--depth", str(depth), "--widths", ",".join(widths),
                 "--chains", chains, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    aspec = create_ancestry(ancestry)[1]
    spec = PoolSpec(aspec, depth, plan_instances(aspec, depth, widths), chains=chains)
    pool = _meta_pool(spec) if ancestry.startswith("deit") else LearngenePool(spec)
    assert out["ancestry"] == aspec.to_dict() and out["pool_id"] == pool.pool_id
    assert out["stored_params"] == pool.stored_params()
    assert [(r["key"], r["params"], r["flops"], r["blocks"]) for r in out["descendants"]] == [
        (d.key, r.params, r.flops, r.blocks) for d in pool.descendants() for r in [pool.record(d)]]


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--ancestry", "deit_bse_patch16_224"], "did you mean deit_base_patch16_224"),
    (["--ancestry", "deit_base_distilled_patch16_224"], "has a distillation token"),
    (["--ancestry", "deit_tiny_patch16_224"], "cannot be split into width 'ti'"),
    (["--ancestry", "lgp_test_tiny", "--depth", "7"], "--depth must be one of 6, 9"),
    (["--ancestry", "lgp_test_tiny", "--widths", "ti,m"], "unknown width code 'm'"),
    (["--ancestry", "lgp_test_tiny", "--chains", "tsb"], "--widths ti,s,b"),
    # planned a one-descendant pool that 'pool build' refuses; named a width 'none'
    (["--ancestry", "lgp_test_tiny", "--widths", "ti"], "--widths ti is one width"),
    (["--ancestry", "lgp_test_tiny", "--widths", ""], "--widths names no width"),
])
def test_plan_refusals_are_one_line(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run_cli(["pool", "plan", *argv], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
