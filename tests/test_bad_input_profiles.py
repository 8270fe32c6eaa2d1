"""Bad profile and target input found by fuzzing: one stderr line, exit 2, no traceback, nothing written.

Empty profile names, non-finite budgets (command line and TOML), non-UTF-8 TOML files, non-finite numbers
in target files and unknown keys in a target's ``[extra]`` table.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import error_lines

from lgp_edge.cli import main

REPO = Path(__file__).resolve().parent.parent
BUILTIN_TARGETS = REPO / "lgp_edge" / "data" / "targets"


@pytest.fixture(autouse=True)
def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path / "store.sqlite"))  # never the user's store


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], phrase: str) -> str:
    """Run ``argv``; it must exit 2 with exactly one error line containing ``phrase`` and no traceback."""
    rc, out, err = run_cli(argv, capsys)
    lines = error_lines(err)
    assert "Traceback" not in err, err
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert phrase in lines[0], lines[0]
    assert "Infinity" not in out and "NaN" not in out, out
    return lines[0]


def profile_text(name: str, budget: str = "10.0", memory: str = "100", batch: str = "1") -> str:
    return (f'name = "{name}"\ntarget = "cpu"\nlatency_budget_ms = {budget}\nmemory_budget_mb = {memory}\n'
            f'precision = "fp32"\nformats = ["onnx"]\nbatch = {batch}\n')


def target_text(name: str, **replace: str) -> str:
    """The built-in raspberry-pi-5 target renamed to ``name`` with lines replaced."""
    text = (BUILTIN_TARGETS / "raspberry-pi-5.toml").read_text(encoding="utf-8")
    text = text.replace('name = "raspberry-pi-5"', f'name = "{name}"')
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


# ---------------------------------------------------------------------------------- 1: --profile ""
@pytest.mark.parametrize("command", ["select", "export", "report"])
def test_empty_profile_name_is_unknown(command: str, tmp_path: Path, tiny_pool: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = [command, "--profile", "", "--pool", str(tiny_pool)]
    if command != "select":
        argv += ["--out", str(out)]
    refused(argv, capsys, "unknown profile ''")
    assert not out.exists()


# ------------------------------------------------------------------------ 2: non-finite budgets
@pytest.mark.parametrize("flag,value", [("--budget-ms", "inf"), ("--budget-ms", "1e309"), ("--budget-ms", "nan"),
                                        ("--memory-mb", "inf"), ("--memory-mb", "1e309"), ("--memory-mb", "-inf")])
@pytest.mark.parametrize("json", [False, True])
def test_non_finite_budget_override_refused(flag: str, value: str, json: bool, tiny_pool: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["select", "--profile", "cpu", "--pool", str(tiny_pool), f"{flag}={value}"] + (["--json"] if json else [])
    line = refused(argv, capsys, "must be a finite number > 0")
    assert flag in line


@pytest.mark.parametrize("field,value", [("latency_budget_ms", "1e400"), ("latency_budget_ms", "inf"),
                                         ("latency_budget_ms", "nan"), ("memory_budget_mb", "inf"),
                                         ("memory_budget_mb", "-1e400")])
def test_non_finite_budget_in_profile_file_refused(field: str, value: str, tmp_path: Path, tiny_pool: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pd = tmp_path / "pd"
    pd.mkdir()
    text = profile_text("q1").replace(f"{field} = ", f"{field} = {value} #")
    (pd / "q1.toml").write_text(text)
    for argv in (["select", "--profile", "q1", "--profiles-dir", str(pd), "--pool", str(tiny_pool), "--json"],
                 ["profiles", "show", "q1", "--profiles-dir", str(pd), "--json"],
                 ["profiles", "list", "--profiles-dir", str(pd), "--json"]):
        line = refused(argv, capsys, "must be a finite number > 0")
        assert field in line and "q1.toml" in line


def test_huge_batch_in_profile_file_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pd = tmp_path / "pd"
    pd.mkdir()
    (pd / "q2.toml").write_text(profile_text("q2", batch="100000000000000000000"))
    line = refused(["profiles", "show", "q2", "--profiles-dir", str(pd)], capsys, "batch")
    assert "q2.toml" in line


# ------------------------------------------------------------ 3: report with an infinite budget
def test_report_with_infinite_budget_refused(tmp_path: Path, tiny_pool: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    pd = tmp_path / "pd"
    pd.mkdir()
    (pd / "q1.toml").write_text(profile_text("q1", budget="1e400"))
    out = tmp_path / "report"
    line = refused(["report", "--pool", str(tiny_pool), "--out", str(out), "--profile", "q1",
                    "--profiles-dir", str(pd)], capsys, "must be a finite number > 0")
    assert "latency_budget_ms" in line
    assert not out.exists()


@pytest.mark.parametrize("field,value", [("latency_budget_ms", "1e308"), ("memory_budget_mb", "1e300")])
def test_report_with_huge_finite_budget_refused(field: str, value: str, tmp_path: Path, tiny_pool: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pd = tmp_path / "pd"
    pd.mkdir()
    (pd / "q1.toml").write_text(profile_text("q1").replace(f"{field} = ", f"{field} = {value} #"))
    out = tmp_path / "report"
    line = refused(["report", "--pool", str(tiny_pool), "--out", str(out), "--profile", "q1",
                    "--profiles-dir", str(pd)], capsys, "must be at most")
    assert field in line
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--budget-ms", "--memory-mb"])
def test_huge_finite_budget_override_refused(flag: str, tiny_pool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(["select", "--profile", "cpu", "--pool", str(tiny_pool), flag, "1e308", "--json"], capsys,
                   "must be at most")
    assert flag in line


@pytest.mark.parametrize("flag", ["--budget-ms", "--memory-mb"])
@pytest.mark.parametrize("value", ["1e-300", "0.0009", "5e-324"])
def test_budget_override_below_any_device_refused_in_a_short_line(flag: str, value: str, tiny_pool: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--memory-mb 1e-300 was taken as a budget, and the "nothing fits" line printed it with 300 zeros."""
    line = refused(["select", "--target", "cpu", "--pool", str(tiny_pool), flag, value], capsys,
                   "must be at least 0.001")
    assert flag in line and len(line) < 200 and "0000000" not in line


