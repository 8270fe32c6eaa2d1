"""The front goal at a longer fine-tuning budget, the same for LGP and SN-Net.

    python benchmarks/equal_budget.py --epochs 4 --jobs 2   # -> benchmarks/results/equal_budget_e4.json,
                                                            #    benchmarks/EQUAL_BUDGET_E4.md

The replication fine-tunes every method for the same few epochs. Its front falls behind SN-Net where SN-Net has
its S anchor, and ``benchmarks/stitch_ceiling.py`` shows that no schedule within that budget closes the gap. This
benchmark asks whether a longer budget, given to both sides alike, does: it reruns the replication's stages that
the front goal is scored on (the default stitch init's pools at depths 6 and 9, and SN-Net) with ``--epochs``
fine-tuning epochs and every other setting taken from the replication's results JSON, then scores them with the
same goal code (lgp_edge.baselines.claims.compute_goals). The distillations are the replication's: they are
copied from its work directory when present there (their stage keys are checked before reuse, as in the
replication), otherwise run again. Stages are reused from ``--work`` like the replication's, so an interrupted
run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lgp_edge.baselines.claims import GOALS, compute_goals
from lgp_edge.fileio import sha256_file
from lgp_edge.progress import stderr_reporter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import repo_path, repo_paths_in  # noqa: E402
from paper_replication import (  # noqa: E402
    BenchmarkInputError,
    Job,
    Stages,
    add_follow_up_args,
    ancestry_stage,
    build_parser,
    distill_stage,
    distillation_dir,
    follow_up_header,
    front_family_lines,
    lgp_stage,
    plan_jobs,
    read_replication,
    run_jobs,
    seed_distillations,
    settings_from_args,
    snnet_stage,
    stages_note,
    width_epochs_flag,
    without_jobs,
    write_follow_up,
)

log = logging.getLogger("equal_budget")
# settings a run records that do not change what a stage computes
RUN_ONLY = {"finetune_epochs", "cache_dir", "ancestry_sha256", "jobs", "distill_recipe", "finetune_recipe",
            "scratch_vanilla_recipe", "snnet_anchor_budget", "torch_threads", "only_inits", "only_distill",
            "device", "workers"}


def replication_argv(s: dict[str, Any], quick: bool, epochs: int, work: Path) -> list[str]:
    """A ``paper_replication.py`` command line that reproduces the recorded settings ``s`` with ``epochs``
    fine-tuning epochs, its stages written to ``work``."""
    argv = ["--ancestry", s["ancestry"], "--data", s["data"], "--cache-dir", str(ROOT / s["cache_dir"]),
            "--work", str(work), "--distill-epochs", str(s["distill_epochs"]),
            *width_epochs_flag(s).split(), "--finetune-epochs", str(epochs),
            "--steps-per-epoch", str(s["steps_per_epoch"] or 0), "--eval-images", str(s["eval_images"] or 0),
            "--ancestry-epochs", str(s["ancestry_epochs"]),
            "--vanilla-narrow", ",".join(map(str, s["vanilla_narrow"])), "--inits-d9", ",".join(s["inits_d9"]),
            "--quiet"]
    if s.get("ancestry_cycles"):
        argv += ["--ancestry-cycles", ",".join(f"{c['epochs']}@{c['lr']:g}" for c in s["ancestry_cycles"])]
    if quick:
        argv.append("--quick")
    if not s.get("shared_distill"):
        argv.append("--separate-distill")
    return argv


def settings_for(rep: dict[str, Any], epochs: int, work: Path) -> tuple[list[str], dict[str, Any]]:
    """The replication's settings with ``epochs`` fine-tuning epochs, as this code's ``paper_replication.py``
    builds them from a command line; a BenchmarkInputError where this code would not reproduce the replication
    (its defaults changed since the run)."""
    argv = replication_argv(rep["settings"], bool(rep["quick"]), epochs, work)
    s = settings_from_args(build_parser().parse_args(argv))
    recorded = json.loads(json.dumps(rep["settings"]))
    here = json.loads(json.dumps(s))
    differ = sorted(k for k in set(recorded) | set(here) if k not in RUN_ONLY and recorded.get(k) != here.get(k))
    if differ:
        raise BenchmarkInputError(f"this code's replication settings differ from the recorded run's in "
                                  f"{', '.join(differ)}: rerun benchmarks/paper_replication.py first")
    return argv, s


def front_row(goals: dict[str, Any], methods: dict[str, Any], epochs: int) -> dict[str, Any]:
    """One budget's front goal, where it falls behind most, and the single models' top-1."""
    sn = {c["key"]: c["top1"] for c in methods["snnet"]["configs"]}
    anchors = {k: sn[k] for k in methods["snnet"]["instances_after_distill"]}
    worst = min((v["worst"] for v in goals["front_by_snnet_family"].values()), key=lambda w: w["delta"])
    return {"finetune_epochs": epochs, "front_share": goals["front_share"], "front_delta_min": goals["front_delta_min"],
            "front_held": goals["front_held"], "worst": worst,
            "instances": {k: v["after_finetune"] for k, v in goals["instances"].items()},
            "instances_held": goals["instances_held"], "snnet_anchors": anchors,
            "every_descendant_min_top1": goals["every_descendant_min_top1"]}


def follow_up_jobs(s: dict[str, Any], init: str, work: Path) -> list[Job]:
    """The replication's ``--jobs`` plan for this run's stages (the distillations, SN-Net, and each depth's pool
    with the default init): the replication's distillations copied into ``work`` need no process of their own
    (``run`` checks their keys, and redoes one that does not match)."""
    jobs = [j for j in plan_jobs(s) if j.stage in ("distill", "snnet")
            or (j.stage in ("lgp6", "lgp9") and j.extra[-1] in ("none", init))]
    return without_jobs(jobs, {j.name for j in jobs if (d := distillation_dir(j))
                               and Stages.marker(work / d).get("copied_from")})


def run(args: argparse.Namespace) -> dict[str, Any]:
    rep_path = Path(args.replication)
    rep_json = read_replication(rep_path, " (this benchmark takes its settings and 2-epoch results from it)")
    init = rep_json["settings"]["default_init"]
    if args.epochs == rep_json["settings"]["finetune_epochs"]:
        raise BenchmarkInputError(f"--epochs {args.epochs} is the replication's own budget: its results are in "
                                  f"{rep_path}")
    work = Path(args.work) / f"e{args.epochs}"
    argv, s = settings_for(rep_json, args.epochs, work)
    work.mkdir(parents=True, exist_ok=True)
    s["only_inits"] = [init]  # the front goal is scored on the default init's pools only
    copied = seed_distillations(rep_json, Path(args.pools_root), work)
    if copied:
        log.info("copied the replication's distillations %s into %s", ", ".join(copied), work)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    rep = stderr_reporter(args.quiet)
    st = Stages(work)
    t0 = time.time()
    anc, _ = ancestry_stage(s, bool(rep_json["quick"]), rep, st)
    if sha256_file(Path(anc) / "ancestry.safetensors") != rep_json["settings"]["ancestry_sha256"]:
        raise BenchmarkInputError(f"the ancestry found at {anc} is not the one {rep_path} was measured with: "
                                  "rerun benchmarks/paper_replication.py with this ancestry first")
    s["ancestry_sha256"] = rep_json["settings"]["ancestry_sha256"]
    if args.jobs > 1:  # the replication's jobs for these stages, as child processes of paper_replication.py
        run_jobs(follow_up_jobs(s, init, work), argv, args.jobs, work)
    methods: dict[str, Any] = {}
    distill_stage(anc, s, rep, st)
    methods.update(lgp_stage(6, anc, s, rep, st))
    methods["snnet"] = snnet_stage(anc, s, rep, st)
    methods.update(lgp_stage(9, anc, s, rep, st))
    goals = compute_goals(methods, init)
    rows = [front_row(rep_json["goals"], rep_json["methods"], rep_json["settings"]["finetune_epochs"]),
            front_row(goals, methods, args.epochs)]
    timing = {k: round(v, 1) for k, v in st.timing.items() if k != "ancestry"}
    copies = {k for k, v in st.stages.items() if v["source"] == "copied from the replication"}
    return {
        **follow_up_header("equal_budget", rep_json, rep_path, args.argv),
        "jobs": args.jobs,
        "settings": {**{k: v for k, v in s.items() if k != "only_inits"}, "cache_dir": repo_path(s["cache_dir"])},
        "budgets": rows,
        "goals": goals,
        "methods": {m: {k: v for k, v in x.items() if k != "pool_dir"} | {"pool_dir": repo_path(work / m)}
                    for m, x in methods.items()},
        "commands": {k: repo_paths_in(v) for k, v in st.commands.items()},
        "stages": st.stages,  # per stage: computed here, reused from --work, or copied from the replication
        "timing_s": {**{k: v for k, v in timing.items() if k not in copies},
                     "total_this_invocation": round(time.time() - t0, 1)},
        # the replication's own wall times of the stages copied from it (stages.*.copied_from), not this run's
        "timing_s_copied_from_replication": {k: v for k, v in timing.items() if k in copies},
    }


def render_markdown(r: dict[str, Any], json_path: str) -> str:
    yes = {True: "met", False: "**not met**"}
    crit = r["goals"].get("criteria") or GOALS  # what the results were judged by (compute_goals records it)
    share, delta = crit["front_share_at_least"], crit["front_delta_min_at_least"]
    t = r["timing_s"]
    stage_min = sum(v for k, v in t.items() if k != "total_this_invocation" and not k.startswith("distill")
                    and not k.endswith("_distill")) / 60
    lines = [
        f"{'QUICK RUN (smoke settings; not a result). ' if r['quick'] else ''}"
        f"`{r['command'].strip()}` ({r['cpu']}, code {r['code_version']}, {r['date']}{stages_note(r)}): the "
        f"replication of {r['replication']['date']} (code {r['replication']['code_version']}) with "
        f"{r['budgets'][-1]['finetune_epochs']} fine-tuning epochs instead of {r['budgets'][0]['finetune_epochs']} "
        f"for both sides: its `{r['settings']['default_init']}` pools at depths 6 and 9 and SN-Net fine-tuned again "
        f"from the same distilled models ({stage_min:.0f} stage-min of fine-tuning and evaluation), every other "
        "setting the replication's.",
        "",
        "| fine-tuning epochs (both sides) | front >= SN-Net | worst delta | where | instances alone after "
        "fine-tuning | SN-Net anchors | min top-1 |",
        "|---:|---:|---:|---|---|---|---:|",
    ]
    for b in r["budgets"]:
        w = b["worst"]
        lines.append(
            f"| {b['finetune_epochs']} | {b['front_share']:.1%} ({yes[b['front_share'] >= share]}) | "
            f"{b['front_delta_min']:+.2f} ({yes[b['front_delta_min'] >= delta]}) | `{w['snnet_key']}` "
            f"{w['snnet_top1']}% at {w['snnet_flops'] / 1e6:.2f} MFLOPs; `{w['lgp_key']}` {w['lgp_top1']}% | "
            + ", ".join(f"{k.split(':')[-1]} {v}" for k, v in b["instances"].items()) + " | "
            + ", ".join(f"{k} {v}" for k, v in b["snnet_anchors"].items()) + f" | {b['every_descendant_min_top1']} |")
    lines += ["", *front_family_lines(r["goals"]),
              f"Goals: front share >= {share:.0%} and worst delta >= {delta:.1f}. Full numbers and commands: "
              f"[`{json_path}`]({json_path}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_follow_up_args(p, "equal-budget", "stage outputs, one directory per budget (e<EPOCHS>)")
    p.add_argument("--epochs", type=int, required=True, help="fine-tuning epochs for LGP and SN-Net alike")
    p.add_argument("--jobs", type=int, default=1, help="stages run at once as child processes, one thread each")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/equal_budget_e<EPOCHS>.json, "
                                               "_quick for a quick replication)")
    p.add_argument("--md-out", default=None, help="README section (default benchmarks/EQUAL_BUDGET_E<EPOCHS>.md; "
                                                  "quick replications: inside --work)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("epochs", "jobs"):
        if getattr(args, name) < 1:
            print(f"equal_budget: --{name} must be 1 or more, got {getattr(args, name)}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        x = run(args)
    except BenchmarkInputError as e:
        print(f"equal_budget: {e}", file=sys.stderr)
        return 2
    write_follow_up(x, args, f"equal_budget_e{args.epochs}", f"EQUAL_BUDGET_E{args.epochs}.md", render_markdown,
                    quick_dir=Path(args.work) / f"e{args.epochs}")
    print(json.dumps({k: x["budgets"][-1][k] for k in ("finetune_epochs", "front_share", "front_delta_min",
                                                       "front_held")}, indent=1))
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
