"""The paper-replication benchmark end-to-end on the tiny ancestry and synthetic data (smoke test)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from helpers import load_benchmark, stop_after_first_epoch

ROOT = Path(__file__).resolve().parent.parent
DONE = ".done.json"
ASSEMBLED = "assembled from stages computed earlier; see stages in the JSON"


def _load(name: str):
    return load_benchmark(name, register=True)  # a worker process unpickles a benchmark's function from it


def _bench():
    return _load("paper_replication")


def _tiny_argv(tmp_path: Path, md: str = "section.md") -> list[str]:
    """Quick settings on the tiny ancestry and synthetic data, everything written under ``tmp_path``."""
    return ["--quick", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--cache-dir", str(tmp_path / "cache"),
            "--out-dir", str(tmp_path / "results"), "--md-out", str(tmp_path / md), "--eval-images", "32",
            "--steps-per-epoch", "1", "--quiet"]


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end_tiny(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             caplog: pytest.LogCaptureFixture) -> None:
    bench = _bench()
    argv = _tiny_argv(tmp_path)
    # a partial run (two of them could share the cores) writes no results; the full run reuses its stages
    with pytest.raises(SystemExit, match="run the 'distill' stage first"):
        bench.main([*argv, "--stages", "lgp6"])  # the pools take their models from the shared distillation
    assert bench.main([*argv, "--stages", "distill,lgp6,scratch"]) == 0
    assert not (tmp_path / "results").exists()
    for d in ("distilled-e1", "distilled-e2", "lgp-d6-distilled"):
        assert (tmp_path / "cache" / "run-quick" / d / ".done.json").is_file()
    # one ancestry pass per budget for all models: Ti of both depths and SN-Net's Ti anchor in one run
    record = json.loads((tmp_path / "cache" / "run-quick" / "distilled-e2" / "distilled.json").read_text())
    assert [m["name"] for m in record["models"]] == ["ti6", "ti9", "ti12"] and record["epochs"]["ti12"] == 2
    with pytest.raises(SystemExit) as e:
        bench.main([*argv, "--stages", "lgp6,bogus"])
    assert e.value.code == 2
    # one depth's fine-tunes split over two processes: this one takes only the learned copy
    assert bench.main([*argv, "--stages", "lgp9", "--only-inits", "learned"]) == 0
    run_dir = tmp_path / "cache" / "run-quick"
    assert (run_dir / "lgp_d9_learned" / ".done.json").is_file() and not (run_dir / "lgp_d9_lstsq-kd").exists()
    with pytest.raises(SystemExit) as e:
        bench.main([*argv, "--only-inits", "learned"])  # the assembling run needs every copy
    assert e.value.code == 2
    assert bench.main(argv) == 0
    r = json.loads((tmp_path / "results" / "paper_replication_quick.json").read_text())
    assert r["quick"] is True and not (tmp_path / "results" / "paper_replication.json").exists()
    assert r["command"] == "python benchmarks/paper_replication.py " + " ".join(argv)  # not the test runner's
    _check_stages(r, run_dir, (tmp_path / "section.md").read_text())
    assert (tmp_path / "results" / "paper_replication_quick.png").stat().st_size > 10_000
    assert set(r["methods"]) == {"lgp_d6_learned", "lgp_d6_lstsq", "lgp_d6_lstsq-kd", "lgp_d9_learned",
                                 "lgp_d9_lstsq-kd", "snnet", "scratch", "vanilla"}
    assert len(r["methods"]["snnet"]["configs"]) == 71
    assert len(r["methods"]["lgp_d6_learned"]["configs"]) == 18
    assert len(r["methods"]["lgp_d9_lstsq-kd"]["configs"]) == 27
    # every init reports its stitch R^2 and the stitched top-1 before and after fine-tuning
    assert [i["init"] for i in r["stitch_inits"]] == ["learned", "lstsq", "lstsq-kd"]
    assert all(i["stitch_r2_mean"] <= 1.0 and i["stitched_top1_before_mean"] is not None
               and i["stitched_top1_after_mean"] is not None for i in r["stitch_inits"])
    d6 = r["methods"]["lgp_d6_lstsq-kd"]
    assert set(d6["instances_after_distill"]) == {"ti6.0-5", "b6.0-5"} and len(d6["top1_before_finetune"]) == 18
    g = r["goals"]
    assert g["default_init"] == "lstsq-kd" and g["methods"] == ["lgp_d6_lstsq-kd", "lgp_d9_lstsq-kd"]
    _check_goals(g, r["methods"])
    _check_claims(r["claims"], r["methods"])
    assert r["settings"]["steps_per_epoch"] == 1 and r["settings"]["eval_images"] == 32
    assert r["settings"]["distill_width_epochs"] == {"ti": 2}
    _check_commands(r["commands"])
    section = (tmp_path / "section.md").read_text()
    assert "QUICK RUN" in section and "| S->B | 34 |" in section and "The front by SN-Net family" in section
    assert r["environment"]["cpu"] and r["environment"]["cpu"] in section  # which CPU the timings come from
    # the data the run used, named as such (not the default's name)
    assert "32 synthetic test images" in section and "Fashion-MNIST" not in section
    assert r["differences_from_paper"][0].startswith("Data: synthetic instead of ImageNet-1k")
    on_gpu = bench.render_markdown({**r, "environment": {**r["environment"], "gpu": "Some GPU"}}, "p.png", "r.json")
    assert on_gpu.startswith("## Paper replication: Learngene Pool vs SN-Net at small scale (on Some GPU)\n")
    assert f"on one Some GPU and {r['environment']['cpu_count']} CPU cores (" in on_gpu and "GPU" not in section
    assert not list((tmp_path / "results").glob("*.tmp")) and not list((tmp_path / "results").glob(".*"))
    # a second invocation reuses every stage (nothing retrained)
    capsys.readouterr()
    assert bench.main(argv) == 0
    r2 = json.loads((tmp_path / "results" / "paper_replication_quick.json").read_text())
    assert r2["claims"] == r["claims"] and r2["ancestry"]["reused_from_cache"] is True
    # its header says the numbers are earlier invocations', each stage with the code, CPU and date it recorded
    assert {k: {**v, "source": "any"} for k, v in r2["stages"].items()} == {
        k: {**v, "source": "any"} for k, v in r["stages"].items()}
    assert {v["source"] for v in r2["stages"].values()} == {"reused"}
    assert ASSEMBLED in (tmp_path / "section.md").read_text()
    # what an invocation reused is said, so that its wall time is not read as a whole run's
    assert r["reused_stages"] == ["distilled-e1", "distilled-e2", "lgp-d6-distilled", "lgp-d9-distilled",
                                  "lgp_d6_learned", "lgp_d6_lstsq", "lgp_d6_lstsq-kd", "lgp_d9_learned",
                                  "scratch"]  # the --stages runs' above
    assert len(r2["reused_stages"]) == 12 and "snnet" in r2["reused_stages"]
    many = {"settings": {"jobs": 2}, "timing_s": {"snnet": 600.0, "scratch": 120.0, "total_this_invocation": 610.0}}
    assert "the run took **10 min of wall time**" in bench.compute_text(many)
    assert bench.compute_text({**many, "reused_stages": ["scratch"]}).startswith(
        "this invocation took 10 min of wall time as 2 parallel lanes of one thread each and reused 1 stage(s)")
    # fewer depth-9 inits: the same finished stages, the learned depth-9 copy left out and said so
    assert bench.main([*argv, "--inits-d9", "lstsq-kd"]) == 0
    r3 = json.loads((tmp_path / "results" / "paper_replication_quick.json").read_text())
    assert "lgp_d9_learned" not in r3["methods"] and r3["settings"]["inits_d9"] == ["lstsq-kd"]
    assert r3["methods"]["lgp_d9_lstsq-kd"] == r["methods"]["lgp_d9_lstsq-kd"]
    assert "depth 9 (lstsq-kd)" in (tmp_path / "section.md").read_text()
    # the section and the plot again from the results JSON alone: the same text, nothing trained
    png = tmp_path / "results" / "paper_replication_quick.png"
    png.unlink()
    assert bench.main([*argv[:argv.index("--md-out")], "--md-out", str(tmp_path / "again.md"), "--render"]) == 0
    assert (tmp_path / "again.md").read_text() == (tmp_path / "section.md").read_text() and png.is_file()
    assert bench.main(["--render", "--out-dir", str(tmp_path / "nowhere")]) == 2
    with pytest.raises(SystemExit) as e:
        bench.main([*argv, "--inits-d9", "learned"])  # the default init cannot be left out
    assert e.value.code == 2
    widths_argv = _check_pool_widths(tmp_path, r3, caplog)
    _check_stitch_ceiling(tmp_path, r3, capsys)
    _check_finetune_recipes(tmp_path, r3, capsys)
    _check_equal_budget(tmp_path, r3)
    # new weights at the same ancestry path: a stage trained from the old ones is not reused
    from safetensors.torch import load_file, save_file

    from lgp_edge.fileio import sha256_file

    anc = tmp_path / "cache" / "ancestry-lgp_test_tiny-quick" / "ancestry.safetensors"
    done = run_dir / "scratch" / DONE
    old = json.loads(done.read_text())["settings"]["anc_sha256"]
    assert old == sha256_file(anc)
    save_file({k: v * 1.01 if v.is_floating_point() else v for k, v in load_file(str(anc)).items()}, str(anc))
    stamp = done.stat().st_mtime_ns
    assert bench.main([*argv, "--stages", "scratch"]) == 0
    assert json.loads(done.read_text())["settings"]["anc_sha256"] == sha256_file(anc) != old
    assert done.stat().st_mtime_ns != stamp
    # the replication was measured with the old weights: the Ti/S/B benchmark refuses to compare against it
    out = tmp_path / "results" / "pool_widths.json"
    out.unlink()
    assert _load("pool_widths").main(widths_argv) == 2 and not out.exists()
    assert "not the one" in capsys.readouterr().err


def _check_stages(r: dict, run_dir: Path, section: str) -> None:
    """Every stage the results used, with who computed it: the --stages runs before (reused by the assembling
    invocation) or the assembling invocation itself, and the code, CPU and date its marker recorded; the stage keys
    hold the lstsq images; the shipped or cached ancestry's training time is labelled as not measured here."""
    import re

    st = r["stages"]
    assert set(st) == {"ancestry", "distill_e1", "distill_e2", "lgp_d6_distill", "lgp_d6_learned", "lgp_d6_lstsq",
                       "lgp_d6_lstsq-kd", "snnet", "lgp_d9_distill", "lgp_d9_learned", "lgp_d9_lstsq-kd", "scratch",
                       "vanilla"}
    assert {k for k, v in st.items() if v["source"] == "computed"} == {"snnet", "lgp_d9_lstsq-kd", "vanilla"}
    assert {v["dir"] for k, v in st.items() if v["source"] == "reused" and k != "ancestry"} == set(r["reused_stages"])
    assert st["ancestry"]["source"] == "reused" and st["ancestry"]["code_version"] == "not recorded"  # (unrecorded)
    for k, v in st.items():
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", v["finished"])
        if k != "ancestry":
            marker = json.loads((run_dir / v["dir"] / DONE).read_text())
            assert (v["code_version"], v["cpu"], v["wall_s"]) == (marker["code_version"], marker["cpu"],
                                                                  marker["wall_s"])
            assert v["cpu"] == r["environment"]["cpu"] and v["code_version"] != "not recorded"
            assert r["timing_s"][k] == v["wall_s"]
            if k.startswith("lgp_") or k == "snnet":  # the stages that fit stitches on lstsq images
                assert marker["settings"]["lstsq_images"] == r["settings"]["lstsq_images"]
    assert "; 10 of 13 stages computed earlier; see stages in the JSON" in section
    assert "ancestry" not in r["timing_s"] and r["timing_s"]["ancestry_recorded_wall_s"] > 0
    assert "not measured by this invocation" in r["timing_source"]["ancestry_recorded_wall_s"]


