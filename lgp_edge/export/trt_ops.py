"""Which ONNX operators TensorRT's ONNX parser imports, per TensorRT version (the operator-support check).

Sources: onnx-tensorrt ``docs/operators.md`` and ``docs/Changelog.md``. TensorRT 8.0 through 8.4 parse opsets
<= 13; 8.4's table is its release-8.4 ``operators.md``, 8.2's (JetPack 4.6) the same without Xor (added in 8.4,
Changelog), 8.0's also without the eight operators 8.2 EA added (Einsum, IsNaN, GatherND, Scatter,
ScatterElements, ScatterND, Sign, Round); Shrink, which the changelog also names for 8.4, stays out as that
release's ``operators.md`` lists it unsupported. TensorRT 8.5/8.6 parse opsets <= 17; 8.5 adds the changelog's
GridSample, MeanVarianceNormalization, Mod, NonZero, RandomNormal, RoiAlign and Trilu, 8.6 GroupNormalization,
LayerNormalization and IsInf (and OneHot, Reciprocal, CastLike). TensorRT 10 parses opsets 9..20; its list is
the 10.x table without the opset-23/24 operators (Attention, RMSNormalization, RotaryEmbedding, TensorScatter)
that 10.0 predates.
A version between known tables uses the nearest older one.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TRT84_OPS = _names("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum
Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GRU HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg
NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomUniform RandomUniformLike Range
ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
Relu Reshape Resize ReverseSequence RNN Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu
Tile TopK Transpose Unsqueeze Upsample Where Xor
""")

_TRT82_OPS = _TRT84_OPS - {"Xor"}
_TRT80_OPS = _TRT82_OPS - _names("Einsum IsNaN GatherND Scatter ScatterElements ScatterND Sign Round")

_TRT85_OPS = _TRT84_OPS | _names("GridSample MeanVarianceNormalization Mod NonZero RandomNormal RoiAlign Trilu")

_TRT86_OPS = _TRT85_OPS | _names("GroupNormalization LayerNormalization OneHot Reciprocal IsInf CastLike")

_TRT10_OPS = _TRT86_OPS | _names("""
BlackmanWindow DeformConv Gelu GridSample GroupNormalization HammingWindow HannWindow HardSwish Hardmax
MeanVarianceNormalization Mish RandomNormal RandomNormalLike RoiAlign STFT Shrink
""")

# (major, minor) -> (max opset, supported operators); sorted ascending
TABLES: tuple[tuple[tuple[int, int], int, frozenset[str]], ...] = (
    ((8, 0), 13, _TRT80_OPS),
    ((8, 2), 13, _TRT82_OPS),
    ((8, 4), 13, _TRT84_OPS),
    ((8, 5), 17, _TRT85_OPS),
    ((8, 6), 17, _TRT86_OPS),
    ((10, 0), 20, _TRT10_OPS),
)


def parse_trt_version(text: str) -> tuple[int, int] | None:
    """``"TensorRT 8.2 (JetPack 4.6)"`` -> (8, 2); None when no TensorRT version is named."""
    m = re.search(r"TensorRT\s*v?(\d+)(?:\.(\d+))?", text, re.IGNORECASE)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def table_for(version: tuple[int, int]) -> tuple[tuple[int, int], int, frozenset[str]]:
    """The support table of the newest known TensorRT release not newer than ``version``."""
    older = [t for t in TABLES if t[0] <= version]
    if not older:
        raise ValueError(f"TensorRT {version[0]}.{version[1]} is older than any known table (8.0)")
    return older[-1]


def unsupported_ops(op_types: list[str] | set[str], version: tuple[int, int]) -> list[str]:
    """ONNX operators (default domain) the TensorRT parser of ``version`` does not import, sorted."""
    _, _, ops = table_for(version)
    return sorted(set(op_types) - ops)


def max_opset(version: tuple[int, int]) -> int:
    return table_for(version)[1]


def _layernorm_paths(model: nn.Module) -> set[str]:
    from torch import nn

    return {name for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)}


def _module_path(node_name: str) -> str:
    """TorchScript scope of a node (``/stages.0/stages.0.0/norm1/ReduceMean``) -> ``stages.0.0.norm1``."""
    comps = [c for c in node_name.split("/")[1:-1] if c]
    if not comps:
        return ""
    last = comps[-1]
    if len(comps) >= 2 and not last.startswith(comps[-2] + "."):
        return f"{comps[-2]}.{last}"
    return last


def fp32_nodes(onnx_path: Path, model: nn.Module) -> list[str]:
    """Names of the nodes to keep in fp32: softmax, LayerNormalization, and every node of a decomposed LayerNorm."""
    import onnx

    norms = _layernorm_paths(model)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    keep = []
    for n in graph.node:
        if not n.name or n.op_type == "Constant":
            continue
        if n.op_type in ("Softmax", "LayerNormalization") or _module_path(n.name) in norms:
            keep.append(n.name)
    if not any(n.op_type in ("LayerNormalization", "ReduceMean") and n.name in keep for n in graph.node):
        log.warning("no LayerNorm nodes recognised in %s; only softmax is pinned to fp32", onnx_path.name)
    return keep
