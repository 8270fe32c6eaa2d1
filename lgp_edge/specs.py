"""Typed, frozen records passed between the stages of lgp-edge.

``*Spec`` is a declared input, ``*Record`` / ``*Report`` / ``*Artifact`` is something produced.
Every type round-trips through ``to_dict`` / ``from_dict`` (plain JSON types only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

SCHEMA_VERSION = 1  # bump when pool.json / manifest.json change incompatibly

# ----------------------------------------------------------------------------------------------- vocabulary
# The names of runtimes, precisions and export formats, spelled once: target and profile files, the CLI's
# choices and the exporters all check against these.
Runtime = Literal["torch", "onnxruntime", "openvino", "tensorrt", "coreml"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
Format = Literal["onnx", "tensorrt", "openvino", "coreml", "ort"]

RUNTIMES: tuple[Runtime, ...] = get_args(Runtime)  # what runs a model (profile --runtime, target 'runtime')
CPU_RUNTIMES: tuple[Runtime, ...] = ("torch", "onnxruntime", "openvino")  # their latency is per intra-op thread count
PRECISIONS: tuple[Precision, ...] = get_args(Precision)  # what a target computes in and a latency is measured in
PROFILE_PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")  # what an export can be asked for (no bf16)
# the formats written at only some of those: .ort (ONNX Runtime's CPU kernels), Core ML (its compute precisions)
FORMAT_PRECISIONS: dict[str, tuple[Precision, ...]] = {"ort": ("fp32", "int8"), "coreml": ("fp16", "fp32")}


def cpu_threads_words(threads: int | None, runtime: str | None) -> str:
    """", N thread(s)" beside a latency that is a CPU runtime's at a known thread count, else ""."""
    from lgp_edge.progress import counted

    return f", {counted(threads, 'thread')}" if threads and runtime in CPU_RUNTIMES else ""
BYTES_PER_VALUE: dict[Precision, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}  # weights and activations
FORMATS: tuple[Format, ...] = get_args(Format)  # export formats (--format, profile and target 'formats')
MB = float(1 << 20)  # a megabyte, everywhere in lgp-edge (budgets, memory, file sizes): 2^20 bytes, as device RAM
FORMAT_RUNTIME: dict[Format, Runtime] = {  # the runtime that runs each format's artifact
    "onnx": "onnxruntime", "ort": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt", "coreml": "coreml"}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def read_only(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A frozen record's mapping field: a read-only view of a copy, its lists made tuples."""
    return MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in mapping.items()})


def content_hash(obj: Any, length: int = 12) -> str:
    """A short sha256 of the canonical JSON of ``obj``."""
    text = json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


