#!/usr/bin/env python3
"""Build a TensorRT engine from an ONNX file, keeping named layers (LayerNorm, softmax) in fp32.

Copied beside the exported model as ``build_engine.py`` and run on the device by ``build_engine.sh`` when
that TensorRT's trtexec has no ``--layerPrecisions`` (before 8.4, e.g. JetPack 4.6's TensorRT 8.2);
lgp-edge also imports it to build ``model.plan`` on a machine that has TensorRT and a GPU.
Needs only the ``tensorrt`` Python package (JetPack's python3-libnvinfer). Written for Python >= 3.6
(JetPack 4.6 ships 3.6): no dataclasses, no walrus, no ``from __future__ import annotations``.

    python3 build_engine.py --onnx model.onnx --engine model.plan --precision fp16 --fp32-layers fp32_layers.txt

``--layer-info layers.json`` also writes each layer of the built engine with its precision (TensorRT's engine
inspector, 8.2 and later: what trtexec's ``--exportLayerInfo`` writes from 8.4).

int8 takes an explicitly quantized ONNX file (QuantizeLinear/DequantizeLinear, as lgp-edge's int8 export
writes): TensorRT builds its quantized layers in int8 from the scales in the file and the others in fp16;
no calibrator and no calibration cache are used, and an ONNX file without Q/DQ nodes is refused.
"""

import argparse
import sys


def read_layer_names(path):
    """One ONNX node name per line (blank lines and # comments ignored)."""
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def _matches(layer_name, names):
    # TensorRT names a layer after its ONNX node; nodes that expand to several layers get suffixes.
    for n in names:
        if layer_name == n or layer_name.startswith((n + "_", n + " ")):
            return True
    return False


def _has_qdq(network, trt):
    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


def _pin_fp32(network, fp32_layers, trt):
    """Keep the named layers (and their outputs) in fp32; the number pinned."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if _matches(layer.name, fp32_layers):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in (trt.float32, trt.float16):
                    layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def write_layer_info(serialized, path, logger, trt):
    """The built engine's layers with their precisions and formats, as JSON, from TensorRT's engine inspector."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    with open(path, "w", encoding="utf-8") as f:
        f.write(info)


def build_engine(onnx_path, engine_path, precision="fp16", fp32_layers=(), workspace_mb=1024, shapes=None,
                 log=print, layer_info=None):
    """Parse ``onnx_path``, build with ``precision``, keep ``fp32_layers`` in fp32, write ``engine_path``.

    ``shapes``: None for a static model, else (input name, min shape, opt shape, max shape).
    ``layer_info``: a path to write the engine's layer information to (TensorRT >= 8.2).
    Returns the number of layers pinned to fp32.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if hasattr(
        trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        ok = parser.parse(f.read())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT could not parse {}: {}".format(onnx_path, "; ".join(errors)))
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = workspace_mb << 20
    pinned = 0
    if precision in ("fp16", "int8"):
        if precision == "int8":
            if not _has_qdq(network, trt):
                raise ValueError("int8 needs an explicitly quantized ONNX file (QuantizeLinear/DequantizeLinear "
                                 "nodes); this one has none and no calibration cache is used")
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales from the Q/DQ nodes
        if not builder.platform_has_fast_fp16:
            log("warning: this GPU has no fast fp16; building anyway")
        config.set_flag(trt.BuilderFlag.FP16)
        pinned = _pin_fp32(network, fp32_layers, trt)
        if hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS"):
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        else:  # TensorRT < 8.4
            config.set_flag(trt.BuilderFlag.STRICT_TYPES)
    elif precision != "fp32":
        raise ValueError(f"precision must be fp16, int8 or fp32, not {precision}")
    if layer_info:
        if not hasattr(trt, "ProfilingVerbosity") or not hasattr(trt, "LayerInformationFormat"):
            raise ValueError("--layer-info needs TensorRT 8.2 or later (its engine inspector)")
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if shapes is not None:
        name, lo, opt, hi = shapes
        profile = builder.create_optimization_profile()
        profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    with open(engine_path, "wb") as f:
        f.write(serialized)
    log(f"wrote {engine_path} ({pinned} layers pinned to fp32)")
    if layer_info:
        write_layer_info(serialized, layer_info, logger, trt)
        log(f"wrote {layer_info} (each layer's precision)")
    return pinned


def _shape(text):
    return tuple(int(v) for v in text.lower().split("x"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", required=True, help="ONNX model")
    p.add_argument("--engine", required=True, help="engine file to write (model.plan)")
    p.add_argument("--precision", default="fp16", choices=("fp16", "fp32", "int8"),
                   help="int8: an explicitly quantized (Q/DQ) ONNX file; no calibration cache")
    p.add_argument("--fp32-layers", default=None, help="file of ONNX node names to keep in fp32")
    p.add_argument("--workspace-mb", type=int, default=1024)
    p.add_argument("--shapes", default=None, help="dynamic input: NAME:MINxC..:OPTx..:MAXx..")
    p.add_argument("--layer-info", default=None, metavar="FILE",
                   help="also write each layer's precision as JSON (TensorRT's engine inspector, >= 8.2)")
    args = p.parse_args(argv)
    shapes = None
    if args.shapes:
        name, lo, opt, hi = args.shapes.split(":")
        shapes = (name, _shape(lo), _shape(opt), _shape(hi))
    try:
        build_engine(args.onnx, args.engine, args.precision, read_layer_names(args.fp32_layers),
                     args.workspace_mb, shapes, layer_info=args.layer_info)
    except ImportError:
        print("build_engine.py: the tensorrt Python package is missing (JetPack: apt install python3-libnvinfer)",
              file=sys.stderr)
        return 3
    except (RuntimeError, ValueError) as exc:
        print(f"build_engine.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