@pytest.mark.parametrize("field", ["latency_budget_ms", "memory_budget_mb"])
@pytest.mark.parametrize("value", ["1e-300", "1" + "0" * 400])
def test_budget_in_profile_file_out_of_range_refused_in_a_short_line(field: str, value: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pd = tmp_path / "pd"
    pd.mkdir()
    (pd / "q1.toml").write_text(profile_text("q1").replace(f"{field} = ", f"{field} = {value} #"))
    line = refused(["profiles", "show", "q1", "--profiles-dir", str(pd)], capsys, field)
    assert "q1.toml" in line and len(line) < 250 and "0000000" not in line


def test_budgets_and_values_are_never_written_with_hundreds_of_digits() -> None:
    from lgp_edge.select import format_budget, format_value

    assert format_budget(0.001) == "0.001" and format_budget(1e9) == "1000000000"
    for v in (1e-300, 1e300, 5e-324):
        assert len(format_budget(v)) < 20 and len(format_value(v)) < 20


# ------------------------------------------------------------------------- 4: non-UTF-8 TOML files
@pytest.fixture()
def bad_dirs(tmp_path: Path) -> tuple[Path, Path]:
    pd, td = tmp_path / "pd", tmp_path / "tdir"
    pd.mkdir()
    td.mkdir()
    (pd / "zz.toml").write_bytes(b"\xff\xfegarbage")
    (pd / "good.toml").write_text(profile_text("good"))
    (td / "t17.toml").write_bytes(b"\xff\xfegarbage")
    return pd, td


@pytest.mark.parametrize("argv", [
    ["profiles", "list", "--profiles-dir", "{pd}"],
    ["profiles", "list", "--profiles-dir", "{pd}", "--json"],
    ["profiles", "show", "zz", "--profiles-dir", "{pd}"],
    ["select", "--profile", "zz", "--profiles-dir", "{pd}", "--pool", "{pool}"],
    ["export", "--profile", "zz", "--profiles-dir", "{pd}", "--pool", "{pool}", "--out", "{out}"],
    ["report", "--profile", "zz", "--profiles-dir", "{pd}", "--pool", "{pool}", "--out", "{out}"],
    ["profile", "--target", "t17", "--targets-dir", "{td}", "--pool", "{pool}"],
    ["profile", "--target", "t17", "--targets-dir", "{td}", "--pool", "{pool}", "--predict"],
    ["targets", "list", "--targets-dir", "{td}"],
    ["targets", "show", "t17", "--targets-dir", "{td}"],
], ids=lambda a: " ".join(a[:2]) + (" --json" if "--json" in a else "") + (" --predict" if "--predict" in a else ""))
def test_non_utf8_toml_refused(argv: list[str], bad_dirs: tuple[Path, Path], tmp_path: Path, tiny_pool: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    pd, td = bad_dirs
    out = tmp_path / "out"
    argv = [a.format(pd=pd, td=td, pool=tiny_pool, out=out) for a in argv]
    line = refused(argv, capsys, "not UTF-8")
    assert "cannot read" in line and (".toml" in line)
    assert not out.exists()


# ---------------------------------------------------------------- 5: numbers in target files
@pytest.mark.parametrize("old,new,field", [
    ("fp32 = 153.6", "fp32 = nan", "hardware.peak_gflops.fp32"),
    ("fp32 = 153.6", "fp32 = inf", "hardware.peak_gflops.fp32"),
    ("int8 = 614.4", "int8 = 1e400", "hardware.peak_gflops.int8"),
    ("mem_gbps = 17.1", "mem_gbps = inf", "hardware.mem_gbps"),
    ("memory_mb = 8192", "memory_mb = nan", "hardware.memory_mb"),
    ("overhead_us = 5.0", "overhead_us = nan", "hardware.efficiency.overhead_us"),
    ("compute = 0.5", "compute = nan", "hardware.efficiency.compute"),
    ("threads = 4", "threads = 100000000000000000000", "extra.threads"),
    # finite but no hardware has them: profile --predict ended in a ValueError (a median of 5.5e299 ms)
    ("mem_gbps = 17.1", "mem_gbps = 1e-300", "hardware.mem_gbps"),
    ("mem_gbps = 17.1", "mem_gbps = 1e300", "hardware.mem_gbps"),
    ("fp32 = 153.6", "fp32 = 1e-300", "hardware.peak_gflops.fp32"),
    ("int8 = 614.4", "int8 = 1e300", "hardware.peak_gflops.int8"),
    ("memory_mb = 8192", "memory_mb = 1e-300", "hardware.memory_mb"),
    ("compute = 0.5", "compute = 1e-300", "hardware.efficiency.compute"),
    ("memory = 0.6", "memory = 1e-300", "hardware.efficiency.memory"),
    # the cores taskset pins to: "x" was a ValueError traceback after connecting, "0-50000000" ran for minutes
    ("threads = 4", 'threads = 4\nbig_cores = "x"', "extra.big_cores"),
    ("threads = 4", 'threads = 4\nbig_cores = "0-50000000"', "extra.big_cores"),
    ("threads = 4", 'threads = 4\nbig_cores = "7-3"', "extra.big_cores"),
    ("threads = 4", 'threads = 4\nbig_cores = ""', "extra.big_cores"),
    ("threads = 4", 'threads = 4\nbig_cores = "3-7,"', "extra.big_cores"),
    ("threads = 4", 'threads = 4\nbig_cores = "-1"', "extra.big_cores"),
])
def test_target_numbers_checked_on_load(old: str, new: str, field: str, tmp_path: Path, tiny_pool: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    td = tmp_path / "tdir"
    td.mkdir()
    (td / "t1.toml").write_text(target_text("t1", **{old: new}))
    for argv in (["profile", "--target", "t1", "--targets-dir", str(td), "--predict", "--pool", str(tiny_pool)],
                 ["targets", "show", "t1", "--targets-dir", str(td), "--json"]):
        line = refused(argv, capsys, field)
        assert "t1.toml" in line


def test_valid_core_lists_and_hardware_edges_load(tmp_path: Path) -> None:
    from lgp_edge.targets import load_target

    td = tmp_path / "tdir"
    td.mkdir()
    for cores in ("0", "3-7", "0,2,4-5", "4095", " 1, 3-4"):
        (td / "t2.toml").write_text(target_text("t2", **{"threads = 4": f'threads = 4\nbig_cores = "{cores}"',
                                                         "mem_gbps = 17.1": "mem_gbps = 8000"}))
        assert load_target("t2", td).extra["big_cores"] == cores


def test_a_prediction_past_any_latency_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The slowest hardware a target file may describe, with a large model: the predicted latency is past what a
    record may hold (the store refused it with a ValueError traceback); one line names the target's numbers."""
    td = tmp_path / "tdir"
    td.mkdir()
    (td / "t3.toml").write_text(target_text("t3", **{"fp32 = 153.6": "fp32 = 0.01", "compute = 0.5": "compute = 0.001",
                                                     "mem_gbps = 17.1": "mem_gbps = 0.01",
                                                     "memory = 0.6": "memory = 0.001"}))
    line = refused(["profile", "--target", "t3", "--targets-dir", str(td), "--model", "deit_base_patch16_224",
                    "--predict", "--store", str(tmp_path / "m.sqlite")], capsys, "predicted")
    assert "t3" in line and "hardware" in line


def test_target_unknown_extra_key_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    td = tmp_path / "tdir"
    td.mkdir()
    (td / "t14.toml").write_text(target_text("t14") + "unknown_top = 1\n")  # lands in the last table, [extra]
    line = refused(["targets", "show", "t14", "--targets-dir", str(td)], capsys, "unknown field 'extra.unknown_top'")
    assert "t14.toml" in line


@pytest.mark.parametrize("old,new,field", [
    # a misspelt optional fact was ignored: the roofline then ran without the cache the file meant to declare
    ("mem_gbps = 17.1", "mem_gbps = 17.1\nllc_mib = 2", "hardware.llc_mib"),
    ("overhead_us = 5.0", "overhead_us = 5.0\noverhed_us = 3", "hardware.efficiency.overhed_us"),
    ("mem_gbps = 17.1", "mem_gbps = 17.1\ndetect = 1", "hardware.detect"),
])
def test_target_unknown_hardware_key_refused(old: str, new: str, field: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    td = tmp_path / "tdir"
    td.mkdir()
    (td / "t15.toml").write_text(target_text("t15", **{old: new}))
    line = refused(["targets", "show", "t15", "--targets-dir", str(td)], capsys, field)
    assert "t15.toml" in line


def test_target_unknown_top_level_key_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    td = tmp_path / "tdir"
    td.mkdir()
    (td / "t14.toml").write_text("unknown_top = 1\n" + target_text("t14"))
    refused(["targets", "show", "t14", "--targets-dir", str(td)], capsys, "unknown field 'unknown_top'")


def test_shipped_targets_and_profiles_still_load(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["targets", "list", "--json"], ["profiles", "list", "--json"]):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 0 and not error_lines(err), err



def test_precision_the_target_does_not_run_refused(tmp_path: Path, tiny_pool: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`select --precision fp16` on the cpu target (fp32, bf16, int8) was accepted and answered with a latency
    no runtime there would have; so was a profile file asking for it in `report`."""
    line = refused(["select", "--profile", "cpu", "--precision", "fp16", "--pool", str(tiny_pool)], capsys,
                   "precision 'fp16' is not supported by target 'cpu'")
    # the precisions a profile can take there: bf16, which the target lists, is a profiling precision only (an
    # export or a --precision asking for it is refused)
    assert "(it takes fp32, int8; bf16 only for 'lgp-edge profile')" in line, line
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "cpu-half.toml").write_text(profile_text("cpu-half").replace('"fp32"', '"fp16"'), encoding="utf-8")
    refused(["report", "--profile", "cpu-half", "--profiles-dir", str(profiles), "--pool", str(tiny_pool),
             "--out", str(tmp_path / "r")], capsys, "precision 'fp16' is not supported by target 'cpu'")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["select", "report", "predict"])
def test_a_batch_core_ml_cannot_take_is_refused_by_every_command(command: str, tmp_path: Path, tiny_pool: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An iphone profile with batch 8 was chosen from by select and report, and predicted by profile --predict
    (batch-8 latency and memory for a package that takes one image): only export refused it."""
    d = tmp_path / "profiles"
    d.mkdir()
    src = (Path(__file__).resolve().parent.parent / "lgp_edge" / "data" / "profiles" / "iphone.toml").read_text()
    assert "batch = 1" in src
    (d / "iphone-b8.toml").write_text(src.replace('name = "iphone"', 'name = "iphone-b8"').replace("batch = 1",
                                                                                                  "batch = 8"))
    argv = {"select": ["select", "--profile", "iphone-b8", "--profiles-dir", str(d), "--pool", str(tiny_pool)],
            "report": ["report", "--profile", "iphone-b8", "--profiles-dir", str(d), "--pool", str(tiny_pool),
                       "--out", str(tmp_path / "rep")],
            "predict": ["profile", "--target", "iphone", "--predict", "--batch", "8", "--pool", str(tiny_pool)]}
    refused(argv[command], capsys, "one image per prediction")
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("command", ["select", "profile"])
def test_a_local_targets_thread_count_above_this_hosts_cpus_is_refused(command: str, tmp_path: Path, tiny_pool: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A local target file with `threads = 200` was measured and chosen for "at 200 threads" on a 2-CPU host, where
    the same count given as --threads is refused."""
    tdir, pdir = tmp_path / "targets", tmp_path / "profiles"
    tdir.mkdir()
    pdir.mkdir()
    src = (BUILTIN_TARGETS / "cpu.toml").read_text(encoding="utf-8")
    assert "threads = 0" in src
    (tdir / "cpu999.toml").write_text(src.replace('name = "cpu"', 'name = "cpu999"').replace("threads = 0",
                                                                                           "threads = 200"))
    (pdir / "cpu999.toml").write_text(profile_text("cpu999").replace('target = "cpu"', 'target = "cpu999"'))
    argv = {"select": ["select", "--profile", "cpu999", "--profiles-dir", str(pdir), "--targets-dir", str(tdir),
                       "--pool", str(tiny_pool)],
            "profile": ["profile", "--target", "cpu999", "--targets-dir", str(tdir), "--pool", str(tiny_pool),
                        "--descendant", "ti6.0-5", "--iters", "2", "--store", str(tmp_path / "m.sqlite")]}
    line = refused(argv[command], capsys, "200 threads")
    assert "extra.threads" in line and "CPUs" in line, line
    assert not (tmp_path / "m.sqlite").exists()


def test_the_core_ml_batch_advice_fits_the_command(tmp_path: Path, tiny_pool: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """select and report were told to pass --format, which only export has."""
    d = tmp_path / "profiles"
    d.mkdir()
    src = (Path(__file__).resolve().parent.parent / "lgp_edge" / "data" / "profiles" / "iphone.toml").read_text()
    (d / "iphone4.toml").write_text(re.sub(r"formats = \[[^]]*\]", 'formats = ["coreml", "onnx"]', src.replace(
        'name = "iphone"', 'name = "iphone4"').replace("batch = 1", "batch = 4")))
    line = refused(["select", "--profile", "iphone4", "--profiles-dir", str(d), "--pool", str(tiny_pool)], capsys,
                   "one image per prediction")
    assert "--format" not in line and "formats" in line, line
