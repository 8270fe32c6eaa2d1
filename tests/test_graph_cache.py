"""The exported-graph cache (lgp_edge/export/graph_cache.py): a model exported once is read back, with every
export's own metadata; anything the graph depends on is another key; damaged, full, off or unwritable caches
never give a wrong graph or a failed export."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import ort_logits

from lgp_edge.cli import main
from lgp_edge.errors import UsageError
from lgp_edge.export import graph_cache
from lgp_edge.export.onnx_export import export_onnx
from lgp_edge.pool.pool import load_pool

ROOT = Path(__file__).resolve().parent.parent
CACHE_LOG = "lgp_edge.export.graph_cache"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LGP_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LGP_EDGE_CACHE_MB", raising=False)
    return tmp_path / "cache" / "onnx"


def _model(tiny_pool: Path, key: str = "ti6.0-5") -> torch.nn.Module:
    pool, _ = load_pool(tiny_pool)
    return pool.descendant(key).eval()


def _example(model: torch.nn.Module) -> torch.Tensor:
    return torch.zeros(1, 1, 16, 16)


def _entries(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_a_second_export_reads_the_graph_back_with_its_own_metadata(tiny_pool: Path, cache: Path, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    m = _model(tiny_pool)
    x = _example(m)
    with caplog.at_level(logging.DEBUG, logger=CACHE_LOG):
        first = export_onnx(m, x, tmp_path / "a.onnx", ship=True, metadata={"run": "first"})
        assert not [r for r in caplog.records if "from the exported-graph cache" in r.getMessage()]
        second = export_onnx(m, x, tmp_path / "b.onnx", ship=True, metadata={"run": "second"})
    assert [r for r in caplog.records if "from the exported-graph cache" in r.getMessage()]
    a, b = onnx.load(str(first)), onnx.load(str(second))
    assert a.graph == b.graph
    assert {p.key: p.value for p in a.metadata_props} == {"run": "first"}
    assert {p.key: p.value for p in b.metadata_props} == {"run": "second"}
    onnx.checker.check_model(b, full_check=True)
    (key,) = {n[:64] for n in _entries(cache)}
    assert _entries(cache) == [f"{key}.json", f"{key}.onnx"]
    # the cached graph carries no export's metadata; the files run and agree with torch
    assert not onnx.load(str(cache / f"{key}.onnx")).metadata_props
    x = np.random.default_rng(0).standard_normal((1, 1, 16, 16)).astype(np.float32)
    want = m(torch.from_numpy(x)).detach().numpy()
    assert np.abs(ort_logits(second, x) - want).max() < 1e-4


def test_whatever_the_graph_depends_on_is_another_key(tiny_pool: Path, cache: Path) -> None:
    m = _model(tiny_pool)
    x = _example(m)
    key = graph_cache.graph_key(m, x, opset=17, dynamic_batch=False)
    assert key == graph_cache.graph_key(_model(tiny_pool), x, opset=17, dynamic_batch=False)  # same weights
    others = {
        "opset": graph_cache.graph_key(m, x, opset=18, dynamic_batch=False),
        "dynamic batch": graph_cache.graph_key(m, x, opset=17, dynamic_batch=True),
        "input shape": graph_cache.graph_key(m, torch.zeros(2, 1, 16, 16), opset=17, dynamic_batch=False),
        "input dtype": graph_cache.graph_key(m, x.double(), opset=17, dynamic_batch=False),
        "another descendant": graph_cache.graph_key(_model(tiny_pool, "b6.0-5"), x, opset=17, dynamic_batch=False),
    }
    w = _model(tiny_pool)
    with torch.no_grad():
        next(w.parameters()).view(-1)[0] += 1e-6
    others["one weight"] = graph_cache.graph_key(w, x, opset=17, dynamic_batch=False)
    f = _model(tiny_pool)
    attn = [mod for mod in f.modules() if hasattr(mod, "fused_attn")]
    assert attn
    attn[0].fused_attn = not attn[0].fused_attn
    others["fused attention"] = graph_cache.graph_key(f, x, opset=17, dynamic_batch=False)
    t = _model(tiny_pool).train()
    others["train mode"] = graph_cache.graph_key(t, x, opset=17, dynamic_batch=False)
    assert all(isinstance(v, str) and len(v) == 64 for v in others.values()), others
    assert key not in others.values() and len(set(others.values())) == len(others)


def test_a_model_with_forward_hooks_is_never_cached(tiny_pool: Path, cache: Path, tmp_path: Path) -> None:
    m = _model(tiny_pool)
    handle = next(iter(m.children())).register_forward_hook(lambda mod, inp, out: out * 2)
    try:
        assert graph_cache.graph_key(m, _example(m), opset=17, dynamic_batch=False) is None
        export_onnx(m, _example(m), tmp_path / "hooked.onnx", ship=True)
    finally:
        handle.remove()
    assert _entries(cache) == []


def test_a_damaged_entry_is_exported_again_not_used(tiny_pool: Path, cache: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    m = _model(tiny_pool)
    x = _example(m)
    good = onnx.load(str(export_onnx(m, x, tmp_path / "a.onnx", ship=True)))
    key = graph_cache.graph_key(m, x, opset=17, dynamic_batch=False)
    graph = cache / f"{key}.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in a weight: still a parseable model, a wrong one
    graph.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger=CACHE_LOG):
        again = onnx.load(str(export_onnx(m, x, tmp_path / "b.onnx", ship=True)))
    assert "does not match its record: exporting again" in caplog.text
    assert again.graph == good.graph
    assert json.loads((cache / f"{key}.json").read_text())["bytes"] == graph.stat().st_size


def test_the_least_recently_used_entries_go_first_and_nothing_else_in_the_folder(
        tiny_pool: Path, cache: Path, tmp_path: Path) -> None:
    cache.mkdir(parents=True)
    foreign = [cache / "notes.txt", cache / ("f" * 64 + ".bin"), cache / ("e" * 64 + ".onnx.bak")]
    for p in foreign:
        p.write_text("the user's")
    x = torch.zeros(1, 1, 16, 16)
    keys = []
    for i, d in enumerate(("ti6.0-5", "b6.0-5", "ti6.0-2+b6.3-5")):
        m = _model(tiny_pool, d)
        export_onnx(m, x, tmp_path / f"{i}.onnx", ship=True)
        keys.append(graph_cache.graph_key(m, x, opset=17, dynamic_batch=False))
        os.utime(cache / f"{keys[-1]}.json", (1_000_000 + i, 1_000_000 + i))
    export_onnx(_model(tiny_pool, "ti6.0-5"), x, tmp_path / "again.onnx", ship=True)  # the first, used again
    sizes = {k: sum((cache / f"{k}{s}").stat().st_size for s in (".onnx", ".json")) for k in keys}
    # room for two entries: the one unused longest (the second) goes
    graph_cache._evict(cache, sizes[keys[0]] + sizes[keys[2]] + 10)
    left = {n[:64] for n in _entries(cache) if n.endswith((".onnx", ".json")) and len(n) == 69}
    assert left == {keys[0], keys[2]}
    assert all(p.read_text() == "the user's" for p in foreign)


def test_off_bad_setting_and_an_unwritable_folder(tiny_pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    m = _model(tiny_pool)
    x = _example(m)
    monkeypatch.setenv("LGP_EDGE_CACHE", str(tmp_path / "off"))
    monkeypatch.setenv("LGP_EDGE_CACHE_MB", "0")
    export_onnx(m, x, tmp_path / "a.onnx", ship=True)
    assert not (tmp_path / "off").exists()
    for bad in ("lots", "-1", "1.5"):
        monkeypatch.setenv("LGP_EDGE_CACHE_MB", bad)
        with pytest.raises(UsageError, match=f"LGP_EDGE_CACHE_MB must be a whole number of megabytes.*got '{bad}'"):
            export_onnx(m, x, tmp_path / "b.onnx", ship=True)
    assert not (tmp_path / "b.onnx").exists()
    # a file where the cache folder would be: the export goes on, said once
    monkeypatch.delenv("LGP_EDGE_CACHE_MB")
    (tmp_path / "blocked").write_text("a file")
    monkeypatch.setenv("LGP_EDGE_CACHE", str(tmp_path / "blocked"))
    monkeypatch.setattr(graph_cache, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=CACHE_LOG):
        for name in ("c.onnx", "d.onnx"):
            onnx.checker.check_model(str(export_onnx(m, x, tmp_path / name, ship=True)), full_check=True)
    said = [r.getMessage() for r in caplog.records if r.name == CACHE_LOG]
    assert len(said) == 1 and "cannot be written" in said[0] and "exporting without it" in said[0], said


def test_the_cli_refuses_a_bad_cache_size_in_one_line(tiny_pool: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LGP_EDGE_CACHE_MB": "two gigabytes",
           "LGP_EDGE_STORE": str(tmp_path / "store.sqlite")}
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "lgp_edge", "export", "--target", "cpu", "--pool", str(tiny_pool),
                          "--descendant", "ti6.0-5", "--format", "onnx", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 2, run.stderr
    # before any work (no calibration, no images loaded): the one line
    assert run.stderr.startswith("lgp-edge: error: LGP_EDGE_CACHE_MB must be a whole number of megabytes") and \
        run.stderr.count("\n") == 1, run.stderr
    assert not out.exists() and not (tmp_path / "store.sqlite").exists()


def test_cache_info_and_clear_from_the_cli(tiny_pool: Path, cache: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["cache", "info", "--json"]) == 0
    empty = json.loads(capsys.readouterr().out)
    assert empty == {"path": str(cache), "graphs": 0, "bytes": 0, "limit_bytes": 2048 * 2 ** 20, "enabled": True}
    m = _model(tiny_pool)
    export_onnx(m, _example(m), tmp_path / "a.onnx", ship=True)
    export_onnx(_model(tiny_pool, "b6.0-5"), _example(m), tmp_path / "b.onnx", ship=True)
    (cache / "notes.txt").write_text("the user's")
    size = sum(p.stat().st_size for p in cache.iterdir() if p.name != "notes.txt")
    capsys.readouterr()
    assert main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["graphs"], info["bytes"]) == (2, size)
    assert main(["cache", "info"]) == 0
    assert capsys.readouterr().out == f"exported-graph cache {cache}: 2 graph(s), {size / 2 ** 20:.1f} MB; at most " \
                                      f"2048.0 MB ($LGP_EDGE_CACHE_MB)\n"
    assert main(["cache", "clear", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(cache), "graphs_removed": 2, "bytes_freed": size}
    assert _entries(cache) == ["notes.txt"]  # nothing but its own entries
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed 0 graph(s), 0.0 MB, from {cache}\n"


class _Reorder(torch.nn.Module):
    """A model of the user's own class: its forward can change without any version or weight changing."""

    def __init__(self, order: list[int]) -> None:
        super().__init__()
        self.order = order
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)[:, self.order]