def _check_pool_widths(tmp_path: Path, rep: dict, caplog: pytest.LogCaptureFixture) -> list[str]:
    """benchmarks/pool_widths.py on the replication just written: a Ti/S/B pool with its recipe, scored by the
    same goal code against its SN-Net results; bad input is one line and exit 2 with nothing written."""
    pw = _load("pool_widths")
    out = tmp_path / "results" / "pool_widths.json"
    argv = ["--replication", str(tmp_path / "results" / "paper_replication_quick.json"), "--cache-dir",
            str(tmp_path / "cache"), "--out", str(out), "--quiet"]
    assert pw.main([*argv[:1], str(tmp_path / "missing.json"), *argv[2:]]) == 2 and not out.exists()
    (tmp_path / "garbled.json").write_text("{not json")
    assert pw.main([*argv[:1], str(tmp_path / "garbled.json"), *argv[2:]]) == 2 and not out.exists()
    with pytest.raises(SystemExit) as e:
        pw.main([*argv, "--widths", "ti,b"])  # the replication's own pool
    assert e.value.code == 2
    assert pw.main(argv) == 0
    assert "is not here (--pools-root)" not in caplog.text  # the replication's work directory was found
    w = json.loads(out.read_text())
    pool = w["pool"]
    assert w["quick"] is True and w["widths"] == ["ti", "s", "b"] and len(pool["configs"]) == 35
    assert set(pool["instances_after_distill"]) == {"ti6.0-5", "s6.0-5", "b6.0-5"}
    assert len(pool["top1_before_finetune"]) == 35
    keys = {c["key"] for c in pool["configs"]}
    assert {"s6.0-5", "ti6.0-5+s6.5-5", "s6.0-3+b6.4-5"} <= keys and not any("ti6" in k and "b6" in k for k in keys)
    # the recipe is the replication's, stage for stage
    for k in ("distill_epochs", "finetune_epochs", "steps_per_epoch", "eval_images", "stitch_steps", "lr"):
        assert w["settings"][k] == rep["settings"][k]
    assert "--widths ti,s,b" in w["commands"]["lgp_d6_ti-s-b_distill"]
    g = w["goals"]["ti-s-b depth 6"]
    assert g["storage_ratio"] == round(pool["stored_params"] / rep["methods"]["snnet"]["stored_params"], 4)
    assert pool["stored_params"] > rep["methods"]["lgp_d6_lstsq-kd"]["stored_params"]
    share, worst = _front(pool["configs"], rep["methods"]["snnet"]["configs"])
    assert (g["front_share"], g["front_delta_min"]) == (round(share, 4), worst)
    assert w["goals"]["ti-b depths 6 + 9 (replication goal)"]["front_share"] == rep["goals"]["front_share"]
    sn, d9 = rep["methods"]["snnet"]["stored_params"], rep["methods"]["lgp_d9_lstsq-kd"]["stored_params"]
    assert w["goals"]["ti-s-b depth 6 + ti-b depth 9"]["front_storage_ratio"] == round(
        (pool["stored_params"] + d9) / sn, 4)
    assert g["front_storage_ratio"] == g["storage_ratio"]  # one pool
    md = tmp_path / "cache" / "pool-widths-quick" / "POOL_WIDTHS.md"
    assert "QUICK RUN" in md.read_text() and "; 3 of 6 stages computed earlier" in md.read_text()
    # Ti and B are the replication's distilled models, copied (their wall times kept apart); only S is distilled here
    assert {k: v["source"] for k, v in w["stages"].items()} == {
        "ancestry": "reused", "distill_e1": "copied from the replication", "distill_e2": "copied from the replication",
        "distill_e1_s6": "computed", "lgp_d6_ti-s-b_distill": "computed", "lgp_d6_ti-s-b_lstsq-kd": "computed"}
    assert set(w["timing_s_copied_from_replication"]) == {"distill_e1", "distill_e2"}
    assert not set(w["timing_s"]) & {"distill_e1", "distill_e2"} and w["timing_s"]["distill_e1_s6"] > 0
    assert "--models s6 " in w["commands"]["distill_e1_s6"] and "copied from it, not retrained" in md.read_text()
    d6 = rep["methods"]["lgp_d6_lstsq-kd"]["instances_after_distill"]
    assert {k: pool["instances_after_distill"][k] for k in d6} == d6
    # --depth 9: the pool at the other depth group, beside the depth-6 pool just built (reused), scored together
    out9 = tmp_path / "results" / "pool_widths_d9.json"
    assert pw.main([*argv[:-3], "--out", str(out9), "--depth", "9", "--quiet"]) == 0
    w9 = json.loads(out9.read_text())
    p9 = w9["pool"]
    assert w9["depth"] == 9 and w9["pool_depth6"] == pool
    assert set(p9["instances_after_distill"]) == {"ti9.0-8", "s9.0-8", "b9.0-8"}
    i9 = rep["methods"]["lgp_d9_lstsq-kd"]["instances_after_distill"]
    assert {k: p9["instances_after_distill"][k] for k in i9} == i9  # Ti9 and B9 are the replication's
    assert {k: v["source"] for k, v in w9["stages"].items() if k.startswith(("lgp", "distill_e1_s"))} == {
        "distill_e1_s6": "reused", "lgp_d6_ti-s-b_distill": "reused", "lgp_d6_ti-s-b_lstsq-kd": "reused",
        "distill_e1_s9": "computed", "lgp_d9_ti-s-b_distill": "computed", "lgp_d9_ti-s-b_lstsq-kd": "computed"}
    both = w9["goals"]["ti-s-b depths 6 + 9"]
    assert both["methods"] == ["lgp_d6_lstsq-kd", "lgp_d9_lstsq-kd"] and both["storage_ratio"] == g["storage_ratio"]
    assert both["front_storage_ratio"] == round((pool["stored_params"] + p9["stored_params"]) / sn, 4)
    share9, worst9 = _front(pool["configs"] + p9["configs"], rep["methods"]["snnet"]["configs"])
    assert (both["front_share"], both["front_delta_min"]) == (round(share9, 4), worst9)
    assert w9["goals"]["ti-b depth 9 (replication)"]["methods"] == ["lgp_d9_lstsq-kd"]
    md9 = (tmp_path / "cache" / "pool-widths-quick" / "POOL_WIDTHS.md").read_text()
    assert "a depth-9 pool of Ti/S/B" in md9 and "The rows over both depths add the depth-6 pool" in md9
    assert "distillation of both depths' models" in md9 and re.search(r"evaluations \d+ min \(the depth-9 pool\)", md9)
    # without the replication's work directory every model is distilled here, to the same weights
    moved = json.loads((tmp_path / "results" / "paper_replication_quick.json").read_text())
    moved["methods"]["snnet"]["pool_dir"] = "benchmarks/.cache/no-such-run/snnet"
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    alone = tmp_path / "results" / "pool_widths_alone.json"
    caplog.clear()
    assert pw.main(["--replication", str(tmp_path / "moved.json"), *argv[2:-3], "--work",
                    str(tmp_path / "cache" / "widths-alone"), "--out", str(alone), "--quiet"]) == 0
    assert "no-such-run is not here (--pools-root): every auxiliary model is distilled again" in caplog.text
    a = json.loads(alone.read_text())
    assert {k: v["source"] for k, v in a["stages"].items() if k.startswith("distill")} == {
        "distill_e1_s6-b6": "computed", "distill_e2_ti6": "computed"}
    assert a["pool"]["instances_after_distill"] == pool["instances_after_distill"]
    import torch
    from safetensors.torch import load_file
    for name in ("weights.safetensors", "transforms.safetensors"):
        seeded, own = (load_file(str(d / "lgp-d6-ti-s-b-distilled" / name))
                       for d in (tmp_path / "cache" / "pool-widths-quick", tmp_path / "cache" / "widths-alone"))
        assert seeded.keys() == own.keys() and all(torch.equal(v, own[k]) for k, v in seeded.items())
    assert w["goal_criteria"] == rep["goals"]["criteria"]
    # without --out, a quick replication's comparison goes to pool_widths_quick.json, never over pool_widths.json
    repo = tmp_path / "repo"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pw, "ROOT", repo)
        mp.setattr(sys.modules["paper_replication"], "ROOT", repo)
        mp.setattr(pw, "demo_pool", lambda sha, dataset: None)  # (its ROOT's; not of this ancestry anyway)
        assert pw.main([a for a in argv if a not in ("--out", str(out))]) == 0
    assert sorted(p.name for p in (repo / "benchmarks" / "results").iterdir()) == ["pool_widths_quick.json"]
    again = json.loads((repo / "benchmarks" / "results" / "pool_widths_quick.json").read_text())
    assert {v["source"] for v in again["stages"].values()} == {"reused", "copied from the replication"}
    assert ASSEMBLED in md.read_text()
    return argv


