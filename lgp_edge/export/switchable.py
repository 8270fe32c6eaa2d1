"""Switchable ONNX: every chosen descendant of a pool in one model file, each weight stored once.

The model has two inputs: ``input`` (the image batch, as every lgp-edge ONNX) and ``descendant`` (int64,
shape ``[1]``): the row of the ``descendants`` table to run. The graph holds one ``If`` per descendant,
side by side, each directly below the main graph::

    logits_i = If(descendant == i) then <descendant i> else zeros        (i = 0..n-1)
    valid    = 0 <= descendant < n
    logits   = Gather(Sum(logits_0..logits_n-1), rows 0..batch-1 if valid else row batch, axis 0)
               + (0 if valid else NaN)

so exactly one branch computes, and in ONNX Runtime an index outside ``0..n-1`` makes the run fail (the
Gather's row does not exist; the error names the node "descendant index out of range ..."), never logits
whose argmax would be a silent class 0, nor another descendant's answer. OpenVINO's Gather fills a missing row
with zeros instead of failing: there the logits are NaN, in their declared shape. (Side by side rather
than a nested tree: see ``switchable_graph.main_nodes``.)

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
the branches come from are kept (``singles_dir``) to validate the switchable file against
(``lgp_edge.export.switchable_check``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lgp_edge.errors import UsageError
from lgp_edge.export.switchable_graph import (
    INPUT,
    OUT_OF_RANGE,
    OUTPUT,
    SELECTOR,
    Digest,
    branch_graph,
    canonical_names,
    digest_tensor,
    main_nodes,
)
from lgp_edge.export.switchable_table import SwitchEntry
from lgp_edge.progress import NULL
from lgp_edge.specs import MB

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


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
class Branches:
    """The descendants' graphs as branches, and the weights they share."""

    graphs: tuple[Any, ...]  # one If branch (GraphProto) per descendant, in index order
    initializers: tuple[Any, ...]  # the stored tensors, each once, under its canonical name
    singles: tuple[tuple[str, Path], ...]  # (key, single-descendant ONNX file)
    branch_bytes: int  # bytes the branches' initializers would take without sharing
    ir_version: int  # of the single exports
    opsets: tuple[Any, ...]  # opset imports of the single exports


def export_single(model: torch.nn.Module, path: Path, *, opset: int, input_shape: tuple[int, ...]) -> Any:
    """One descendant through the TorchScript exporter (``export_onnx``'s profiler export); the ModelProto.

    Constant folding computes weight transposes and shape arithmetic now, so the branch runs no per-call
    Transpose of a weight (ONNX Runtime does not fold outer-scope initializers inside an ``If`` branch:
    without folding, a branch was ~40% slower). Folded tensors lose their parameter names;
    ``canonical_names`` finds them again by content.
    """
    import onnx

    from lgp_edge.export.onnx_export import export_onnx

    export_onnx(model, torch.zeros(input_shape), path, opset=opset)
    return onnx.load(str(path))


def _share(proto: Any, stored: dict[Digest, Any], own: Mapping[str, str | None],
           by_content: Mapping[Digest, str]) -> tuple[dict[str, str], int]:
    """Add ``proto``'s initializers to ``stored`` (by content, under canonical names); (renames, their bytes)."""
    rename, nbytes = {}, 0
    for t in proto.graph.initializer:
        nbytes += t.ByteSize()
        digest = digest_tensor(t)
        if digest not in stored:
            kept = type(t)()
            kept.CopyFrom(t)
            kept.name = own.get(t.name) or by_content.get(digest) or f"const.{digest[2][:16]}"
            stored[digest] = kept
        rename[t.name] = stored[digest].name
    return rename, nbytes


