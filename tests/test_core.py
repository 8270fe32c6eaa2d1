"""The pool, its descendants and their sizes."""

from __future__ import annotations

import json

import pytest
import torch

from lgp_edge.cli import main
from lgp_edge.models.ancestry import create_ancestry
from lgp_edge.models.descendant import count_params
from lgp_edge.models.instances import create_auxiliary, plan_instances
from lgp_edge.models.plan import descendant_flops, enumerate_descendants, paired_stitching, vit_flops
from lgp_edge.models.stitch import learned_init, lstsq_init, make_stitch
from lgp_edge.pool.pool import LearngenePool, load_pool
from lgp_edge.specs import PoolSpec


def tiny_spec(depth: int = 6, widths=("ti", "b"), chains: str = "pairs") -> PoolSpec:
    _, a = create_ancestry("lgp_test_tiny")
    return PoolSpec(a, depth, plan_instances(a, depth, widths), chains=chains)


def test_paired_stitching_matches_snnet() -> None:
    cfgs, layers = paired_stitching(12)
    assert len(cfgs) == 34 and max(layers) + 1 == 11
    assert cfgs[:4] == [(0, 0), (0, 1), (1, 0), (1, 1)] and layers[:4] == [0, 0, 0, 0]
    assert cfgs[4:7] == [(1, 2), (2, 1), (2, 2)] and layers[4:7] == [1, 1, 1]
    assert cfgs[-1] == (11, 11) and layers[-1] == 10


# The authors' depth-6 list (ids 0, 2, 19..34): Ti alone, B alone, then SN-Net's paired configs (j, k) in order,
# each running Ti blocks 0..j, the stitch, then B blocks k..5 (block k included).
DEPTH6_KEYS = [
    "ti6.0-5", "b6.0-5",
    "ti6.0-0+b6.0-5", "ti6.0-0+b6.1-5", "ti6.0-1+b6.0-5", "ti6.0-1+b6.1-5",
    "ti6.0-1+b6.2-5", "ti6.0-2+b6.1-5", "ti6.0-2+b6.2-5",
    "ti6.0-2+b6.3-5", "ti6.0-3+b6.2-5", "ti6.0-3+b6.3-5",
    "ti6.0-3+b6.4-5", "ti6.0-4+b6.3-5", "ti6.0-4+b6.4-5",
    "ti6.0-4+b6.5-5", "ti6.0-5+b6.4-5", "ti6.0-5+b6.5-5",
]


def test_depth6_descendants_are_the_papers() -> None:
    descs = enumerate_descendants(tiny_spec(6))
    assert [d.key for d in descs] == DEPTH6_KEYS
    # the stitch layer of config (j, k) is the paired-stitching layer of that config
    cfgs, layers = paired_stitching(6)
    for d, (j, k), layer in zip(descs[2:], cfgs, layers):
        assert (d.segments[0].last, d.segments[1].first, d.stitches) == (j, k, (f"ti6-b6-{layer}",))


@pytest.mark.parametrize("depth,count", [(6, 18), (9, 27)])
def test_enumeration_counts_and_order(depth: int, count: int) -> None:
    descs = enumerate_descendants(tiny_spec(depth))
    keys = [d.key for d in descs]
    assert len(descs) == count and len(set(keys)) == count
    assert keys[0] == f"ti{depth}.0-{depth - 1}" and keys[1] == f"b{depth}.0-{depth - 1}"
    assert keys[2] == f"ti{depth}.0-0+b{depth}.0-{depth - 1}"  # config (0, 0): Ti block 0, then all of B
    assert keys[-1] == f"ti{depth}.0-{depth - 1}+b{depth}.{depth - 1}-{depth - 1}"  # (d-1, d-1)
    assert not any(k.endswith(".head") for k in keys), "every stitched config runs at least one back block"
    overlapping = [d for d in descs if d.num_blocks > depth]
    assert overlapping, "configs with k <= j run more blocks than one model"
    assert max(d.num_blocks for d in descs) == depth + 2  # Ti 0..1 -> B 0..5
    assert all(len(d.stitches) == len(d.segments) - 1 for d in descs)


def test_tsb_chains_add_three_segment_descendants() -> None:
    descs = enumerate_descendants(tiny_spec(6, ("ti", "s", "b"), chains="tsb"))
    triples = [d for d in descs if len(d.segments) == 3]
    assert len(triples) == 10 and triples[0].key == "ti6.0-0+s6.1-1+b6.2-5"
    # a non-overlapping chain ti 0..j -> s j+1.. uses the stitch layer of config (j, j+1)
    cfgs, layers = paired_stitching(6)
    layer_at = dict(zip(cfgs, layers))
    assert triples[0].stitches == (f"ti6-s6-{layer_at[(0, 1)]}", f"s6-b6-{layer_at[(1, 2)]}")
    assert len(descs) == 3 + 16 + 16 + 10


def test_deit_reference_flops() -> None:
    for dim, params_flops in ((192, 1_258_411_200), (384, 4_608_338_304), (768, 17_582_740_224)):
        assert vit_flops(img_size=224, patch_size=16, in_chans=3, embed_dim=dim, depth=12,
                         num_classes=1000) == params_flops