def _check_stitch_ceiling(tmp_path: Path, rep: dict, capsys: pytest.CaptureFixture) -> None:
    """benchmarks/stitch_ceiling.py on the replication just written: the front's stitched candidates trained
    alone with the replication's budget, the bound recomputed from their scores; cached results are reused."""
    sc = _load("stitch_ceiling")
    rep_path = tmp_path / "results" / "paper_replication_quick.json"
    out = tmp_path / "results" / "stitch_ceiling_quick.json"
    # the tiny pools may trail SN-Net nowhere: train one stitched descendant of each depth instead
    keys = [next(c["key"] for c in rep["methods"][m]["configs"] if "+" in c["key"]) for m in sc.lgp_methods(rep)]
    argv = ["--replication", str(rep_path), "--work", str(tmp_path / "cache" / "ceiling"), "--jobs", "1",
            "--keys", ",".join(keys), "--out", str(out), "--quiet"]
    assert sc.main(["--replication", str(tmp_path / "missing.json"), *argv[2:]]) == 2 and not out.exists()
    moved = json.loads(rep_path.read_text())  # results whose pool is not where they say
    moved["methods"]["lgp_d6_lstsq-kd"]["pool_dir"] = "benchmarks/.cache/no-such-run/lgp_d6_lstsq-kd"
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    assert sc.main(["--replication", str(tmp_path / "moved.json"), *argv[2:]]) == 2 and not out.exists()
    assert sc.main([*argv, "--keys", "ti6.0-5"]) == 2 and not out.exists()  # not a stitched descendant
    assert sc.main([*argv, "--jobs", "0"]) == 2 and not out.exists()
    capsys.readouterr()
    assert sc.main(argv) == 0
    x = json.loads(out.read_text())
    misses, _ = sc.candidates(rep)
    assert x["quick"] is True and sorted(c["key"] for c in x["candidates"]) == sorted(keys)
    assert x["partial"] is True  # the chosen --keys, not the front's candidates
    assert set(x["stages"]) == {f"{c['method']}/{c['key']}" for c in x["candidates"]}
    assert all(v["source"] == "computed" and v["code_version"] != "not recorded" and v["cpu"] == rep["environment"]
               ["cpu"] for v in x["stages"].values())
    assert [m["snnet_key"] for m in x["misses"]] == [m["snnet_key"] for m in misses]
    assert x["front"]["pool_share"] == rep["goals"]["front_share"]
    assert x["front"]["bound_share"] >= x["front"]["pool_share"]
    rows = {c["key"]: c["top1"] for m in sc.lgp_methods(rep) for c in rep["methods"][m]["configs"]}
    for c in x["candidates"]:
        assert "+" in c["key"] and c["pool_top1_measured"] == rows[c["key"]]  # the replication's pool, as scored
        assert 0.0 <= c["alone_top1"] <= 100.0
        assert c["steps"] == rep["settings"]["finetune_epochs"] * rep["settings"]["steps_per_epoch"]
        assert c["images"] == rep["settings"]["eval_images"]
        assert set(c["instances_after"]) == set(c["instances_before"]) and len(c["instances_after"]) == 2
    for m in x["misses"]:  # the bound takes a descendant's solo top-1 only where it is higher
        assert m["bound_top1"] >= m["pool_top1"] and m["bound_delta"] == round(m["bound_top1"] - m["snnet_top1"], 3)
    md = (tmp_path / "cache" / "ceiling" / "STITCH_CEILING_PARTIAL.md").read_text()
    assert md.startswith("QUICK RUN") and "PARTIAL RUN (--keys or --limit" in md
    assert all(f"`{c['key']}`" in md for c in x["candidates"])
    assert not list((tmp_path / "cache" / "ceiling").rglob("train.ckpt"))  # checkpoints go once a result is in
    # a second run reuses every candidate's result and says so; without --out a partial run's results default to
    # stitch_ceiling_partial[_quick].json, never over stitch_ceiling.json
    repo = tmp_path / "repo"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys.modules["paper_replication"], "ROOT", repo)
        assert sc.main([a for a in argv if a not in ("--out", str(out))]) == 0
    second = repo / "benchmarks" / "results" / "stitch_ceiling_partial_quick.json"
    again = json.loads(second.read_text())
    assert again["candidates"] == x["candidates"] and not (repo / "benchmarks" / "results" / "stitch_ceiling.json"
                                                           ).exists()
    assert again["stages"] == {k: {**v, "source": "reused"} for k, v in x["stages"].items()}
    # --render rewrites the section from the results alone, naming the replication the pools came from
    rendered = tmp_path / "rendered.md"
    assert sc.main(["--render", str(second), "--md-out", str(rendered)]) == 0
    md = (tmp_path / "cache" / "ceiling" / "STITCH_CEILING_PARTIAL.md").read_text()  # the second run's
    assert rendered.read_text() == md and f"replication of {rep['date']} (code {rep['code_version']})" in md
    assert ASSEMBLED in md
    assert sc.main(["--render", str(rep_path), "--md-out", str(tmp_path / "bad.md")]) == 2  # not its results
    assert not (tmp_path / "bad.md").exists()
    # a cached result from other pool weights or another budget is trained again, not reused
    cached = sorted((tmp_path / "cache" / "ceiling").rglob("result.json"))[0]
    cached.write_text(json.dumps({**json.loads(cached.read_text()), "fingerprint": "other-pool"}))
    assert sc.main(argv) == 0
    assert json.loads(cached.read_text())["fingerprint"] != "other-pool"