# ----------------------------------------------------------------------------------------- ancestry / pool
@dataclass(frozen=True)
class AncestrySpec(_Record):
    name: str  # timm model name (stock or registered by lgp_edge.models.ancestry)
    checkpoint: str | None  # weights file it was loaded from (None = random or hub)
    img_size: int  # square input side, pixels
    in_chans: int  # input channels
    num_classes: int  # classifier outputs
    embed_dim: int  # token width D of the ancestry
    depth: int  # number of transformer blocks
    num_heads: int  # attention heads
    patch_size: int  # patch side, pixels
    mlp_ratio: float = 4.0  # hidden width of each MLP / embed_dim

    @property
    def num_tokens(self) -> int:
        return (self.img_size // self.patch_size) ** 2 + 1  # patches + class token

    def identity(self) -> dict[str, Any]:
        """The network, for hashes: where its weights were read from is provenance, not identity (the same
        weights read from a moved checkout or another machine are the same ancestry; their content is
        hashed where it matters, e.g. the distillation's teacher digest)."""
        return {**self.to_dict(), "checkpoint": None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AncestrySpec:
        return cls(**d)


@dataclass(frozen=True)
class InstanceSpec(_Record):
    """One auxiliary model whose blocks are learngene instances (e.g. ``ti6``: width D/4, 6 blocks)."""

    name: str  # short id used in keys: "<width code><depth>", e.g. "ti6", "b9"
    width: str  # width code: "ti", "s" or "b"
    embed_dim: int  # token width of this auxiliary model
    depth: int  # number of blocks (= learngene instances it contributes)
    num_heads: int  # attention heads (scaled with width)
    supervision: str  # distillation positions: "end" or "front,end"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InstanceSpec:
        return cls(**d)


@dataclass(frozen=True)
class PreprocessSpec(_Record):
    """What an app must do to an image before calling any model of the pool."""

    img_size: int  # square side, pixels
    in_chans: int  # 1 = grayscale, 3 = RGB
    mean: tuple[float, ...]  # per-channel mean, on 0..1 pixel values
    std: tuple[float, ...]  # per-channel std, on 0..1 pixel values
    labels: tuple[str, ...]  # class names, index = logit index
    layout: str = "NCHW"  # tensor layout of the model input

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        return cls(
            img_size=d["img_size"],
            in_chans=d["in_chans"],
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            labels=tuple(d["labels"]),
            layout=d.get("layout", "NCHW"),
        )


@dataclass(frozen=True)
class PoolSpec(_Record):
    """Everything that determines a pool's architecture; its hash is the ``pool_id``."""

    ancestry: AncestrySpec  # the ViT the pool was distilled from
    depth: int  # depth group: 6 or 9 blocks per auxiliary model
    instances: tuple[InstanceSpec, ...]  # auxiliary models, narrowest first
    chains: str = "pairs"  # descendant families: "pairs" (the paper's) or "tsb" (adds Ti->S->B)

    def identity(self) -> dict[str, Any]:
        """The architecture, for hashes (pool_id, checkpoint fingerprints): no file path in it."""
        return {"ancestry": self.ancestry.identity(), "depth": self.depth, "instances": self.instances,
                "chains": self.chains}

    @property
    def pool_id(self) -> str:
        return content_hash(self.identity())

    def instance(self, name: str) -> InstanceSpec:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise KeyError(name)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoolSpec:
        return cls(
            ancestry=AncestrySpec.from_dict(d["ancestry"]),
            depth=d["depth"],
            instances=tuple(InstanceSpec.from_dict(i) for i in d["instances"]),
            chains=d.get("chains", "pairs"),
        )


# ------------------------------------------------------------------------------------------- descendants
@dataclass(frozen=True)
class Segment(_Record):
    """A run of consecutive blocks of one auxiliary model: blocks ``first..last`` inclusive."""

    instance: str  # InstanceSpec.name
    first: int  # first block index (0-based)
    last: int  # last block index, inclusive (last = first - 1 means an empty run)

    @property
    def num_blocks(self) -> int:
        return self.last - self.first + 1

    @property
    def key(self) -> str:
        """``ti6.0-4``; a run with no block (only the model's norm and head follow) is ``b6.head``."""
        return f"{self.instance}.{self.first}-{self.last}" if self.num_blocks > 0 else f"{self.instance}.head"


@dataclass(frozen=True)
class DescendantSpec(_Record):
    """A descendant: segments run in order, joined by the named stitch layers.

    ``stitches[i]`` maps the output of ``segments[i]`` into the width of ``segments[i+1]``.
    The embedding comes from the first segment's model, norm and head from the last one's.
    """

    pool_id: str  # pool this descendant belongs to
    segments: tuple[Segment, ...]  # non-empty; the last may hold no block (head only)
    stitches: tuple[str, ...]  # len(segments) - 1 stitch layer names

    @property
    def key(self) -> str:
        """Canonical id, safe as a file name and a table key, e.g. ``ti6.0-4+b6.5-5``."""
        return "+".join(s.key for s in self.segments)

    @property
    def num_blocks(self) -> int:
        return sum(s.num_blocks for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        d = _plain(self)
        d["key"] = self.key
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DescendantSpec:
        return cls(
            pool_id=d["pool_id"],
            segments=tuple(Segment(**s) for s in d["segments"]),
            stitches=tuple(d["stitches"]),
        )


@dataclass(frozen=True)
class DescendantRecord(_Record):
    """A descendant with its measured size and accuracy (a row of descendants.json)."""

    key: str  # DescendantSpec.key
    blocks: int  # number of transformer blocks it runs
    params: int  # parameters, counted once each
    flops: int  # fvcore convention: one multiply-add = 1, LayerNorm = 5 per element
    top1: float | None  # validation top-1 in percent (None until evaluated)
    spec: DescendantSpec  # how to build it
    top1_data: str | None = None  # dataset top1 was measured on ("fashion-mnist", "synthetic", …); None: unknown

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DescendantRecord:
        """A record read from a file; a value no lgp-edge writes raises :class:`DamagedRecord` (a top-1 that is
        not null or a finite percentage, a count that is not a non-negative integer): choosing by it would be
        silently wrong."""
        key = d["key"]
        if not isinstance(key, str) or not key:
            raise DamagedRecord(f"a descendant has key {key!r} (a non-empty string expected)")
        top1_data = d.get("top1_data")
        if top1_data is not None and not isinstance(top1_data, str):
            raise DamagedRecord(f"descendant {key} has top1_data {top1_data!r} (a dataset name or null expected)")
        return cls(key=key, blocks=record_count(d["blocks"], f"descendant {key}", "blocks"),
                   params=record_count(d["params"], f"descendant {key}", "params"),
                   flops=record_count(d["flops"], f"descendant {key}", "flops"),
                   top1=record_top1(d.get("top1"), f"descendant {key}"), spec=DescendantSpec.from_dict(d["spec"]),
                   top1_data=top1_data)


def is_number(value: Any) -> bool:
    """A finite real number that is not a bool (what a JSON or TOML number field must hold)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


NORM_RANGES = {"mean": "[0, 1]", "std": "(0, 1]"}  # of the normalisation, as said in messages


def norm_value_ok(field: str, value: Any) -> bool:
    """A normalisation constant (``field`` "mean" or "std") of pixel values scaled to 0..1, as every loader and
    export scales them: mean in [0, 1], std in (0, 1]. Constants of 0..255 pixels (mean 123.675) would normalise
    wrongly, silently; one range for ancestry.json, a timm config.json and pool.json, so that a pool built from
    an ancestry can be read back."""
    return is_number(value) and (0 < value <= 1 if field == "std" else 0 <= value <= 1)


class DamagedRecord(ValueError):
    """A record read from a file holds a value no lgp-edge writes (the file is damaged or was edited by hand).
    The message names the record, the field, the value and what was expected; ``fix``, when given, is what the
    user should do (the reader of the file knows a default)."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


MAX_COUNT = (1 << 63) - 1  # the largest count a record holds (a 64-bit integer, as JSON readers and SQLite read it)


def record_count(value: Any, owner: str, name: str) -> int:
    """A count read from a record (params, FLOPs, blocks, bytes): a non-negative integer up to ``MAX_COUNT``. An
    integral float (``5618.0``, another JSON writer's integer) reads as the int; a bool, a fraction, NaN, infinity,
    a string or an absurd size (``1e300``) is refused."""
    count = int(value) if isinstance(value, float) and math.isfinite(value) and value.is_integer() else value
    if not is_integer(count) or not 0 <= count <= MAX_COUNT:
        raise DamagedRecord(f"{owner} has {name} {value!r} (an integer in [0, 2^63) expected)")
    return count


def record_top1(value: Any, owner: str) -> float | None:
    """A top-1 read from a record: null (not evaluated) or a finite percentage in [0, 100]."""
    if value is None:
        return None
    if not is_number(value) or not 0 <= value <= 100:
        raise DamagedRecord(f"{owner} has top1 {value!r} (a finite number in [0, 100] or null expected)")
    return float(value)


@dataclass(frozen=True)
class ModelRecord(_Record):
    """A timm ViT exported as it is (``lgp-edge export --model NAME --checkpoint FILE``), not a pool's descendant."""

    key: str  # "timm:<name>", as the measurement store names a stock timm model
    name: str  # timm model name
    checkpoint: str  # weights file it was loaded from
    checkpoint_sha256: str  # of that file
    params: int  # parameters, counted once each
    flops: int | None  # fvcore convention; None when the model is not a plain class-token ViT
    blocks: int  # transformer blocks
    top1: float | None = None  # not known for a checkpoint (the export reports torch top-1 on --data)
    top1_data: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelRecord:
        return cls(**d)


# ------------------------------------------------------------------------------------ targets / profiles
@dataclass(frozen=True)
class ConnectionSpec(_Record):
    kind: str  # "local", "ssh", "adb" or "none"
    host: str | None = None  # ssh: host name or address
    user: str | None = None  # ssh: login
    port: int | None = None  # ssh: port (default 22)
    key: str | None = None  # ssh: private key file
    serial: str | None = None  # adb: device serial
    workdir: str | None = None  # remote scratch directory
    timeout_s: float = 20.0  # connect timeout


@dataclass(frozen=True)
class Efficiency(_Record):
    """The roofline's factors: what fraction of a target's peaks a runtime reaches, and a fixed cost per op."""
    compute: float  # fraction of the peak FLOP/s reached by the model's GEMMs
    memory: float  # fraction of the peak DRAM bandwidth reached by streaming operators
    overhead_us: float  # fixed cost of one operator (kernel launch, dispatch), microseconds


@dataclass(frozen=True)
class HardwareSpec(_Record):
    """A target's hardware facts (target file ``[hardware]``): declared from datasheets, or ``detect``ed on this
    host (then the peak and bandwidth are measured when needed and ``memory_mb`` read from the OS)."""
    efficiency: Efficiency
    detect: bool = False  # this host measures itself (connection kind "local" only)
    peak_gflops: Mapping[str, float] = field(default_factory=lambda: read_only({}), hash=False)  # per precision
    mem_gbps: float | None = None  # peak DRAM bandwidth, GB/s
    memory_mb: float | None = None  # device memory, MB (2^20 bytes)
    llc_mb: float | None = None  # last-level cache, MB: weights that fit half of it are not charged bandwidth
    cache_gbps: float | None = None  # last-level cache bandwidth, GB/s

    def peak(self, precision: str) -> float | None:
        """The declared peak GFLOP/s at ``precision``; None when the file declares none."""
        v = self.peak_gflops.get(precision)
        return None if v is None else float(v)


@dataclass(frozen=True)
class TargetSpec(_Record):
    name: str  # e.g. "jetson-nano"
    description: str  # one line for listings
    runtime: Runtime  # default runtime: torch, onnxruntime, openvino, tensorrt, coreml
    runtime_version: str  # e.g. "TensorRT 8.2 (JetPack 4.6)"
    max_opset: int  # highest ONNX opset the runtime parses
    precisions: tuple[Precision, ...]  # e.g. ("fp32", "fp16", "int8")
    formats: tuple[Format, ...]  # export formats this target accepts
    hardware: HardwareSpec  # peaks, bandwidth, memory, the roofline's efficiency factors
    connection: ConnectionSpec  # how to reach a board
    extra: Mapping[str, Any] = field(default_factory=lambda: read_only({}), hash=False)  # runtime settings (read-only)


@dataclass(frozen=True)
class DeviceProfile(_Record):
    name: str  # e.g. "jetson-nano"
    target: str  # TargetSpec.name
    latency_budget_ms: float  # p90 latency budget at batch `batch`
    memory_budget_mb: float  # weights + activations budget
    precision: Precision  # "fp32", "fp16", "int8" (PROFILE_PRECISIONS)
    formats: tuple[Format, ...]  # artifacts to emit
    batch: int = 1  # batch size the app runs
    description: str = ""  # one line for listings
    threads: int | None = None  # CPU threads the app runs inference with (None: the target's default)


# -------------------------------------------------------------------------------------------- measurement
UNSTORED_NOTE = ("host calibration measured in this process and not stored: another process measures it again and "
                 "predicts other times ('lgp-edge profile --target cpu --calibrate' measures and stores one)")


def latency_note(source: str | None, versions: Mapping[str, Any], n: int | None, noisy: bool) -> str:
    """How a latency was obtained, in words: the aggregate of measured runs, or the predictor (roofline, probes)
    and the spread it assumed, after why a measurement was not used. One wording for select, report and the
    export manifest."""
    if source == "measured":
        return str(versions.get("aggregate", f"one run of {n}")) + (" (noisy)" if noisy else "")
    note = f"{versions.get('predictor', 'predicted')}; spread {versions.get('spread', '?')}"
    if "scale" in versions:  # a roofline scaled to the descendants measured on the target
        note = f"{note}; {versions['scale']}"
    if "calibration_note" in versions:
        note = f"{note}; {versions['calibration_note']}"
    if "threads_note" in versions:  # more threads than a CPU board's cores
        note = f"{note}; {versions['threads_note']}"
    if "precision_note" in versions:  # int8/bf16 on this host, priced at its fp32 peak
        note = f"{note}; {versions['precision_note']}"
    return f"{versions['noisy_measurement']}; {note}" if "noisy_measurement" in versions else note


@dataclass(frozen=True)
class LatencyRecord(_Record):
    descendant_key: str  # DescendantSpec.key (or "timm:<name>" for a stock model)
    target: str  # TargetSpec.name
    runtime: Runtime  # runtime that ran it
    precision: Precision  # fp32 / fp16 / bf16 / int8
    batch: int  # batch size
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    cv: float  # std / mean
    n: int  # timed runs
    warmup: int  # untimed runs before
    threads: int  # intra-op threads
    source: str  # "measured" or "predicted"
    when: str  # ISO-8601 UTC
    tool_versions: Mapping[str, str] = field(hash=False)  # runtime + lgp-edge versions, the machine (read-only)
    pool_id: str = ""  # pool the descendant came from ("" for stock models)
    noisy: bool = False  # dispersion (measure.NOISY_RULE) stayed above the threshold after the bounded repeats
    calibration: str = ""  # predicted records: the calibration they came from (host fingerprint / probe set)

    def __post_init__(self) -> None:
        if isinstance(self.tool_versions, Mapping):  # anything else is refused by check_record, naming the field
            object.__setattr__(self, "tool_versions", read_only(self.tool_versions))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyRecord:
        return cls(**d)


# ---------------------------------------------------------------------------------------------- export
@dataclass(frozen=True)
class ValidationReport(_Record):
    max_abs_diff: float | None  # largest |artifact - torch| over the compared logits (None: structural)
    atol: float | None  # limit on max_abs_diff (None: structural, or int8, which is judged by agreement)
    top1_agreement: float | None  # fraction of images where artifact and torch agree on the class
    top1_ref: float | None  # torch top-1 (percent) on the images, None without labels
    top1_artifact: float | None  # artifact top-1 (percent)
    images: int  # number of validation images
    passed: bool
    note: str = ""  # e.g. "structural check only (Core ML predicts on macOS only)"
    min_agreement: float = 0.0  # least top1_agreement the artifact had to reach
    top1_change: float | None = None  # top1_artifact - top1_ref, percentage points (int8: the PTQ cost)
    data: str = ""  # dataset the validation images came from
    kind: str = "numeric"  # "numeric" (ran here vs torch) or "structural" (loads; names/shapes/metadata)


@dataclass(frozen=True)
class ExportArtifact(_Record):
    path: str  # relative to the output directory
    format: Format  # onnx, tensorrt, openvino, coreml, ort
    profile: str  # DeviceProfile.name
    descendant_key: str
    sha256: str
    inputs: tuple[Mapping[str, Any], ...] = field(hash=False)  # name, shape, dtype (read-only)
    outputs: tuple[Mapping[str, Any], ...] = field(hash=False)
    validation: ValidationReport | None
    versions: Mapping[str, str] = field(hash=False)  # read-only
    precision: str = ""  # fp32 / fp16 / int8: the artifact's arithmetic
    files: tuple[str, ...] = ()  # companion files, relative to the output directory (build script, ...)
    note: str = ""  # what a user must know (e.g. "engine is built on the device by build_engine.sh")
    # int8: method, types, calibration images and data (read-only)
    quantization: Mapping[str, Any] = field(default_factory=lambda: read_only({}), hash=False)

    def __post_init__(self) -> None:
        for name in ("inputs", "outputs"):
            object.__setattr__(self, name, tuple(read_only(x) for x in getattr(self, name)))
        for name in ("versions", "quantization"):
            object.__setattr__(self, name, read_only(getattr(self, name)))