@pytest.mark.parametrize("depth", [6, 9])
def test_plan_deit_base_sizes(depth: int, capsys: pytest.CaptureFixture) -> None:
    assert main(["pool", "plan", "--ancestry", "deit_base_patch16_224", "--depth", str(depth), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["key"]: r for r in out["descendants"]}
    assert len(out["descendants"]) == {6: 18, 9: 27}[depth]
    if depth == 6:
        ti, b, mixed = rows["ti6.0-5"], rows["b6.0-5"], rows["ti6.0-4+b6.5-5"]
        assert round(ti["params"] / 1e6, 2) == 3.05 and round(ti["flops"] / 1e9, 2) == 0.64
        assert round(b["params"] / 1e6, 2) == 44.04 and round(b["flops"] / 1e9, 2) == 8.85
        # the paper's 10.38 M leaves out Ti's position embedding and class token (197*192 + 192 = 38,016)
        assert round((mixed["params"] - 38_016) / 1e6, 2) == 10.38 and round(mixed["flops"] / 1e9, 2) == 2.03
        # the paper's deepest config, Ti 0..1 -> B 0..5: 44.48 M without Ti's pos_embed and cls_token
        deepest = rows["ti6.0-1+b6.0-5"]
        assert round((deepest["params"] - 38_016) / 1e6, 2) == 44.48
        assert "ti6.0-0+b6.0-5" in rows and "ti6.0-5+b6.head" not in rows and "ti6.0-4+b6.head" not in rows
        assert round(out["stored_params"] / 1e6, 1) == 47.8
    else:
        assert rows["ti9.0-8"]["params"] < rows["b9.0-8"]["params"]
        assert all(isinstance(r["params"], int) and isinstance(r["flops"], int) for r in out["descendants"])


def test_single_instance_descendant_equals_its_model() -> None:
    torch.manual_seed(0)
    pool = LearngenePool(tiny_spec()).eval()
    x = torch.randn(3, 1, 16, 16)
    for name in ("ti6", "b6"):
        d = pool.descendant(f"{name}.0-5")
        torch.testing.assert_close(d(x), pool.models[name](x), rtol=0, atol=0)
        assert count_params(d) == count_params(pool.models[name])


def test_analytic_flops_match_the_modules_each_descendant_runs() -> None:
    """descendant_flops against torch's own FLOP counter on the real modules of every descendant (stitched too):
    the multiply-adds of every matmul and conv agree exactly; LayerNorm (5 per element) is the part torch does not
    count. Explicit attention (``fused_attn`` off) so the CPU's fused SDPA kernel is counted as its two matmuls."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = tiny_spec()
    pool = LearngenePool(spec).eval()
    for m in pool.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    a, n = spec.ancestry, spec.ancestry.num_tokens
    widths = {i.name: i.embed_dim for i in spec.instances}
    x = torch.randn(1, a.in_chans, a.img_size, a.img_size)
    keys = []
    for d in pool.descendants():
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            pool.descendant(d.key)(x)
        norms = sum(s.num_blocks * 2 * 5 * n * widths[s.instance] for s in d.segments)
        norms += 5 * n * widths[d.segments[-1].instance]
        assert counter.get_total_flops() // 2 == descendant_flops(spec, d) - norms, d.key
        keys.append(d.key)
    assert len(keys) == 18 and sum("+" in k for k in keys) == 16


def test_lstsq_init_recovers_a_linear_map() -> None:
    torch.manual_seed(0)
    w, b = torch.randn(12, 5), torch.randn(12)
    a1, a2 = torch.randn(200, 5), torch.randn(300, 5)
    stitch = make_stitch(5, 12)
    lstsq_init(stitch, [(a1, a1 @ w.T + b), (a2, a2 @ w.T + b)])
    torch.testing.assert_close(stitch.weight.detach(), w, atol=1e-4, rtol=0)
    torch.testing.assert_close(stitch.bias.detach(), b, atol=1e-4, rtol=0)


def test_lstsq_targets_are_the_back_models_input_to_block_k() -> None:
    """A stitch into back block k is fitted to what B block k receives: B's block k-1 output, or its embedding."""
    from lgp_edge.models.instances import embed, forward_with_taps
    from lgp_edge.pool.stitch_init import feature_pairs_for_lstsq

    torch.manual_seed(0)
    pool = LearngenePool(tiny_spec()).eval()
    x = torch.randn(4, 1, 16, 16)
    pairs = feature_pairs_for_lstsq(pool, x)
    with torch.no_grad():
        ti, b = forward_with_taps(pool.models["ti6"], x), forward_with_taps(pool.models["b6"], x)
        b_embed = embed(pool.models["b6"], x)
    cfgs, layers = paired_stitching(6)
    for (j, k), layer in zip(cfgs, layers):
        layer_pairs = pairs[f"ti6-b6-{layer}"]
        src, dst = layer_pairs[[c for c, lyr in zip(cfgs, layers) if lyr == layer].index((j, k))]
        torch.testing.assert_close(src, ti.hidden[j])
        torch.testing.assert_close(dst, b_embed if k == 0 else b.hidden[k - 1])


def test_learned_init_is_mean_transposed() -> None:
    mats = [torch.randn(8, 32) for _ in range(3)]
    stitch = make_stitch(8, 32)
    learned_init(stitch, mats, None)
    torch.testing.assert_close(stitch.weight.detach(), torch.stack(mats).mean(0).t())
    assert float(stitch.bias.abs().sum()) == 0.0


def test_descendant_exports_without_special_cases(tmp_path) -> None:
    torch.manual_seed(0)
    pool = LearngenePool(tiny_spec()).eval()
    d = pool.descendant("ti6.0-2+b6.2-5").eval()
    x = torch.randn(1, 1, 16, 16)
    ref = d(x)
    traced = torch.jit.trace(d, x)
    torch.testing.assert_close(traced(x), ref)
    exported = torch.export.export(d, (x,))
    torch.testing.assert_close(exported.module()(x), ref)
    torch.onnx.export(d, (x,), str(tmp_path / "d.onnx"), dynamo=False, opset_version=17)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert abs(out - ref.detach().numpy()).max() < 1e-4


def test_save_load_bit_exact_and_tamper_detected(tiny_pool, tmp_path, capsys) -> None:
    import shutil

    from safetensors.torch import load_file

    pool, _ = load_pool(tiny_pool)

    stored = load_file(str(tiny_pool / "weights.safetensors"))
    for k, v in pool.state_dict().items():
        assert torch.equal(v, stored[k])
    copy = tmp_path / "copy"
    shutil.copytree(tiny_pool, copy)
    raw = bytearray((copy / "weights.safetensors").read_bytes())
    raw[-5] ^= 0x01
    (copy / "weights.safetensors").write_bytes(bytes(raw))
    assert main(["pool", "info", str(copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sha256" in err[0]


def test_pool_info_json(tiny_pool, capsys) -> None:
    assert main(["pool", "info", str(tiny_pool), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pool_id"] and len(info["descendants"]) == 18
    pool, _ = load_pool(tiny_pool)
    assert info["stored_params"] == pool.stored_params()
    assert {"key", "params", "flops", "top1"} <= set(info["descendants"][0])
    # the rows are the pool's evaluated records, field for field (the fixture's made-up top-1 10, 11, ...)
    from lgp_edge.pool.pool import read_manifest

    records = read_manifest(tiny_pool).descendants
    assert info["descendants"] == [{"key": r.key, "blocks": r.blocks, "params": r.params, "flops": r.flops,
                                    "top1": r.top1} for r in records]
    descendants = pool.descendants()
    assert [r.key for r in records] == [d.key for d in descendants]
    for i, (r, d) in enumerate(zip(records, descendants)):
        assert (r.blocks, r.params, r.flops, r.top1) == (d.num_blocks, count_params(pool.descendant(d)),
                                                         descendant_flops(pool.spec, d), 10.0 + i)


def test_auxiliary_model_width_and_heads() -> None:
    _, a = create_ancestry("lgp_test_tiny")
    ti, b = plan_instances(a, 9)
    assert (ti.embed_dim, ti.num_heads, ti.supervision) == (8, 1, "front,end")
    assert (b.embed_dim, b.num_heads, b.supervision) == (32, 4, "end")
    m = create_auxiliary(a, ti)
    assert len(m.blocks) == 9 and m.embed_dim == 8


def test_records_of_descendants_defined_differently_are_dropped(tmp_path) -> None:
    """A top-1 evaluated under another definition of a key (other blocks or stitch) is not shown as this one's."""
    from helpers import make_tiny_pool

    from lgp_edge.pool.pool import read_manifest

    pool_dir = make_tiny_pool(tmp_path / "p")
    raw = json.loads((pool_dir / "pool.json").read_text())
    rec = next(r for r in raw["descendants"] if r["key"] == "ti6.0-1+b6.2-5")
    rec["spec"]["stitches"] = ["ti6-b6-0"]  # the stitch layer the key had before config (j, k) ran block k
    raw["descendants"].append(dict(raw["descendants"][0], key="ti6.0-5+b6.head",
                                   spec={**raw["descendants"][0]["spec"]}))
    (pool_dir / "pool.json").write_text(json.dumps(raw))
    manifest = read_manifest(pool_dir)
    keys = {r.key for r in manifest.descendants}
    assert "ti6.0-1+b6.2-5" not in keys and "ti6.0-5+b6.head" not in keys
    assert len(keys) == 17 and "ti6.0-1+b6.1-5" in keys


def test_saved_pool_files_follow_the_umask(tmp_path) -> None:
    """safetensors creates its files 0600; a pool shared between users must be readable like any file."""
    import os
    import stat

    from helpers import make_tiny_pool

    old = os.umask(0o022)
    try:
        out = make_tiny_pool(tmp_path / "pool")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
    assert modes and all(m == 0o644 for m in modes.values()), modes
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
