"""What the benchmarks' results say about where their numbers come from: each stage's code, CPU and date, results
assembled from earlier stages said as such, partial runs kept apart, and the goal thresholds read from one place.
Fast: the scripts' own functions on the committed results and on small hand-made stage markers."""

from __future__ import annotations

import copy
import json
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ASSEMBLED = "assembled from stages computed earlier; see stages in the JSON"


def _load(name: str):
    if name in sys.modules and getattr(sys.modules[name], "__file__", "").startswith(str(ROOT)):
        return sys.modules[name]
    return load_benchmark(name, register=True)


def _committed(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


# (script, committed results, committed section, how the script renders it)
SECTIONS = [
    ("paper_replication", "paper_replication.json", "PAPER_REPLICATION.md",
     lambda m, x, j: m.render_markdown(x, "benchmarks/results/paper_replication.png", j)),
    ("paper_replication", "ti30/paper_replication.json", "PAPER_REPLICATION_TI30.md",
     lambda m, x, j: m.render_markdown(x, "benchmarks/results/ti30/paper_replication.png", j)),
    ("equal_budget", "equal_budget_e4.json", "EQUAL_BUDGET_E4.md", lambda m, x, j: m.render_markdown(x, j)),
    ("pool_widths", "pool_widths.json", "POOL_WIDTHS.md", lambda m, x, j: m.render_markdown(x, j)),
    ("pool_widths", "ti30/pool_widths.json", "POOL_WIDTHS_TI30.md", lambda m, x, j: m.render_markdown(x, j)),
    ("pool_widths", "ti30/pool_widths_ti-s.json", "POOL_WIDTHS_TI30_TI_S.md", lambda m, x, j: m.render_markdown(x, j)),
    ("pool_widths", "ti30/pool_widths_ti-s_d9.json", "POOL_WIDTHS_TI30_TI_S_D9.md",
     lambda m, x, j: m.render_markdown(x, j)),
    ("stitch_ceiling", "stitch_ceiling.json", "STITCH_CEILING.md", lambda m, x, j: m.render_markdown(x, j)),
    ("stitch_ceiling", "stitch_ceiling_e8.json", "STITCH_CEILING_E8.md", lambda m, x, j: m.render_markdown(x, j)),
    ("finetune_recipes", "finetune_recipes.json", "FINETUNE_RECIPES.md", lambda m, x, j: m.render_markdown(x, j)),
    ("finetune_recipes", "finetune_recipes_x1.json", "FINETUNE_RECIPES_X1.md",
     lambda m, x, j: m.render_markdown(x, j)),
    ("finetune_recipes", "finetune_recipes_ti30.json", "FINETUNE_RECIPES_TI30.md",
     lambda m, x, j: m.render_markdown(x, j)),
    ("finetune_recipes", "finetune_recipes_ti30_ti_s.json", "FINETUNE_RECIPES_TI30_TI_S.md",
     lambda m, x, j: m.render_markdown(x, j)),
]


def _render(script: str, results: dict, name: str) -> str:
    fn = next(f for s, j, _, f in SECTIONS if s == script and j == name)
    return fn(_load(script), results, f"benchmarks/results/{name}")


@pytest.mark.parametrize("script,name,md", [c[:3] for c in SECTIONS], ids=[c[2] for c in SECTIONS])
def test_committed_sections_render_byte_identical(script: str, name: str, md: str) -> None:
    """The committed results (written before stages were recorded) render to the committed sections."""
    got = _render(script, _committed(name), name)
    assert got == (ROOT / "benchmarks" / md).read_text()


def test_stage_markers_record_code_cpu_and_date(tmp_path: Path) -> None:
    bench = _load("paper_replication")
    from lgp_edge.profiling.host import cpu_model

    st = bench.Stages(tmp_path)
    stage = tmp_path / "scratch"
    stage.mkdir()
    st.mark(stage, {"a": 1}, 12.34)
    marker = json.loads((stage / ".done.json").read_text())
    assert marker["code_version"] == sys.modules["make_demo_pool"].git_rev() and marker["cpu"] == cpu_model()
    assert ISO.match(marker["finished"]) and marker["wall_s"] == 12.3
    st.note("scratch", stage)  # finished by this invocation
    assert st.stages["scratch"] == {"source": "computed", "dir": "scratch", "code_version": marker["code_version"],
                                    "cpu": marker["cpu"], "finished": marker["finished"], "wall_s": 12.3}
    assert st.timing["scratch"] == 12.3
    # a later invocation reuses it and says so, with the provenance the marker recorded
    time.sleep(0.2)
    later = bench.Stages(tmp_path)
    assert later.done(stage, {"a": 1})
    later.note("scratch", stage)
    assert later.stages["scratch"] == {**st.stages["scratch"], "source": "reused"}
    # markers written by older code hold no code or CPU: said so, never filled in from this invocation
    (stage / ".done.json").write_text(json.dumps({"settings": {"a": 1}, "wall_s": 5.0, "finished_at": 0.0}))
    later.note("old", stage)
    assert later.stages["old"] == {"source": "reused", "dir": "scratch", "code_version": "not recorded",
                                   "cpu": "not recorded", "finished": "1970-01-01T00:00:00Z", "wall_s": 5.0}
    (stage / ".done.json").write_text(json.dumps({"settings": {"a": 1}, "wall_s": 5.0}))
    later.note("older", stage)
    assert later.stages["older"]["finished"] == "not recorded" and later.stages["older"]["source"] == "reused"


def test_a_copied_stage_names_its_origin(tmp_path: Path) -> None:
    """equal_budget.py's copies of the replication's distillations keep the replication's provenance and say
    where they came from, in this invocation and in later ones that reuse them."""
    bench, eb = _load("paper_replication"), _load("equal_budget")
    run = tmp_path / "rep" / "run-full"
    for d in ("distilled-e3", "lgp-d6-distilled", "snnet"):
        (run / d).mkdir(parents=True)
        (run / d / "weights.bin").write_text(d)
        (run / d / ".done.json").write_text(json.dumps({"settings": {"d": d}, "wall_s": 60.0, "finished_at": 1.0e9,
                                                        "code_version": "abc1234", "cpu": "Rep CPU"}))
    rep = {"methods": {"snnet": {"pool_dir": str(run / "snnet")}}}
    work = tmp_path / "work"
    work.mkdir()
    assert eb.seed_distillations(rep, Path("/"), work) == ["distilled-e3", "lgp-d6-distilled"]
    assert (work / "distilled-e3" / "weights.bin").read_text() == "distilled-e3"
    for first in (True, False):  # the copying invocation, then one that finds the copy in --work
        st = bench.Stages(work)
        assert st.done(work / "distilled-e3", {"d": "distilled-e3"})
        st.note("distill_e3", work / "distilled-e3")
        e = st.stages["distill_e3"]
        assert e["source"] == "copied from the replication" and e["copied_from"] == str(run / "distilled-e3")
        assert (e["code_version"], e["cpu"], e["wall_s"]) == ("abc1234", "Rep CPU", 60.0) and ISO.match(e["copied"])
        assert e["finished"] == "2001-09-09T01:46:40Z"
        if first:
            assert eb.seed_distillations(rep, Path("/"), work) == []
    # redone here (other settings): its own marker, no origin
    st = bench.Stages(work)
    assert not st.done(work / "distilled-e3", {"d": "other"})
    st.mark(work / "distilled-e3", {"d": "other"}, 1.0)
    st.note("distill_e3", work / "distilled-e3")
    assert st.stages["distill_e3"]["source"] == "computed" and "copied_from" not in st.stages["distill_e3"]


def _stages(source: str = "reused") -> dict:
    return {"ancestry": {"source": "shipped", "code_version": "not recorded", "cpu": "not recorded",
                         "finished": "2026-12-02T15:36:29Z", "wall_s": 7577.5},
            "snnet": {"source": source, "dir": "snnet", "code_version": "61b3407", "cpu": "AMD EPYC",
                      "finished": "2026-12-04T15:00:00Z", "wall_s": 1674.6}}


@pytest.mark.parametrize("script,name", [("paper_replication", "paper_replication.json"),
                                         ("equal_budget", "equal_budget_e4.json"),
                                         ("pool_widths", "pool_widths.json"),
                                         ("stitch_ceiling", "stitch_ceiling.json"),
                                         ("finetune_recipes", "finetune_recipes.json")])
def test_header_says_when_every_stage_was_computed_earlier(script: str, name: str) -> None:
    """Results assembled from stages an earlier invocation computed say so next to the assembling run's code, CPU
    and date; results whose invocation computed every stage, and results without a stages record, do not."""
    x = _committed(name)
    plain = _render(script, x, name)
    assert ASSEMBLED not in plain and "stages computed earlier" not in plain
    def header(md: str) -> str:  # the paragraph naming the run's code version and date
        return next(p for p in md.split("\n\n") if x["code_version"] in p and x["date"] in p)

    assembled = _render(script, {**x, "stages": _stages()}, name)
    assert ASSEMBLED in header(assembled)
    assert assembled.replace("; " + ASSEMBLED, "") == plain  # nothing else changes
    assert _render(script, {**x, "stages": {"snnet": _stages("computed")["snnet"]}}, name) == plain
    mixed = _render(script, {**x, "stages": _stages("computed")}, name)
    assert "; 1 of 2 stages computed earlier; see stages in the JSON" in header(mixed)


def test_goal_thresholds_come_from_one_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    """The renderers judge and print the goals by the criteria the results recorded (compute_goals' GOALS) or, for
    results that did not record them, by lgp_edge.baselines.claims.GOALS: no threshold of their own."""
    from lgp_edge.baselines import claims

    eb = _committed("equal_budget_e4.json")
    assert eb["goals"]["criteria"] == claims.GOALS
    looser = {**claims.GOALS, "front_share_at_least": 0.5, "front_delta_min_at_least": -5.0}
    md = _render("equal_budget", {**eb, "goals": {**eb["goals"], "criteria": looser}}, "equal_budget_e4.json")
    assert "Goals: front share >= 50% and worst delta >= -5.0." in md
    assert "| 4 | 59.2% (met) | -3.10 (met) |" in md  # the budget rows judged by them
    pw = _committed("pool_widths.json")
    stricter = {**claims.GOALS, "storage_ratio_at_most": 0.3, "min_flops_ratio_at_most": 0.4}
    md = _render("pool_widths", {**pw, "goal_criteria": stricter}, "pool_widths.json")
    assert "storage ratio <= 0.3, smallest FLOPs ratio <= 0.4." in md
    with monkeypatch.context() as mp:  # results without recorded criteria: the package's
        mp.setitem(claims.GOALS, "front_share_at_least", 0.6)
        md = _render("pool_widths", pw, "pool_widths.json")
        assert "Goals: front share >= 60% and worst delta >= -1.0" in md and "70.4% (met)" in md
    # the paper claims' criteria as the results recorded them (lgp_edge.baselines.claims writes them)
    rep = copy.deepcopy(_committed("paper_replication.json"))
    rep["claims"]["storage_detail"]["criterion"] = "held if < 0.6 (far less storage)"
    rep["claims"]["front_detail"]["criterion"] = "held if >= -1 points"
    md = _render("paper_replication", rep, "paper_replication.json")
    assert "(paper 0.404) | < 0.6 | **held** |" in md and "| min >= -1 | **did not hold** |" in md


def test_partial_stitch_ceiling_runs_are_named_apart(tmp_path: Path) -> None:
    """A --keys/--limit run is no result of the benchmark: its JSON says partial and defaults to *_partial, its
    section goes to --work (never over benchmarks/STITCH_CEILING*.md)."""
    sc, bench = _load("stitch_ceiling"), _load("paper_replication")
    x = _committed("stitch_ceiling.json")
    args = SimpleNamespace(out=None, md_out=None, work=str(tmp_path / "w"))
    assert sc.output_names(x) == ("stitch_ceiling", "STITCH_CEILING.md")
    out, md = bench.follow_up_paths({**x, "partial": True}, args, *sc.output_names({**x, "partial": True}))
    assert out == ROOT / "benchmarks" / "results" / "stitch_ceiling_partial.json"
    assert md == tmp_path / "w" / "STITCH_CEILING_PARTIAL.md"
    longer = {**x, "budget": {**x["budget"], "epochs": 8}, "partial": True}
    assert sc.output_names(longer) == ("stitch_ceiling_e8_partial", "STITCH_CEILING_E8_PARTIAL.md")
    assert _render("stitch_ceiling", {**x, "partial": True}, "stitch_ceiling.json").startswith("PARTIAL RUN")


def test_follow_ups_build_their_stage_keys_from_the_committed_replication(tmp_path: Path) -> None:
    """Stage keys include lstsq_images; the committed replication records it, so the follow-ups that rebuild
    its stages from its settings still accept it."""
    rep = _committed("paper_replication.json")
    assert rep["settings"]["lstsq_images"] == _load("paper_replication").FULL["lstsq_images"]
    argv, s = _load("equal_budget").settings_for(rep, 4, tmp_path / "e4")
    assert s["lstsq_images"] == rep["settings"]["lstsq_images"] and "--finetune-epochs" in argv


def test_demo_pool_row_only_when_scored_like_the_replication() -> None:
    """pool_widths scores the shipped demo pool against the replication's SN-Net only when both top-1s are on
    the same data and the same number of test images (a quick replication scores 500)."""
    from lgp_edge.pool.pool import read_manifest

    widths = _load("pool_widths")
    sha = read_manifest(ROOT / "lgp_edge" / "data" / "demo_pool").provenance["ancestry"]["sha256"]
    rows = widths.demo_pool(sha, {"name": "fashion-mnist", "eval_images": 10000})
    assert rows is not None and len(rows["configs"]) == 18 and rows["finetune_epochs"] > 0
    manifest = read_manifest(ROOT / "lgp_edge" / "data" / "demo_pool")  # which demo pool: it is retrained now and then
    assert rows["shipped"] == manifest.provenance["date"][:10]
    assert rows["weights_sha256"] == manifest.files["weights.safetensors"]
    assert widths.demo_pool(sha, {"name": "fashion-mnist", "eval_images": 500}) is None
    assert widths.demo_pool(sha, {"name": "synthetic", "eval_images": 10000}) is None
    assert widths.demo_pool("0" * 64, {"name": "fashion-mnist", "eval_images": 10000}) is None


def test_a_follow_up_records_which_replication_file_it_read(tmp_path: Path) -> None:
    """A follow-up benchmark compares against whatever replication file it is given; its results name that file
    by its digest (the file at benchmarks/results/ changes with every rerun) and the CPU's facts."""
    bench = _load("paper_replication")
    from lgp_edge.fileio import sha256_file

    rep_path = tmp_path / "r.json"
    rep = {"quick": False, "date": "2026-12-03T14:09:57Z", "code_version": "abc1234", "command": "python x"}
    rep_path.write_text(json.dumps(rep))
    head = bench.follow_up_header("stitch_ceiling", rep, rep_path, ["--replication", str(rep_path)])
    assert head["replication"]["sha256"] == sha256_file(rep_path) and len(head["replication"]["sha256"]) == 64
    assert head["replication"]["date"] == rep["date"] and head["command"].endswith(f"--replication {rep_path}")
    assert head["cpu_facts"]["model"] == head["cpu"]
    rep_path.write_text(json.dumps({**rep, "date": "2026-12-04T15:20:36Z"}))
    assert bench.follow_up_header("stitch_ceiling", rep, rep_path, [])["replication"]["sha256"] != head[
        "replication"]["sha256"]


@pytest.mark.parametrize("argv, phrase", [
    (["--steps-per-epoch", "-1"], "--steps-per-epoch must be >= 0"),  # sliced whole epochs, recorded as -1
    (["--finetune-epochs", "0"], "--finetune-epochs must be >= 1"),
    (["--eval-images", "-3"], "--eval-images must be >= 0"),
    (["--width-epochs", "q=3"], "--width-epochs: unknown width q"),  # recorded as {'q': 3}
    (["--vanilla-narrow", "9,9"], "--vanilla-narrow must be a comma list of distinct counts"),
])
def test_replication_numbers_out_of_range_are_refused(argv: list[str], phrase: str, capsys) -> None:
    bench = _load("paper_replication")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--quick", *argv])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and phrase in err.splitlines()[-1], err  # argparse: its usage, then the error


@pytest.mark.parametrize("text", ["[1, 2]", "{}", json.dumps({"benchmark": "benchmarks/latency.py"})])
def test_a_follow_up_refuses_json_that_is_not_a_replication(tmp_path: Path, text: str, capsys) -> None:
    """Valid JSON that is not a replication's results (a list, {}, latency.json) was a TypeError or KeyError
    traceback in equal_budget, finetune_recipes, stitch_ceiling and pool_widths."""
    path = tmp_path / "r.json"
    path.write_text(text)
    bench = _load("paper_replication")
    with pytest.raises(bench.BenchmarkInputError, match="is not a paper_replication.py results file"):
        bench.read_replication(path)
    sc = _load("stitch_ceiling")
    assert sc.main(["--replication", str(path), "--out", str(tmp_path / "x.json"), "--quiet"]) == 2
    assert "is not a paper_replication.py results file" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_a_committed_run_of_some_candidates_renders_as_partial() -> None:
    """stitch_ceiling_e8.json trained 2 of the front's candidates (--keys) and was written before results said
    so: the README rendered its bound as a full result."""
    sc = _load("stitch_ceiling")
    x = _committed("stitch_ceiling_e8.json")
    assert "partial" not in x and "--keys" in x["command"] and sc.is_partial(x)
    assert sc.render_markdown(x, "benchmarks/results/stitch_ceiling_e8.json").startswith("PARTIAL RUN")
    assert not sc.is_partial(_committed("stitch_ceiling.json"))
