"""Copy a trained ancestry (an ``lgp-edge ancestry train`` output) into the package, beside the demo pool.

    python benchmarks/ship_ancestry.py RUN_DIR [--data fashion-mnist]

Writes ``lgp_edge/data/ancestry/<name>/`` with fp16 ``ancestry.safetensors`` (half the size; the teacher of
distillation and fine-tuning needs no more) and ``ancestry.json``: the run's own record (settings, epochs,
loss) plus the shipped weights' top-1 re-measured on every test image and the provenance. ``pool build``,
``baseline snnet|vanilla`` and ``benchmarks/paper_replication.py`` use these weights when no
``--ancestry-checkpoint`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("ship_ancestry")


def ship(src: Path, data: str) -> dict:
    import torch
    from safetensors.torch import save_file

    from lgp_edge.datasets import open_data
    from lgp_edge.fileio import default_mode, sha256_file
    from lgp_edge.models.ancestry import create_ancestry, read_ancestry_dir, read_state_dict
    from lgp_edge.outdir import atomic_dir, check_output_dir, replace_dir
    from lgp_edge.train import evaluate

    meta = read_ancestry_dir(src)
    if not meta or meta.get("synthetic_data"):
        raise SystemExit(f"'{src}' holds no ancestry trained on real data (ancestry.json)")
    name = meta["name"]
    state = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in read_state_dict(src).items()}
    dst = ROOT / "lgp_edge" / "data" / "ancestry" / name
    check_output_dir(dst, True, kind="ancestry")  # the ancestry it replaces, never anything else
    with atomic_dir(dst) as tmp:  # .NAME.tmp-* beside DST, swapped in whole; removed if anything below fails
        t = Path(tmp)
        save_file({k: v.contiguous() for k, v in state.items()}, str(t / "ancestry.safetensors"))
        model, spec = create_ancestry(name, checkpoint=t / "ancestry.safetensors")
        ds = open_data(data, img_size=spec.img_size, in_chans=spec.in_chans, num_classes=spec.num_classes)
        top1 = evaluate(model, ds.val, batch_size=512)
        shipped = {**meta, "top1_fp32": meta.get("top1"), "top1": round(top1, 3), "val_images": len(ds.val),
                   "storage_dtype": "float16", "weights_sha256": sha256_file(t / "ancestry.safetensors"),
                   "provenance": {"source_run": str(src), "made_by": "python benchmarks/ship_ancestry.py",
                                  "shipped_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
        (t / "ancestry.json").write_text(json.dumps(shipped, indent=1) + "\n")
        for f in t.iterdir():  # installed package data must be readable by every user
            f.chmod(default_mode(directory=False))
        replace_dir(t, dst)
    log.info("shipped %s: top-1 %.2f%% (fp16) vs %.2f%% (fp32) -> %s", name, top1, meta.get("top1") or -1, dst)
    return shipped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", help="output directory of 'lgp-edge ancestry train'")
    p.add_argument("--data", default="fashion-mnist")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from lgp_edge.errors import LgpEdgeError

    try:
        out = ship(Path(args.src), args.data)
    except LgpEdgeError as exc:  # bad input (a destination it must not replace): one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: out[k] for k in ("name", "top1", "top1_fp32", "val_images")}, indent=1))
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