def _check_equal_budget(tmp_path: Path, rep: dict) -> None:
    """benchmarks/equal_budget.py on the replication just written: its default init's pools and SN-Net fine-tuned
    again for a longer budget (as paper_replication.py child processes, from the replication's own distillations)
    and scored with the same goal code; bad input is one line, exit 2, nothing written."""
    eb = _load("equal_budget")
    rep_path = tmp_path / "results" / "paper_replication_quick.json"
    out, work = tmp_path / "results" / "equal_budget_e2_quick.json", tmp_path / "cache" / "equal-budget"
    # in this process (--jobs 1): the --jobs run's child processes are paper_replication.py's own, tested with it;
    # which of them this run hands over is checked below
    argv = ["--replication", str(rep_path), "--work", str(work), "--epochs", "2", "--jobs", "1", "--out", str(out),
            "--quiet"]
    assert eb.main([*argv, "--epochs", "1"]) == 2  # the replication's own budget
    drifted = json.loads(rep_path.read_text())
    drifted["settings"]["stitch_steps"] += 1  # a run this code's defaults would not reproduce
    (tmp_path / "drifted.json").write_text(json.dumps(drifted))
    assert eb.main(["--replication", str(tmp_path / "drifted.json"), *argv[2:]]) == 2
    assert eb.main([*argv, "--jobs", "0"]) == 2 and not out.exists() and not work.exists()
    assert eb.main(argv) == 0
    x = json.loads(out.read_text())
    init = rep["settings"]["default_init"]
    assert x["quick"] is True and set(x["methods"]) == {f"lgp_d6_{init}", f"lgp_d9_{init}", "snnet"}
    # the replication's distillations, copied: named as the replication's, with its code, CPU and date, and their
    # wall times kept apart from this run's
    copied = {k: v for k, v in x["stages"].items() if v["source"] == "copied from the replication"}
    assert sorted(v["dir"] for v in copied.values()) == sorted(
        ["distilled-e1", "distilled-e2", "lgp-d6-distilled", "lgp-d9-distilled"])
    for v in copied.values():
        marker = json.loads((Path(v["copied_from"]) / DONE).read_text())  # the replication's own stage
        assert Path(v["copied_from"]) == tmp_path / "cache" / "run-quick" / v["dir"]
        assert (v["code_version"], v["cpu"], v["wall_s"]) == (marker["code_version"], marker["cpu"], marker["wall_s"])
    assert set(x["timing_s_copied_from_replication"]) == set(copied) and not set(copied) & set(x["timing_s"])
    assert {k: v["source"] for k, v in x["stages"].items() if k not in copied} == {
        "ancestry": "reused", f"lgp_d6_{init}": "computed", "snnet": "computed", f"lgp_d9_{init}": "computed"}
    # the distilled models are the replication's: the same instances right after distillation, and the longer
    # budget is what changed
    for m in x["methods"]:
        assert x["methods"][m]["instances_after_distill"] == rep["methods"][m]["instances_after_distill"]
    assert x["settings"]["finetune_epochs"] == 2 and rep["settings"]["finetune_epochs"] == 1
    assert "--epochs 2" in x["commands"]["snnet"] and "--epochs 2" in x["commands"][f"lgp_d6_{init}"]
    first, longer = x["budgets"]
    assert first["finetune_epochs"] == 1 and first["front_share"] == rep["goals"]["front_share"]
    assert longer["finetune_epochs"] == 2 and longer["front_share"] == x["goals"]["front_share"]
    assert 0.0 <= longer["front_share"] <= 1.0 and longer["worst"]["delta"] == longer["front_delta_min"]
    # with --jobs N, the stages would run as child processes; the copied distillations need none
    _, settings = eb.settings_for(rep, 2, work / "e2")
    jobs = {j.name: j for j in eb.follow_up_jobs(settings, init, work / "e2")}
    assert set(jobs) == {"snnet", f"lgp6-{init}", f"lgp9-{init}"}
    assert all(j.after == () for j in jobs.values()) and jobs["snnet"].stage == "snnet"
    assert jobs[f"lgp9-{init}"].extra == ("--only-inits", init)
    # the same settings without the copies: the distillations are jobs, and the others wait for them
    fresh = {j.name: j for j in eb.follow_up_jobs(settings, init, tmp_path / "no-copies")}
    assert set(fresh) - set(jobs) == {"distill-e1", "distill-e2", "lgp6-distill", "lgp9-distill"}
    assert fresh[f"lgp9-{init}"].after == ("lgp9-distill",)
    md = (work / "e2" / "EQUAL_BUDGET_E2.md").read_text()
    assert "QUICK RUN" in md and "| 1 |" in md and "| 2 |" in md
    # a second run reuses every stage
    assert eb.main(argv) == 0
    again = json.loads(out.read_text())
    assert again["goals"] == x["goals"] and "copied_from_replication" not in again
    assert {k: v["source"] for k, v in again["stages"].items()} == {  # the copies are still the replication's
        k: "reused" if v["source"] == "computed" else v["source"] for k, v in x["stages"].items()}
    assert again["timing_s_copied_from_replication"] == x["timing_s_copied_from_replication"]
    assert ASSEMBLED in (work / "e2" / "EQUAL_BUDGET_E2.md").read_text()
    assert {k: v for k, v in again["timing_s"].items() if k != "total_this_invocation"} == \
        {k: v for k, v in x["timing_s"].items() if k != "total_this_invocation"}