def test_only_models_of_torch_timm_and_lgp_edge_code_are_cached(tiny_pool: Path, cache: Path, tmp_path: Path) -> None:
    """A class outside torch, timm and lgp-edge was keyed by its name and its plain attributes: an edited forward,
    or a list attribute that changed, shipped the graph exported before (max |diff| 1.7 in ONNX Runtime)."""
    x = torch.zeros(1, 4)
    a, b = _Reorder([3, 2, 1, 0]).eval(), _Reorder([0, 1, 2, 3]).eval()
    b.load_state_dict(a.state_dict())
    assert graph_cache.graph_key(a, x, opset=17, dynamic_batch=False) is None
    for i, m in enumerate((a, b)):
        out = export_onnx(m, x, tmp_path / f"r{i}.onnx", ship=True)
        xs = np.arange(4, dtype=np.float32)[None]
        assert np.abs(ort_logits(out, xs) - m(torch.from_numpy(xs)).detach().numpy()).max() < 1e-5
    assert _entries(cache) == []
    # a descendant whose forward was replaced on the instance is not cached either
    d = _model(tiny_pool)
    d.forward = lambda t: t.mean(dim=(1, 2, 3))  # type: ignore[method-assign]
    assert graph_cache.graph_key(d, torch.zeros(1, 1, 16, 16), opset=17, dynamic_batch=False) is None
    # nor one of whose classes had a method replaced by code of another package (timm's Mlp.forward patched)
    import timm.layers

    g = _model(tiny_pool)
    key = graph_cache.graph_key(g, torch.zeros(1, 1, 16, 16), opset=17, dynamic_batch=False)
    original = timm.layers.Mlp.forward
    try:
        timm.layers.Mlp.forward = lambda self, x: original(self, x) * 2  # type: ignore[method-assign]
        assert key is not None and graph_cache.graph_key(g, torch.zeros(1, 1, 16, 16), opset=17,
                                                         dynamic_batch=False) is None

        @functools.wraps(original)  # carries timm's __module__ and name: the code's file tells
        def patched(self, x):  # noqa: ANN001, ANN202
            return original(self, x) * 0.0

        timm.layers.Mlp.forward = patched  # type: ignore[method-assign]
        assert graph_cache.graph_key(g, torch.zeros(1, 1, 16, 16), opset=17, dynamic_batch=False) is None
    finally:
        timm.layers.Mlp.forward = original  # type: ignore[method-assign]
    assert graph_cache.graph_key(g, torch.zeros(1, 1, 16, 16), opset=17, dynamic_batch=False) == key
    # any attribute of a cached model's modules, not only the plain ones, is part of the key
    e, f = _model(tiny_pool), _model(tiny_pool)
    blk = next(m for m in f.modules() if hasattr(m, "fused_attn"))
    blk.some_setting = [1, 2]
    ke = graph_cache.graph_key(e, torch.zeros(1, 1, 16, 16), opset=17, dynamic_batch=False)
    kf = graph_cache.graph_key(f, torch.zeros(1, 1, 16, 16), opset=17, dynamic_batch=False)
    blk.some_setting = [1, 3]
    assert len({ke, kf, graph_cache.graph_key(f, torch.zeros(1, 1, 16, 16), opset=17, dynamic_batch=False)}) == 3


