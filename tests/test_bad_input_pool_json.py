"""Damaged numbers in pool.json: every command that reads the pool refuses them with one line and exit 2.

A descendant record's top-1 that is NaN, infinite, outside [0, 100] or not a number, and a params / FLOPs /
blocks count that is negative, fractional, a bool or a string, used to be accepted: ``select`` explained its
choice with "the highest top-1 (nan%)", ``--json`` printed NaN, and ``report`` and ``pool info`` died with a
traceback. The one reader of pool.json (``lgp_edge.pool.manifest.read_manifest``) now checks them.

Sizes no ViT has (a depth of 200,000 hung ``pool info``; a width of 6144 for 32 allocated 11 GB before the
weights were found not to fit) are refused at once, and a record's blocks, params and FLOPs must be those of its
architecture (``params 0`` made ``select`` charge b6.0-5 0.08 MB instead of 4.66 MB).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import error_lines, make_tiny_pool, run_cli, snapshot

from lgp_edge.pool.manifest import MANIFEST, demo_pool_dir, read_manifest
from lgp_edge.specs import PoolSpec


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pool with evaluated (made-up) records; each test copies it."""
    return make_tiny_pool(tmp_path_factory.mktemp("pristine") / "pool")


def damaged_copy(pristine: Path, root: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    p = Path(shutil.copytree(pristine, root / "pool"))
    mf = json.loads((p / MANIFEST).read_text())
    mutate(mf)
    (p / MANIFEST).write_text(json.dumps(mf, indent=1))  # allow_nan: NaN / Infinity literals, as the fuzzer wrote
    return p


def _first(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(mf: dict[str, Any]) -> None:
        mf["descendants"][0][field] = value
    return mutate


def _last(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(mf: dict[str, Any]) -> None:
        mf["descendants"][-1][field] = value
    return mutate


# (id, mutation, fragment of the one error line)
MUTATIONS = [
    ("top1-nan", _first("top1", float("nan")), "top1 nan"),
    ("top1-inf", _first("top1", float("inf")), "top1 inf"),
    ("top1-minus-inf", _last("top1", float("-inf")), "top1 -inf"),
    ("top1-negative", _first("top1", -50), "top1 -50"),
    ("top1-above-100", _last("top1", 150), "top1 150"),
    ("top1-string", _first("top1", "abc"), "top1 'abc'"),
    ("top1-bool", _first("top1", True), "top1 True"),
    ("top1-list", _first("top1", [12.5]), "top1 [12.5]"),
    ("params-negative", _first("params", -1), "params -1"),
    ("params-fraction", _first("params", 1.5), "params 1.5"),
    ("params-bool", _first("params", True), "params True"),
    ("params-string", _first("params", "5618"), "params '5618'"),
    ("params-nan", _first("params", float("nan")), "params nan"),
    ("flops-negative", _last("flops", -117048), "flops -117048"),
    ("flops-inf", _first("flops", float("inf")), "flops inf"),
    ("flops-null", _first("flops", None), "flops None"),
    ("blocks-negative", _first("blocks", -6), "blocks -6"),
    ("blocks-fraction", _first("blocks", 6.5), "blocks 6.5"),
    # a record listed twice with another top-1: select chose by it among "19 of 19" descendants of an 18-model pool
    ("record-twice", lambda mf: mf["descendants"].append({**mf["descendants"][0], "top1": 99.9}), "twice"),
]

# a budget every descendant meets, so that select would choose (today: by a NaN top-1) rather than refuse
SELECT = ["--profile", "cpu", "--budget-ms", "1e6"]

COMMANDS = {
    "pool-info": lambda p, root: ["pool", "info", str(p)],
    "pool-info-json": lambda p, root: ["pool", "info", str(p), "--json"],
    "select": lambda p, root: ["select", "--pool", str(p), *SELECT],
    "select-json": lambda p, root: ["select", "--pool", str(p), *SELECT, "--json"],
    "report": lambda p, root: ["report", "--pool", str(p), "--out", str(root / "report"), "--profile", "cpu"],
}


# ---------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("mutate", "fragment"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_damaged_record_number_is_refused(mutate: Callable[[dict[str, Any]], None], fragment: str, command: str,
                                          pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path / "store" / "measurements.sqlite"))
    root = tmp_path / "world"
    root.mkdir()
    p = damaged_copy(pristine, root, mutate)
    before = snapshot(root)
    rc, err = run_cli(COMMANDS[command](p, root), capsys)
    lines = error_lines(err)
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert "is damaged" in lines[0] and fragment in lines[0] and "pool.json" in lines[0], err
    assert "lgp-edge pool eval" in lines[0], err  # what to do
    assert snapshot(root) == before  # nothing written
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("name", "mutate", "fragment"), [
    ("descendants-not-a-list", lambda mf: mf.update(descendants={"a": 1}), "descendants"),
    ("record-not-an-object", lambda mf: mf["descendants"].__setitem__(0, 12.5), "descendant 0"),
    ("history-not-a-list", lambda mf: mf.update(history="abc"), "history"),
    ("history-entry-not-an-object", lambda mf: mf.update(history=[1, 2]), "history"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_damaged_record_structure_is_refused(name: str, mutate: Callable[[dict[str, Any]], None], fragment: str,
                                             pristine: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    p = damaged_copy(pristine, tmp_path, mutate)
    before = snapshot(tmp_path)
    rc, err = run_cli(["select", "--pool", str(p), *SELECT, "--json"], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "is damaged" in lines[0] and fragment in lines[0], err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("field", "value"), [("top1", None), ("top1", 0), ("top1", 100), ("top1", 100.0),
                                              ("top1", 37.25)])
def test_valid_edge_values_are_read(field: str, value: Any, pristine: Path, tmp_path: Path) -> None:
    """The bounds themselves and an unevaluated top-1 (null) are fine."""
    p = damaged_copy(pristine, tmp_path, _first(field, value))
    rec = read_manifest(p).descendants[0]
    assert getattr(rec, field) == value


def test_integral_float_count_reads_as_int(pristine: Path, tmp_path: Path) -> None:
    """``5618.0`` (an integer written by another JSON writer) is the integer 5618, not refused, not a float."""
    p = damaged_copy(pristine, tmp_path, _first("params", 5618.0))
    rec = read_manifest(p).descendants[0]
    assert rec.params == 5618 and type(rec.params) is int


def test_pristine_pool_still_works(pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path / "store" / "measurements.sqlite"))
    p = Path(shutil.copytree(pristine, tmp_path / "pool"))
    rc, err = run_cli(["pool", "info", str(p), "--json"], capsys)
    assert rc == 0, err
    rc, err = run_cli(["select", "--pool", str(p), *SELECT, "--json"], capsys)
    assert rc == 0, err


def test_the_advice_works(pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The error's advice: emptying the damaged "descendants" list makes the pool readable, and pool eval
    measures them again."""
    p = damaged_copy(pristine, tmp_path, _first("top1", float("nan")))
    rc, err = run_cli(["pool", "info", str(p), "--json"], capsys)
    assert rc == 2 and "empty its \"descendants\" list" in error_lines(err)[0], err
    mf = json.loads((p / MANIFEST).read_text())
    mf["descendants"] = []
    (p / MANIFEST).write_text(json.dumps(mf))
    rc, err = run_cli(["pool", "eval", str(p), "--data", "synthetic", "--max-images", "64", "--quiet"], capsys)
    assert rc == 0, err
    assert all(r.top1 is not None and 0 <= r.top1 <= 100 for r in read_manifest(p).descendants)
    # each record is its own descendant's top-1 on those 64 images, recomputed here (they differ between
    # descendants, so a record measured on another descendant shows)
    expected = _top1_here(p, 64)
    assert len(set(expected.values())) > 1
    assert {r.key: r.top1 for r in read_manifest(p).descendants} == expected


def _top1_here(pool_dir: Path, n: int) -> dict[str, float]:
    """Top-1 % (as pool eval rounds it) of every descendant, in eval mode, on the ``n`` synthetic validation
    images ``pool eval --max-images n`` measures on (``evaluation_indices``)."""
    import torch

    from lgp_edge.datasets import open_data
    from lgp_edge.pool.pool import load_pool
    from lgp_edge.train import evaluation_indices

    pool, manifest = load_pool(pool_dir)
    a = manifest.spec.ancestry
    val = open_data("synthetic", img_size=a.img_size, in_chans=a.in_chans, num_classes=a.num_classes).val
    idx = evaluation_indices(len(val), n)
    x = torch.stack([val[i][0] for i in idx])
    y = torch.tensor([int(val[i][1]) for i in idx])
    with torch.no_grad():
        return {d.key: round(100.0 * int((pool.descendant(d).eval()(x).argmax(-1) == y).sum()) / n, 3)
                for d in pool.descendants()}


def _set(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(mf: dict[str, Any]) -> None:
        d = mf
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return mutate


# numbers of the pool's spec and preprocessing that choices and exports are computed from
SPEC_MUTATIONS = [
    ("depth-negative", _set("spec", "depth", value=-1), "spec.depth -1"),
    ("img-size-zero", _set("spec", "ancestry", "img_size", value=0), "spec.ancestry.img_size 0"),
    ("patch-size-bool", _set("spec", "ancestry", "patch_size", value=True), "spec.ancestry.patch_size True"),
    ("mlp-ratio-nan", _set("spec", "ancestry", "mlp_ratio", value=float("nan")), "spec.ancestry.mlp_ratio nan"),
    ("instance-width-fraction", _set("spec", "instances", 0, "embed_dim", value=8.5),
     "spec.instances[0].embed_dim 8.5"),
    ("preprocess-std-zero", _set("preprocess", "std", 0, value=0), "preprocess.std[0] 0"),
    ("preprocess-mean-inf", _set("preprocess", "mean", 0, value=float("inf")), "preprocess.mean[0] inf"),
    ("preprocess-channels", _set("preprocess", "mean", value=[0.1, 0.2]), "preprocess.mean"),
    ("storage-dtype", _set("storage_dtype", value="bogus"), "storage_dtype 'bogus'"),
    # what EMBEDDING.md tells the app to feed: a size the models do not take (export died in torch with a traceback),
    # a layout no export has, a mean of 1e308 for pixels scaled to 0..1
    ("preprocess-img-size-other", _set("preprocess", "img_size", value=32), "preprocess.img_size 32"),
    ("preprocess-layout", _set("preprocess", "layout", value="NHWC"), "preprocess.layout 'NHWC'"),
    ("preprocess-mean-huge", _set("preprocess", "mean", 0, value=1e308), "preprocess.mean[0] 1e+308"),
    ("no-instances", _set("spec", "instances", value=[]), "has no spec.instances"),  # read "per instance of  expected"
]


# the class names an export writes beside the logits (ONNX metadata, Core ML labels, EMBEDDING.md): fewer names than
# classes, a name twice or a name that is not one printable string was read and written into every export
LABEL_MUTATIONS = [
    ("too-few", _set("preprocess", "labels", value=["c0", "c1", "c2"]), "preprocess.labels has 3 names"),
    ("duplicate", lambda mf: mf["preprocess"]["labels"].__setitem__(1, mf["preprocess"]["labels"][0]),
     "preprocess.labels[1] 'c0' twice"),
    ("not-a-string", _set("preprocess", "labels", 2, value=7), "preprocess.labels[2] 7"),
    ("empty", _set("preprocess", "labels", 2, value=""), "preprocess.labels[2] ''"),
    ("control", _set("preprocess", "labels", 2, value="c\x1b[2J"), "preprocess.labels[2] 'c\\x1b[2J'"),
]


@pytest.mark.parametrize("command", ["pool-info-json", "select-json"])
@pytest.mark.parametrize(("mutate", "fragment"), [m[1:] for m in SPEC_MUTATIONS + LABEL_MUTATIONS],
                         ids=[m[0] for m in SPEC_MUTATIONS + LABEL_MUTATIONS])
def test_damaged_spec_number_is_refused(mutate: Callable[[dict[str, Any]], None], fragment: str, command: str,
                                        pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = damaged_copy(pristine, tmp_path, mutate)
    before = snapshot(tmp_path)
    rc, err = run_cli(COMMANDS[command](p, tmp_path), capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "is damaged" in lines[0] and fragment in lines[0], err
    assert "rebuild the pool" in lines[0] and "Traceback" not in err
    assert snapshot(tmp_path) == before


def _rename_instance(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    """Instance ``old`` renamed to ``new`` everywhere in pool.json: the spec, the records' keys and segments."""
    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rename(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rename(v) for v in value]
        if value == old:
            return new
        return re.sub(rf"(^|\+){old}\.", lambda m: f"{m.group(1)}{new}.", value) if isinstance(value, str) else value

    def mutate(mf: dict[str, Any]) -> None:
        mf["spec"] = rename(mf["spec"])
        mf["descendants"] = rename(mf["descendants"])
    return mutate


@pytest.mark.parametrize("command", ["pool-info-json", "select-json", "report"])
@pytest.mark.parametrize("name", ['=HYPERLINK("http://x")|ti6', "ti6|b6", "Ti6", "6ti", "", "ti 6", "t\u00ef6"],
                         ids=["formula", "pipe", "upper", "digit-first", "empty", "space", "non-ascii"])
def test_instance_names_outside_the_safe_pattern_are_refused(name: str, command: str, pristine: Path,
                                                             tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Instance names become descendant keys, file names, report.csv and report.md cells: a name such as
    =HYPERLINK("http://x")|ti6 reached report.csv as a spreadsheet formula and split report.md's table."""
    p = damaged_copy(pristine, tmp_path, _rename_instance("ti6", name))
    mf = json.loads((p / MANIFEST).read_text())
    assert mf["spec"]["instances"][0]["name"] == name and mf["descendants"][0]["key"] == f"{name}.0-5"
    before = snapshot(tmp_path)
    rc, err = run_cli(COMMANDS[command](p, tmp_path), capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "is damaged" in lines[0] and "spec.instances[0].name" in lines[0] and "rebuild the pool" in lines[0], err
    assert snapshot(tmp_path) == before


def test_the_names_lgp_edge_gives_instances_are_read(pristine: Path, tmp_path: Path) -> None:
    from lgp_edge.baselines.snnet import snnet_spec
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.models.instances import plan_instances
    from lgp_edge.pool.manifest import check_instance_names

    aspec = create_ancestry("lgp_test_tiny")[1]
    for depth in (6, 9):
        check_instance_names(PoolSpec(aspec, depth, plan_instances(aspec, depth, ("ti", "s", "b"))))
    check_instance_names(snnet_spec(aspec))
    assert [i.name for i in read_manifest(pristine).spec.instances] == ["ti6", "b6"]


# ------------------------------------------------------------------------ sizes no real ViT has (bounds)
def _deep(depth: int) -> Callable[[dict[str, Any]], None]:
    def mutate(mf: dict[str, Any]) -> None:
        mf["spec"]["depth"] = depth
        for inst in mf["spec"]["instances"]:
            inst["depth"] = depth
    return mutate


# each was read as a pool (or hung: the descendants of depth d took d^2 steps to enumerate)
BOUND_MUTATIONS = [
    ("depth-200000", _deep(200_000), "spec.depth 200000"),
    ("depth-257", _deep(257), "spec.depth 257"),
    ("ancestry-depth", _set("spec", "ancestry", "depth", value=100_000), "spec.ancestry.depth 100000"),
    ("ancestry-width", _set("spec", "ancestry", "embed_dim", value=1 << 20), "spec.ancestry.embed_dim 1048576"),
    ("heads-over-width", _set("spec", "instances", 0, "num_heads", value=16), "spec.instances[0].num_heads 16"),
    ("image-size", _set("spec", "ancestry", "img_size", value=100_000), "spec.ancestry.img_size 100000"),
    ("patch-over-image", _set("spec", "ancestry", "patch_size", value=17), "spec.ancestry.patch_size 17"),
    ("classes", _set("spec", "ancestry", "num_classes", value=10 ** 7), "spec.ancestry.num_classes 10000000"),
    ("channels", _set("spec", "ancestry", "in_chans", value=4096), "spec.ancestry.in_chans 4096"),
    ("mlp-ratio", _set("spec", "ancestry", "mlp_ratio", value=1000.0), "spec.ancestry.mlp_ratio 1000.0"),
    ("preprocess-image-size", _set("preprocess", "img_size", value=100_000), "preprocess.img_size 100000"),
]


class Stopped(Exception):
    """Raised by a spy in place of the work it watches: run on a damaged pool.json, that work could hang the
    test (d^2 descendants for a depth d) or allocate gigabytes (a width of 6144)."""


def spy_on_enumeration(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The depth of each pool whose descendants something starts to enumerate (in every lgp_edge module that
    holds ``enumerate_descendants``); each enumeration is stopped there (Stopped), never run."""
    import lgp_edge.pool.manifest
    import lgp_edge.pool.pool
    import lgp_edge.profiling.predict  # noqa: F401  (the modules that enumerate, loaded before they are patched)
    from lgp_edge.models import plan

    real = plan.enumerate_descendants
    depths: list[int] = []

    def enumerate_descendants(spec: PoolSpec) -> list[Any]:
        depths.append(spec.depth)
        raise Stopped(f"descendants of depth {spec.depth} enumerated")

    for name, module in list(sys.modules.items()):
        if name.startswith("lgp_edge") and getattr(module, "enumerate_descendants", None) is real:
            monkeypatch.setattr(module, "enumerate_descendants", enumerate_descendants)
    return depths


def spy_on_pool_builds(monkeypatch: pytest.MonkeyPatch, *, allow_meta: bool) -> list[str]:
    """The device of each LearngenePool that something starts to build, seen before any weight is allocated; a
    build is stopped there (Stopped) unless ``allow_meta`` and it is on the meta device (shapes only: what
    load_pool compares with the weights file's header), which runs."""
    from lgp_edge.pool.pool import LearngenePool

    real = LearngenePool.__init__
    devices: list[str] = []

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        devices.append(torch.empty(0).device.type)  # the default device: meta inside load_pool's shape check
        if not (allow_meta and devices[-1] == "meta"):
            raise Stopped(f"pool built on {devices[-1]}")
        real(self, *args, **kwargs)

    monkeypatch.setattr(LearngenePool, "__init__", init)
    return devices


@pytest.mark.parametrize("command", ["pool-info-json", "select-json"])
def test_the_spies_see_the_work_of_reading_a_pool(command: str, pristine: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An undamaged pool's descendants are enumerated: what the spies record, so an empty record below means the
    refusal came first. Neither command builds a pool (pool info counts from the spec and checks the weights
    file's header; select needs no weights); loading the pool's weights is seen by the build spy."""
    from lgp_edge.pool.pool import load_pool

    p = damaged_copy(pristine, tmp_path, lambda mf: None)
    depths = spy_on_enumeration(monkeypatch)
    with pytest.raises(Stopped):
        run_cli(COMMANDS[command](p, tmp_path), capsys)
    assert depths == [6]
    monkeypatch.undo()
    devices = spy_on_pool_builds(monkeypatch, allow_meta=True)
    assert run_cli(COMMANDS[command](p, tmp_path), capsys)[0] == 0 and devices == []
    with pytest.raises(Stopped):
        load_pool(p)
    assert devices == ["cpu"]


@pytest.mark.parametrize("command", ["pool-info-json", "select-json"])
@pytest.mark.parametrize(("mutate", "fragment"), [m[1:] for m in BOUND_MUTATIONS], ids=[m[0] for m in BOUND_MUTATIONS])
def test_absurd_architecture_size_is_refused_at_once(mutate: Callable[[dict[str, Any]], None], fragment: str,
                                                     command: str, pristine: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Refused while pool.json is read: before its descendants are enumerated or any pool is built."""
    p = damaged_copy(pristine, tmp_path, mutate)
    before = snapshot(tmp_path)
    depths = spy_on_enumeration(monkeypatch)
    devices = spy_on_pool_builds(monkeypatch, allow_meta=False)
    rc, err = run_cli(COMMANDS[command](p, tmp_path), capsys)
    assert depths == [] and devices == []
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "is damaged" in lines[0] and fragment in lines[0], err
    assert "expected" in lines[0] and "rebuild the pool" in lines[0] and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_largest_sizes_are_read(pristine: Path, tmp_path: Path) -> None:
    """The bounds are generous: a pool.json at them still reads (without weights: select needs none)."""
    from lgp_edge.pool.manifest import MAX_CLASSES, MAX_DEPTH, MAX_IMG_SIZE, MAX_IN_CHANS, MAX_MLP_RATIO, MAX_WIDTH

    def mutate(mf: dict[str, Any]) -> None:
        mf["descendants"] = []
        a = mf["spec"]["ancestry"]
        a.update(img_size=MAX_IMG_SIZE, patch_size=MAX_IMG_SIZE, depth=MAX_DEPTH, embed_dim=MAX_WIDTH,
                 num_heads=MAX_WIDTH, num_classes=MAX_CLASSES, in_chans=MAX_IN_CHANS, mlp_ratio=MAX_MLP_RATIO)
        mf["preprocess"].update(img_size=MAX_IMG_SIZE, in_chans=MAX_IN_CHANS, mean=[0.5] * MAX_IN_CHANS,
                                std=[0.25] * MAX_IN_CHANS, labels=[f"c{i}" for i in range(MAX_CLASSES)])
    spec = read_manifest(damaged_copy(pristine, tmp_path, mutate)).spec
    assert (spec.ancestry.depth, spec.ancestry.embed_dim, spec.ancestry.num_classes) == (MAX_DEPTH, MAX_WIDTH,
                                                                                         MAX_CLASSES)


# ------------------------------------------------------------- the spec against the weights file's header
def test_spec_that_does_not_fit_the_weights_is_refused_before_building(pristine: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A width that is not the weights' is found in the safetensors header: no pool is built (allocated and
    initialised, 11 GB for a width of 6144) before the mismatch shows."""
    from lgp_edge.errors import CheckpointError
    from lgp_edge.pool import pool as pool_module
    from lgp_edge.pool.pool import load_pool

    built: list[str] = []

    class Spy(pool_module.LearngenePool):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(next(self.parameters()).device.type)

    def mutate(mf: dict[str, Any]) -> None:
        mf["spec"]["instances"][0]["embed_dim"] = 64
        mf["descendants"] = []  # (their sizes are not the new width's: read_manifest refuses them first)

    monkeypatch.setattr(pool_module, "LearngenePool", Spy)
    p = damaged_copy(pristine, tmp_path, mutate)
    with pytest.raises(CheckpointError) as err:
        load_pool(p)
    assert "cpu" not in built  # nothing allocated
    line = str(err.value)
    assert "\n" not in line and "weights.safetensors" in line and "pool.json" in line, line
    assert "64" in line and "8" in line  # the spec's width and the weights'


@pytest.mark.parametrize("evaluated", [True, False], ids=["evaluated", "not-evaluated"])
def test_width_of_6144_is_refused_at_once(evaluated: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """pool info allocated 11 GB and took 76 s before it said that the weights do not fit. Evaluated, the
    records' sizes are not the new width's (refused while pool.json is read, nothing built); not evaluated,
    the weights file's header shows the mismatch against the shapes the spec implies, before anything is built."""
    def mutate(mf: dict[str, Any]) -> None:
        mf["spec"]["instances"][0]["embed_dim"] = 6144
        if not evaluated:
            mf["descendants"] = []

    p = demo_copy(tmp_path, mutate)
    before = snapshot(tmp_path)
    devices = spy_on_pool_builds(monkeypatch, allow_meta=True)
    rc, err = run_cli(["pool", "info", str(p)], capsys)
    assert devices == []  # no pool built, no weight allocated
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    if evaluated:
        assert "descendant ti6.0-5 has params 78794" in lines[0] and "architecture in the spec" in lines[0], err
    else:
        assert "does not fit" in lines[0] and "1x1x32 there, 1x1x6144 in the spec" in lines[0], err
    assert snapshot(tmp_path) == before


def demo_copy(root: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    """The bundled demo pool (trained, evaluated on Fashion-MNIST), copied and changed by ``mutate``."""
    return damaged_copy(demo_pool_dir(), root, mutate)


# ------------------------------------------------------------------ recorded sizes are the architecture's
def test_recorded_sizes_are_the_architectures(pristine: Path) -> None:
    """params and FLOPs are recomputed from the spec, without building the model: the same numbers as
    counting the built descendant's parameters, for every family (Ti/B pairs, Ti->S->B chains, SN-Net's anchors
    of full depth) and the demo pool."""
    from lgp_edge.baselines.snnet import snnet_spec
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.models.descendant import count_params
    from lgp_edge.models.instances import plan_instances
    from lgp_edge.models.plan import descendant_flops, descendant_params
    from lgp_edge.pool.pool import LearngenePool, load_pool
    from lgp_edge.specs import PoolSpec

    _, tiny = create_ancestry("lgp_test_tiny")
    pools = [load_pool(pristine)[0], load_pool(demo_pool_dir())[0], LearngenePool(snnet_spec(tiny)),
             LearngenePool(PoolSpec(tiny, 9, plan_instances(tiny, 9, ("ti", "s", "b")), chains="tsb"))]
    for pool in pools:
        for d in pool.descendants():
            assert descendant_params(pool.spec, d) == count_params(pool.descendant(d)), d.key
            assert pool.record(d).params == descendant_params(pool.spec, d)
            assert pool.record(d).flops == descendant_flops(pool.spec, d)
    assert len(pools[-1].descendants()) > 3 + 2 * 25  # the chains are there


@pytest.mark.parametrize(("change", "fragment"), [
    pytest.param({"params": 0, "flops": 0, "top1": 100}, "params 0 and flops 0", id="zero"),
    pytest.param({"params": 1_199_883}, "params 1199883, but the architecture in the spec gives 1199882 params",
                 id="params-off-by-one"),
    pytest.param({"flops": 20_740_993}, "flops 20740993", id="flops"),
    pytest.param({"blocks": 5}, "blocks 5", id="blocks"),
])
def test_recorded_size_that_is_not_the_architectures_is_refused(change: dict[str, Any], fragment: str,
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """select charged b6.0-5 0.0791 MB for "0 params" and chose it under --memory-mb 1 (it needs 4.66 MB)."""
    p = demo_copy(tmp_path, lambda mf: mf["descendants"][1].update(change))
    assert json.loads((p / MANIFEST).read_text())["descendants"][1]["key"] == "b6.0-5"
    before = snapshot(tmp_path)
    for argv in (["select", "--target", "cpu", "--pool", str(p), "--memory-mb", "1", "--budget-ms", "1e6"],
                 ["pool", "info", str(p), "--json"]):
        rc, err = run_cli(argv, capsys)
        lines = error_lines(err)
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "is damaged" in lines[0] and "b6.0-5" in lines[0] and fragment in lines[0], err
        assert "edited or damaged" in lines[0] and "lgp-edge pool eval" in lines[0], err
    assert snapshot(tmp_path) == before


def test_absurd_count_is_refused_in_a_short_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """params 1e300 read as an integer of 301 digits and was shown whole."""
    p = demo_copy(tmp_path, lambda mf: mf["descendants"][1].update(params=1e300))
    rc, err = run_cli(["pool", "info", str(p)], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "params 1e+300" in lines[0] and len(lines[0]) < 400, err


@pytest.mark.parametrize("images", [-5, 0, 1.5, True, "10000", 10 ** 12], ids=str)
def test_damaged_image_count_in_history_is_refused(images: Any, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An eval stage "on -5 images" was printed as "top-1 on -5 images"."""
    p = demo_copy(tmp_path, lambda mf: mf["history"][-1].update(images=images))
    assert json.loads((p / MANIFEST).read_text())["history"][-1]["stage"] == "eval"
    for argv in (["select", "--target", "cpu", "--pool", str(p), "--budget-ms", "1e6"], ["pool", "info", str(p)]):
        rc, err = run_cli(argv, capsys)
        lines = error_lines(err)
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "is damaged" in lines[0] and f"images {images!r}" in lines[0] and "history" in lines[0], err


def test_demo_pool_reads_with_its_sizes() -> None:
    mf = read_manifest(demo_pool_dir())
    assert len(mf.descendants) == 18 and mf.top1_images == 10_000
    assert {r.key: r.params for r in mf.descendants}["b6.0-5"] == 1_199_882


@pytest.mark.parametrize("top1", [{"ti6": 150.0}, {"ti6": -1}, {"ti6": "85"}, {"ti6": True}, {"zz9": 80.0}, [85.0]],
                         ids=str)
def test_damaged_top1_after_distillation_is_refused(top1: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Each instance's top-1 right after distillation (the distill entry of the history, shown by pool info): a
    percentage of one of the pool's instances, measured on a recorded number of images."""
    p = demo_copy(tmp_path, lambda mf: mf["history"][0].update(top1=top1, top1_images=10_000))
    rc, err = run_cli(["pool", "info", str(p)], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "is damaged" in lines[0] and "history[0] (distill) top1" in lines[0], err


def test_top1_after_distillation_is_shown_by_pool_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lgp_edge.cli import main

    p = demo_copy(tmp_path, lambda mf: mf["history"][0].update(top1={"ti6": 85.37, "b6": 89.23}, top1_images=10_000))
    capsys.readouterr()
    assert main(["pool", "info", str(p)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "ti6: 6 blocks of width 32 (1 head), 76,224 params; top-1 85.37% alone after distillation" in out, out
    assert main(["pool", "info", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [i.get("top1_after_distill") for i in info["instances"]] == [85.37, 89.23]
    p = demo_copy(tmp_path / "n", lambda mf: mf["history"][0].update(top1={"ti6": 85.37}, top1_images=0))
    assert run_cli(["pool", "info", str(p)], capsys)[0] == 2  # a top-1 on no images


def test_a_class_name_an_image_folder_gives_is_one_the_pool_reads(tmp_path: Path) -> None:
    """`pool build` on an image folder whose class folders hold a no-break space or an emoji's joiner trained to
    the end, and every later command refused the pool it wrote as damaged (labels checked with isprintable); a tab
    or newline in a folder name went into the pool (and an export's metadata) the same way. The reader takes
    what the writer may write; the folder's names are checked before any work."""
    from PIL import Image

    from lgp_edge.datasets import open_data
    from lgp_edge.errors import UsageError
    from lgp_edge.pool.manifest import label_problem

    assert label_problem("no\u00a0break") is None and label_problem("\U0001f469\u200d\U0001f52c scientist") is None
    assert label_problem("a\tb") and label_problem("x\ny") and label_problem("") and label_problem("p\u2028q")
    for names, ok in ((["no\u00a0break", "plain"], True), (["a\tb", "plain"], False)):
        root = tmp_path / ("ok" if ok else "bad")
        for split in ("train", "val"):
            for n in names:
                (root / split / n).mkdir(parents=True)
                Image.new("RGB", (8, 8)).save(root / split / n / "0.png")
        if ok:
            assert open_data(f"imagefolder:{root}", img_size=8, in_chans=3).info.preprocess.labels[0] == names[0]
        else:
            with pytest.raises(UsageError, match="class folder"):
                open_data(f"imagefolder:{root}", img_size=8, in_chans=3)
