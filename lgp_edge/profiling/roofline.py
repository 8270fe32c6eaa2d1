"""Hardware facts and the roofline.

``parts_of`` splits a descendant (or a stock ViT) into the pieces the predictor prices: patch embedding,
each block by its dims and token count, each stitch, final norm + head. ``roofline_ms`` prices a piece
from a target's declared hardware: ``max(FLOPs / (peak x compute eff.), bytes / (bandwidth x memory eff.))``
plus a fixed cost per operator launch. FLOPs here are hardware FLOPs: 2 per multiply-add (the fvcore
numbers elsewhere in lgp-edge count a multiply-add once).

For targets with ``hardware.detect = true`` (this host) peak and bandwidth are measured: a large square
``torch.matmul`` and a large copy, at the profiling thread count.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from lgp_edge.models.descendant import block_flops
from lgp_edge.specs import AncestrySpec, DescendantSpec, PoolSpec, TargetSpec

BYTES_PER_VALUE = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
KERNELS = {"embed": 4, "block": 14, "stitch": 1, "head": 3}  # operator launches per part (timm ViT, ONNX graph)


@dataclass(frozen=True)
class Part:
    """One priced piece of a model; ``key`` names its type by dims (equal keys cost the same)."""

    kind: str  # "embed", "block", "stitch" or "head"
    key: str  # e.g. "block:d192:h3:n197:r4"
    macs: int  # multiply-adds at batch 1 (fvcore FLOPs)
    params: int  # weights read once per inference
    act_elems: int  # activation values written + read at batch 1 (approximate)

    @property
    def kernels(self) -> int:
        return KERNELS[self.kind]


def _r(x: float) -> str:
    return f"{x:g}"


def embed_part(a: AncestrySpec, dim: int) -> Part:
    n = a.num_tokens
    k = a.in_chans * a.patch_size ** 2
    return Part("embed", f"embed:c{a.in_chans}:p{a.patch_size}:i{a.img_size}:d{dim}", macs=k * dim * (n - 1),
                params=k * dim + dim + dim + n * dim, act_elems=a.in_chans * a.img_size ** 2 + 3 * n * dim)


def block_part(a: AncestrySpec, dim: int, heads: int) -> Part:
    n = a.num_tokens
    hidden = int(dim * a.mlp_ratio)
    macs = block_flops(dim, n, a.mlp_ratio) - 2 * 5 * n * dim  # LayerNorms are priced as traffic
    params = 4 * dim * dim + 2 * dim * hidden + 9 * dim + hidden  # qkv, proj, fc1, fc2 (+ biases, norms)
    act = n * dim * 12 + n * hidden * 3 + heads * n * n * 3
    return Part("block", f"block:d{dim}:h{heads}:n{n}:r{_r(a.mlp_ratio)}", macs=macs, params=params, act_elems=act)


def stitch_part(a: AncestrySpec, d_in: int, d_out: int) -> Part:
    n = a.num_tokens
    return Part("stitch", f"stitch:{d_in}>{d_out}:n{n}", macs=n * d_in * d_out, params=d_in * d_out + d_out,
                act_elems=n * (d_in + d_out))


def head_part(a: AncestrySpec, dim: int) -> Part:
    n = a.num_tokens
    return Part("head", f"head:d{dim}:n{n}:c{a.num_classes}", macs=dim * a.num_classes,
                params=dim * a.num_classes + a.num_classes + 2 * dim, act_elems=2 * n * dim + dim + a.num_classes)


def parts_of(pool: PoolSpec, spec: DescendantSpec) -> list[Part]:
    """Embedding of the first instance, every block, every stitch, norm + head of the last instance."""
    a = pool.ancestry
    inst = {i.name: i for i in pool.instances}
    segs = spec.segments
    out = [embed_part(a, inst[segs[0].instance].embed_dim)]
    for i, seg in enumerate(segs):
        s = inst[seg.instance]
        out += [block_part(a, s.embed_dim, s.num_heads)] * seg.num_blocks
        if i + 1 < len(segs):
            out.append(stitch_part(a, s.embed_dim, inst[segs[i + 1].instance].embed_dim))
    out.append(head_part(a, inst[segs[-1].instance].embed_dim))
    return out


def vit_parts(a: AncestrySpec, blocks: int | None = None) -> list[Part]:
    """A stock ViT (the ancestry's dims), optionally with fewer blocks (calibration probes)."""
    depth = a.depth if blocks is None else blocks
    return [embed_part(a, a.embed_dim)] + [block_part(a, a.embed_dim, a.num_heads)] * depth + \
        [head_part(a, a.embed_dim)]


# ------------------------------------------------------------------------------------------ host facts
@dataclass(frozen=True)
class HostFacts:
    peak_gflops_fp32: float  # best of a few large square fp32 matmuls, 2 FLOP per multiply-add
    mem_gbps: float  # best of a few large copies, bytes read + written per second
    threads: int
    gemm_n: int  # matrix side used


def measure_gemm_peak(threads: int, n: int = 2048, reps: int = 5, engine: str = "torch") -> float:
    """fp32 GFLOP/s (2 per multiply-add) of one n x n matmul with ``threads`` threads, best run.

    ``engine``: "torch" (``torch.matmul``, i.e. the BLAS torch was built with), "onnxruntime" (MLAS) or
    "openvino" (oneDNN) -- BLAS libraries differ per CPU vendor, so the machine's limit is the best of them.
    """
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    if engine == "torch":
        old = torch.get_num_threads()
        torch.set_num_threads(threads)

        def run() -> object:
            return torch.matmul(a, b)
    else:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
                                  [numpy_helper.from_array(b.numpy(), "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        x = a.numpy()
        if engine == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

            def run() -> object:
                return sess.run(None, {"a": x})
        elif engine == "openvino":
            import openvino as ov
            import openvino.properties.hint as hints

            onnx.checker.check_model(model)
            compiled = ov.Core().compile_model(ov.Core().read_model(model.SerializeToString(), b""), "CPU", {
                hints.performance_mode: hints.PerformanceMode.LATENCY, "INFERENCE_NUM_THREADS": threads,
                hints.inference_precision: "f32"})
            req = compiled.create_infer_request()

            def run() -> object:
                return req.infer({0: x})
        else:
            raise ValueError(f"unknown GEMM engine {engine}")
    try:
        run()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
    finally:
        if engine == "torch":
            torch.set_num_threads(old)
    return 2 * n ** 3 / best / 1e9


def measure_copy_bandwidth(threads: int, mb: int = 256, reps: int = 5) -> float:
    """GB/s of a large tensor copy (bytes read + bytes written), best run."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.ones(mb * (1 << 20) // 4)
        dst = torch.empty_like(src)
        dst.copy_(src)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2 * src.numel() * 4 / best / 1e9


@functools.lru_cache(maxsize=8)
def host_facts(threads: int, gemm_n: int = 512) -> HostFacts:
    """Measured once per process and thread count (well under a second): the best fp32 GEMM of torch and,
    when installed, ONNX Runtime (torch's BLAS is not the fastest on every CPU vendor). A cache-resident
    size and many repeats: on a shared machine the best of many short runs is the one nobody preempted."""
    peak = measure_gemm_peak(threads, n=gemm_n, reps=20)
    try:
        peak = max(peak, measure_gemm_peak(threads, n=gemm_n, reps=20, engine="onnxruntime"))
    except ImportError:
        pass
    return HostFacts(peak_gflops_fp32=peak, mem_gbps=measure_copy_bandwidth(threads, mb=64, reps=3),
                     threads=threads, gemm_n=gemm_n)


# -------------------------------------------------------------------------------------------- roofline
@dataclass(frozen=True)
class Roofline:
    peak_gflops: float  # at the precision priced
    mem_gbps: float
    compute_eff: float  # fraction of peak reached by ViT layers
    memory_eff: float  # fraction of bandwidth reached
    overhead_us: float  # per operator launch
    bytes_per_value: int
    source: str  # where the peak came from ("declared" or "measured")

    def part_ms(self, p: Part) -> float:
        compute_s = 2 * p.macs / (self.peak_gflops * 1e9 * self.compute_eff)
        memory_s = (p.params + p.act_elems) * self.bytes_per_value / (self.mem_gbps * 1e9 * self.memory_eff)
        return 1e3 * max(compute_s, memory_s) + p.kernels * self.overhead_us * 1e-3

    def predict_ms(self, parts: list[Part]) -> float:
        return sum(self.part_ms(p) for p in parts)


def roofline_for(target: TargetSpec, precision: str, threads: int) -> Roofline:
    hw: dict[str, Any] = target.hardware
    eff = hw["efficiency"]
    if hw.get("detect"):
        facts = host_facts(threads)
        # bf16/int8 peaks on a CPU depend on ISA extensions; only fp32 is measured, so others use it.
        peak, bw, source = facts.peak_gflops_fp32, facts.mem_gbps, f"measured fp32 GEMM, {threads} threads"
    else:
        peaks = hw["peak_gflops"]
        if precision not in peaks:
            from lgp_edge.errors import UsageError

            raise UsageError(f"target '{target.name}' declares no peak for precision '{precision}'; it has "
                             f"{', '.join(peaks)}")
        peak, bw, source = float(peaks[precision]), float(hw["mem_gbps"]), "declared in the target file"
    return Roofline(peak_gflops=peak, mem_gbps=bw, compute_eff=float(eff["compute"]),
                    memory_eff=float(eff["memory"]), overhead_us=float(eff["overhead_us"]),
                    bytes_per_value=BYTES_PER_VALUE[precision], source=source)
