"""Scaled-down replication of Learngene Pool's claims against SN-Net (docs/METHOD.md §5).

One command:

    python benchmarks/paper_replication.py            # full run  -> benchmarks/results/paper_replication.{json,png}
    python benchmarks/paper_replication.py --quick    # smoke run -> benchmarks/results/paper_replication_quick.*

Stages (each calls the same library functions the CLI runs; nothing is re-implemented here):
 1. ancestry  lgp_vit_fmnist on Fashion-MNIST (reused from benchmarks/.cache when its recorded settings match)
 2. distill: the Ti/B auxiliary models of both depths and SN-Net's Ti/S anchors, one `pool distill` run per
    epoch budget (one ancestry forward pass per batch for all the run's models; --separate-distill: each
    pool and SN-Net distil their own, as `pool build` alone does)
 3. LGP pools of depth 6 and 9: each built from the distilled models (`pool build --distilled`), then one
    fine-tune per stitch init of a copy of it (`pool stitch`, `pool finetune`); eval
 4. SN-Net: Ti/S anchors from the same distillation (the pool's recipe and budget), B = the ancestry, lstsq
    stitches, fine-tuned for the same epochs (`baseline snnet --distilled`); eval
 5. scratch and vanilla learngene, trained for the same epochs as the fine-tunes (`baseline scratch|vanilla`)
 6. claims (lgp_edge.baselines.claims) + JSON + PNG
Every stage writes under --work; a stage whose output is complete (``.done.json`` with the same settings)
is reused, so a killed run continues with ``--work`` unchanged. Each marker records the code version, CPU and
time that finished its stage, and the results JSON's ``stages`` say per stage whether the invocation that wrote
them computed it or reused it, with that record. ``--jobs 2`` runs the stages as two pinned
one-thread child processes (the distillation runs, each depth's pool, one job per stitch init) and then
assembles them. ``--render`` rewrites the section and the plot from the results JSON alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lgp_edge.baselines.claims import compute_claims, compute_goals, init_table
from lgp_edge.baselines.scratch_vanilla import SingleRequest, read_results, train_single_models
from lgp_edge.baselines.snnet import SNNetRequest, build_snnet
from lgp_edge.commands.train_args import max_workers
from lgp_edge.commands.train_args import train_flags as cli_train_flags
from lgp_edge.fileio import sha256_file, write_atomic, write_json_atomic, write_text_atomic
from lgp_edge.models.ancestry import read_ancestry_dir, shipped_ancestry_dir
from lgp_edge.outdir import atomic_dir, replace_dir
from lgp_edge.pool.ancestry_train import AncestryRequest, train_ancestry
from lgp_edge.pool.auxiliary import DistillRequest, distill_auxiliary
from lgp_edge.pool.build import BuildRequest, build_pool
from lgp_edge.pool.distill import interrupted
from lgp_edge.pool.evaluate import evaluate_pool, instance_top1
from lgp_edge.pool.finetune import FinetuneRequest, finetune_pool
from lgp_edge.pool.pool import load_pool, read_manifest
from lgp_edge.pool.restitch import RestitchRequest, restitch_pool
from lgp_edge.profiling.host import cpu_facts, cpu_model, usable_cpu_ids
from lgp_edge.progress import stderr_reporter
from lgp_edge.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import check_counts, git_rev, repo_path, repo_paths_in, utc_iso  # noqa: E402  (the shipped pools' provenance helpers, one copy)

log = logging.getLogger("paper_replication")
DATA = "fashion-mnist"  # defaults; --data / --ancestry change them (tests use lgp_test_tiny + synthetic)
ANCESTRY = "lgp_vit_fmnist"
DONE = ".done.json"
PAPER_WIDTHS = ("ti", "b")  # the authors' descendants use Ti and B instances only (docs/METHOD.md §1)
OWN_FILES = (DONE, "instances.json", "anchors.json")  # what this script writes into a stage's lgp-edge output

# Settings. The ancestry is trained once (30 epochs, then the cycles of ``ancestry_cycles``, each a warm start
# with a fresh schedule; shipped in lgp_edge/data/ancestry by benchmarks/ship_ancestry.py) and reused. The rest of
# the full run is sized for <= 120 min on 2 cores: `--jobs 2` schedules its stages over both cores (README).
FULL = {"ancestry_epochs": 30, "ancestry_lr": 2e-3, "ancestry_warmup": 2.0, "ancestry_steps": None,
        "ancestry_cycles": [{"epochs": 15, "lr": 1e-3, "warmup": 1.0}],
        "distill_epochs": 3, "distill_width_epochs": {"ti": 10}, "distill_lr": 1e-3, "distill_warmup": 0.25,
        "finetune_epochs": 2, "finetune_warmup": 0.1, "stitch_epochs": 0, "instance_lr_scale": 1.0, "anchors": True,
        "shared_distill": True,
        "stitch_steps": 300, "inits": ["learned", "lstsq", "lstsq-kd"], "inits_d9": ["learned", "lstsq-kd"],
        "default_init": "lstsq-kd", "aux_init": "ancestry", "steps_per_epoch": None, "eval_images": None,
        "batch_size": 256, "lr": 5e-4, "seed": 0, "vanilla_narrow": (3, 0), "lstsq_images": 100}
QUICK = dict(FULL, distill_epochs=1, distill_width_epochs={"ti": 2}, finetune_epochs=1, steps_per_epoch=8,
             eval_images=500, vanilla_narrow=(3,), stitch_steps=8)
QUICK_ANCESTRY = {"ancestry_epochs": 1, "ancestry_steps": 30}  # only when no shipped or cached ancestry matches


# ------------------------------------------------------------ benchmarks that read this one's results JSON
class BenchmarkInputError(Exception):
    """The replication results (or pools) a follow-up benchmark starts from are missing or do not match."""


def read_replication(path: Path, why: str = "") -> dict[str, Any]:
    """This benchmark's results JSON at ``path``; a one-line BenchmarkInputError when missing or garbled."""
    return read_benchmark_json(path, "paper_replication", why)


def read_benchmark_json(path: Path, script: str, why: str = "") -> dict[str, Any]:
    """The results JSON of ``benchmarks/<script>.py`` at ``path``; a one-line BenchmarkInputError when missing,
    unreadable or garbled."""
    if not path.is_file():
        raise BenchmarkInputError(f"{path} not found: run benchmarks/{script}.py first{why}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchmarkInputError(f"{path} is not a {script}.py results file ({e})") from None
    held = Path(str(data.get("benchmark", ""))).stem if isinstance(data, dict) else ""
    if held != script:
        raise BenchmarkInputError(f"{path} is not a {script}.py results file (it holds "
                                  f"{'benchmarks/' + held + '.py results' if held else 'other data'})")
    return data


def widths_tag(widths: tuple[str, ...]) -> str:
    """'' for the paper's Ti/B widths, else the widths joined ('ti-s'): how the directories and methods of a pool
    of other widths are named (benchmarks/pool_widths.py)."""
    return "" if tuple(widths) == PAPER_WIDTHS else "-".join(widths)


def distilled_pool_name(depth: int, widths: tuple[str, ...] = PAPER_WIDTHS) -> str:
    """The directory of a depth's distilled pool: ``lgp-d6-distilled``, ``lgp-d6-ti-s-distilled``."""
    return "-".join(filter(None, (f"lgp-d{depth}", widths_tag(widths), "distilled")))


def add_follow_up_args(p: argparse.ArgumentParser, work: str, work_help: str) -> None:
    """The arguments of a benchmark that starts from this one's results and pools: --replication, --pools-root,
    --work (default benchmarks/.cache/WORK)."""
    p.add_argument("--replication", default=str(ROOT / "benchmarks" / "results" / "paper_replication.json"),
                   help="paper_replication.py results: the pools, SN-Net configs and fine-tuning settings")
    p.add_argument("--pools-root", default=str(ROOT),
                   help="the checkout whose benchmarks/.cache holds the replication's pools (default this one)")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / ".cache" / work), help=work_help)


def follow_up_header(benchmark: str, rep: dict[str, Any], rep_path: Path, argv: list[str]) -> dict[str, Any]:
    """What a follow-up benchmark's results record first: itself, when, which code and CPU, which replication."""
    return {"benchmark": benchmark, "quick": bool(rep["quick"]),
            "date": utc_iso(), "code_version": git_rev(),
            "command": f"python benchmarks/{benchmark}.py " + " ".join(argv), "cpu": cpu_model(),
            "cpu_facts": cpu_facts(),
            "replication": {"path": repo_path(rep_path), "date": rep["date"], "code_version": rep["code_version"],
                            "command": rep["command"], "sha256": sha256_file(rep_path)}}


def write_follow_up(x: dict[str, Any], args: argparse.Namespace, stem: str, md_name: str,
                    render: Callable[[dict[str, Any], str], str], quick_dir: Path | None = None) -> tuple[Path, Path]:
    """Write a follow-up benchmark's results ``x`` and its README section (``render(x, results path)``):
    ``--out`` or benchmarks/results/<stem>[_quick].json, ``--md-out`` or benchmarks/<md_name> (for a quick
    replication or a partial run inside ``quick_dir``, default ``--work``: such results stay out of the README)."""
    out, md = follow_up_paths(x, args, stem, md_name, quick_dir)
    for path in (out, md):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, x)
    write_text_atomic(md, render(x, repo_path(out)))
    return out, md


def follow_up_paths(x: dict[str, Any], args: argparse.Namespace, stem: str, md_name: str,
                    quick_dir: Path | None = None) -> tuple[Path, Path]:
    """Where ``write_follow_up`` writes the results and the section."""
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"{stem}{'_quick' if x['quick'] else ''}.json")
    md = Path(args.md_out or ((quick_dir or Path(args.work)) / md_name if x["quick"] or x.get("partial")
                              else ROOT / "benchmarks" / md_name))
    return out, md


def train_cfg(s: dict[str, Any], epochs: int, **over: Any) -> TrainConfig:
    kw = {"batch_size": s["batch_size"], "lr": s["lr"], "seed": s["seed"], "max_steps_per_epoch": s["steps_per_epoch"],
          "device": s.get("device", "cpu"), "num_workers": s.get("workers", 0), **over}
    return TrainConfig(epochs=epochs, **kw)


