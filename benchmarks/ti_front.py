"""What a Ti front costs: Ti's embedding and 0..5 Ti blocks, a fresh lstsq stitch, then B's remaining blocks.

    python benchmarks/ti_front.py                                   # the shipped demo pool (41 s on 2 AMD EPYC cores)
    python benchmarks/ti_front.py --images 500 --out /tmp/tf.json   # a smoke run

Every descendant of the paper's Ti/B pool except B alone starts with Ti's patch embedding and at least one Ti
block, and the replication finds such descendants about as accurate as Ti (PAPER_REPLICATION_NOTES.md). This
separates the two parts of that front, on the shipped demo pool, with no training:

- ``embedding``: for each instance model, the share of the 7x7 patches' pixel variance that a linear map
  recovers from its patch embedding (R^2 on ``--fit-images`` training images), beside the bound of the best
  rank-``dim`` projection (PCA); Ti's 32 channels cannot keep all 49 pixels.
- ``fronts``: Ti's embedding followed by Ti blocks 0..j (none for ``j = -1``), a stitch fitted by least squares
  on ``--fit-images`` training images onto B's input to its block k, then B blocks k..5, norm and head: its
  stitch R^2 on held-out images and its top-1 on the test images, untrained, and, where (j, k) is one of the
  pool's descendants, that descendant's top-1 after the pool's fine-tuning. ``j = -1`` (Ti's embedding alone in
  front of every B block) is not one of the paper's descendants: each runs at least one block of its first
  instance.
- ``references``: Ti alone and B alone (same images).

Results: benchmarks/results/ti_front.json, with the run's code version, date, command and CPU.
This script is never imported by lgp_edge.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from lgp_edge.datasets import open_for_pool
from lgp_edge.models.descendant import Embedding
from lgp_edge.models.stitch import lstsq_solution, make_stitch
from lgp_edge.pool.manifest import demo_pool_dir
from lgp_edge.pool.pool import load_pool
from lgp_edge.pool.stitch_init import held_out_images, lstsq_images
from lgp_edge.train import evaluate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import check_results_path, pool_weights_sha256, repo_path, run_provenance, write_results  # noqa: E402  (the benchmarks' run record and writer)

provenance = functools.partial(run_provenance, "ti_front.py")


#: (j, k): Ti's embedding and blocks 0..j, then B blocks k..5. (-1, 0) is Ti's embedding alone in front of all of B.
CONFIGS = ((-1, 0), (0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (4, 5))


class TiFront(nn.Module):
    """Ti's embedding and blocks 0..j, a stitch, then B's blocks k.. with B's norm and head."""

    def __init__(self, ti: nn.Module, j: int, stitch: nn.Linear, b: nn.Module, k: int) -> None:
        super().__init__()
        self.embed, self.front = Embedding(ti), nn.Sequential(*list(ti.blocks)[:j + 1])
        self.stitch, self.back = stitch, nn.Sequential(*list(b.blocks)[k:])
        self.norm, self.head = b.norm, b.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.front(self.embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.back(self.stitch(self.features(x))))[:, 0])


