"""benchmarks/build_demo_pool.py end to end on the tiny ancestry and synthetic data: build, resume, ship."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from helpers import load_benchmark, stop_after_first_epoch

from lgp_edge.cli import build_parser, main
from lgp_edge.fileio import sha256_file

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    return load_benchmark("build_demo_pool")


def test_build_demo_pool_tiny(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    anc, work, out = tmp_path / "anc", tmp_path / "work", tmp_path / "demo"
    assert main(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--out", str(anc),
                 "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "32", "--quiet"]) == 0
    bench = _bench()
    argv = ["--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", str(anc), "--data", "synthetic", "--work",
            str(work), "--out", str(out), "--distill-epochs", "1", "--ti-epochs", "1", "--finetune-epochs", "1",
            "--stitch-steps", "8", "--steps-per-epoch", "1", "--eval-images", "32", "--quiet"]
    capsys.readouterr()
    assert bench.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["descendants"] == 18 and 0 <= summary["min_top1"] <= summary["max_top1"] <= 100
    assert set(summary["instances_after_distill"]) == {"ti6.0-5", "b6.0-5"}
    manifest = json.loads((out / "pool.json").read_text())
    assert manifest["stage"] == "finetuned" and manifest["stitch_init"] == "lstsq-kd"
    prov = manifest["provenance"]
    assert prov["storage_dtype"] == "float16"
    assert prov["ancestry"]["sha256"] == sha256_file(anc / "ancestry.safetensors")
    assert "--stitch-steps 8" in prov["commands"][0] and prov["settings"]["stitch_steps"] == 8
    parser = build_parser()
    for line in prov["commands"][:3]:  # each recorded lgp-edge command is one the CLI accepts
        parser.parse_args(shlex.split(line)[1:])
    assert set(prov["timing_s"]) == {"build", "finetune"}
    # the same command again: nothing is retrained, the pool is only re-evaluated and shipped
    weights = sha256_file(work / "pool" / "weights.safetensors")
    assert bench.main(argv) == 0
    assert sha256_file(work / "pool" / "weights.safetensors") == weights
    assert json.loads((out / "pool.json").read_text())["provenance"]["timing_s"] == prov["timing_s"]
    # other settings in the same --work are refused, and --out is never a directory lgp-edge did not write
    capsys.readouterr()
    assert bench.main([*argv, "--finetune-epochs", "2"]) == 2
    assert "other settings" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench.main([*argv, "--stitch-steps", "-1"])
    assert e.value.code == 2 and "--stitch-steps must be >= 0" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert bench.main([*argv, "--out", str(mine)]) == 2
    assert "notes.txt" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep"
    # make_demo_pool.py on its own: the same refusal (one line, exit 2), the directory left as it was
    from make_demo_pool import main as make_main

    ship = [str(work / "pool"), "--data", "synthetic", "--eval-images", "32"]
    capsys.readouterr()
    assert make_main([*ship, "--out", str(mine)]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep"
    # an earlier pool is replaced; a file lgp-edge did not write inside it is not deleted with it
    (out / "results.sqlite").write_text("mine")
    assert make_main([*ship, "--out", str(out)]) == 2 and (out / "results.sqlite").read_text() == "mine"
    (out / "results.sqlite").unlink()
    assert make_main([*ship, "--out", str(out)]) == 0
    assert json.loads((out / "pool.json").read_text())["provenance"]["dataset"] == "synthetic"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory or lock left


def test_recorded_paths_are_relative_to_the_repository() -> None:
    _bench()  # puts benchmarks/ on sys.path, as the script does
    from make_demo_pool import repo_path, repo_paths_in

    assert repo_path(ROOT / "lgp_edge" / "data" / "ancestry") == "lgp_edge/data/ancestry"
    assert repo_path("/elsewhere/pool") == "/elsewhere/pool"
    assert repo_paths_in(f"lgp-edge pool eval {ROOT}/benchmarks/.cache/p --data x --out /elsewhere/q") \
        == "lgp-edge pool eval benchmarks/.cache/p --data x --out /elsewhere/q"
    shipped = json.loads((ROOT / "lgp_edge" / "data" / "demo_pool" / "pool.json").read_text())["provenance"]
    assert not any(word.startswith("/") for c in shipped["commands"] for word in shlex.split(c))
    assert not shipped["ancestry"]["path"].startswith("/") and not shipped["source_pool"].startswith("/")
    spec = json.loads((ROOT / "lgp_edge" / "data" / "demo_pool" / "pool.json").read_text())["spec"]
    assert spec["ancestry"]["checkpoint"] == shipped["ancestry"]["path"]  # not the building machine's directory


def test_timings_of_a_resumed_build_count_the_interrupted_processes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``timing_s`` measured the last invocation only: a build interrupted during Ti's distillation and resumed
    reported the resumed process' seconds as the whole build (the pool's own history counts them all). And the
    shipped history named the ancestry's directory on the building machine (here the checkout is ``tmp_path``)."""
    anc, work, out = tmp_path / "anc", tmp_path / "work", tmp_path / "demo"
    assert main(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--out", str(anc),
                 "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "32", "--quiet"]) == 0
    bench = _bench()
    import make_demo_pool

    monkeypatch.setattr(make_demo_pool, "ROOT", tmp_path)
    argv = ["--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", str(anc), "--data", "synthetic", "--work",
            str(work), "--out", str(out), "--distill-epochs", "1", "--ti-epochs", "2", "--finetune-epochs", "1",
            "--stitch-steps", "2", "--steps-per-epoch", "1", "--eval-images", "32", "--quiet"]
    stop_after_first_epoch(monkeypatch, 4.0, only="ti6")  # Ti's first epoch takes 4 s, then Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    assert bench.main(argv) == 0
    manifest = json.loads((out / "pool.json").read_text())
    distill = next(h for h in manifest["history"] if h["stage"] == "distill")
    assert distill["wall_s"] >= 4.0  # the pool's record counts the interrupted process
    assert manifest["provenance"]["timing_s"]["build"] >= distill["wall_s"]
    assert distill["ancestry_checkpoint"] == "anc" and str(tmp_path) not in json.dumps(manifest)


def test_the_writer_lock_beside_the_demo_pool_does_not_make_the_checkout_dirty() -> None:
    """build_demo_pool.py holds ``lgp_edge/data/.demo_pool.lock`` from its start to the swap, and git_rev() read
    that untracked file as an uncommitted change: the shipped pool's code_version said ``+dirty``."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for lock in ("lgp_edge/data/.demo_pool.lock", "benchmarks/results/.latency.json.lock"):
        assert subprocess.run(["git", "check-ignore", "-q", lock], cwd=ROOT).returncode == 0, lock


def test_the_shipped_history_names_no_machine_directory() -> None:
    """The shipped pool.json's distillation record named the building machine's ancestry directory."""
    manifest = json.loads((ROOT / "lgp_edge" / "data" / "demo_pool" / "pool.json").read_text())

    def strings(v):
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            for x in v.values():
                yield from strings(x)
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)

    assert not [s for s in strings(manifest["history"]) if s.startswith("/")]


def test_git_rev_says_dirty_for_code_not_for_results_or_docs(tmp_path: Path) -> None:
    """Benchmarks rerun one after the other recorded ``+dirty`` from the second on: the first one's results file
    (and a README edited meanwhile) counted as uncommitted changes to the code that measured them."""
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    _bench()
    from make_demo_pool import git_rev

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name, text in (("code.py", "x = 1\n"), ("README.md", "# r\n"), ("benchmarks/results/r.json", "{}\n")):
        (tmp_path / name).write_text(text)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "c")
    rev = git("rev-parse", "--short", "HEAD")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"a": 1}\n')
    (tmp_path / "benchmarks" / "results" / "new.json").write_text("{}\n")
    (tmp_path / "README.md").write_text("# r, edited\n")
    (tmp_path / "logs").mkdir()  # a long run's log beside it is not code either
    (tmp_path / "logs" / "run.log").write_text("epoch 1\n")
    (tmp_path / "run.log").write_text("epoch 1\n")
    assert git_rev(tmp_path) == rev
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_rev(tmp_path) == rev + "+dirty"
    git("checkout", "code.py")
    (tmp_path / "new.py").write_text("y = 1\n")
    assert git_rev(tmp_path) == rev + "+dirty"