def _check_finetune_recipes(tmp_path: Path, rep: dict, capsys: pytest.CaptureFixture) -> None:
    """benchmarks/finetune_recipes.py on the replication just written: its distilled pools stitched as it did (the
    top-1 before fine-tuning checked against it), fine-tuned under each variant, scored against its SN-Net."""
    fr = _load("finetune_recipes")
    rep_path = tmp_path / "results" / "paper_replication_quick.json"
    out, work = tmp_path / "results" / "finetune_recipes_quick.json", tmp_path / "cache" / "recipes"
    # in this process (--jobs 1); the run on pool_widths.py's pools below takes --jobs 2 (spawned processes)
    argv = ["--replication", str(rep_path), "--work", str(work), "--variants", "flops-bucket,instance-lr-0.1",
            "--jobs", "1", "--out", str(out), "--quiet"]
    assert fr.main([*argv, "--variants", "flops-bucket,bogus"]) == 2 and not out.exists()
    assert fr.main([*argv, "--depths", "7"]) == 2 and not out.exists()
    moved = json.loads(rep_path.read_text())  # results whose distilled pool is not where they say
    moved["methods"]["lgp_d9_lstsq-kd"]["pool_dir"] = "benchmarks/.cache/no-such-run/lgp_d9_lstsq-kd"
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    assert fr.main(["--replication", str(tmp_path / "moved.json"), *argv[2:]]) == 2 and not out.exists()
    other = json.loads(rep_path.read_text())  # results of another distillation
    other["methods"]["lgp_d6_lstsq-kd"]["instances_after_distill"]["ti6.0-5"] += 1.0
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert fr.main(["--replication", str(tmp_path / "other.json"), *argv[2:]]) == 2 and not out.exists()
    assert "not the replication's distilled pool" in capsys.readouterr().err
    assert fr.main(argv) == 0
    x = json.loads(out.read_text())
    assert x["quick"] is True and x["methods"] == ["lgp_d6_lstsq-kd", "lgp_d9_lstsq-kd"]
    assert [v["name"] for v in x["variants"]] == ["replication", "flops-bucket", "instance-lr-0.1"]
    base = x["variants"][0]
    assert base["front_share"] == rep["goals"]["front_share"] and base["instances"] == rep["goals"]["instances"]
    for v in x["variants"][1:]:
        for m in x["methods"]:
            assert [c["key"] for c in v["pools"][m]["configs"]] == [c["key"] for c in rep["methods"][m]["configs"]]
            assert all(0.0 <= c["top1"] <= 100.0 for c in v["pools"][m]["configs"])
            history = json.loads((work / v["name"] / m / "pool" / "pool.json").read_text())["history"]
            entry = next(h for h in reversed(history) if h["stage"] == "finetune")
            assert entry["anchors"] is True
            assert (entry["sampling"], entry["instance_lr_scale"]) == {
                "flops-bucket": ("flops-bucket", rep["settings"]["instance_lr_scale"]),
                "instance-lr-0.1": ("uniform", 0.1)}[v["name"]]
        vs = v["vs_replication"]
        assert vs["descendants"] == 45 and vs["better"] + vs["worse"] <= 45 and vs["min"] <= vs["mean"] <= vs["max"]
    md = (work / "FINETUNE_RECIPES.md").read_text()
    assert "QUICK RUN" in md and all(f"`{v['name']}`" in md for v in x["variants"])
    assert "stages computed earlier" not in md
    assert {k: v["source"] for k, v in x["stages"].items()} == {
        f"{v}/{m}": "computed" for v in ("flops-bucket", "instance-lr-0.1") for m in x["methods"]}
    cached = work / "flops-bucket" / "lgp_d6_lstsq-kd" / "result.json"
    assert json.loads(cached.read_text())["finished"] == x["stages"]["flops-bucket/lgp_d6_lstsq-kd"]["finished"]
    # a second run reuses both variants' results and says so; a stale fingerprint is redone
    assert fr.main(argv) == 0
    again = json.loads(out.read_text())
    assert again["variants"] == x["variants"] and ASSEMBLED in (work / "FINETUNE_RECIPES.md").read_text()
    assert again["stages"] == {k: {**v, "source": "reused"} for k, v in x["stages"].items()}
    cached.write_text(json.dumps({**json.loads(cached.read_text()), "fingerprint": "other"}))
    assert fr.main(argv) == 0
    assert json.loads(cached.read_text())["fingerprint"] != "other"
    assert "; 3 of 4 stages computed earlier" in (work / "FINETUNE_RECIPES.md").read_text()
    # the distilled pools of a pool_widths.py result (Ti/S/B, depths 6 and 9) instead of the replication's
    from lgp_edge.fileio import sha256_file

    widths = tmp_path / "results" / "pool_widths_d9.json"
    w = json.loads(widths.read_text())
    out_w = tmp_path / "results" / "finetune_recipes_widths.json"
    wargv = [*argv[:argv.index("--variants")], "--variants", "instance-lr-0.3", "--jobs", "2", "--out", str(out_w),
             "--md-out", str(tmp_path / "recipes_widths.md"), "--quiet"]
    assert fr.main([*wargv, "--pools-from", str(tmp_path / "missing.json")]) == 2
    assert fr.main([*wargv, "--pools-from", str(rep_path)]) == 2  # not a pool_widths.py result
    assert "is not a pool_widths.py results file" in capsys.readouterr().err
    (tmp_path / "widths_other.json").write_text(json.dumps({**w, "replication": {**w["replication"], "sha256": "0"}}))
    assert fr.main([*wargv, "--pools-from", str(tmp_path / "widths_other.json")]) == 2 and not out_w.exists()
    assert "measured against another replication" in capsys.readouterr().err
    assert fr.main([*wargv, "--pools-from", str(widths)]) == 0
    y = json.loads(out_w.read_text())
    assert y["pools_from"]["widths"] == ["ti", "s", "b"] and y["pools_from"]["sha256"] == sha256_file(widths)
    assert [v["name"] for v in y["variants"]] == ["pool_widths", "instance-lr-0.3"]
    both = w["goals"]["ti-s-b depths 6 + 9"]
    assert {k: y["variants"][0][k] for k in ("front_share", "front_delta_min", "instances_held")} == {
        k: both[k] for k in ("front_share", "front_delta_min", "instances_held")}
    for m, pool in (("lgp_d6_lstsq-kd", w["pool_depth6"]), ("lgp_d9_lstsq-kd", w["pool"])):
        run = work / "instance-lr-0.3" / f"{m}_ti-s-b"  # beside the replication's pools' runs, not over them
        assert json.loads((run / "result.json").read_text())["top1_before_finetune"] == pool["top1_before_finetune"]
        entry = next(h for h in reversed(json.loads((run / "pool" / "pool.json").read_text())["history"])
                     if h["stage"] == "finetune")
        assert entry["instance_lr_scale"] == 0.3
        assert [c["key"] for c in y["variants"][1]["pools"][m]["configs"]] == [c["key"] for c in pool["configs"]]
    md_w = (tmp_path / "recipes_widths.md").read_text()
    assert "the distilled Ti/S/B pools of" in md_w and "(depths 6, 9)" in md_w and "`pool_widths`" in md_w


