"""Switchable ONNX: every chosen descendant of a pool in one model file, each weight stored once.

The model has two inputs: ``input`` (the image batch, as every lgp-edge ONNX) and ``descendant`` (int64,
shape ``[1]``): the row of the ``descendants`` table to run. The graph holds one ``If`` per descendant,
side by side, each directly below the main graph::

    logits_i = If(descendant == i) then <descendant i> else zeros        (i = 0..n-1)
    valid    = 0 <= descendant < n
    logits   = Reshape(Where(valid, Sum(logits_0..logits_n-1), NaN),
                       [batch, classes] if valid else [batch*classes+1, 1])

so exactly one branch computes, and in ONNX Runtime an index outside ``0..n-1`` makes the run fail (the
Reshape cannot be done; the error names the node "descendant index out of range ..."), never logits
whose argmax would be a silent class 0, nor another descendant's answer. OpenVINO does not check that
Reshape (its converter keeps the declared output shape): there the logits are NaN. (Side by side rather than a nested tree: see ``_main_nodes``.)

Each branch is one descendant exported on its own (TorchScript exporter with constant folding, so
weight transposes are computed once, not per call); its nodes move into the branch subgraph and every
weight it reads is lifted into the main graph, where all branches read it from the outer scope.
Initializers are deduplicated by content (dtype, shape, bytes) and named after the pool parameter they
hold (by tensor identity when the exporter kept the name, else by content: ``NAME`` or ``NAME.T`` for
a folded transpose), so each instance's and stitch's weight is stored once.

Cost: ONNX Runtime runs an ``If`` branch as a subgraph (an execution frame per call, fed every
outer-scope tensor the branch uses), plus a few microseconds per not-selected ``If``.
benchmarks/switchable.py measures it per descendant against its single export.

``metadata_props`` carry the ``descendants`` table (index, key, params, FLOPs, top-1, latency on the
target) as JSON, plus the preprocessing of the single-descendant exports. The single-descendant models
the branches come from are kept (``singles_dir``) to validate the switchable file against.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lgp_edge.errors import UsageError
from lgp_edge.specs import LatencyRecord, ValidationReport

log = logging.getLogger(__name__)

INPUT, OUTPUT, SELECTOR = "input", "logits", "descendant"
OUT_OF_RANGE = "descendant index out of range"  # in the name of the node that fails for a bad index
DEFAULT_OPSET = 17
FUSED_ATTN_MIN_OPSET = 17  # below it timm's fused attention does not export through TorchScript


@dataclass(frozen=True)
class SwitchEntry:
    """One descendant inside a switchable artifact (a row of its ``descendants`` table)."""

    index: int  # value of the ``descendant`` input that runs it
    key: str  # DescendantSpec.key
    params: int  # parameters it runs (shared ones counted once)
    flops: int  # FLOPs at batch 1 (fvcore convention)
    top1: float | None  # validation top-1 in percent (None: pool not evaluated)
    latency_ms: float | None = None  # p90 latency on the export's target (None: unknown)
    latency_source: str | None = None  # "measured" or "predicted"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "key": self.key, "params": self.params, "flops": self.flops, "top1": self.top1,
                "latency_ms": self.latency_ms, "latency_source": self.latency_source}


@dataclass(frozen=True)
class SwitchableOnnx:
    """A written switchable ONNX file and what it holds."""

    path: Path  # the .onnx file
    entries: tuple[SwitchEntry, ...]  # the descendants, in index order
    opset: int  # ONNX opset
    input_shape: tuple[int, ...]  # static image input shape (batch, C, H, W)
    initializers: int  # tensors stored (after deduplication)
    initializer_bytes: int  # bytes of stored tensors
    branch_initializer_bytes: int  # bytes the branches' initializers would take without sharing
    singles: tuple[tuple[str, Path], ...] = ()  # (key, single-descendant ONNX the branch came from)

    def single(self, key: str) -> Path:
        return dict(self.singles)[key]


@dataclass(frozen=True)
class SwitchValidation:
    """One descendant of a switchable artifact checked against torch and against its single export."""

    key: str  # descendant key
    index: int  # selector value
    runtime: str  # "onnxruntime" or "openvino"
    vs_torch: ValidationReport  # switchable output vs the torch descendant
    vs_single_max_abs_diff: float | None  # max |switchable - single-descendant ONNX| in the same runtime

    @property
    def passed(self) -> bool:
        return self.vs_torch.passed and (self.vs_single_max_abs_diff is None
                                          or self.vs_single_max_abs_diff <= (self.vs_torch.atol or 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "index": self.index, "runtime": self.runtime, "passed": self.passed,
                "vs_single_max_abs_diff": self.vs_single_max_abs_diff, "vs_torch": self.vs_torch.to_dict()}


# ------------------------------------------------------------------------------------------------ selection
def switch_entries(pool: Any, manifest: Any, keys: Sequence[str],
                   latencies: Mapping[str, LatencyRecord] | None = None) -> tuple[SwitchEntry, ...]:
    """The table rows for ``keys`` (in that order); unknown, duplicate or no keys raise UsageError."""
    keys = [k.strip() for k in keys if k.strip()]
    if not keys:
        raise UsageError("the switchable selection is empty; name descendants with --descendants KEY,KEY… "
                         "(see 'lgp-edge pool info') or use --front")
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise UsageError(f"descendant '{dup[0]}' is named twice in --descendants")
    records = {r.key: r for r in manifest.descendants}
    out = []
    for i, key in enumerate(keys):
        spec = pool.find(key)  # UsageError for an unknown key
        rec = records.get(key) or pool.record(spec)
        lat = (latencies or {}).get(key)
        out.append(SwitchEntry(index=i, key=key, params=rec.params, flops=rec.flops, top1=rec.top1,
                               latency_ms=lat.p90_ms if lat is not None else None,
                               latency_source=lat.source if lat is not None else None))
    return tuple(out)


# ------------------------------------------------------------------------------------------------ building
def export_single(model: torch.nn.Module, path: Path, *, opset: int, input_shape: tuple[int, ...],
                  fold: bool = True) -> Any:
    """One descendant through the TorchScript exporter; returns the ModelProto.

    ``fold``: constant folding (the default): weight transposes and shape arithmetic are computed now,
    so the branch runs no per-call Transpose of a weight (ONNX Runtime does not fold outer-scope
    initializers inside an ``If`` branch: without folding, a branch was ~40% slower). Folded tensors
    lose their parameter names; ``_canonical_names`` finds them again by content.
    """
    import onnx

    from lgp_edge.export.onnx import _quiet_loggers

    blocks = [b for s in model.stages for b in s]
    fused = [getattr(b.attn, "fused_attn", None) for b in blocks]
    if opset < FUSED_ATTN_MIN_OPSET:
        model.set_fused_attn(False)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                _quiet_loggers("torch.onnx"), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (torch.zeros(input_shape),), str(path), input_names=[INPUT],
                              output_names=[OUTPUT], opset_version=opset, dynamo=False,
                              do_constant_folding=fold, keep_initializers_as_inputs=False)
    finally:
        for b, f in zip(blocks, fused):
            b.attn.fused_attn = f
    return onnx.load(str(path))


def _digest_array(arr: np.ndarray) -> tuple[str, tuple[int, ...], str]:
    arr = np.ascontiguousarray(arr)
    return arr.dtype.str, tuple(arr.shape), hashlib.sha256(arr.tobytes()).hexdigest()


def _digest(t: Any) -> tuple[str, tuple[int, ...], str]:
    from onnx import numpy_helper

    return _digest_array(numpy_helper.to_array(t))


def _canonical_names(pool: torch.nn.Module) -> dict[tuple[str, tuple[int, ...], str], str]:
    """Content digest -> pool parameter name, for each parameter and (2-D ones) its transpose (``NAME.T``)."""
    out: dict[tuple[str, tuple[int, ...], str], str] = {}
    for name, p in pool.named_parameters():
        arr = p.detach().cpu().numpy()
        out.setdefault(_digest_array(arr), name)
        if arr.ndim == 2:
            out.setdefault(_digest_array(arr.T), f"{name}.T")
    return out


def _branch(proto: Any, prefix: str, rename: Mapping[str, str]) -> Any:
    """The single model's graph as an If branch: no inputs, initializers replaced by outer-scope names.

    Intermediate values and nodes get short names (``d3/v17``, ``d3/n17``): ONNX needs them unique
    across all branches, and the exporter's long scope names would add ~25% to a small model's file.
    """
    from onnx import helper

    g = proto.graph
    short: dict[str, str] = {}

    def name(v: str) -> str:
        if v == "" or v == INPUT:
            return v
        if v in rename:
            return rename[v]
        if v not in short:
            short[v] = f"{prefix}v{len(short)}"
        return short[v]

    nodes = []
    for i, n in enumerate(g.node):
        if any(a.type in (a.GRAPH, a.GRAPHS) for a in n.attribute):
            raise ValueError(f"node {n.name} ({n.op_type}) has a subgraph; the branch builder handles flat graphs")
        m = type(n)()
        m.CopyFrom(n)
        m.name = f"{prefix}n{i}"
        m.doc_string = ""
        m.input[:] = [name(v) for v in n.input]
        m.output[:] = [name(v) for v in n.output]
        nodes.append(m)
    out = type(g.output[0])()
    out.CopyFrom(g.output[0])
    out.name = name(g.output[0].name)
    return helper.make_graph(nodes, prefix.rstrip("/"), [], [out])


def _main_nodes(branches: list[Any], batch: int, classes: int) -> list[Any]:
    """One ``If(descendant == i) then <branch i> else zeros`` per descendant, summed; an error outside ``0..n-1``.

    Every branch sits directly below the main graph, where the weights are. ONNX Runtime (1.32 here)
    runs kernels that read outer-scope weights one level down nearly as fast as in a single model, but
    not deeper: with a balanced tree of ``If`` nodes (weights two or more levels down) the demo pool's
    descendants ran 1.3-1.5x slower than their single exports, side by side 1.03-1.15x for a
    4-descendant file (measured while building this; benchmarks/switchable.py has the final figures).
    The price is one cheap ``If`` per other descendant (its else branch is a constant), ~5-7 us each.
    """
    from onnx import TensorProto, helper, numpy_helper

    n = len(branches)
    zeros = numpy_helper.from_array(np.zeros((batch, classes), dtype=np.float32), "zeros")
    nodes, outs = [], []
    if n == 1:  # nothing to select: the descendant's nodes go straight into the main graph
        nodes, outs = list(branches[0].node), [branches[0].output[0].name]
    for i, branch in enumerate(branches if n > 1 else []):
        tag = f"select_{i}"
        other = helper.make_graph(
            [helper.make_node("Constant", [], [f"{tag}/zeros"], name=f"{tag}/zeros", value=zeros)], f"{tag}_other",
            [], [helper.make_tensor_value_info(f"{tag}/zeros", TensorProto.FLOAT, [batch, classes])])
        nodes += [helper.make_node("Constant", [], [f"{tag}/index"], name=f"{tag}/index",
                                   value=numpy_helper.from_array(np.array([i], dtype=np.int64))),
                  helper.make_node("Equal", [SELECTOR, f"{tag}/index"], [f"{tag}/is"], name=f"{tag}/Equal"),
                  helper.make_node("Squeeze", [f"{tag}/is"], [f"{tag}/cond"], name=f"{tag}/Squeeze"),
                  helper.make_node("If", [f"{tag}/cond"], [f"{tag}/logits"], name=f"{tag}/If", then_branch=branch,
                                   else_branch=other)]
        outs.append(f"{tag}/logits")
    # Outside 0..n-1 the output Reshape is asked for a shape with one element more than the logits have:
    # ONNX Runtime refuses it, so the call fails and its message names this node. OpenVINO's converter
    # keeps the declared output shape and skips that check, so the logits are also set to NaN there.
    const = [("zero", np.array([0], dtype=np.int64)), ("count", np.array([n], dtype=np.int64)),
             ("shape", np.array([batch, classes], dtype=np.int64)),
             ("bad_shape", np.array([batch * classes + 1, 1], dtype=np.int64)),
             ("nan", np.full((batch, classes), np.nan, dtype=np.float32))]
    nodes += [helper.make_node("Constant", [], [f"range/{k}"], name=f"range/{k}", value=numpy_helper.from_array(v))
              for k, v in const]
    nodes += [helper.make_node("Sum", outs, ["selected/logits"], name="selected/Sum"),
              helper.make_node("GreaterOrEqual", [SELECTOR, "range/zero"], ["range/ge"], name="range/GreaterOrEqual"),
              helper.make_node("Less", [SELECTOR, "range/count"], ["range/lt"], name="range/Less"),
              helper.make_node("And", ["range/ge", "range/lt"], ["range/valid"], name="range/And"),
              helper.make_node("Where", ["range/valid", "selected/logits", "range/nan"], ["range/logits"],
                               name="range/Where"),
              helper.make_node("Where", ["range/valid", "range/shape", "range/bad_shape"], ["range/out_shape"],
                               name="range/WhereShape"),
              helper.make_node("Reshape", ["range/logits", "range/out_shape"], [OUTPUT],
                               name=f"{OUT_OF_RANGE} (the '{SELECTOR}' input must be 0..{n - 1})")]
    return nodes


def build_switchable_onnx(pool: Any, entries: Sequence[SwitchEntry], path: str | Path, *,
                          input_shape: tuple[int, ...], opset: int = DEFAULT_OPSET,
                          metadata: Mapping[str, str] | None = None, singles_dir: str | Path | None = None,
                          reporter: Any = None) -> SwitchableOnnx:
    """Write one ONNX file that runs ``entries[i]`` when fed ``descendant = [i]``; weights stored once.

    ``singles_dir``: where the single-descendant exports (the branches' sources) are kept, as
    ``<index>.onnx``; without it they are written to a temporary directory and removed.
    """
    import tempfile

    import onnx
    from onnx import TensorProto, helper

    if not entries:
        raise UsageError("a switchable model needs at least one descendant")
    path = Path(path)
    canonical = {id(p): n for n, p in pool.named_parameters()}
    by_content = _canonical_names(pool)
    stored: dict[tuple[int, tuple[int, ...], str], Any] = {}  # content -> initializer (canonical name)
    branches, singles, branch_bytes = [], [], 0
    ir_version, opsets = None, None
    tmp = tempfile.TemporaryDirectory(prefix="lgp-switch-") if singles_dir is None else None
    sdir = Path(tmp.name if tmp is not None else singles_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    task_ctx = reporter.task(f"switchable onnx: export {len(entries)} descendants", total=len(entries)) \
        if reporter is not None else contextlib.nullcontext()
    try:
        with task_ctx as task:
            for e in entries:
                model = pool.descendant(e.key).eval()
                own = {n: canonical.get(id(p)) for n, p in model.named_parameters()}
                single = sdir / f"{e.index}.onnx"
                proto = export_single(model, single, opset=opset, input_shape=input_shape)
                ir_version, opsets = proto.ir_version, list(proto.opset_import)
                rename = {}
                for t in proto.graph.initializer:
                    branch_bytes += t.ByteSize()
                    digest = _digest(t)
                    if digest not in stored:
                        kept = type(t)()
                        kept.CopyFrom(t)
                        kept.name = own.get(t.name) or by_content.get(digest) or f"const.{digest[2][:16]}"
                        stored[digest] = kept
                    rename[t.name] = stored[digest].name
                branches.append(_branch(proto, f"d{e.index}/", rename))
                singles.append((e.key, single))
                if task is not None:
                    task.advance()
        names = [t.name for t in stored.values()]
        if len(set(names)) != len(names):
            raise ValueError("two different tensors got the same canonical name")
        classes = branches[0].output[0].type.tensor_type.shape.dim[-1].dim_value
        batch = input_shape[0]
        graph = helper.make_graph(
            _main_nodes(branches, batch, classes), "lgp_edge_switchable",
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, list(input_shape)),
             helper.make_tensor_value_info(SELECTOR, TensorProto.INT64, [1])],
            [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [batch, classes])],
            initializer=sorted(stored.values(), key=lambda t: t.name))
        proto = helper.make_model(graph, opset_imports=opsets, producer_name="lgp-edge")
        proto.ir_version = ir_version
        meta = dict(metadata or {})
        meta.update({"descendants": json.dumps([e.to_dict() for e in entries], allow_nan=False),
                     "descendant_input": SELECTOR,
                     "descendant_input_doc": f"int64 tensor of shape [1]: the 'index' of a row of 'descendants'; "
                                             f"outside 0..{len(entries) - 1} the run fails in ONNX Runtime ({OUT_OF_RANGE}); "
                                             "OpenVINO returns NaN logits"})
        for k, v in meta.items():
            p = proto.metadata_props.add()
            p.key, p.value = k, v
        proto.doc_string = f"Learngene Pool: {len(entries)} descendants switchable at run time by '{SELECTOR}'"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(path))
    finally:
        if tmp is not None:
            tmp.cleanup()
    init_bytes = sum(t.ByteSize() for t in stored.values())
    log.info("switchable ONNX %s: %d descendants, %d tensors, %.2f MB (branches alone: %.2f MB)", path, len(entries),
             len(stored), init_bytes / 1e6, branch_bytes / 1e6)
    return SwitchableOnnx(path=path, entries=tuple(entries), opset=opset, input_shape=tuple(input_shape),
                          initializers=len(stored), initializer_bytes=init_bytes,
                          branch_initializer_bytes=branch_bytes,
                          singles=tuple(singles) if singles_dir is not None else ())


# ------------------------------------------------------------------------------------------------ running
def ort_session(path: str | Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def selector(index: int) -> np.ndarray:
    """The value of the ``descendant`` input that selects row ``index``."""
    return np.array([index], dtype=np.int64)


def open_switchable(path: str | Path, runtime: str, threads: int = 0) -> Any:
    """``fn(images, index) -> logits`` for a switchable ONNX in ONNX Runtime or OpenVINO (loaded once)."""
    if runtime == "onnxruntime":
        sess = ort_session(path, threads)
        return lambda x, i: sess.run([OUTPUT], {INPUT: x, SELECTOR: selector(i)})[0]
    if runtime == "openvino":
        compiled = openvino_compiled(path, threads)
        request = compiled.create_infer_request()
        out = compiled.output(OUTPUT)
        return lambda x, i: request.infer({INPUT: x, SELECTOR: selector(i)})[out]
    raise ValueError(f"unknown runtime {runtime}")


def single_runner(path: str | Path, runtime: str, threads: int = 0) -> Any:
    """``fn(images) -> logits`` for a single-descendant ONNX."""
    if runtime == "onnxruntime":
        sess = ort_session(path, threads)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    compiled = openvino_compiled(path, threads)
    request = compiled.create_infer_request()
    out = compiled.outputs[0]
    return lambda x: request.infer({0: x})[out]


def openvino_compiled(path: str | Path, threads: int = 0) -> Any:
    """Compiled on the CPU in f32 (this CPU would otherwise run bf16)."""
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(core.read_model(str(path)), "CPU", cfg)


def validate_switchable_onnx(sw: SwitchableOnnx, pool: Any, images: np.ndarray, labels: np.ndarray, *, data: str,
                             synthetic: bool, runtimes: Sequence[str] = ("onnxruntime", "openvino"),
                             tolerance: Any = None, reporter: Any = None) -> tuple[SwitchValidation, ...]:
    """Each descendant: switchable output vs torch (fp32 tolerance) and vs its single export, per runtime."""
    from lgp_edge.export.base import ValidationSet
    from lgp_edge.export.validate import TOLERANCES, compare, reference_logits, run_static

    tol = tolerance or TOLERANCES["fp32"]
    batch = sw.input_shape[0]
    singles = dict(sw.singles)
    refs = {e.key: reference_logits(pool.descendant(e.key).eval(), images) for e in sw.entries}
    out = []
    for rt in runtimes:
        run = open_switchable(sw.path, rt)
        for e in sw.entries:
            vset = ValidationSet(images=images, labels=labels, reference=refs[e.key], data=data, synthetic=synthetic)
            got = run_static(lambda x, i=e.index, f=run: f(x, i), images, batch, reporter, f"switchable {rt} {e.key}")
            single_diff = None
            if e.key in singles:
                single = run_static(single_runner(singles[e.key], rt), images, batch)
                single_diff = float(np.abs(got - single).max()) if np.isfinite(got).all() else math.inf
            note = f"switchable, {rt} CPU, fp32" + (" (f32 inference hint)" if rt == "openvino" else "")
            v = SwitchValidation(key=e.key, index=e.index, runtime=rt, vs_torch=compare(got, vset, tol, note=note),
                                 vs_single_max_abs_diff=single_diff)
            if not v.passed:
                log.warning("switchable %s: descendant %s failed (%s; vs single %s)", rt, e.key, v.vs_torch.note,
                            single_diff)
            out.append(v)
    return tuple(out)


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """The ``descendants`` table of a switchable ONNX file (what an app reads to pick an index)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in m.metadata_props}
    if "descendants" not in props:
        raise UsageError(f"'{path}' is not a switchable lgp-edge model (no 'descendants' metadata)")
    return json.loads(props["descendants"])