def test_a_damaged_entry_that_cannot_be_removed_is_not_a_failed_export(tiny_pool: Path, cache: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A damaged entry in a folder the process may read but not change (read-only mount, another user's folder)
    failed the export ("read-only file system ... .json", exit 2; a traceback from the API)."""
    m = _model(tiny_pool)
    x = _example(m)
    export_onnx(m, x, tmp_path / "a.onnx", ship=True)
    key = graph_cache.graph_key(m, x, opset=17, dynamic_batch=False)
    graph = cache / f"{key}.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    real_unlink = Path.unlink

    def refused(self: Path, missing_ok: bool = False) -> None:
        if self.parent == cache:
            raise PermissionError(1, "Operation not permitted", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refused)
    monkeypatch.setattr(graph_cache, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=CACHE_LOG):
        out = export_onnx(m, x, tmp_path / "b.onnx", ship=True)
    onnx.checker.check_model(str(out), full_check=True)
    xs = np.random.default_rng(1).standard_normal((1, 1, 16, 16)).astype(np.float32)
    assert np.abs(ort_logits(out, xs) - m(torch.from_numpy(xs)).detach().numpy()).max() < 1e-4
    assert any("exporting without it" in r.getMessage() for r in caplog.records if r.name == CACHE_LOG)


def test_clear_and_info_touch_only_regular_files_named_exactly_as_entries(cache: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A folder named like an entry crashed `cache clear` (IsADirectoryError) and counted as a graph; a file whose
    name is an entry's plus a newline was removed (``$`` matches before a final newline)."""
    cache.mkdir(parents=True)
    (cache / ("a" * 64 + ".onnx")).mkdir()
    (cache / ("b" * 64 + ".onnx\n")).write_text("the user's")
    (cache / ("c" * 64 + ".json")).symlink_to(cache / ("b" * 64 + ".onnx\n"))
    capsys.readouterr()
    assert main(["cache", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["graphs"] == 0
    assert main(["cache", "clear", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["graphs_removed"] == 0
    assert sorted(p.name for p in cache.iterdir()) == sorted(["a" * 64 + ".onnx", "b" * 64 + ".onnx\n",
                                                               "c" * 64 + ".json"])


def test_clear_leaves_a_graph_another_process_is_writing(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cache clear` during an export removed the file the export was writing its graph to: the export warned that
    the cache folder 'cannot be written'. A half-written entry is removed only once it is older than a writer
    could be (one a stopped process left)."""
    cache.mkdir(parents=True)
    live, stale = cache / f".{'d' * 64}.onnx.x7kqytcv.tmp", cache / f".{'e' * 64}.onnx.a1b2c3d4.tmp"
    live.write_bytes(b"being written")
    stale.write_bytes(b"left by a stopped run")
    old = time.time() - 2 * 24 * 3600
    os.utime(stale, (old, old))
    assert main(["cache", "clear"]) == 0
    assert live.exists() and not stale.exists()


def test_a_lower_limit_is_kept_on_a_cache_hit_too(tiny_pool: Path, cache: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The size limit was enforced only when a graph was stored: a cache over a lowered LGP_EDGE_CACHE_MB stayed
    over it through every export that read a graph back."""
    m = _model(tiny_pool)
    export_onnx(m, _example(m), tmp_path / "a.onnx", ship=True)
    (own,) = {p.name[:64] for p in cache.iterdir()}
    old = time.time() - 3600
    for i in range(3):  # older entries of 1 MB each
        k = f"{i:x}" * 64
        (cache / f"{k}.onnx").write_bytes(b"\0" * 2 ** 20)
        (cache / f"{k}.json").write_text("{}")
        for suffix in (".onnx", ".json"):
            os.utime(cache / f"{k}{suffix}", (old, old))
    monkeypatch.setenv("LGP_EDGE_CACHE_MB", "1")
    export_onnx(m, _example(m), tmp_path / "b.onnx", ship=True)  # a hit
    assert {p.name[:64] for p in cache.iterdir()} == {own}


def test_entries_are_written_with_the_users_umask(tiny_pool: Path, cache: Path, tmp_path: Path) -> None:
    """mkstemp's 0600 made a cache shared by a group unreadable to the others: entries follow the umask."""
    old = os.umask(0o022)
    try:
        m = _model(tiny_pool)
        export_onnx(m, _example(m), tmp_path / "a.onnx", ship=True)
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in cache.iterdir()} == {0o644}


def test_clear_that_cannot_remove_an_entry_is_one_line(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cache.mkdir(parents=True)
    (cache / ("d" * 64 + ".onnx")).write_bytes(b"x")

    def refused(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "unlink", refused)
    capsys.readouterr()
    assert main(["cache", "clear"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lgp-edge: error: cannot remove ") and "permissions" in err, err


def test_a_model_whose_key_cannot_be_computed_is_exported_not_failed(tiny_pool: Path, cache: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """An attribute the key cannot describe (here one whose repr raises) leaves the model out of the cache, said
    once; the export goes on. Dict attributes whose keys print alike are described, not a failed sort."""

    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class Same:
        def __repr__(self) -> str:
            return "same"

    m = _model(tiny_pool)
    m.alike = {Same(): 1, Same(): [2]}
    assert len(graph_cache.graph_key(m, _example(m), opset=17, dynamic_batch=False) or "") == 64
    m.odd = Unprintable()
    monkeypatch.setattr(graph_cache, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=CACHE_LOG):
        assert graph_cache.graph_key(m, _example(m), opset=17, dynamic_batch=False) is None
        onnx.checker.check_model(str(export_onnx(m, _example(m), tmp_path / "a.onnx", ship=True)), full_check=True)
    said = [r.getMessage() for r in caplog.records if r.name == CACHE_LOG]
    assert len(said) == 1 and "key cannot be computed" in said[0], said
    assert _entries(cache) == []


def test_no_home_directory_exports_uncached_with_one_warning(tiny_pool: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """With no home directory known (and no LGP_EDGE_CACHE), the cache went into a folder named '~' in the
    current directory; the export goes on without it and says so once."""
    monkeypatch.delenv("LGP_EDGE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(os.path, "expanduser", lambda p: p)
    monkeypatch.setattr(graph_cache, "_warned", set())
    m = _model(tiny_pool)
    with caplog.at_level(logging.WARNING, logger=CACHE_LOG):
        assert graph_cache.graph_key(m, _example(m), opset=17, dynamic_batch=False) is None
    assert [r.getMessage() for r in caplog.records if "home directory" in r.getMessage()], caplog.text
