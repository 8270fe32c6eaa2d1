"""ONNX: the descendant as a self-contained, simplified, fully checked ONNX file with its preprocessing.

Opset 17 and above go through the dynamo exporter (``torch.export``); below 17 the dynamo exporter
cannot lower LayerNormalization and silently keeps opset 18, so older opsets (TensorRT 8.2: <= 13) use
the TorchScript exporter with timm's fused attention off, which decomposes LayerNorm into
ReduceMean/Sub/Pow/Sqrt/Div. Either way the result is checked to carry exactly the requested opset.
The input is static (the profile's batch) unless ``--dynamic-batch``. ``metadata_props`` carry the
descendant key, pool id, class labels, mean/std and input layout, so an app can read its preprocessing
from the model file itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from lgp_edge.errors import LgpEdgeError
from lgp_edge.export.base import ExportContext, check_opset, register, require
from lgp_edge.specs import DeviceProfile, ExportArtifact, TargetSpec

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "logits"
DYNAMO_MIN_OPSET = 17


class ExportError(LgpEdgeError):
    """The exporter produced something other than what was asked (wrong opset, failed check)."""


def _torch_export(model: torch.nn.Module, path: Path, *, opset: int, input_shape: tuple[int, ...],
                  dynamic_batch: bool) -> None:
    example = torch.zeros(input_shape)
    if dynamic_batch and input_shape[0] == 1:
        example = torch.zeros((2, *input_shape[1:]))  # batch 1 would be specialised away
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
            _quiet_loggers("torch.onnx", "onnxscript", "torch.export"):
        warnings.simplefilter("ignore")
        if opset >= DYNAMO_MIN_OPSET:
            dyn = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
            torch.onnx.export(model, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                              opset_version=opset, dynamo=True, dynamic_shapes=dyn, verbose=False,
                              report=False, optimize=True, external_data=False)
        else:
            fused = [getattr(b.attn, "fused_attn", None) for s in model.stages for b in s]
            model.set_fused_attn(False)
            try:
                axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(model, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                                  opset_version=opset, dynamo=False, dynamic_axes=axes, do_constant_folding=True)
            finally:
                blocks = [b for s in model.stages for b in s]
                for b, f in zip(blocks, fused):
                    b.attn.fused_attn = f
    log.debug("torch.onnx.export output: %s", sink.getvalue()[-2000:])


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Any:
    """Silence the exporters' own chatter (opset conversion notes) for the duration of an export."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def onnx_opset(model: Any) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def export_onnx(model: torch.nn.Module, path: Path, *, opset: int, input_shape: tuple[int, ...], dynamic_batch: bool,
                metadata: dict[str, str]) -> Path:
    """Export, simplify (onnxslim), check (full) and save ``model`` as one self-contained ONNX file."""
    import onnx
    import onnxslim

    model = model.eval()
    with tempfile.TemporaryDirectory(prefix="lgp-onnx-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            _torch_export(model, raw, opset=opset, input_shape=input_shape, dynamic_batch=dynamic_batch)
        except Exception as exc:  # the exporters raise many types; say which step failed
            raise ExportError(f"torch.onnx.export failed at opset {opset}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc
        proto = onnx.load(str(raw))  # also pulls in any external data file
    got = onnx_opset(proto)
    if got != opset:
        raise ExportError(f"the ONNX exporter produced opset {got}, not the requested {opset}")
    with contextlib.redirect_stdout(io.StringIO()):
        slim = onnxslim.slim(proto)
    if slim is not None and onnx_opset(slim) == opset:
        proto = slim
    else:
        log.warning("onnxslim did not return a model at opset %d; keeping the unsimplified graph", opset)
    del proto.metadata_props[:]
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "lgp-edge"
    proto.producer_version = metadata.get("lgp_edge_version", "")
    proto.doc_string = f"Learngene Pool descendant {metadata.get('descendant_key', '')}"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported model: {str(exc).splitlines()[0][:300]}") from exc
    onnx.save(proto, str(path))
    return path


def io_spec(path: Path) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
    """Names, shapes and element types of an ONNX file's inputs and outputs."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def _one(v: Any) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        return {"name": v.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    return tuple(_one(v) for v in m.graph.input), tuple(_one(v) for v in m.graph.output)


def versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from lgp_edge import __version__

    out = {"lgp-edge": __version__, "torch": torch.__version__}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            pass
    return out


def validate_onnx_file(ctx: ExportContext, path: Path, what: str) -> Any:
    from lgp_edge.export.validate import TOLERANCES, compare, onnxruntime_outputs

    out = onnxruntime_outputs(str(path), ctx.validation.images, ctx.profile.batch, ctx.dynamic_batch, ctx.reporter,
                              what)
    return compare(out, ctx.validation, TOLERANCES["fp32"], note="ONNX Runtime CPU, fp32")


class OnnxExporter:
    format = "onnx"
    package = "onnx"
    extra = "export"

    def check(self, profile: DeviceProfile, target: TargetSpec, opset: int | None) -> None:
        for pkg in ("onnx", "onnxslim", "onnxscript", "onnxruntime"):
            require(pkg, self.extra, "ONNX export")
        check_opset(opset, target)

    def export(self, ctx: ExportContext) -> list[ExportArtifact]:
        from lgp_edge.fileio import sha256_file

        opset = ctx.default_opset()
        with ctx.reporter.task(f"onnx: export opset {opset}", total=1) as task:
            path = ctx.onnx_file(opset)
            task.advance()
        inputs, outputs = io_spec(path)
        report = validate_onnx_file(ctx, path, "onnx")
        note = "fp32 ONNX; runtimes may run it in lower precision" if ctx.profile.precision != "fp32" else ""
        return [ExportArtifact(path=path.name, format=self.format, profile=ctx.profile.name,
                               descendant_key=ctx.record.key, sha256=sha256_file(path), inputs=inputs,
                               outputs=outputs, validation=report,
                               versions=versions("onnx", "onnxslim", "onnxscript", "onnxruntime"),
                               precision="fp32", note=note)]


register(OnnxExporter())