def test_stitch_ceiling_candidates_of_the_committed_replication() -> None:
    """For each SN-Net config ahead of the committed front: its most accurate stitched descendant and the one with
    the most FLOPs within its FLOPs (pinned on benchmarks/results/paper_replication.json)."""
    sc = _load("stitch_ceiling")
    rep = sc.load_replication(ROOT / "benchmarks" / "results" / "paper_replication.json")
    misses, cands = sc.candidates(rep)
    assert len(misses) == round((1 - rep["goals"]["front_share"]) * 71) == 21
    assert [c["key"] for c in cands] == [
        "ti6.0-5+b6.5-5", "ti6.0-4+b6.4-5", "ti6.0-5+b6.4-5", "ti9.0-7+b9.7-8", "ti9.0-8+b9.7-8", "ti6.0-2+b6.3-5",
        "ti9.0-7+b9.6-8", "ti6.0-3+b6.2-5", "ti9.0-6+b9.5-8", "ti6.0-0+b6.1-5", "ti9.0-4+b9.4-8", "ti9.0-5+b9.4-8"]
    # the S12 anchor (10.66 MFLOPs): the best stitch within it is ti6.0-5+b6.4-5, the largest ti9.0-8+b9.7-8
    s12 = next(m for m in misses if m["snnet_key"] == "s12.0-11")
    within = [c for c in cands if c["flops"] <= s12["snnet_flops"]]
    assert max(within, key=lambda c: c["top1"])["key"] == "ti6.0-5+b6.4-5"
    assert max(within, key=lambda c: c["flops"])["key"] == "ti9.0-8+b9.7-8"


def _check_commands(commands: dict[str, str]) -> None:
    """Every lgp-edge command the results JSON records is one the CLI accepts, with the recipe's flags."""
    from lgp_edge.cli import build_parser
    from lgp_edge.commands.train_args import finetune_recipe

    parser = build_parser()
    parsed = {}
    for stage, line in commands.items():
        for part in line.split(" && "):
            argv = shlex.split(part, comments=True)
            if argv[0] == "lgp-edge":
                parsed[stage, argv[1], argv[2] if len(argv) > 2 else ""] = parser.parse_args(argv[1:])
    snnet = parsed["snnet", "baseline", "snnet"]
    # Ti of both depths and SN-Net's Ti anchor share one distillation run (2 epochs), B, B and S another (1)
    ti, rest = parsed["distill_e2", "pool", "distill"], parsed["distill_e1", "pool", "distill"]
    assert (ti.models, ti.epochs, rest.models, rest.epochs) == (("ti6", "ti9", "ti12"), 2, ("b6", "b9", "s12"), 1)
    assert [Path(d).name for d in snnet.distilled] == ["distilled-e1", "distilled-e2"] and not snnet.width_epochs
    assert finetune_recipe(snnet) == {"stitch_epochs": 0, "instance_lr_scale": _bench().FULL["instance_lr_scale"],
                                      "anchors": True, "sampling": "uniform"}
    build = parsed["lgp_d6_distill", "pool", "build"]
    assert [Path(d).name for d in build.distilled] == ["distilled-e1", "distilled-e2"] and not build.width_epochs
    assert finetune_recipe(parsed["lgp_d6_lstsq-kd", "pool", "finetune"])["anchors"] is True


def _front(lgp: list[dict], snnet: list[dict]) -> tuple[float, float | None]:
    """Over the SN-Net configs some LGP model reaches in FLOPs: the share where the best such LGP model is at
    least as accurate, and the worst difference in top-1 points."""
    deltas = []
    for c in snnet:
        reach = [x["top1"] for x in lgp if x["flops"] <= c["flops"]]
        if reach:
            deltas.append(round(max(reach) - c["top1"], 3))
    return (sum(d >= 0 for d in deltas) / len(deltas) if deltas else 0.0), min(deltas, default=None)


def _check_goals(g: dict, methods: dict) -> None:
    """The goals' verdicts, worked out again from the per-model results of the same run."""
    snnet = methods["snnet"]["configs"]
    share, worst = _front([x for m in g["methods"] for x in methods[m]["configs"]], snnet)
    crit = g["criteria"]
    assert g["front_share"] == round(share, 4) and g["front_delta_min"] == worst
    assert g["front_held"] is (share >= crit["front_share_at_least"] and worst is not None
                               and worst >= crit["front_delta_min_at_least"])
    sn = methods["snnet"]["stored_params"]
    assert g["storage_ratio"] == round(methods[g["methods"][0]]["stored_params"] / sn, 4)
    assert len(g["methods"]) == 2 and g["front_storage_ratio"] == round(
        sum(methods[m]["stored_params"] for m in g["methods"]) / sn, 4) > g["storage_ratio"]
    fam = g["front_by_snnet_family"]  # the same front, by SN-Net family: anchors and both stitched pairs
    assert list(fam) == ["ti", "ti->s", "s", "s->b", "b"]  # in order of FLOPs
    assert sum(v["configs"] for v in fam.values()) == sum(
        any(x["flops"] <= c["flops"] for m in g["methods"] for x in methods[m]["configs"]) for c in snnet)
    assert round(sum(v["lgp_at_or_ahead"] for v in fam.values()) / sum(v["configs"] for v in fam.values()), 4) \
        == g["front_share"] and min(v["worst"]["delta"] for v in fam.values()) == worst
    assert {f: v["count"] for f, v in g["families"]["snnet"].items()} == {"ti": 1, "ti->s": 34, "s": 1, "s->b": 34,
                                                                          "b": 1}
    assert set(g["families"]["lgp_d6_lstsq-kd"]) == {"ti", "ti->b", "b"}
    held = {}
    for m in g["methods"]:
        after = {x["key"]: x["top1"] for x in methods[m]["configs"]}
        for key, before in methods[m]["instances_after_distill"].items():
            held[f"{m}:{key}"] = after.get(key) is not None and after[key] >= before
    assert len(held) == 4 and {k: v["held"] for k, v in g["instances"].items()} == held
    assert g["instances_held"] is all(held.values())


def _check_claims(c: dict, methods: dict) -> None:
    """The paper claims' verdicts, worked out again from the per-model results of the same run."""
    snnet = methods["snnet"]["configs"]
    learned = [x for m in ("lgp_d6_learned", "lgp_d9_learned") for x in methods[m]["configs"]]
    storage = methods["lgp_d6_learned"]["stored_params"] / methods["snnet"]["stored_params"]
    min_flops = min(x["flops"] for x in learned) / min(x["flops"] for x in snnet)
    worst = _front(learned, snnet)[1]
    lstsq = {x["key"]: x["top1"] for x in methods["lgp_d6_lstsq"]["configs"]}
    init = [round(x["top1"] - lstsq[x["key"]], 3) for x in methods["lgp_d6_learned"]["configs"] if x["key"] in lstsq]
    init_mean = sum(init) / len(init)
    assert c["storage_ratio"] == round(storage, 4) and c["min_flops_ratio"] == round(min_flops, 4)
    assert c["front_delta_min"] == worst and c["init_delta_mean"] == round(init_mean, 3)
    assert {k: c[f"{k}_held"] for k in ("storage_ratio", "min_flops_ratio", "front_delta_min", "init_delta_mean")} \
        == {"storage_ratio": storage < 0.5, "min_flops_ratio": min_flops < 1.0,
            "front_delta_min": worst is not None and worst >= 0.0, "init_delta_mean": init_mean > 0.0}