def pixel_r2(model: nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """(R^2 of the patches' pixels recovered linearly from the patch embedding, the rank-dim PCA bound)."""
    proj = model.patch_embed.proj
    p = proj.kernel_size[0]
    patches = nn.functional.unfold(images, p, stride=p).transpose(1, 2).reshape(-1, images.shape[1] * p * p).double()
    emb = model.patch_embed(images).reshape(-1, proj.out_channels).double()
    w, c = lstsq_solution(emb, patches)
    centred = patches - patches.mean(0)
    sst = (centred ** 2).sum()
    r2 = 1.0 - ((patches - emb.float() @ w.t() - c).double() ** 2).sum() / sst
    eig = torch.linalg.eigvalsh(centred.t() @ centred).flip(0).clamp_min(0)
    return float(r2), float(eig[:proj.out_channels].sum() / eig.sum())


def block_input(b: nn.Module, k: int, x: torch.Tensor) -> torch.Tensor:
    """B's input to its block k (its embedding output for k = 0)."""
    return nn.Sequential(*list(b.blocks)[:k])(Embedding(b)(x))


def fit_front(ti: nn.Module, j: int, b: nn.Module, k: int, fit: torch.Tensor,
              held: torch.Tensor) -> tuple[TiFront, float]:
    """The model Ti 0..j -> B k..5 with its stitch fitted by lstsq; and the stitch's held-out R^2."""
    stitch = make_stitch(ti.embed_dim, b.embed_dim)
    model = TiFront(ti, j, stitch, b, k).eval()
    with torch.no_grad():
        w, c = lstsq_solution(model.features(fit).reshape(-1, ti.embed_dim),
                              block_input(b, k, fit).reshape(-1, b.embed_dim))
        stitch.weight.copy_(w)
        stitch.bias.copy_(c)
        pred, target = stitch(model.features(held)).double(), block_input(b, k, held).double()
        r2 = 1.0 - ((pred - target) ** 2).sum() / ((target - target.mean(dim=(0, 1), keepdim=True)) ** 2).sum()
    return model, float(r2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", default=str(demo_pool_dir()), help="pool directory (default: the shipped demo pool)")
    p.add_argument("--fit-images", type=int, default=1000, help="training images the stitches are fitted on")
    p.add_argument("--held-images", type=int, default=500, help="test images the stitch R^2 is measured on")
    p.add_argument("--images", type=int, default=0, help="test images for top-1 (0: the whole test set)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ti_front.json"),
                   help="results file (default benchmarks/results/ti_front.json)")
    args = p.parse_args(argv)
    if args.out:
        check_results_path(Path(args.out), __file__)  # before the run, not after it
    if args.fit_images < 100 or args.held_images < 1 or args.images < 0:
        p.error("--fit-images must be >= 100, --held-images >= 1, --images >= 0")
    header = provenance(argv)
    t0 = time.time()
    pool, manifest = load_pool(args.pool)
    pool.eval()
    if set(pool.models) != {"ti6", "b6"}:
        p.error(f"{args.pool}: expected a depth-6 Ti/B pool (instances ti6, b6), found {sorted(pool.models)}")
    ti, b = pool.models["ti6"], pool.models["b6"]
    data = open_for_pool(args.data, manifest)
    n = min(args.images, len(data.val)) if args.images else len(data.val)
    fit, held = lstsq_images(data, args.fit_images), held_out_images(data, args.held_images)
    embedding = {}
    with torch.no_grad():
        for name, m in pool.models.items():
            r2, bound = pixel_r2(m, fit)
            embedding[name] = {"dim": m.embed_dim, "pixels": m.patch_embed.proj.in_channels
                               * m.patch_embed.proj.kernel_size[0] ** 2, "pixel_r2": round(r2, 4),
                               "pca_bound": round(bound, 4)}
    keys = {d.key for d in pool.descendants()}
    fronts = []
    for j, k in CONFIGS:
        model, r2 = fit_front(ti, j, b, k, fit, held)
        top1 = evaluate(model, data.val, max_images=n)
        key = f"ti6.0-{j}+b6.{k}-5" if j >= 0 else None
        tuned = round(evaluate(pool.descendant(key), data.val, max_images=n), 2) if key in keys else None
        fronts.append({"ti_blocks": j + 1, "b_blocks": len(b.blocks) - k, "descendant": key,
                       "stitch_r2": round(r2, 4), "top1_lstsq_untrained": round(top1, 2),
                       "top1_pool_finetuned": tuned})
        print(f"Ti embedding + {j + 1} Ti block(s) -> B blocks {k}..5: stitch R^2 {r2:.3f}, top-1 {top1:.2f}% "
              f"untrained" + (f", {tuned:.2f}% as the pool's fine-tuned {key}" if tuned is not None else ""),
              file=sys.stderr)
    references = {key: round(evaluate(pool.descendant(key), data.val, max_images=n), 2)
                  for key in ("ti6.0-5", "b6.0-5")}
    write_results(Path(args.out), {
        "benchmark": "benchmarks/ti_front.py", **header, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "python": platform.python_version(),
        "pool": {"path": repo_path(args.pool), "pool_id": pool.pool_id,
                 "weights_sha256": pool_weights_sha256(args.pool)},
        "data": args.data, "fit_images": args.fit_images, "held_images": args.held_images, "test_images": n,
        "embedding": embedding, "fronts": fronts, "references": references, "wall_s": round(time.time() - t0, 1)})
    for name, e in embedding.items():
        print(f"{name}: patch embedding keeps {e['pixel_r2']:.4f} of the pixel variance (rank-{e['dim']} bound "
              f"{e['pca_bound']:.4f})", file=sys.stderr)
    print("references: " + ", ".join(f"{k} {v:.2f}%" for k, v in references.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