def _branches(pool: Any, entries: Sequence[SwitchEntry], sdir: Path, *, opset: int, input_shape: tuple[int, ...],
              reporter: Any) -> Branches:
    """Export each descendant to ``sdir/<index>.onnx`` and turn it into a branch reading shared weights."""
    canonical = {id(p): n for n, p in pool.named_parameters()}
    by_content = canonical_names(pool)
    stored: dict[Digest, Any] = {}  # content -> initializer (canonical name)
    graphs, singles, branch_bytes, proto = [], [], 0, None
    with reporter.task(f"switchable onnx: export {len(entries)} descendants", total=len(entries)) as task:
        for e in entries:
            model = pool.descendant(e.key).eval()
            own = {n: canonical.get(id(p)) for n, p in model.named_parameters()}
            single = sdir / f"{e.index}.onnx"
            proto = export_single(model, single, opset=opset, input_shape=input_shape)
            rename, nbytes = _share(proto, stored, own, by_content)
            branch_bytes += nbytes
            graphs.append(branch_graph(proto, f"d{e.index}/", rename))
            singles.append((e.key, single))
            task.advance()
    names = [t.name for t in stored.values()]
    if len(set(names)) != len(names):
        raise ValueError("two different tensors got the same canonical name")
    return Branches(graphs=tuple(graphs), initializers=tuple(sorted(stored.values(), key=lambda t: t.name)),
                    singles=tuple(singles), branch_bytes=branch_bytes, ir_version=proto.ir_version,
                    opsets=tuple(proto.opset_import))


def _model(b: Branches, entries: Sequence[SwitchEntry], input_shape: tuple[int, ...],
           metadata: Mapping[str, str] | None) -> Any:
    """The switchable ModelProto: inputs, the selecting main graph, shared weights, metadata; checked."""
    import onnx
    from onnx import TensorProto, helper

    classes = b.graphs[0].output[0].type.tensor_type.shape.dim[-1].dim_value
    batch = input_shape[0]
    graph = helper.make_graph(
        main_nodes(list(b.graphs), batch, classes), "lgp_edge_switchable",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, list(input_shape)),
         helper.make_tensor_value_info(SELECTOR, TensorProto.INT64, [1])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [batch, classes])],
        initializer=list(b.initializers))
    proto = helper.make_model(graph, opset_imports=list(b.opsets), producer_name="lgp-edge")
    proto.ir_version = b.ir_version
    meta = dict(metadata or {})
    meta.update({"descendants": json.dumps([e.to_dict() for e in entries], allow_nan=False),
                 "descendant_input": SELECTOR,
                 "descendant_input_doc": f"int64 tensor of shape [1]: the 'index' of a row of 'descendants'; "
                                         f"outside 0..{len(entries) - 1} the run fails in ONNX Runtime "
                                         f"({OUT_OF_RANGE}); OpenVINO returns NaN logits (and reads the index "
                                         "as int32)"})
    for k, v in meta.items():
        p = proto.metadata_props.add()
        p.key, p.value = k, v
    proto.doc_string = f"Learngene Pool: {len(entries)} descendants switchable at run time by '{SELECTOR}'"
    onnx.checker.check_model(proto, full_check=True)
    return proto


def build_switchable_onnx(pool: Any, entries: Sequence[SwitchEntry], path: str | Path, *,
                          input_shape: tuple[int, ...], opset: int = DEFAULT_OPSET,
                          metadata: Mapping[str, str] | None = None, singles_dir: str | Path | None = None,
                          reporter: Any = None) -> SwitchableOnnx:
    """Write one ONNX file that runs ``entries[i]`` when fed ``descendant = [i]``; weights stored once.

    ``singles_dir``: where the single-descendant exports (the branches' sources) are kept, as
    ``<index>.onnx``; without it they are written to a temporary directory and removed.
    """
    import onnx

    if not entries:
        raise UsageError("a switchable model needs at least one descendant")
    path = Path(path)
    tmp = tempfile.TemporaryDirectory(prefix="lgp-switch-") if singles_dir is None else None
    sdir = Path(tmp.name if tmp is not None else singles_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    try:
        b = _branches(pool, entries, sdir, opset=opset, input_shape=input_shape, reporter=reporter or NULL)
        onnx.save(_model(b, entries, input_shape, metadata), str(path))
    finally:
        if tmp is not None:
            tmp.cleanup()
    init_bytes = sum(t.ByteSize() for t in b.initializers)
    log.info("switchable ONNX %s: %d descendants, %d tensors, %.2f MB (branches alone: %.2f MB)", path, len(entries),
             len(b.initializers), init_bytes / MB, b.branch_bytes / MB)
    return SwitchableOnnx(path=path, entries=tuple(entries), opset=opset, input_shape=tuple(input_shape),
                          initializers=len(b.initializers), initializer_bytes=init_bytes,
                          branch_initializer_bytes=b.branch_bytes,
                          singles=b.singles if singles_dir is not None else ())