def eval_kw(s: dict[str, Any]) -> dict[str, Any]:
    """How the stages evaluate: on the first ``eval_images`` test images, on the run's device."""
    return {"max_images": s["eval_images"], "device": s.get("device", "cpu")}


NOT_RECORDED = "not recorded"  # a provenance field a stage's record lacks (written by older code)
PROVENANCE = ("code_version", "cpu", "finished")  # what a finished stage records besides its wall time


def provenance_now() -> dict[str, str]:
    """What a stage records as it finishes: the code that computed it, on which CPU, when (UTC)."""
    return {"code_version": git_rev(), "cpu": cpu_model(), "finished": utc_iso()}


def stage_entry(record: dict[str, Any], source: str, **extra: Any) -> dict[str, Any]:
    """A stage in a results JSON's ``stages``: ``source`` (``computed`` by the invocation that wrote the results,
    ``reused`` from an earlier one, ``copied from the replication``, ``shipped``) and the provenance its record
    holds; a field an older record lacks reads "not recorded". ``finished`` falls back on ``finished_at`` (the
    epoch seconds older markers hold)."""
    finished = record.get("finished")
    if finished is None and isinstance(record.get("finished_at"), (int, float)):
        finished = utc_iso(record["finished_at"])
    return {"source": source, **extra, "code_version": record.get("code_version") or NOT_RECORDED,
            "cpu": record.get("cpu") or NOT_RECORDED, "finished": finished or NOT_RECORDED,
            "wall_s": record.get("wall_s", NOT_RECORDED)}


def stages_note(r: dict[str, Any]) -> str:
    """For a results header: "" where the results record no ``stages`` (written before they were recorded) or
    the invocation that wrote them computed every stage; else which stages it took from earlier runs, so that
    the header's code, CPU and date are not read as theirs."""
    stages = r.get("stages") or {}
    earlier = [k for k, v in stages.items() if v.get("source") != "computed"]
    if not earlier:
        return ""
    if len(earlier) == len(stages):
        return "; assembled from stages computed earlier; see stages in the JSON"
    return f"; {len(earlier)} of {len(stages)} stages computed earlier; see stages in the JSON"


