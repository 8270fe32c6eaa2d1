"""The graph of a switchable ONNX model: descendants as ``If`` branches that share one set of weights.

``branch_graph`` turns one descendant's exported graph into an ``If`` branch that reads its weights from
the outer scope; ``main_nodes`` puts the branches side by side below the main graph, selected by the
``descendant`` input, with an out-of-range index made an error (``lgp_edge.export.switchable`` describes
the model). Initializers are matched by content (``digest_tensor``) and named after the pool parameter
they hold (``canonical_names``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

INPUT, OUTPUT, SELECTOR = "input", "logits", "descendant"
OUT_OF_RANGE = "descendant index out of range"  # in the name of the node that fails for a bad index

Digest = tuple[str, tuple[int, ...], str]  # dtype, shape, sha256 of the bytes


def _digest_array(arr: np.ndarray) -> Digest:
    arr = np.ascontiguousarray(arr)
    return arr.dtype.str, tuple(arr.shape), hashlib.sha256(arr.tobytes()).hexdigest()


def digest_tensor(t: Any) -> Digest:
    from onnx import numpy_helper

    return _digest_array(numpy_helper.to_array(t))


def canonical_names(pool: torch.nn.Module) -> dict[Digest, str]:
    """Content digest -> pool parameter name, for each parameter and (2-D ones) its transpose (``NAME.T``)."""
    out: dict[Digest, str] = {}
    for name, p in pool.named_parameters():
        arr = p.detach().cpu().numpy()
        out.setdefault(_digest_array(arr), name)
        if arr.ndim == 2:
            out.setdefault(_digest_array(arr.T), f"{name}.T")
    return out


def branch_graph(proto: Any, prefix: str, rename: Mapping[str, str]) -> Any:
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


def main_nodes(branches: list[Any], batch: int, classes: int) -> list[Any]:
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
    # Outside 0..n-1 the logits' rows are gathered at row ``batch``, which does not exist: ONNX Runtime refuses the
    # Gather, so the call fails and its message names this node. OpenVINO's Gather fills such rows with zeros (its
    # specification) and keeps the declared [batch, classes] shape, so NaN is added there: never finite logits, and
    # never an empty array (a Reshape to an impossible shape made OpenVINO's output dynamic and, on a fresh infer
    # request, empty).
    const = [("zero", np.array([0], dtype=np.int64)), ("count", np.array([n], dtype=np.int64)),
             ("rows", np.arange(batch, dtype=np.int64)), ("no_rows", np.full(batch, batch, dtype=np.int64)),
             ("finite", np.zeros((1, 1), dtype=np.float32)), ("nan", np.full((1, 1), np.nan, dtype=np.float32))]
    nodes += [helper.make_node("Constant", [], [f"range/{k}"], name=f"range/{k}", value=numpy_helper.from_array(v))
              for k, v in const]
    nodes += [helper.make_node("Sum", outs, ["selected/logits"], name="selected/Sum"),
              helper.make_node("GreaterOrEqual", [SELECTOR, "range/zero"], ["range/ge"], name="range/GreaterOrEqual"),
              helper.make_node("Less", [SELECTOR, "range/count"], ["range/lt"], name="range/Less"),
              helper.make_node("And", ["range/ge", "range/lt"], ["range/valid"], name="range/And"),
              helper.make_node("Where", ["range/valid", "range/rows", "range/no_rows"], ["range/gather_rows"],
                               name="range/WhereRows"),
              helper.make_node("Gather", ["selected/logits", "range/gather_rows"], ["range/logits"], axis=0,
                               name=f"{OUT_OF_RANGE} (the '{SELECTOR}' input must be 0..{n - 1})"),
              helper.make_node("Where", ["range/valid", "range/finite", "range/nan"], ["range/poison"],
                               name="range/WherePoison"),
              helper.make_node("Add", ["range/logits", "range/poison"], [OUTPUT], name="range/Add")]
    return nodes
