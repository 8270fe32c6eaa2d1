"""Copy a fine-tuned, evaluated pool into the package as the bundled demo pool (lgp_edge/data/demo_pool).

    python benchmarks/make_demo_pool.py SRC_POOL --data fashion-mnist --provenance-json FILE_OR_JSON [--interim]

Steps: load SRC_POOL -> save it with fp16 weights (keeping the ancestry when the directory stays under
--max-mb, dropping transforms.safetensors first, then the ancestry if still too large) -> re-evaluate the
fp16 weights on the full test set, so descendants.json / pool.json hold the shipped weights' top-1 ->
write ``provenance`` (command, dataset, date, code version, settings) into pool.json.

``--out`` must be missing, empty or an earlier lgp-edge pool holding nothing else (otherwise: one line, exit 2,
nothing touched). The new pool is made in a temporary directory beside it and swapped in whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("make_demo_pool")


# What does not change what a benchmark measures: results files (a rerun of several benchmarks writes them one
# after the other) and the docs (git pathspecs: "*" matches across "/").
NOT_CODE = (":(exclude)benchmarks/results", ":(exclude)*.md", ":(exclude)*.log")  # results, docs, run logs


def git_rev(root: Path | None = None) -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes to its code: results files, docs and run logs
    are not code). A copy of the tree without its git history (an exported source tree on another machine) reads
    ``LGP_EDGE_CODE_VERSION`` instead, else ``unknown``."""
    root = root or ROOT
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=False, timeout=10).stdout.strip()
        if not rev:
            return os.environ.get("LGP_EDGE_CODE_VERSION") or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", *NOT_CODE], cwd=root,
                               capture_output=True, text=True, check=False, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("LGP_EDGE_CODE_VERSION") or "unknown"