class Stages:
    """Runs stages with reuse: ``done(dir, settings)`` / ``mark(dir, settings, info)``; timings, commands and
    the provenance of every stage used (``note``)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.timing: dict[str, float] = {}
        self.commands: dict[str, str] = {}
        self.stages: dict[str, dict[str, Any]] = {}  # name -> stage_entry, in the order used
        self.marked: set[Path] = set()  # stages this process finished
        self.started_at = time.time()
        self.reused: set[str] = set()  # stages finished before this invocation started (an earlier run's)

    @staticmethod
    def marker(path: Path) -> dict[str, Any]:
        """The stage's ``.done.json``; {} when it is missing or unreadable (a marker torn by a run killed before
        markers were written atomically): the stage then counts as not done and is redone."""
        try:
            marker = json.loads((path / DONE).read_text())
        except (OSError, ValueError):
            return {}
        return marker if isinstance(marker, dict) else {}

    def done(self, path: Path, settings: dict[str, Any]) -> bool:
        """True when ``path`` finished with these settings. Otherwise the files this script wrote there (the
        marker, the instances' top-1, temporary files of a killed write) go, so that the stage's ``--force``
        finds only lgp-edge's own outputs."""
        marker = self.marker(path)
        if marker and marker.get("settings") == json.loads(json.dumps(settings)):
            log.info("reusing %s", path)
            if path.parent == self.work and marker.get("finished_at", 0.0) < self.started_at:
                self.reused.add(path.name)  # (markers written before finished_at existed are earlier runs')
            return True
        stale = [path / n for n in OWN_FILES if (path / n).is_file()]
        stale += [g for n in OWN_FILES for g in path.glob(f".{n}.*.tmp") if g.is_file()]  # write_atomic's
        if stale:
            log.info("%s: settings or ancestry changed; redoing it", path)
            for g in stale:
                g.unlink()
        return False

    def mark(self, path: Path, settings: dict[str, Any], wall: float) -> None:
        # the stage's commit point: written whole or not at all (a torn marker would be read as not done)
        write_text_atomic(path / DONE, json.dumps({"settings": settings, "wall_s": round(wall, 1),
                                                   "finished_at": round(time.time(), 1), **provenance_now()}))
        self.marked.add(path)

    def note(self, name: str, path: Path) -> None:
        """Stage ``name`` (finished at ``path``) is used: its wall time into ``timing``, its provenance into
        ``stages``: computed by this invocation (or its ``--jobs`` children) when its marker was written after
        this invocation started, else reused; a copy another run made says where from."""
        marker = self.marker(path)
        self.timing[name] = marker.get("wall_s", 0.0)
        if marker.get("copied_from"):
            self.stages[name] = stage_entry(marker, "copied from the replication", dir=path.name,
                                            copied_from=marker["copied_from"],
                                            copied=marker.get("copied") or NOT_RECORDED)
        else:
            computed = path in self.marked or marker.get("finished_at", 0.0) >= self.started_at  # (--jobs children)
            self.stages[name] = stage_entry(marker, "computed" if computed else "reused", dir=path.name)


def stage_seconds(path: Path, measured: float, resumed: bool, history_stage: str = "distill") -> float:
    """A stage's seconds: this process's, or, for a stage that resumed an interrupted training, what its lgp-edge
    output records (``distilled.json``, or the pool's last ``history_stage`` entry) when that is more: the
    output's record counts the training seconds of the processes the interruption ended, this process does not."""
    if not resumed:
        return measured
    if (path / "distilled.json").is_file():
        recorded = json.loads((path / "distilled.json").read_text()).get("wall_s")
    else:
        recorded = (read_manifest(path).last(history_stage) or {}).get("wall_s")
    return max(measured, float(recorded or 0.0))


# ------------------------------------------------------------------------------------------------- stages
def ancestry_stage(s: dict[str, Any], quick: bool, rep: Any, st: Stages) -> tuple[str, dict[str, Any]]:
    """A shipped or cached ancestry whose recorded training matches the settings, else train it into
    benchmarks/.cache. The ancestry may be trained in cycles (``ancestry_cycles``): each later cycle starts from
    the weights of the one before (``ancestry train --initial-checkpoint``) with a fresh optimizer and schedule."""
    cache = Path(s["cache_dir"])

    def cfg_for(epochs: int, lr: float, warmup: float, steps: int | None) -> TrainConfig:
        if warmup >= epochs:  # a run no longer than the warm-up (--ancestry-epochs 1, a 1-epoch cycle): a tenth of it
            warmup = 0.1 * epochs
        return train_cfg(s, epochs, batch_size=256, lr=lr, warmup_epochs=warmup, max_steps_per_epoch=steps)

    chain = [cfg_for(s["ancestry_epochs"], s["ancestry_lr"], s["ancestry_warmup"], s["ancestry_steps"])]
    chain += [cfg_for(c["epochs"], c["lr"], c["warmup"], s["ancestry_steps"]) for c in s.get("ancestry_cycles") or ()]

    def matches(path: Path, cfgs: list[TrainConfig]) -> bool:
        meta = read_ancestry_dir(path) if (path / "ancestry.safetensors").is_file() else None
        if not meta or meta.get("name") != s["ancestry"] or meta.get("data") != s["data"]:
            return False
        rec: dict[str, Any] | None = meta
        for cfg in reversed(cfgs):  # the last cycle's record holds the one before as its initial_checkpoint
            if rec is None or _identity(rec.get("config") or {}) != json.loads(json.dumps(cfg.identity())):
                return False
            rec = rec.get("initial_checkpoint")
        return rec is None

    def cache_dir(n: int) -> Path:
        return cache / (f"ancestry-{s['ancestry']}-e" + "+".join(str(c.epochs) for c in chain[:n]))

    def command(path: Path, cfg: TrainConfig, initial: Path | None, note: str = "") -> str:
        warm = f" --initial-checkpoint {initial}" if initial is not None else ""
        return (f"lgp-edge ancestry train --ancestry {s['ancestry']} --data {s['data']} --out {path}{warm} "
                + cli_train_flags(cfg) + note)

    shipped = shipped_ancestry_dir(s["ancestry"])
    candidates = [(cache_dir(len(chain)), chain)]
    if shipped is not None:
        candidates.insert(0, (shipped, chain))
    if quick:
        q = cfg_for(QUICK_ANCESTRY["ancestry_epochs"], s["ancestry_lr"], s["ancestry_warmup"],
                    QUICK_ANCESTRY["ancestry_steps"])
        candidates.append((cache / f"ancestry-{s['ancestry']}-quick", [q]))
    for path, cfgs in candidates:
        if matches(path, cfgs):
            log.info("ancestry: reusing %s", path)
            meta = read_ancestry_dir(path) or {}
            where = "shipped with lgp-edge" if path == shipped else "reused from cache"
            st.commands["ancestry"] = " && ".join(
                command(cache_dir(i + 1) if i + 1 < len(cfgs) else path, cfg, cache_dir(i) if i else None,
                        f"  # {where}" if i + 1 == len(cfgs) else "") for i, cfg in enumerate(cfgs))
            st.timing["ancestry"] = _chain_wall_s(meta)
            # trained before: the ancestry's metadata says when, not by which code or on which CPU
            st.stages["ancestry"] = stage_entry({"finished": meta.get("when"), "wall_s": st.timing["ancestry"]},
                                                "shipped" if path == shipped else "reused", dir=repo_path(path))
            return str(path), {**meta, "reused_from_cache": True, "shipped": path == shipped, "path": repo_path(path)}
    path, cfgs = candidates[-1]
    commands, initial, meta = [], None, {}
    for i, cfg in enumerate(cfgs):
        out = path if i + 1 == len(cfgs) else cache_dir(i + 1)
        if matches(out, cfgs[:i + 1]):
            log.info("ancestry cycle %d: reusing %s", i + 1, out)
            meta = read_ancestry_dir(out) or {}
        else:
            meta = train_ancestry(AncestryRequest(name=s["ancestry"], data=s["data"], out=str(out), force=True,
                                                  initial_checkpoint=str(initial) if initial else None), cfg, rep)
        commands.append(command(out, cfg, initial) + " --force")
        initial = out
    st.timing["ancestry"] = _chain_wall_s(meta)
    st.stages["ancestry"] = stage_entry({**provenance_now(), "finished": meta.get("when") or utc_iso(),
                                         "wall_s": st.timing["ancestry"]}, "computed", dir=repo_path(path))
    st.commands["ancestry"] = " && ".join(commands)
    return str(path), {**meta, "reused_from_cache": False, "path": repo_path(path)}


def _chain_wall_s(meta: dict[str, Any]) -> float:
    """Training time of an ancestry and of every cycle before it."""
    total, rec = 0.0, meta
    while rec:
        total += float(rec.get("wall_s", 0.0))
        rec = rec.get("initial_checkpoint")
    return total


def anc_key(anc: str, s: dict[str, Any]) -> dict[str, str]:
    """The ancestry in a stage's reuse key: its path (relative to the checkout, so that a moved clone reuses its
    cache) and its weights' digest (a path can hold new weights)."""
    return {"anc": repo_path(anc), "anc_sha256": s["ancestry_sha256"]}


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded TrainConfig without the settings that do not change the result (see TrainConfig.identity)."""
    return {k: v for k, v in config.items() if k not in ("save_every", "num_workers", "device")}


def pool_rows(path: Path) -> dict[str, Any]:
    pool, manifest = load_pool(path)
    return {"stored_params": pool.stored_params(), "pool_dir": repo_path(path),
            "configs": [{"key": r.key, "blocks": r.blocks, "params": r.params, "flops": r.flops, "top1": r.top1}
                        for r in manifest.descendants]}


def finetune_request(path: Path, s: dict[str, Any]) -> FinetuneRequest:
    return FinetuneRequest(pool=str(path), data=s["data"], stitch_epochs=s["stitch_epochs"],
                           instance_lr_scale=s["instance_lr_scale"], anchors=s["anchors"],
                           sampling=s.get("sampling", "uniform"))


def finetune_flags(s: dict[str, Any], *, snnet: bool = False) -> str:
    """The fine-tuning recipe as flags of ``pool finetune`` (``baseline snnet`` names ``--anchors``
    ``--finetune-anchors``: its ``--anchors`` lists timm models for ``--plan``)."""
    flags = f"--stitch-epochs {s['stitch_epochs']} --instance-lr-scale {s['instance_lr_scale']}"
    flags += (" --finetune-anchors" if snnet else " --anchors") if s["anchors"] else ""
    return flags + (f" --sampling {s['sampling']}" if s.get("sampling", "uniform") != "uniform" else "")


def width_epochs(s: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    return tuple(s["distill_width_epochs"].items())


def width_epochs_flag(s: dict[str, Any]) -> str:
    pairs = ",".join(f"{w}={e}" for w, e in s["distill_width_epochs"].items())
    return f"--width-epochs {pairs} " if pairs else ""


@functools.cache
def ancestry_depth(name: str) -> int:
    """Blocks of the ancestry ``name`` (= of SN-Net's anchors)."""
    from lgp_edge.models.ancestry import create_ancestry

    return create_ancestry(name)[1].depth


def distill_groups(s: dict[str, Any]) -> list[tuple[int, tuple[str, ...]]]:
    """The shared distillation runs (``shared_distill``): every auxiliary model of both depth groups and SN-Net's Ti
    and S anchors, one ``pool distill`` run per epoch budget, fewest epochs first."""
    depth = ancestry_depth(s["ancestry"])
    models = [(w, f"{w}{d}") for d in (6, 9) for w in PAPER_WIDTHS] + [(w, f"{w}{depth}") for w in ("ti", "s")]
    groups: dict[int, list[str]] = {}
    for w, name in models:
        groups.setdefault(width_budget(s, w), []).append(name)
    return [(e, tuple(g)) for e, g in sorted(groups.items())]


def width_budget(s: dict[str, Any], width: str) -> int:
    """The distillation epochs of an auxiliary model of ``width`` (``ti``, ``s``, ``b``)."""
    return s["distill_width_epochs"].get(width, s["distill_epochs"])


def distill_key(anc: str, s: dict[str, Any], epochs: int, models: tuple[str, ...]) -> dict[str, Any]:
    dcfg = train_cfg(s, epochs, lr=s["distill_lr"], warmup_epochs=s["distill_warmup"])
    return {**anc_key(anc, s), "models": list(models), "distill": dcfg.to_dict(), "aux_init": s["aux_init"]}


def distill_stage(anc: str, s: dict[str, Any], rep: Any, st: Stages) -> dict[str, Any]:
    """The shared distillation runs (``distill_groups``), each into ``work/distilled-e<epochs>``; with
    ``only_distill`` (a ``--jobs`` child) only the runs of those budgets."""
    for epochs, models in distill_groups(s):
        if s.get("only_distill") is not None and epochs not in s["only_distill"]:
            continue
        distill_run(anc, s, rep, st, epochs, models, f"distill_e{epochs}", st.work / f"distilled-e{epochs}")
    return {}


def distill_run(anc: str, s: dict[str, Any], rep: Any, st: Stages, epochs: int, models: tuple[str, ...], name: str,
                path: Path) -> dict[str, Any]:
    """One ``pool distill`` run of ``models`` for ``epochs`` into ``path`` (stage ``name``); returns its key."""
    dcfg = train_cfg(s, epochs, lr=s["distill_lr"], warmup_epochs=s["distill_warmup"])
    key = distill_key(anc, s, epochs, models)
    if not st.done(path, key):
        t0, resumed = time.time(), interrupted(path)
        distill_auxiliary(DistillRequest(ancestry=s["ancestry"], checkpoint=anc, data=s["data"], out=str(path),
                                         models=models, aux_init=s["aux_init"], force=True,
                                         resume=resumed), dcfg, rep)
        st.mark(path, key, stage_seconds(path, time.time() - t0, resumed))
    st.note(name, path)
    st.commands[name] = (f"lgp-edge pool distill --ancestry {s['ancestry']} --ancestry-checkpoint "
                         f"{anc} --data {s['data']} --out {path} --models {','.join(models)} "
                         f"--aux-init {s['aux_init']} --force " + cli_train_flags(dcfg))
    return key


def shared_distilled(anc: str, s: dict[str, Any], st: Stages, names: set[str]) -> tuple[tuple[str, ...], list[Any]]:
    """The ``distilled-e<N>`` directories holding ``names`` and their stage keys (a pool built from them is redone
    when they are)."""
    dirs, keys = [], []
    for epochs, models in distill_groups(s):
        if names & set(models):
            path, key = st.work / f"distilled-e{epochs}", distill_key(anc, s, epochs, models)
            if not st.done(path, key):
                raise SystemExit(f"{path} is missing or stale: run the 'distill' stage first")
            dirs.append(str(path))
            keys.append(key)
    return tuple(dirs), keys


def widths_distilled(anc: str, s: dict[str, Any], rep: Any, st: Stages, depth: int,
                     widths: tuple[str, ...]) -> tuple[tuple[str, ...], list[Any]]:
    """The auxiliary models of ``widths`` and ``depth`` of a pool of other widths (benchmarks/pool_widths.py),
    with their epoch budgets as in the replication: each from the replication's shared run that holds it where that
    run is finished in ``st.work`` (``seed_distillations`` copies them there), the others distilled here, one
    ``pool distill`` run per epoch budget into ``distilled-e<N>-<models>``. Returns the directories and their stage
    keys."""
    dirs, keys, left = [], [], [(w, f"{w}{depth}") for w in widths]
    for epochs, models in distill_groups(s):
        path, key = st.work / f"distilled-e{epochs}", distill_key(anc, s, epochs, models)
        if any(n in models for _, n in left) and st.done(path, key):
            st.note(f"distill_e{epochs}", path)
            dirs.append(str(path))
            keys.append(key)
            left = [(w, n) for w, n in left if n not in models]
    budgets: dict[int, list[str]] = {}
    for w, n in left:
        budgets.setdefault(width_budget(s, w), []).append(n)
    for epochs, models in sorted(budgets.items()):
        name = f"distill_e{epochs}_{'-'.join(models)}"
        dirs.append(str(st.work / f"distilled-e{epochs}-{'-'.join(models)}"))
        keys.append(distill_run(anc, s, rep, st, epochs, tuple(models), name, Path(dirs[-1])))
    return tuple(dirs), keys


def replication_work(rep: dict[str, Any], pools_root: Path) -> Path:
    """The work directory the replication ``rep`` ran in (the parent of its pools), under ``pools_root``."""
    return (pools_root / rep["methods"]["snnet"]["pool_dir"]).parent


def seed_distillations(rep: dict[str, Any], pools_root: Path, work: Path,
                       patterns: tuple[str, ...] = ("distilled-e*", "lgp-d*-distilled")) -> list[str]:
    """Copy the replication's distillation outputs (``patterns``: its shared runs ``distilled-e*``, its pools'
    ``lgp-d*-distilled``) into ``work`` (a follow-up benchmark's) where ``work`` has none yet; the stages check their
    keys before reusing them. Returns what was copied.

    The copy's stage marker keeps the replication's provenance (code, CPU, when it finished) and says where it was
    copied from and when (``copied_from``, ``copied``), so that the results of this and of later invocations that
    reuse it name the stage as the replication's. A stage that is redone here gets a marker of its own.
    Each copy is made in a temporary directory beside its destination and renamed into place: a killed copy
    never leaves a directory holding the stage marker but not all of the weights (it would be reused as done)."""
    src = replication_work(rep, pools_root)
    copied = []
    for d in sorted(d for pattern in patterns for d in src.glob(pattern)):
        if d.is_dir() and not (work / d.name).exists() and (d / ".done.json").is_file():
            with atomic_dir(work / d.name) as tmp:  # also removes what a killed copy left (.NAME.tmp-*)
                shutil.copytree(d, tmp, dirs_exist_ok=True)
                marker = Stages.marker(Path(tmp))
                if marker:  # (a torn marker stays as it is: the stage reads as not done and is redone)
                    marker.update(copied_from=repo_path(d), copied=utc_iso())
                    (Path(tmp) / ".done.json").write_text(json.dumps(marker))
                replace_dir(tmp, work / d.name)
            copied.append(d.name)
    return copied


def lgp_stage(depth: int, anc: str, s: dict[str, Any], rep: Any, st: Stages,
              widths: tuple[str, ...] = PAPER_WIDTHS) -> dict[str, dict[str, Any]]:
    """One distillation per depth; per stitch init a copy re-initialised (``pool stitch``), evaluated before
    fine-tuning, fine-tuned with the recipe of ``s`` and evaluated again. ``widths`` other than the paper's Ti/B
    name their directories and methods ``lgp-d6-ti-s-b-*`` / ``lgp_d6_ti-s-b_*`` (benchmarks/pool_widths.py)."""
    tag = widths_tag(widths)
    distilled = st.work / distilled_pool_name(depth, widths)
    dcfg = train_cfg(s, s["distill_epochs"], lr=s["distill_lr"], warmup_epochs=s["distill_warmup"])
    fcfg = train_cfg(s, s["finetune_epochs"], warmup_epochs=s["finetune_warmup"])
    key = {**anc_key(anc, s), "depth": depth, "distill": dcfg.to_dict(), "eval_images": s["eval_images"],
           "aux_init": s["aux_init"], "width_epochs": s["distill_width_epochs"], "lstsq_images": s["lstsq_images"]}
    if tag:
        key["widths"] = list(widths)
    shared = bool(s.get("shared_distill"))
    from_dirs: tuple[str, ...] = ()
    if shared and tag:
        from_dirs, key["distilled"] = widths_distilled(anc, s, rep, st, depth, widths)
    elif shared:
        from_dirs, key["distilled"] = shared_distilled(anc, s, st, {f"{w}{depth}" for w in widths})
    if not st.done(distilled, key):
        t0, resumed = time.time(), not shared and interrupted(distilled)
        build_pool(BuildRequest(ancestry=s["ancestry"], checkpoint=anc, data=s["data"], out=str(distilled), depth=depth,
                                widths=widths, init="learned", aux_init=s["aux_init"], force=True,
                                resume=resumed, distilled=from_dirs,
                                lstsq_images=s["lstsq_images"], width_epochs=() if shared else width_epochs(s)),
                   dcfg, rep)
        after = instance_top1(distilled, s["data"], **eval_kw(s))
        write_text_atomic(distilled / "instances.json", json.dumps(after))
        st.mark(distilled, key, stage_seconds(distilled, time.time() - t0, resumed))
    after_distill = json.loads((distilled / "instances.json").read_text())
    prefix = "_".join(filter(None, (f"lgp_d{depth}", tag)))
    st.note(f"{prefix}_distill", distilled)
    st.commands[f"{prefix}_distill"] = (f"lgp-edge pool build --ancestry {s['ancestry']} "
                                        f"--ancestry-checkpoint {anc} --data {s['data']} --out {distilled} "
                                        f"--depth {depth} " + (f"--widths {','.join(widths)} " if tag else "")
                                        + f"--init learned --aux-init {s['aux_init']} --force "
                                        + (f"--distilled {','.join(from_dirs)} " if shared else width_epochs_flag(s))
                                        + cli_train_flags(dcfg))
    out = {}
    inits = s["inits"] if depth == 6 else s["inits_d9"]
    if s.get("only_inits") is not None:  # a partial run (--stages) leaves the other copies to another process
        inits = [i for i in inits if i in s["only_inits"]]
    for init in sorted(inits, key=lambda i: i != s["default_init"]):  # the demo pool's init first
        name = f"{prefix}_{init}"
        path = st.work / name
        fkey = {**key, "finetune": fcfg.to_dict(), "init": init, "recipe": finetune_flags(s),
                "stitch_steps": s["stitch_steps"]}
        if not st.done(path, fkey):
            t0 = time.time()
            if path.exists():
                shutil.rmtree(path)
            shutil.copytree(distilled, path, ignore=shutil.ignore_patterns(DONE, "instances.json"))
            restitch_pool(RestitchRequest(pool=str(path), data=s["data"], init=init, lstsq_images=s["lstsq_images"],
                                          stitch_steps=s["stitch_steps"]), train_cfg(s, 1), rep)
            before = evaluate_pool(path, s["data"], reporter=rep, **eval_kw(s))
            write_text_atomic(path / "before.json", json.dumps({r.key: r.top1 for r in before.descendants}))
            finetune_pool(finetune_request(path, s), fcfg, rep)
            evaluate_pool(path, s["data"], reporter=rep, **eval_kw(s))
            st.mark(path, fkey, time.time() - t0)
        st.note(name, path)
        st.commands[name] = (f"cp -r {distilled} {path} && lgp-edge pool stitch {path} --data {s['data']} "
                             f"--init {init} --lstsq-images {s['lstsq_images']} --stitch-steps {s['stitch_steps']}"
                             f" && lgp-edge pool eval {path} --data {s['data']} && lgp-edge pool finetune {path} "
                             f"--data {s['data']} {finetune_flags(s)} " + cli_train_flags(fcfg)
                             + f" && lgp-edge pool eval {path} --data {s['data']}"
                             + (f" --max-images {s['eval_images']}" if s["eval_images"] else ""))
        _, manifest = load_pool(path)
        init_entry = next(h for h in reversed(manifest.history) if h.get("stage") == "stitch-init")
        out[name] = {**pool_rows(path), "depth": depth, "widths": list(widths), "stitch_init": init,
                     "stitch_r2_mean": init_entry.get("r2_mean"), "stitch_r2_images": init_entry.get("r2_images"),
                     "top1_before_finetune": json.loads((path / "before.json").read_text()),
                     "instances_after_distill": after_distill}
    return {f"{prefix}_{init}": out[f"{prefix}_{init}"] for init in inits}


def snnet_stage(anc: str, s: dict[str, Any], rep: Any, st: Stages) -> dict[str, Any]:
    path = st.work / "snnet"
    dcfg = train_cfg(s, s["distill_epochs"], lr=s["distill_lr"], warmup_epochs=s["distill_warmup"])
    fcfg = train_cfg(s, s["finetune_epochs"], warmup_epochs=s["finetune_warmup"])
    key = {**anc_key(anc, s), "anchors": dcfg.to_dict(), "finetune": fcfg.to_dict(), "eval_images": s["eval_images"],
           "recipe": finetune_flags(s), "aux_init": s["aux_init"], "width_epochs": s["distill_width_epochs"],
           "lstsq_images": s["lstsq_images"]}
    shared = bool(s.get("shared_distill"))
    from_dirs: tuple[str, ...] = ()
    if shared:
        depth = ancestry_depth(s["ancestry"])
        from_dirs, key["distilled"] = shared_distilled(anc, s, st, {f"ti{depth}", f"s{depth}"})
    if not st.done(path, key):
        t0, resumed = time.time(), not shared and interrupted(path)
        build_snnet(SNNetRequest(ancestry=s["ancestry"], checkpoint=anc, data=s["data"], out=str(path), force=True,
                                 resume=resumed, lstsq_images=s["lstsq_images"],
                                 aux_init=s["aux_init"], width_epochs=() if shared else width_epochs(s),
                                 distilled=from_dirs), dcfg, rep)
        write_text_atomic(path / "anchors.json", json.dumps(instance_top1(path, s["data"], **eval_kw(s))))
        anchors_s = time.time() - t0  # the anchors' distillation: what an interruption can resume
        finetune_pool(finetune_request(path, s), fcfg, rep)
        evaluate_pool(path, s["data"], reporter=rep, **eval_kw(s))
        st.mark(path, key, time.time() - t0 + stage_seconds(path, anchors_s, resumed, "snnet-anchors") - anchors_s)
    st.note("snnet", path)
    st.commands["snnet"] = (f"lgp-edge baseline snnet --ancestry {s['ancestry']} --ancestry-checkpoint {anc} "
                            f"--data {s['data']} --out {path} --force "
                            + (f"--distilled {','.join(from_dirs)} " if shared else
                               f"--anchor-epochs {dcfg.epochs} " + width_epochs_flag(s))
                            + f"--aux-init {s['aux_init']} "
                            + cli_train_flags(fcfg) + f" {finetune_flags(s, snnet=True)}"
                            + (f" --eval-images {s['eval_images']}" if s["eval_images"] else ""))
    return {**pool_rows(path), "anchors": "B = ancestry; Ti, S distilled from the ancestry with the LGP "
                                          "auxiliary models' recipe, start and epochs", "stitch_init": "lstsq",
            "instances_after_distill": json.loads((path / "anchors.json").read_text())}


def single_stage(method: str, anc: str, s: dict[str, Any], rep: Any, st: Stages) -> dict[str, Any]:
    path = st.work / method
    fcfg = train_cfg(s, s["finetune_epochs"])
    narrow = tuple(s["vanilla_narrow"])
    key = {**anc_key(anc, s), "cfg": fcfg.to_dict(), "eval_images": s["eval_images"], "narrow": list(narrow)}
    if not st.done(path, key):
        t0 = time.time()
        train_single_models(SingleRequest(method=method, ancestry=s["ancestry"], checkpoint=anc, data=s["data"],
                                          out=str(path), narrow=narrow, eval_images=s["eval_images"], force=True),
                            fcfg, rep)
        st.mark(path, key, time.time() - t0)
    st.note(method, path)
    extra = f" --narrow {','.join(map(str, narrow))}" if method == "vanilla" else ""
    st.commands[method] = (f"lgp-edge baseline {method} --ancestry {s['ancestry']} --ancestry-checkpoint {anc} "
                           f"--data {s['data']} --out {path} --force{extra} " + cli_train_flags(fcfg)
                           + (f" --eval-images {s['eval_images']}" if s["eval_images"] else ""))
    res = read_results(path)
    return {"stored_params": res["stored_params"], "out_dir": repo_path(path),
            "configs": [{k: r[k] for k in ("key", "blocks", "params", "flops", "top1")} for r in res["configs"]]}


# --------------------------------------------------------------------------------------------------- plot
STYLE = {"lgp_d6_learned": ("LGP depth 6 (learned init)", "tab:red", "o", "-"),
         "lgp_d9_learned": ("LGP depth 9 (learned init)", "tab:orange", "s", "-"),
         "lgp_d6_lstsq": ("LGP depth 6 (lstsq init)", "lightcoral", "o", ":"),
         "lgp_d9_lstsq": ("LGP depth 9 (lstsq init)", "navajowhite", "s", ":"),
         "lgp_d6_lstsq-kd": ("LGP depth 6 (lstsq-kd init, default)", "darkred", "o", "--"),
         "lgp_d9_lstsq-kd": ("LGP depth 9 (lstsq-kd init, default)", "saddlebrown", "s", "--"),
         "snnet": ("SN-Net (Ti/S/B anchors, 71 configs)", "tab:blue", "^", "-"),
         "scratch": ("scratch", "tab:gray", "D", "none"),
         "vanilla": ("vanilla learngene", "tab:green", "v", "none")}


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: (r["flops"], -r["top1"])):
        if r["top1"] > best:
            front.append(r)
            best = r["top1"]
    return front


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    for name, (label, color, marker, line) in STYLE.items():
        m = results["methods"].get(name)
        if not m:
            continue
        rows = m["configs"]
        xs = [r["flops"] / 1e6 for r in rows]
        ys = [r["top1"] for r in rows]
        ax.scatter(xs, ys, s=14, color=color, marker=marker, alpha=0.55, label=label)
        if line != "none":
            f = pareto(rows)
            ax.plot([r["flops"] / 1e6 for r in f], [r["top1"] for r in f], color=color, linestyle=line, lw=1.3)
    ax.set_xscale("log")
    ax.set_xlabel("MFLOPs per image (fvcore convention, log scale)")
    ax.set_ylabel(f"{data_title(results['dataset']['name'])} test top-1 (%)")
    c = results["claims"]
    tag = " — QUICK (smoke settings, not results)" if results["quick"] else ""
    ax.set_title(f"Learngene Pool vs SN-Net at small scale{tag}\nstorage ratio {c['storage_ratio']:.2f}, "
                 f"min-FLOPs ratio {c['min_flops_ratio']:.2f}, front Δmin {c['front_delta_min']} pt, "
                 f"init Δmean {c['init_delta_mean']:+.2f} pt", fontsize=9)
    lo = min(r["top1"] for m in results["methods"].values() for r in m["configs"])
    ax.set_ylim(max(0.0, lo - 2), None)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def process_wall() -> dict[str, Any]:
    """The seconds from this Python process's start (interpreter start-up and imports included) to now, read from
    /proc/self/stat's start time and /proc/uptime: the wall time of the command as a user waits for it, which
    ``total_this_invocation`` (timed from inside ``main``) leaves out. Empty where /proc does not say."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        started = int(stat.rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return {}
    return {"process_wall_s": round(uptime - started, 1),
            "process_wall_source": "/proc/self/stat start time to the results being written: interpreter start-up "
                                   "and imports included"}


# ----------------------------------------------------------------------------------------------- markdown
def stage_minutes(r: dict[str, Any]) -> float:
    """Sum of the stages' wall times in minutes (the ancestry, trained once and shipped, excluded)."""
    return sum(v for k, v in r["timing_s"].items()
               if not k.startswith("ancestry") and k != "total_this_invocation") / 60


def lanes(r: dict[str, Any]) -> str:
    """What ``--jobs N`` ran as: N one-thread CPU processes, or N processes sharing one GPU."""
    gpu = r.get("environment", {}).get("gpu")
    workers = r.get("settings", {}).get("workers", 0)
    loaders = f", {workers} loader worker(s) each" if workers else ""
    return f"processes sharing the {gpu}{loaders}" if gpu else f"parallel lanes of one thread each{loaders}"


def compute_text(r: dict[str, Any]) -> str:
    """How long the run took: its wall time when one ``--jobs N`` invocation ran every stage, else the sum of
    the stages' wall times (stages of separate ``--stages`` processes overlap)."""
    jobs = r["settings"].get("jobs", 1)
    reused = r.get("reused_stages") or []
    if jobs > 1 and reused:  # its wall time is not a whole run's
        return (f"this invocation took {r['timing_s']['total_this_invocation'] / 60:.0f} min of wall time as {jobs} "
                f"{lanes(r)} and reused {len(reused)} stage(s) an earlier invocation had "
                f"finished with the same settings ({', '.join(reused)}); the stages' own wall times, those included, "
                f"add up to {stage_minutes(r):.0f} min, excluding the one-time ancestry")
    if jobs > 1:
        return (f"the run took **{r['timing_s']['total_this_invocation'] / 60:.0f} min of wall time** "
                f"excluding the one-time ancestry, as {jobs} {lanes(r)} (the stages' own "
                f"wall times add up to {stage_minutes(r):.0f} min)")
    return (f"the stages took {stage_minutes(r):.0f} min in all, excluding the one-time ancestry (sum of each "
            "stage's wall time; stages run by separate `--stages` processes overlap)")


def render_markdown(r: dict[str, Any], png: str, json_path: str) -> str:
    """The README section, every number read from the results (nothing typed in)."""
    c, s, m = r["claims"], r["settings"], r["methods"]
    yes = {True: "**held**", False: "**did not hold**"}
    fd, idl, mf = c["front_detail"], c["init_detail"], c["min_flops_detail"]
    best = {k: max(v["configs"], key=lambda x: x["top1"]) for k, v in m.items()}
    gpu = r["environment"].get("gpu")
    lines = [
        "## Paper replication: Learngene Pool vs SN-Net at small scale" + (f" (on {gpu})" if gpu else ""),
        "",
        ("**QUICK RUN: smoke settings, the numbers below mean nothing.**\n" if r["quick"] else "")
        + f"One command (`{r['command'].strip()}`) trains or reuses the ancestry ({s['ancestry']}, "
        f"{data_title(r['dataset']['name'])} test top-1 {r['ancestry']['top1']}%), builds Learngene Pools of "
        "depth 6 (stitch inits "
        f"{', '.join(s['inits'])}) and depth 9 ({', '.join(s['inits_d9'])}), trains SN-Net (Ti/S/B anchors, "
        f"71 configs), scratch and vanilla-learngene baselines "
        f"with the same fine-tuning budget ({s['finetune_epochs']} epoch(s); distillation {s['distill_epochs']} "
        f"epoch(s){distill_widths_text(s)}), and evaluates every model on {r['dataset']['eval_images']:,} "
        f"{data_title(r['dataset']['name'])} test images. "
        + ("The auxiliary models of both depths and SN-Net's Ti/S anchors are distilled together, one "
           "`pool distill` run per epoch budget with one ancestry forward pass per batch for all of them (each "
           "model gets the weights it would get alone). " if s.get("shared_distill") else "")
        +
        f"Compute here: {compute_text(r)}, on "
        + (f"one {gpu} and " if gpu else "")
        + f"{r['environment']['cpu_count']} CPU cores ("
        + (f"{r['environment']['cpu']}; " if r["environment"].get("cpu") else "") + "code "
        f"{r['code_version']}, {r['date']}{stages_note(r)}).",
        "",
        "| paper claim | measured here | criterion | result |",
        "|---|---|---|---|",
        (f"| far less storage than SN-Net | pool {c['storage_detail']['lgp_d6_stored_params']:,} vs SN-Net "
        f"{c['storage_detail']['snnet_stored_params']:,} params: ratio **{c['storage_ratio']:.3f}** (paper "
        f"{c['storage_detail']['paper']}) | {criterion(c['storage_detail'])} | {yes[c['storage_ratio_held']]} |"),
        (f"| models below SN-Net's smallest anchor | {mf['lgp_key']} {mf['lgp_flops'] / 1e6:.2f} MFLOPs "
        f"({mf['lgp_top1']}%) vs {mf['snnet_key']} {mf['snnet_flops'] / 1e6:.2f} MFLOPs ({mf['snnet_top1']}%): ratio "
        f"**{c['min_flops_ratio']:.3f}** (paper {mf['paper']}) | {criterion(mf)} | {yes[c['min_flops_ratio_held']]} |"),
        (f"| LGP descendants beat SN-Net at comparable size | worst case over {fd['compared_snnet_configs']} SN-Net "
        f"configs: **{c['front_delta_min']:+.2f}** points ({fd['worst']['lgp_key']} vs {fd['worst']['snnet_key']}); "
        f"LGP ahead or equal at {fd['lgp_better_or_equal']}/{fd['compared_snnet_configs']}, mean "
        f"{fd['delta_mean']:+.2f} | min {criterion(fd)} | {yes[c['front_delta_min_held']]} |"),
        (f"| learned stitch init beats lstsq init | mean over {idl['descendants']} depth-6 descendants: "
        f"**{c['init_delta_mean']:+.2f}** points (learned better on {idl['learned_better']}/{idl['descendants']}) "
        f"| {criterion(idl)} | {yes[c['init_delta_mean_held']]} |"),
        "",
        *goal_lines(r),
        f"![top-1 vs FLOPs]({png})",
        "",
        "Best model per method (top-1 %, MFLOPs): " + "; ".join(
            f"{k} {v['top1']} @ {v['flops'] / 1e6:.1f}" for k, v in best.items()) + ".",
        "",
        f"Full numbers, every setting and the command of each stage: [`{json_path}`]({json_path}).",
        "",
        "What differs from the paper, and why:",
        "",
        *[f"- {d}" for d in r["differences_from_paper"]],
        "",
    ]
    return "\n".join(lines)


def criterion(detail: dict[str, Any]) -> str:
    """A claim's criterion as the results record it (lgp_edge.baselines.claims): ``held if < 0.5 (...)`` ->
    ``< 0.5``."""
    m = re.match(r"held if ([<>]=?) ?(-?[0-9.]+)", detail["criterion"])
    if m is None:
        raise ValueError(f"unexpected claim criterion {detail['criterion']!r}")
    return f"{m.group(1)} {m.group(2)}"


def front_family_lines(g: dict[str, Any]) -> list[str]:
    """The front goal by SN-Net family, and each method's top-1 range per family, read from the results."""
    fam = g.get("front_by_snnet_family")
    if not fam:
        return []
    name = {"ti": "Ti", "s": "S", "b": "B"}

    def label(f: str) -> str:
        return "->".join(name.get(w, w) for w in f.split("->")) + ("" if "->" in f else " alone")

    lines = ["The front by SN-Net family (each SN-Net config against the best descendant of "
             f"{' or '.join(g['methods'])} at or below its FLOPs):", "",
             "| SN-Net family | configs | descendant at or ahead | worst delta | where |", "|---|---:|---:|---:|---|"]
    for f, v in fam.items():
        w = v["worst"]
        lines.append(f"| {label(f)} | {v['configs']} | {v['lgp_at_or_ahead']} | {w['delta']:+.2f} | "
                     f"`{w['snnet_key']}` {w['snnet_top1']}% at {w['snnet_flops'] / 1e6:.2f} MFLOPs; `{w['lgp_key']}` "
                     f"{w['lgp_top1']}% at {w['lgp_flops'] / 1e6:.2f} |")
    lines += ["", "Top-1 by family (min..max, count): " + "; ".join(
        f"{m}: " + ", ".join(f"{label(f)} {v['top1_min']}" + (f"..{v['top1_max']} ({v['count']})"
                                                                if v["count"] > 1 else "")
                             for f, v in fams.items()) for m, fams in g["families"].items()) + ".", ""]
    return lines


BUDGET_MIN = 120  # the full run's wall time on 2 cores, excluding the one-time ancestry


def budget_lines(r: dict[str, Any]) -> list[str]:
    """The wall-time goal, judged only on a full run that one ``--jobs`` invocation made from scratch on 2 cores."""
    jobs, cores = r["settings"].get("jobs", 1), r["environment"].get("cpu_count")
    if r["quick"] or jobs < 2 or r.get("reused_stages") or cores != 2:
        return []
    minutes = r["timing_s"]["total_this_invocation"] / 60
    return [f"| full run <= {BUDGET_MIN} min on 2 cores, excluding the one-time ancestry | {minutes:.0f} min "
            f"({r['environment'].get('cpu') or 'CPU not recorded'}) | "
            f"{'**met**' if minutes <= BUDGET_MIN else '**not met**'} |"]


def goal_lines(r: dict[str, Any]) -> list[str]:
    """The package's goals (default init) and the stitch-init comparison, read from the results."""
    g = r.get("goals")
    if not g:
        return []
    yes = {True: "**met**", False: "**not met**"}
    crit = g["criteria"]
    lines = [f"Goals of this package's recipe (stitch init `{g['default_init']}`, {', '.join(g['methods'])}):", "",
             "| goal | measured | result |", "|---|---|---|",
             f"| front >= SN-Net at >= {crit['front_share_at_least']:.0%} of its configs, never more than "
             f"{-crit['front_delta_min_at_least']:.1f} point below | {g['front_share']:.1%} of configs, worst "
             f"{g['front_delta_min']:+.2f} | {yes[g['front_held']]} |",
             f"| storage ratio <= {crit['storage_ratio_at_most']} | {g['storage_ratio']:.3f} | "
             f"{yes[g['storage_held']]} |",
             *([f"| storage of every pool the front draws on ({' + '.join(g['methods'])}) | "
                f"{g['front_storage_ratio']:.3f} | - |"] if "front_storage_ratio" in g else []),
             f"| smallest descendant <= {crit['min_flops_ratio_at_most']}x SN-Net's smallest FLOPs | "
             f"{g['min_flops_ratio']:.3f} | {yes[g['min_flops_held']]} |",
             "| instances alone after fine-tuning >= right after distillation | "
             + ", ".join(f"{k}: {v['after_distill']} -> {v['after_finetune']}" for k, v in g["instances"].items())
             + f" | {yes[g['instances_held']]} |",
             f"| every descendant | min top-1 {g['every_descendant_min_top1']}% | - |",
             *budget_lines(r), "",
             *front_family_lines(g)]
    if r.get("stitch_inits"):
        lines += ["Stitch inits at depth 6 (R^2 of the stitch on held-out validation features; stitched "
                  "descendants' mean top-1):", "", "| init | stitch R^2 | top-1 before fine-tuning | after | "
                  "all descendants after (min..max) |", "|---|---:|---:|---:|---|"]
        lines += [f"| `{i['init']}` | {i['stitch_r2_mean']} | {i['stitched_top1_before_mean']} | "
                  f"{i['stitched_top1_after_mean']} | {i['top1_after_min']}..{i['top1_after_max']} |"
                  for i in r["stitch_inits"]]
        lines.append("")
    return lines


# --------------------------------------------------------------------------------------------------- main
DIFFERENCES = [
    ("Data: Fashion-MNIST (60k train / 10k test, 28 px grayscale) instead of ImageNet-1k; no pretrained ViT is "
    "reachable offline, so the ancestry (lgp_vit_fmnist: dim 128, 12 blocks, 4 heads, patch 7) is trained here."),
    "Scale: widths Ti/S/B = 32/64/128 (1/4, 1/2, 1 of the ancestry, as in the paper); heads 1/2/4.",
    ("Budget: distillation and fine-tuning epochs are a few instead of 100 and 50 (2-core CPU); every method "
    "gets the same fine-tuning epochs, scratch too (the paper gives scratch 150 epochs)."),
    "Augmentation: random 2-px shift + horizontal flip instead of DeiT's RandAugment/mixup/cutmix/erasing.",
    ("SN-Net anchors: no independently pretrained DeiT-Ti/S/B exist here; B is the ancestry itself and Ti/S are "
    "distilled from it with the same recipe and epochs as the LGP auxiliary models (a stronger start than "
    "training them from scratch for the same budget)."),
    ("Auxiliary-model start: the paper distils randomly initialised auxiliary models for 100 epochs; here each "
    "starts as a weight selection of the ancestry (evenly spaced blocks, the first channels and heads; "
    "lgp_edge/pool/inherit.py) and the distillation transforms as the matching channel selection. SN-Net's "
    "distilled Ti/S anchors start the same way (`pool build --aux-init random` is the paper's start)."),
    "Vanilla learngene: only the listed narrow-block counts are trained (settings.vanilla_narrow), CE only.",
]


def distill_widths_text(s: dict[str, Any]) -> str:
    """``, Ti 10`` when some widths have their own distillation epochs."""
    names = {"ti": "Ti", "s": "S", "b": "B"}
    return "".join(f", {names.get(w, w)} {e}" for w, e in s["distill_width_epochs"].items())


def data_title(name: str) -> str:
    """How the section names the data a run used (``--data``)."""
    return {"fashion-mnist": "Fashion-MNIST"}.get(name, name)


def differences(s: dict[str, Any]) -> list[str]:
    out = list(DIFFERENCES)
    if s["data"] != "fashion-mnist":  # the first item describes the default data
        out[0] = f"Data: {s['data']} instead of ImageNet-1k (the ancestry, {s['ancestry']}, is trained here)."
    out.append(f"Epochs here: ancestry {ancestry_epochs_text(s)}, distillation {s['distill_epochs']}"
               f"{distill_widths_text(s)}, fine-tuning "
               f"{s['finetune_epochs']}" + (f", each epoch capped at {s['steps_per_epoch']} steps of "
                                            f"{s['batch_size']} images" if s["steps_per_epoch"] else "")
               + " (paper: 100 / 50 on ImageNet with a pretrained DeiT-B ancestry).")
    if s["eval_images"]:
        out.append(f"Evaluation on the first {s['eval_images']:,} of the 10,000 test images (time budget).")
    return out


STAGES = ("distill", "lgp6", "snnet", "lgp9", "scratch", "vanilla")


def any_inits(text: str) -> tuple[str, ...]:
    """A comma list of stitch inits; ``none`` = the depth's distillation only."""
    from lgp_edge.pool.stitch_init import INITS

    if text.strip().lower() == "none":
        return ()
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names or any(x not in INITS for x in names):
        raise argparse.ArgumentTypeError(f"expected 'none' or a comma list of {','.join(INITS)}, got {text!r}")
    return names


def init_list(text: str) -> tuple[str, ...]:
    """A comma list of stitch inits that includes the default init."""
    names = () if text.strip().lower() == "none" else any_inits(text)
    if FULL["default_init"] not in names:
        raise argparse.ArgumentTypeError(f"the list must include the default init {FULL['default_init']}, "
                                         f"got {text!r}")
    return names


def width_epochs_arg(text: str) -> tuple[tuple[str, int], ...]:
    from lgp_edge.commands.train_args import width_epochs as parse

    return () if text.strip().lower() == "none" else parse(text)


def ancestry_cycles_arg(text: str) -> list[dict[str, float]]:
    """``EPOCHS@LR,...`` (each a warm start from the cycle before, 1 warm-up epoch) or ``none``."""
    if text.strip().lower() == "none":
        return []
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        try:
            epochs, lr = item.split("@")
            cycle = {"epochs": int(epochs), "lr": float(lr), "warmup": 1.0}
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{item}' is not EPOCHS@LR (e.g. 15@1e-3)") from None
        if cycle["epochs"] < 1 or not 0 < cycle["lr"] < 1:
            raise argparse.ArgumentTypeError(f"'{item}': epochs must be >= 1 and the learning rate in (0, 1)")
        out.append(cycle)
    if not out:
        raise argparse.ArgumentTypeError("--ancestry-cycles is empty; give EPOCHS@LR,... or none")
    return out


def ancestry_epochs_text(s: dict[str, Any]) -> str:
    """``30`` or ``30 + 15 (warm restart at lr 0.001)``."""
    cycles = s.get("ancestry_cycles") or []
    return str(s["ancestry_epochs"]) + "".join(f" + {c['epochs']} (warm restart at lr {c['lr']:g})" for c in cycles)


def epoch_list(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive epoch counts, got {text!r}")
    return out


def stage_list(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in names if x not in STAGES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {bad or [text]}; choose from {','.join(STAGES)}")
    return names


# ---------------------------------------------------------------------------------------------- --jobs N
# Minutes of each job on one thread, used only to order the jobs (the one heading the longest remaining chain starts
# first): the 2026-12-02 14:43 full run (AVX-512 EPYC); the shared distillation runs and the pools and SN-Net built
# from them: the 2026-12-04 15:20 full run (AVX2 EPYC).
JOB_MINUTES = {"lgp6-distill": 29, "lgp9-distill": 34, "snnet": 58.5, "lgp9-init": 23, "lgp6-init": 15,
               "scratch": 9, "vanilla": 7, "distill-e10": 29, "distill-e3": 25, "assemble": 0.3, "snnet-assemble": 28}


class Job(NamedTuple):
    """One ``--stages`` child process of a ``--jobs N`` run; ``extra``: its further arguments (``--only-inits``…)."""

    name: str
    stage: str
    extra: tuple[str, ...]
    after: tuple[str, ...]
    minutes: float


def plan_jobs(s: dict[str, Any]) -> list[Job]:
    """The stages split into jobs (with ``shared_distill``: one per shared distillation run, which every pool and
    SN-Net wait for; each depth: building the pool, then one job per stitch init), ordered by the length of the
    chain each one heads."""
    shared = s.get("shared_distill")
    first: tuple[str, ...] = ()
    jobs = [Job("scratch", "scratch", (), (), JOB_MINUTES["scratch"]),
            Job("vanilla", "vanilla", (), (), JOB_MINUTES["vanilla"])]
    if shared:
        for epochs, _ in distill_groups(s):
            name = f"distill-e{epochs}"
            jobs.append(Job(name, "distill", ("--only-distill", str(epochs)), (), JOB_MINUTES.get(name, 30)))
        first = tuple(j.name for j in jobs if j.stage == "distill")
    jobs.append(Job("snnet", "snnet", (), first, JOB_MINUTES["snnet-assemble" if shared else "snnet"]))
    for depth, inits in ((6, s["inits"]), (9, s["inits_d9"])):
        distill = f"lgp{depth}-distill"
        jobs.append(Job(distill, f"lgp{depth}", ("--only-inits", "none"), first,
                        JOB_MINUTES["assemble" if shared else distill]))
        jobs += [Job(f"lgp{depth}-{i}", f"lgp{depth}", ("--only-inits", i), (distill,),
                     JOB_MINUTES[f"lgp{depth}-init"]) for i in sorted(inits, key=lambda i: i != s["default_init"])]

    def chain(j: Job) -> float:
        return j.minutes + max((chain(k) for k in jobs if j.name in k.after), default=0.0)

    return sorted(jobs, key=chain, reverse=True)


def distillation_dir(job: Job) -> str | None:
    """The stage directory a distillation job writes (``distilled-eN``, ``lgp-dD-distilled``); None for the others."""
    if job.stage == "distill":
        return f"distilled-e{job.extra[-1]}"
    if job.stage.startswith("lgp") and job.extra == ("--only-inits", "none"):
        return distilled_pool_name(int(job.stage[3:]))
    return None


def without_jobs(jobs: list[Job], names: set[str]) -> list[Job]:
    """``jobs`` less ``names``, whose stages are done already: the others no longer wait for them."""
    return [j._replace(after=tuple(a for a in j.after if a not in names)) for j in jobs if j.name not in names]


def job_argv(argv: list[str]) -> list[str]:
    """This run's command line without ``--jobs`` (its children get ``--stages``, ``--threads 1`` instead)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--jobs" or a == "--threads":
            skip = True
        elif not a.startswith(("--jobs=", "--threads=")):
            out.append(a)
    return out


def run_jobs(jobs: list[Job], argv: list[str], n: int, work: Path, workers: int = 0) -> None:
    """Run ``jobs`` as child processes of this script, at most ``n`` at once, each on one thread pinned to its
    own core (and ``workers`` more cores for its loader workers; unpinned where the system has no CPU affinity
    call, as on macOS); a job starts when the jobs it needs are done.
    Each child's log goes to ``work/logs/<job>.log``. The first failure stops the others and raises SystemExit
    naming its log."""
    running: dict[int, tuple[Job, subprocess.Popen, float]] = {}  # lane -> job; what must stop if this run stops

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}; finished stages are kept and reused by the next run")

    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        _schedule(jobs, running, argv, n, work / "logs", 1 + workers)
    except BaseException:  # a failed job, Ctrl-C or SIGTERM: no child outlives this run
        for _, proc, _ in running.values():
            proc.terminate()
        for _, proc, _ in running.values():
            proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)


def _schedule(jobs: list[Job], running: dict[int, tuple[Job, subprocess.Popen, float]], argv: list[str], n: int,
              logs: Path, width: int = 1) -> None:
    cpus = usable_cpu_ids()
    pin = hasattr(os, "sched_setaffinity")  # Linux; macOS cannot pin a process to cores
    if not pin:
        log.info("lanes are not pinned to cores: this system has no CPU affinity call (%d CPUs)", len(cpus))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    pending, done = list(jobs), set()
    while pending or running:
        for lane in (x for x in range(n) if x not in running):
            ready = [j for j in pending if set(j.after) <= done]
            if not ready:
                break
            job = ready[0]
            pending.remove(job)
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--stages", job.stage, "--threads", "1",
                   *job.extra]
            with open(logs / f"{job.name}.log", "w") as f:
                proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            mine = sorted({cpus[(lane * width + i) % len(cpus)] for i in range(width)})
            if pin:
                os.sched_setaffinity(proc.pid, mine)  # its loader workers inherit these cores
            running[lane] = (job, proc, time.time())
            log.info("lane %d: started %s%s", lane, job.name, f" (cpu {','.join(map(str, mine))})" if pin else "")
        if not running:
            raise SystemExit(f"jobs {[j.name for j in pending]} wait for jobs that never ran")
        time.sleep(0.5)
        for lane, (job, proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[lane]
            if proc.returncode != 0:
                raise SystemExit(f"job {job.name} failed (exit {proc.returncode}); see {logs / (job.name + '.log')}")
            done.add(job.name)
            log.info("lane %d: %s done in %.0f s (%d of %d jobs)", lane, job.name, time.time() - t0, len(done),
                     len(jobs))


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings: the full (or ``--quick``) defaults with the command line's changes."""
    s = dict(QUICK if args.quick else FULL)
    for k in ("distill_epochs", "finetune_epochs", "steps_per_epoch", "eval_images", "ancestry_epochs"):
        v = getattr(args, k)
        if v is not None:
            s[k] = None if v == 0 and k in ("steps_per_epoch", "eval_images") else v
    s.update(ancestry=args.ancestry, data=args.data, cache_dir=str(args.cache_dir))
    if args.ancestry_cycles is not None:
        s["ancestry_cycles"] = list(args.ancestry_cycles)
    if args.vanilla_narrow is not None:
        s["vanilla_narrow"] = tuple(int(x) for x in args.vanilla_narrow.split(","))
    if args.inits_d9 is not None:
        s["inits_d9"] = list(args.inits_d9)
    if args.width_epochs is not None:
        s["distill_width_epochs"] = dict(args.width_epochs)
    if args.only_inits is not None:
        s["only_inits"] = list(args.only_inits)
    if args.only_distill is not None:
        s["only_distill"] = list(args.only_distill)
    if args.separate_distill:
        s["shared_distill"] = False
    s.update(device=args.device, workers=args.workers)
    return s


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = settings_from_args(args)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    work = Path(args.work or Path(args.cache_dir) / ("run-quick" if args.quick else "run-full"))
    work.mkdir(parents=True, exist_ok=True)
    rep = stderr_reporter(args.quiet)
    st = Stages(work)
    t0 = time.time()
    anc, anc_meta = ancestry_stage(s, args.quick, rep, st)
    s["ancestry_sha256"] = sha256_file(Path(anc) / "ancestry.safetensors")  # stages reuse only its own outputs
    log.info("ancestry %s: top-1 %s", anc, anc_meta.get("top1"))
    if args.jobs > 1:  # the stages in parallel child processes; this process then assembles their results
        run_jobs(plan_jobs(s), job_argv(args.argv), args.jobs, work, s["workers"])
        s["jobs"] = args.jobs
    methods: dict[str, Any] = {}
    order = [("distill", lambda: distill_stage(anc, s, rep, st) if s["shared_distill"] else {}),
             ("lgp6", lambda: lgp_stage(6, anc, s, rep, st)),
             ("snnet", lambda: {"snnet": snnet_stage(anc, s, rep, st)}),
             ("lgp9", lambda: lgp_stage(9, anc, s, rep, st)),
             ("scratch", lambda: {"scratch": single_stage("scratch", anc, s, rep, st)}),
             ("vanilla", lambda: {"vanilla": single_stage("vanilla", anc, s, rep, st)})]
    wanted = STAGES if args.stages is None else args.stages
    for name, fn in order:
        if name not in wanted:
            continue
        t1 = time.time()
        methods.update(fn())
        log.info("stage %s: %.0f s (elapsed %.0f s)", name, time.time() - t1, time.time() - t0)
    if set(wanted) != set(STAGES):
        log.info("ran stages %s only; no results written (run without --stages to assemble them: finished "
                 "stages are reused)", ",".join(wanted))
        return {}
    claims = compute_claims(methods)
    goals = compute_goals(methods, s["default_init"])
    inits = init_table(methods, 6)
    from lgp_edge.datasets import open_data
    from lgp_edge.models.ancestry import create_ancestry

    aspec = create_ancestry(s["ancestry"])[1]
    ds = open_data(s["data"], img_size=aspec.img_size, in_chans=aspec.in_chans, num_classes=aspec.num_classes)
    n_train, n_val = len(ds.train), len(ds.val)
    wall = time.time() - t0
    timing = {k: round(v, 1) for k, v in st.timing.items()}
    timing_source = {}
    if anc_meta.get("reused_from_cache"):  # the ancestry's own record of its training, not measured here
        timing["ancestry_recorded_wall_s"] = timing.pop("ancestry")
        timing_source["ancestry_recorded_wall_s"] = (
            f"the {'shipped' if anc_meta.get('shipped') else 'cached'} ancestry's recorded training time (every "
            "cycle), read from its metadata; not measured by this invocation")
    results = {
        "benchmark": "paper_replication",
        "quick": bool(args.quick),
        "date": utc_iso(),
        "code_version": git_rev(),
        "command": "python benchmarks/paper_replication.py " + " ".join(args.argv),
        "dataset": {"name": s["data"], "train_images": n_train, "test_images": n_val,
                    "eval_images": min(s["eval_images"] or n_val, n_val)},
        "settings": {**s, "cache_dir": repo_path(s["cache_dir"]), "vanilla_narrow": list(s["vanilla_narrow"]),
                     "distill_recipe": "docs/METHOD.md §1: a=0.1, T=1, hidden and attention MSE through separate "
                                       "learnable transforms; AdamW wd 0.05 (none on pos_embed, cls_token, norms, "
                                       "biases), warm-up, cosine",
                     "finetune_recipe": "docs/METHOD.md §3: one random descendant per step, 0.5 CE + 0.5 "
                                        "KL(ancestry), tau 1; AdamW wd 0.05, warm-up, cosine; "
                                        + finetune_flags(s),
                     "scratch_vanilla_recipe": "CE with label smoothing 0.1, same epochs as fine-tuning",
                     "snnet_anchor_budget": "Ti/S anchors distilled with the same recipe, start, distill_epochs and "
                                            "distill_width_epochs as the LGP auxiliary models; B = the ancestry",
                     "torch_threads": 1 if args.jobs > 1 else torch.get_num_threads()},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "cpu_count": os.cpu_count(), "machine": platform.machine(), "cpu": cpu_model(),
                        "cpu_facts": cpu_facts(),
                        **({"gpu": torch.cuda.get_device_name()} if s["device"] == "cuda" else {})},
        "ancestry": {k: anc_meta.get(k) for k in ("name", "top1", "val_images", "config", "wall_s", "when",
                                                  "reused_from_cache", "path")},
        "methods": methods,
        "claims": claims,
        "goals": goals,
        "stitch_inits": inits,
        "commands": {k: repo_paths_in(v) for k, v in st.commands.items()},
        "timing_s": {**timing, "total_this_invocation": round(wall, 1)},
        **process_wall(),
        **({"timing_source": timing_source} if timing_source else {}),
        "reused_stages": sorted(st.reused),
        "stages": st.stages,
        "differences_from_paper": differences(s),
    }
    write_outputs(results, args, work)
    log.info("wrote %s.json/.png in %.0f s", Path(args.out_dir) / ("paper_replication_quick" if args.quick
                                                                    else "paper_replication"), wall)
    return results


def write_outputs(results: dict[str, Any], args: argparse.Namespace, work: Path) -> None:
    """The results JSON (unless it is what was read), the plot and the README section."""
    out = Path(args.out_dir)
    stem = "paper_replication_quick" if results["quick"] else "paper_replication"
    if not args.render:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / f"{stem}.json", results)
    plot(results, out / f"{stem}.png")
    md = render_markdown(results, repo_path(out / f"{stem}.png"), repo_path(out / f"{stem}.json"))
    md_path = Path(args.md_out) if args.md_out else (
        work / "PAPER_REPLICATION_quick.md" if results["quick"] else ROOT / "benchmarks" / "PAPER_REPLICATION.md")
    write_text_atomic(md_path, md)


def render(args: argparse.Namespace) -> int:
    stem = "paper_replication_quick" if args.quick else "paper_replication"
    try:
        results = read_replication(Path(args.out_dir) / f"{stem}.json")
    except BenchmarkInputError as e:
        print(f"paper_replication: error: {e}", file=sys.stderr)
        return 2
    write_outputs(results, args, Path(args.work or Path(args.cache_dir) / ("run-quick" if args.quick else "run-full")))
    log.info("rendered %s from %s", args.md_out or "the README section", Path(args.out_dir) / f"{stem}.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke settings (< 5 min), results marked quick")
    p.add_argument("--work", default=None, help="stage outputs (default benchmarks/.cache/run-full|run-quick)")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--ancestry", default=ANCESTRY, help=f"registered ancestry variant (default {ANCESTRY})")
    p.add_argument("--data", default=DATA, help=f"dataset (default {DATA})")
    p.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache"),
                   help="cached ancestries and default --work parent (default benchmarks/.cache)")
    p.add_argument("--md-out", default=None, help="README section file (default benchmarks/PAPER_REPLICATION.md; "
                                                  "quick: inside --work)")
    p.add_argument("--distill-epochs", type=int, default=None)
    p.add_argument("--width-epochs", type=width_epochs_arg, default=None, metavar="W=N,...",
                   help="distillation epochs of some widths, for the LGP auxiliary models and SN-Net's anchors alike "
                        f"(default {width_epochs_flag(FULL).split()[1]}; 'none' = --distill-epochs for all)")
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap steps per epoch (0 = no cap)")
    p.add_argument("--eval-images", type=int, default=None, help="test images per evaluation (0 = all 10k)")
    p.add_argument("--ancestry-epochs", type=int, default=None,
                   help=f"ancestry training epochs (default {FULL['ancestry_epochs']}; a cached one with the same "
                        "settings is reused)")
    p.add_argument("--ancestry-cycles", type=ancestry_cycles_arg, default=None, metavar="EPOCHS@LR,...",
                   help="further ancestry training cycles, each a warm start from the one before with a fresh "
                        "cosine schedule and 1 warm-up epoch (default "
                        + (",".join(f"{c['epochs']}@{c['lr']:g}" for c in FULL["ancestry_cycles"]) or "none") + ")")
    p.add_argument("--vanilla-narrow", default=None, help="comma list, e.g. 3,2,1,0")
    p.add_argument("--inits-d9", type=init_list, default=None, metavar="INIT,...",
                   help=f"stitch inits fine-tuned at depth 9 (default {','.join(FULL['inits_d9'])}; must include "
                        f"the default init {FULL['default_init']})")
    p.add_argument("--only-inits", type=any_inits, default=None, metavar="INIT,...",
                   help="with --stages: fine-tune only these stitch inits' copies, so that two processes can share "
                        "one depth's fine-tunes (each copy is a separate directory)")
    p.add_argument("--only-distill", type=epoch_list, default=None, metavar="EPOCHS,...",
                   help="with --stages distill: only the shared distillation runs of these epoch budgets, so that "
                        "two processes can share them (each run is a separate directory)")
    p.add_argument("--separate-distill", action="store_true",
                   help="each pool and SN-Net distil their own models (one ancestry pass each) instead of sharing "
                        "'pool distill' runs across them")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where training and evaluation run (default cpu); with cuda and --jobs N the N stage "
                        "processes share the GPU (CUDA_VISIBLE_DEVICES picks it)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes per training run (default 0: batches are made in the "
                        "training process); augmentation then draws from the workers' seeds, so a run is not "
                        "bit-identical to one with another --workers")
    p.add_argument("--stages", type=stage_list, default=None,
                   help=f"comma list of stages to run now, e.g. lgp6,snnet (default all: {','.join(STAGES)}); "
                        "two processes with disjoint stages and the same --work can share a machine's cores; "
                        "a run without --stages then reuses them and writes the results")
    p.add_argument("--jobs", type=int, default=1,
                   help="run the stages as up to N child processes at once, one thread each on its own core, then "
                        "assemble the results (default 1: all stages in this process); child logs in --work/logs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--render", action="store_true",
                   help="rewrite the README section and the plot from the results JSON in --out-dir; run nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.jobs > 1 and args.stages is not None:
        p.error("--jobs runs every stage; use --stages without --jobs to run some stages in this process")
    if args.only_inits is not None and args.stages is None:
        p.error("--only-inits needs --stages: the run that assembles the results uses every init's copy")
    if args.only_distill is not None and args.stages is None:
        p.error("--only-distill needs --stages: the run that assembles the results uses every distillation")
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    check_counts(p, ("--distill-epochs", args.distill_epochs, 1), ("--finetune-epochs", args.finetune_epochs, 1),
                 ("--ancestry-epochs", args.ancestry_epochs, 1),
                 ("--steps-per-epoch", args.steps_per_epoch, 0),  # a negative cap sliced whole epochs, recorded
                 ("--eval-images", args.eval_images, 0))
    if args.width_epochs is not None:
        unknown = sorted({w for w, _ in args.width_epochs} - {"ti", "s", "b"})
        if unknown:
            p.error(f"--width-epochs: unknown width {', '.join(unknown)}; use ti, s or b (e.g. ti=30,s=30)")
    if args.vanilla_narrow is not None:
        try:
            narrow = [int(x) for x in args.vanilla_narrow.split(",")]
        except ValueError:
            narrow = []
        if not narrow or any(n < 0 for n in narrow) or len(set(narrow)) != len(narrow):
            p.error(f"--vanilla-narrow must be a comma list of distinct counts >= 0, e.g. 3,2,1,0; got "
                    f"{args.vanilla_narrow!r}")
    if args.workers > max_workers():
        p.error(f"--workers must be at most {max_workers()} (as for every training command), got {args.workers}")
    if args.device == "cuda" and not args.render and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available here; use --device cpu")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.render:
        return render(args)
    r = run(args)
    if not r:
        return 0
    c = r["claims"]
    print(json.dumps({k: c[k] for k in ("storage_ratio", "storage_ratio_held", "min_flops_ratio",
                                        "min_flops_ratio_held", "front_delta_min", "front_delta_min_held",
                                        "init_delta_mean", "init_delta_mean_held")}, indent=1))
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
