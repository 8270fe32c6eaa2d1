"""Auxiliary models inherited from the ancestry (weight selection): exact where nothing is dropped,
the selected slices elsewhere, recorded in the pool, and the paper's random start still available."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lgp_edge.cli import main
from lgp_edge.errors import UsageError
from lgp_edge.models.ancestry import create_ancestry
from lgp_edge.models.instances import create_auxiliary, plan_instances
from lgp_edge.pool.auxiliary import start_from_ancestry
from lgp_edge.pool.distill import DistillObjective
from lgp_edge.pool.inherit import inherit_from_ancestry, inherited_blocks
from lgp_edge.specs import InstanceSpec

QUICK = ["--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "32", "--quiet"]


def test_blocks_are_evenly_spaced_from_the_first() -> None:
    assert inherited_blocks(6, 12) == (0, 2, 4, 6, 8, 10)
    assert inherited_blocks(9, 12) == (0, 1, 3, 4, 5, 7, 8, 9, 11)
    assert inherited_blocks(12, 12) == tuple(range(12))
    with pytest.raises(UsageError, match="--aux-init random"):
        inherited_blocks(13, 12)


def test_full_width_full_depth_inheritance_is_the_ancestry_itself() -> None:
    torch.manual_seed(0)
    anc, aspec = create_ancestry("lgp_test_tiny")
    whole = InstanceSpec(name="b", width="b", embed_dim=aspec.embed_dim, depth=aspec.depth,
                         num_heads=aspec.num_heads, supervision="end")
    student = create_auxiliary(aspec, whole)
    inherit_from_ancestry(student, anc, whole)
    x = torch.randn(3, aspec.in_chans, aspec.img_size, aspec.img_size)
    torch.testing.assert_close(student.eval()(x), anc.eval()(x), rtol=0, atol=0)


def test_narrow_instances_take_the_first_heads_channels_and_every_kth_hidden_unit() -> None:
    torch.manual_seed(0)
    anc, aspec = create_ancestry("lgp_test_tiny")
    ti, b = plan_instances(aspec, 6)
    student = create_auxiliary(aspec, ti)
    blocks = inherit_from_ancestry(student, anc, ti)
    d, big = ti.embed_dim, aspec.embed_dim
    k = anc.blocks[0].mlp.fc1.out_features // student.blocks[0].mlp.fc1.out_features
    for i, j in enumerate(blocks):
        s, t = student.blocks[i], anc.blocks[j]
        rows = torch.cat([torch.arange(d) + m * big for m in range(3)])  # q, k, v of the first heads
        assert torch.equal(s.attn.qkv.weight, t.attn.qkv.weight[rows][:, :d])
        assert torch.equal(s.attn.proj.weight, t.attn.proj.weight[:d, :d])
        assert torch.equal(s.mlp.fc1.weight, t.mlp.fc1.weight[::k][:, :d])
        assert torch.equal(s.norm1.weight, t.norm1.weight[:d])
    assert torch.equal(student.pos_embed, anc.pos_embed[..., :d])
    assert torch.equal(student.head.weight, anc.head.weight[:, :d])
    # the distillation's transformation matrices start as that channel selection
    students = torch.nn.ModuleDict({i.name: create_auxiliary(aspec, i) for i in (ti, b)})
    objective = DistillObjective(anc, students, (ti, b), teacher_dim=big, teacher_depth=aspec.depth)
    used = start_from_ancestry(objective, anc, (ti, b))
    assert aspec.depth == 12 and used == {"ti6": [0, 2, 4, 6, 8, 10], "b6": [0, 2, 4, 6, 8, 10]}
    h = torch.randn(5, big)
    for linear in [*objective.transforms.values(), *objective.attn_transforms.values()]:
        torch.testing.assert_close(linear(h), h[:, :linear.out_features], rtol=0, atol=0)


def test_pool_build_records_the_aux_init_and_random_is_the_papers(tmp_path: Path) -> None:
    runs = {}
    for aux in ("ancestry", "random"):
        out = tmp_path / aux
        assert main(["pool", "build", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data",
                     "synthetic", "--out", str(out), "--init", "lstsq", "--aux-init", aux, *QUICK]) == 0
        runs[aux] = json.loads((out / "pool.json").read_text())["history"][0]
    assert runs["ancestry"]["aux_init"] == "ancestry"
    assert runs["ancestry"]["inherited_blocks"] == {"ti6": [0, 2, 4, 6, 8, 10], "b6": [0, 2, 4, 6, 8, 10]}
    assert runs["random"]["aux_init"] == "random" and runs["random"]["inherited_blocks"] is None


def test_bad_aux_init_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p"
    with pytest.raises(SystemExit) as exc:
        main(["pool", "build", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic",
              "--out", str(out), "--aux-init", "zeros", *QUICK])
    assert exc.value.code == 2 and "--aux-init" in capsys.readouterr().err and not out.exists()