def utc_iso(t: float | None = None) -> str:
    """``t`` (epoch seconds; default now) as the UTC time the results files record: ``2026-12-04T23:09:06Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def run_provenance(script: str, argv: list[str] | None) -> dict[str, Any]:
    """What a results file records about the run that wrote it: code version, UTC date, the command as given
    (``argv``, else this process's arguments) for ``benchmarks/<script>``, the CPU model and its facts
    (family/model, instruction sets, usable CPUs: a VM's model name alone does not tell machines apart)."""
    from lgp_edge.profiling.host import cpu_facts, cpu_model

    given = sys.argv[1:] if argv is None else argv
    return {"code_version": git_rev(), "date": utc_iso(),
            "command": f"python benchmarks/{script} {shlex.join(given)}".rstrip(), "cpu": cpu_model(),
            "cpu_facts": cpu_facts()}


def _benchmark_name(text: object) -> str:
    """'aux_init' for 'benchmarks/aux_init.py', 'aux_init' or a script's path."""
    return Path(str(text)).stem


def check_results_path(out: Path, benchmark: str) -> None:
    """Before a run: ``out`` can be a results file of ``benchmark`` (a script's name or path): no file stands
    where a folder of its path must be, and an existing ``out`` holds this benchmark's results, never another's
    (a mistyped --out replaced a committed results file of another benchmark). One line and exit 2 otherwise."""
    name = _benchmark_name(benchmark)
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                _refuse(name, f"--out {out}: '{parent}' is a file, not a folder")
            break
    if out.is_dir():
        _refuse(name, f"--out {out} is a folder; give the results file's path")
    if out.exists():
        try:
            held = json.loads(out.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            _refuse(name, f"--out {out} exists and is not a results file; choose another --out")
        other = _benchmark_name(held.get("benchmark", "")) if isinstance(held, dict) else ""
        if other != name:
            _refuse(name, f"--out {out} holds {'the results of benchmarks/' + other + '.py' if other else 'other data'}"
                          f", not {name}.py's; choose another --out")


def check_counts(p: argparse.ArgumentParser, *checks: tuple[str, int | None, int]) -> None:
    """Each ``(flag, value, least)``: a value below its least is the parser's one-line error (exit 2), before the
    run; None (not given) passes."""
    for flag, value, least in checks:
        if value is not None and value < least:
            p.error(f"{flag} must be >= {least}, got {value}")


def results_path(script: str, out: str | None, quick: bool) -> Path:
    """``--out``, else benchmarks/results/<script>.json for a full run and <script>_quick.json for a smoke run
    (other settings): a smoke run never replaces the committed results, which the README renders."""
    if out is not None:
        return Path(out)
    return ROOT / "benchmarks" / "results" / f"{Path(script).stem}{'_quick' if quick else ''}.json"


def _refuse(name: str, message: str) -> None:
    print(f"{name}.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_main(main: Any, script: str) -> None:
    """A benchmark script's entry point: input lgp-edge refuses (a missing pool, an unknown dataset) is one line
    and its exit code (2), Ctrl-C one line and exit 130, not tracebacks."""
    from lgp_edge.errors import LgpEdgeError

    name = Path(script).name
    try:
        rc = main()
    except LgpEdgeError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        print(f"{name}: interrupted (a script that caches its stages, as paper_replication.py does, reuses the "
              "finished ones when the same command runs again)", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(rc)


def write_results(out: Path, res: dict) -> Path:
    """``res`` as ``out``, atomically; NaN and infinity refused (a results file holds measured numbers only), and
    never over another benchmark's results (``check_results_path``, which a script also calls before its run)."""
    from lgp_edge.fileio import write_json_atomic

    if res.get("benchmark"):
        check_results_path(out, str(res["benchmark"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(out, res)


def repo_path(path: str | Path) -> str:
    """A path as recorded in a shipped pool: relative to the repository when inside it, not this machine's."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def repo_paths_in(command: str) -> str:
    """A recorded command with this checkout's directories written relative to the repository, as ``repo_path``."""
    return command.replace(f"{ROOT}/", "")


def pool_weights_sha256(path: str | Path) -> str:
    """The sha256 of a pool's weights as its pool.json records them (checked whenever the pool loads): which
    weights a result measured. ``pool_id`` names the pool's architecture only, the same for every retraining."""
    from lgp_edge.pool.pool import WEIGHTS, read_manifest

    return read_manifest(path).files[WEIGHTS]


def repo_paths_of(value: Any) -> Any:
    """``value`` (a record: dicts, lists, strings…) with every path of this checkout written as ``repo_paths_in``."""
    if isinstance(value, str):
        return repo_paths_in(value)
    if isinstance(value, dict):
        return {k: repo_paths_of(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(repo_paths_of(v) for v in value)
    return value


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1e6


def make_demo_pool(src: Path, dst: Path, data: str, provenance: dict, max_mb: float = 20.0,
                   eval_images: int | None = None) -> dict:
    """Ship ``src`` to ``dst``. ``dst`` may only be missing, empty or an earlier pool holding nothing lgp-edge did
    not write (else a UsageError, nothing touched); the new pool is built and re-evaluated in a temporary
    directory beside it and swapped in whole, so a killed run leaves the old pool or the new one."""
    from lgp_edge.fileio import write_json_atomic
    from lgp_edge.outdir import atomic_dir, check_not_inside, check_output_dir, replace_dir
    from lgp_edge.pool.evaluate import evaluate_pool
    from lgp_edge.pool.pool import (
        ANCESTRY,
        MANIFEST,
        TRANSFORMS,
        load_pool,
        load_pool_ancestry,
        load_pool_transforms,
        read_manifest,
        save_pool,
    )

    check_output_dir(dst, True, kind="pool")  # the demo pool it replaces, never anything else
    check_not_inside(dst, src, "the source pool")
    pool, manifest = load_pool(src)
    ancestry = load_pool_ancestry(src, manifest) if ANCESTRY in manifest.files else None
    transforms = load_pool_transforms(src, manifest) if TRANSFORMS in manifest.files else None
    src_images = (manifest.last("eval") or {}).get("images")
    src_top1 = {r.key: r.top1 for r in manifest.descendants}
    # The shipped spec and history name the ancestry weights as a repository path, not this machine's directory
    # (pool_id does not depend on it either way).
    anc_spec = manifest.spec.ancestry
    if anc_spec.checkpoint is not None:
        anc_spec = dataclasses.replace(anc_spec, checkpoint=repo_path(anc_spec.checkpoint))
    base = manifest.replace(descendants=(), provenance={}, history=repo_paths_of(manifest.history),
                            spec=dataclasses.replace(manifest.spec, ancestry=anc_spec))
    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / "pool"
        kept = {}
        for anc, tr in ((ancestry, transforms), (ancestry, None), (None, None)):
            if trial.exists():
                shutil.rmtree(trial)
            # fp16 for the pool and ancestry weights; the (small) transforms stay float32
            save_pool(trial, pool, base, ancestry=anc, transforms=tr, storage_dtype="float16")
            kept = {"ancestry": anc is not None, "transforms": tr is not None}
            if dir_mb(trial) < max_mb:
                break
        else:
            raise SystemExit(f"the pool is {dir_mb(trial):.1f} MB even without ancestry: over --max-mb {max_mb}")
        with atomic_dir(dst) as new:  # .DST.tmp-*, beside DST; removed if anything below fails
            stage = Path(new)
            shutil.copytree(trial, stage, dirs_exist_ok=True)
            manifest = evaluate_pool(stage, data, max_images=eval_images)
            n_now = (manifest.last("eval") or {}).get("images")
            same_images = src_images is not None and src_images == n_now  # else fp16 and test subset mix
            delta = [r.top1 - src_top1[r.key] for r in manifest.descendants
                     if same_images and src_top1.get(r.key) is not None]
            prov = {**provenance, "date": provenance.get("date") or utc_iso(),
                    "code_version": provenance.get("code_version") or git_rev(), "dataset": data,
                    "source_pool": repo_path(src), "storage_dtype": "float16", "files_kept": kept,
                    "eval_images": eval_images or "all", "source_eval_images": src_images,
                    "top1_reevaluated_after_fp16": True,
                    "max_abs_top1_change_after_fp16": round(max(abs(d) for d in delta), 3) if delta else None,
                    "made_by": "python benchmarks/make_demo_pool.py"}
            manifest = read_manifest(stage).replace(provenance=prov)
            write_json_atomic(stage / MANIFEST, manifest.to_dict())
            load_pool(stage)  # the hashes still verify
            replace_dir(stage, dst)
    log.info("demo pool %s: %.1f MB, kept %s", dst, dir_mb(dst), kept)
    return {"path": str(dst), "mb": round(dir_mb(dst), 2), **prov}


def main(argv: list[str] | None = None) -> int:
    from lgp_edge.pool.pool import demo_pool_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", help="fine-tuned, evaluated pool directory")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--out", default=str(demo_pool_dir()),
                   help="where the demo pool goes (default: the package's, lgp_edge/data/demo_pool)")
    p.add_argument("--provenance-json", default="{}", help="JSON object or a file holding one (command, settings…)")
    p.add_argument("--interim", action="store_true", help="mark the pool as an interim demo pool")
    p.add_argument("--max-mb", type=float, default=20.0)
    p.add_argument("--eval-images", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    text = Path(args.provenance_json).read_text() if Path(args.provenance_json).is_file() else args.provenance_json
    try:
        prov = json.loads(text)
    except json.JSONDecodeError as exc:
        p.error(f"--provenance-json is neither a JSON object nor a file holding one ({exc})")
    if not isinstance(prov, dict):
        p.error("--provenance-json must be a JSON object (command, settings...)")
    if args.interim:
        prov["interim"] = True
        prov.setdefault("note", "interim demo pool (small settings) until the paper-replication benchmark's pool "
                                "replaces it")
    from lgp_edge.errors import LgpEdgeError

    try:
        shipped = make_demo_pool(Path(args.src), Path(args.out), args.data, prov, args.max_mb, args.eval_images)
    except LgpEdgeError as exc:  # bad input (an --out it must not replace, a damaged pool): one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(shipped, indent=1))
    return 0


if __name__ == "__main__":
    run_main(main, __file__)