def test_wall_time_goal_is_judged_only_on_a_whole_two_core_run() -> None:
    bench = _bench()
    r = {"quick": False, "settings": {"jobs": 2}, "environment": {"cpu_count": 2, "cpu": "Some CPU"},
         "reused_stages": [], "timing_s": {"total_this_invocation": 119.4 * 60}}
    assert bench.budget_lines(r) == ["| full run <= 120 min on 2 cores, excluding the one-time ancestry | 119 min "
                                     "(Some CPU) | **met** |"]
    assert "**not met**" in bench.budget_lines({**r, "timing_s": {"total_this_invocation": 121 * 60}})[0]
    for other in ({"quick": True}, {"reused_stages": ["scratch"]}, {"settings": {"jobs": 1}},
                  {"environment": {"cpu_count": 4}}):
        assert bench.budget_lines({**r, **other}) == []


def test_jobs_plan_orders_dependencies_and_strips_own_flags(tmp_path: Path) -> None:
    bench = _bench()
    s = dict(bench.FULL, inits_d9=["lstsq-kd"], ancestry=bench.ANCESTRY)
    jobs = bench.plan_jobs(s)
    names = [j.name for j in jobs]
    assert sorted(names) == sorted(["distill-e3", "distill-e10", "snnet", "scratch", "vanilla", "lgp6-distill",
                                    "lgp6-learned", "lgp6-lstsq", "lgp6-lstsq-kd", "lgp9-distill", "lgp9-lstsq-kd"])
    for i, j in enumerate(jobs):  # every job comes after the jobs it needs
        assert all(names.index(a) < i for a in j.after)
    by = {j.name: j for j in jobs}
    assert by["distill-e10"].extra == ("--only-distill", "10") and by["distill-e10"].after == ()
    assert by["lgp6-distill"].extra == ("--only-inits", "none") and by["lgp9-lstsq-kd"].extra == ("--only-inits",
                                                                                                  "lstsq-kd")
    assert by["lgp9-lstsq-kd"].after == ("lgp9-distill",) and by["snnet"].extra == ()
    assert by["snnet"].after == by["lgp6-distill"].after == ("distill-e3", "distill-e10")
    assert set(names[:2]) == {"distill-e3", "distill-e10"}  # the heads of the two longest chains start first
    # each pool and SN-Net distilling their own models: no distillation jobs, nothing to wait for
    separate = {j.name: j for j in bench.plan_jobs({**s, "shared_distill": False})}
    assert "distill-e10" not in separate and separate["snnet"].after == separate["lgp6-distill"].after == ()
    # the distillations' directories; jobs whose stages are done already are left out and waited for by none
    assert {j.name: bench.distillation_dir(j) for j in jobs if bench.distillation_dir(j)} == {
        "distill-e3": "distilled-e3", "distill-e10": "distilled-e10", "lgp6-distill": "lgp-d6-distilled",
        "lgp9-distill": "lgp-d9-distilled"}
    rest = {j.name: j for j in bench.without_jobs(jobs, {"distill-e3", "distill-e10", "lgp9-distill"})}
    assert set(rest) == set(names) - {"distill-e3", "distill-e10", "lgp9-distill"}
    assert rest["snnet"].after == () and rest["lgp6-lstsq"].after == ("lgp6-distill",)
    assert rest["lgp9-lstsq-kd"].after == ()
    assert bench.job_argv(["--inits-d9", "lstsq-kd", "--jobs", "2", "--threads=2", "--threads", "4", "--quiet"]) \
        == ["--inits-d9", "lstsq-kd", "--quiet"]
    # a failing child stops the run and names its log
    bad = [bench.Job("broken", "lgp6", (), (), 1.0)]
    with pytest.raises(SystemExit, match="job broken failed .*broken.log"):
        bench.run_jobs(bad, ["--ancestry", "no_such_ancestry"], 2, tmp_path)
    assert (tmp_path / "logs" / "broken.log").stat().st_size > 0
    for argv in (["--jobs", "0"], ["--jobs", "2", "--stages", "lgp6"]):
        with pytest.raises(SystemExit) as e:
            bench.main(argv)
        assert e.value.code == 2


def test_jobs_run_where_processes_cannot_be_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """macOS has neither os.sched_getaffinity nor os.sched_setaffinity: the lanes run unpinned, said once."""
    import logging
    import os

    bench = _bench()
    for name in ("sched_getaffinity", "sched_setaffinity"):
        monkeypatch.delattr(os, name, raising=False)
    jobs = [bench.Job("broken", "lgp6", (), (), 1.0), bench.Job("broken2", "lgp9", (), (), 1.0)]
    with caplog.at_level(logging.INFO, logger=bench.log.name), pytest.raises(SystemExit, match="job broken2? failed"):
        bench.run_jobs(jobs, ["--ancestry", "no_such_ancestry"], 2, tmp_path)
    said = [r.getMessage() for r in caplog.records if "pinned" in r.getMessage()]
    assert len(said) == 1 and "not pinned" in said[0], said
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["broken.log", "broken2.log"]


def test_stage_marker_is_written_whole_and_a_torn_one_means_not_done(tmp_path: Path) -> None:
    bench = _bench()
    st = bench.Stages(tmp_path)
    stage = tmp_path / "scratch"
    stage.mkdir()
    (stage / DONE).write_text('{"settings": {"a": ')  # torn by a run killed while writing it (before this fix)
    (stage / f".{DONE}.abcd1234.tmp").write_text("{")  # what a write killed before its rename leaves
    (stage / "results.json").write_text("{}")  # lgp-edge's own output stays
    st.note("scratch", stage)  # the wall time a stage is credited with comes from its marker
    assert not st.done(stage, {"a": 1}) and st.timing["scratch"] == 0.0
    assert sorted(p.name for p in stage.iterdir()) == ["results.json"]
    st.mark(stage, {"a": 1}, 2.0)
    st.note("scratch", stage)
    assert st.done(stage, {"a": 1}) and st.timing["scratch"] == 2.0 and not st.done(stage, {"a": 2})
    assert sorted(p.name for p in stage.iterdir()) == ["results.json"]  # a marker of other settings goes


def test_device_and_loader_workers_reach_every_training_run_and_the_report(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    import torch

    from lgp_edge.commands.train_args import train_flags
    from lgp_edge.train import TrainConfig

    bench = _bench()
    s = bench.settings_from_args(bench.build_parser().parse_args(["--workers", "2"]))
    assert s["device"] == "cpu" and s["workers"] == 2
    cfg = bench.train_cfg(s, 3, lr=1e-3)
    assert (cfg.device, cfg.num_workers, cfg.epochs, cfg.lr) == ("cpu", 2, 3, 1e-3)
    assert bench.eval_kw({**s, "device": "cuda"}) == {"max_images": s["eval_images"], "device": "cuda"}
    # the recorded commands name the device and the workers where they are not the defaults
    assert train_flags(TrainConfig(epochs=1, device="cuda", num_workers=2)).endswith("--device cuda --workers 2")
    plain = train_flags(TrainConfig(epochs=1))
    assert "--device" not in plain and "--workers" not in plain
    # a GPU run says so in its title and in how it ran; a CPU run stays as before
    gpu = {"environment": {"gpu": "NVIDIA H200", "cpu_count": 16}, "settings": {"jobs": 8, "workers": 2},
           "timing_s": {"snnet": 60.0, "total_this_invocation": 300.0}}
    assert bench.lanes(gpu) == "processes sharing the NVIDIA H200, 2 loader worker(s) each"
    assert "as 8 processes sharing the NVIDIA H200" in bench.compute_text(gpu)
    assert bench.lanes({"environment": {}, "settings": {"jobs": 2}}) == "parallel lanes of one thread each"
    # bad values: one line, exit 2, before anything runs
    bad = [["--workers", "-1"], ["--workers", "100000"], ["--device", "tpu"]]
    bad += [] if torch.cuda.is_available() else [["--device", "cuda"]]
    for argv in bad:
        with pytest.raises(SystemExit) as e:
            bench.main([*argv, "--work", str(tmp_path / "w"), "--out-dir", str(tmp_path / "out")])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--workers must be >= 0" in err and "invalid choice: 'tpu'" in err
    assert "--workers must be at most" in err
    assert torch.cuda.is_available() or "no CUDA device is available here" in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "out").exists()
    # a copy of the tree without git (another machine's run) records the version it is told, else 'unknown'
    mdp = sys.modules["make_demo_pool"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(tmp_path / "empty"))
        mp.delenv("LGP_EDGE_CODE_VERSION", raising=False)
        assert mdp.git_rev() == "unknown"
        mp.setenv("LGP_EDGE_CODE_VERSION", "abc1234")
        assert mdp.git_rev() == "abc1234"


@pytest.mark.slow
def test_jobs_run_every_stage_in_parallel_tiny(tmp_path: Path) -> None:
    import subprocess
    import sys

    argv = _tiny_argv(tmp_path)
    # batches made by one loader worker per run. In a process of its own, as a user runs it: a test process that
    # compiled OpenVINO CPU models before can hold a freed signal stack (left by its CPU plugin), on which the
    # SIGCHLD handler that loader workers install would crash
    cmd = [sys.executable, str(ROOT / "benchmarks" / "paper_replication.py"), *argv, "--jobs", "2", "--workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "cache" / "run-quick"
    r = json.loads((tmp_path / "results" / "paper_replication_quick.json").read_text())
    assert r["settings"]["jobs"] == 2 and r["settings"]["torch_threads"] == 1 and r["settings"]["workers"] == 1
    assert "--workers 1" in r["commands"]["snnet"] and "gpu" not in r["environment"]
    assert len(r["methods"]) == 8 and len(r["methods"]["snnet"]["configs"]) == 71
    # each job ran in its own process and logged there; the parent only assembled
    logs = {p.stem for p in (run_dir / "logs").glob("*.log")}
    assert logs == {"distill-e1", "distill-e2", "snnet", "scratch", "vanilla", "lgp6-distill", "lgp6-learned",
                    "lgp6-lstsq", "lgp6-lstsq-kd", "lgp9-distill", "lgp9-learned", "lgp9-lstsq-kd"}
    assert "started" not in (run_dir / "logs" / "lgp6-learned.log").read_text()
    assert "reusing" in (run_dir / "logs" / "lgp6-learned.log").read_text()  # the distilled pool of another job
    assert "parallel lanes of one thread each, 1 loader worker(s) each" in (tmp_path / "section.md").read_text()
    # every stage computed by this invocation: the children's after it started, the ancestry by itself (measured
    # here, so its wall time is this run's)
    assert {v["source"] for v in r["stages"].values()} == {"computed"} and len(r["stages"]) == 13
    assert "stages computed earlier" not in (tmp_path / "section.md").read_text()
    assert r["timing_s"]["ancestry"] > 0 and "timing_source" not in r


@pytest.mark.slow
def test_jobs_stopped_run_leaves_no_child_running(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, str(ROOT / "benchmarks" / "paper_replication.py"), *_tiny_argv(tmp_path), "--jobs", "2"]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    logs = tmp_path / "cache" / "run-quick" / "logs"
    deadline = time.time() + 120
    while not (logs.is_dir() and any(logs.iterdir())) and time.time() < deadline:
        time.sleep(0.2)
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True,
                                               text=True).stdout.split()]
    assert children, "no job started"
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode != 0 and "stopped by signal" in err
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert not (tmp_path / "results").exists()


def test_ancestry_cycles_train_in_a_chain_and_are_reused(tmp_path: Path) -> None:
    from lgp_edge.progress import NULL

    bench = _bench()
    s = dict(bench.QUICK, ancestry="lgp_test_tiny", data="synthetic", cache_dir=str(tmp_path), ancestry_epochs=1,
             ancestry_steps=2, ancestry_cycles=bench.ancestry_cycles_arg("1@1e-4"))
    st = bench.Stages(tmp_path)
    path, meta = bench.ancestry_stage(s, False, NULL, st)
    first = tmp_path / "ancestry-lgp_test_tiny-e1"
    assert Path(path) == tmp_path / "ancestry-lgp_test_tiny-e1+1" and not meta["reused_from_cache"]
    assert meta["initial_checkpoint"]["path"] == str(first / "ancestry.safetensors")
    assert meta["config"]["lr"] == 1e-4 and meta["initial_checkpoint"]["config"]["lr"] == s["ancestry_lr"]
    assert st.commands["ancestry"].count("--initial-checkpoint") == 1
    assert st.timing["ancestry"] == pytest.approx(meta["wall_s"] + meta["initial_checkpoint"]["wall_s"])
    # the same settings reuse the chain; another last cycle reuses the first and trains only the new one
    assert bench.ancestry_stage(s, False, NULL, bench.Stages(tmp_path))[1]["reused_from_cache"]
    stamp = (first / "ancestry.safetensors").stat().st_mtime_ns
    s2 = dict(s, ancestry_cycles=bench.ancestry_cycles_arg("1@2e-4"))
    path2, meta2 = bench.ancestry_stage(s2, False, NULL, bench.Stages(tmp_path))
    assert (first / "ancestry.safetensors").stat().st_mtime_ns == stamp
    assert meta2["config"]["lr"] == 2e-4 and not meta2["reused_from_cache"]
    # a cycle-less setting does not take the warm-started weights for the first cycle's
    path3, meta3 = bench.ancestry_stage(dict(s, ancestry_cycles=[]), False, NULL, bench.Stages(tmp_path))
    assert Path(path3) == first and "initial_checkpoint" not in meta3
    for bad in ("15", "0@1e-3", "5@2", "x@1e-3", ","):
        with pytest.raises(argparse.ArgumentTypeError, match="EPOCHS@LR|learning rate|empty"):  # argparse shows it
            bench.ancestry_cycles_arg(bad)
    assert bench.ancestry_cycles_arg("none") == []



def test_a_resumed_distillation_stage_counts_the_interrupted_processes(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared distillation stopped and resumed recorded the resumed process' seconds as the stage's (a 30-epoch
    run said 21 min where its own record counted 114): the stage's time is the distillation's own record, which
    counts the training seconds of the processes an interruption ended."""
    from lgp_edge.progress import NULL

    bench = _bench()
    s = dict(bench.QUICK, ancestry="lgp_test_tiny", data="synthetic", cache_dir=str(tmp_path), ancestry_epochs=1,
             ancestry_steps=1, steps_per_epoch=1, eval_images=32, distill_epochs=2, distill_width_epochs={})
    anc, _ = bench.ancestry_stage(s, False, NULL, bench.Stages(tmp_path))
    s["ancestry_sha256"] = "test"
    stop_after_first_epoch(monkeypatch, 3.0)
    with pytest.raises(KeyboardInterrupt):
        bench.distill_stage(anc, s, NULL, bench.Stages(tmp_path / "work"))
    st = bench.Stages(tmp_path / "work")
    bench.distill_stage(anc, s, NULL, st)
    (name, seconds), = st.timing.items()
    recorded = json.loads((tmp_path / "work" / "distilled-e2" / "distilled.json").read_text())["wall_s"]
    assert recorded >= 3.0 and seconds >= recorded, (seconds, recorded)
