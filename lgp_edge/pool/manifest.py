"""A pool's ``pool.json``: what the pool is (spec, preprocessing, data, training history, evaluated
descendants) without its weights.

Reading it needs no torch, so the commands that only choose among descendants (``select``, ``pool info``,
latency prediction) start in a fraction of a second; ``pool.py`` loads the weights when a model is needed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lgp_edge.errors import CheckpointError, UsageError
from lgp_edge.fileio import check_sha256, json_loads
from lgp_edge.models.plan import (
    descendant_flops,
    descendant_params,
    descendant_record,
    enumerate_descendants,
    pool_shapes,
)
from lgp_edge.outdir import check_utf8, recover_unlocked
from lgp_edge.progress import counted
from lgp_edge.registry import control_character
from lgp_edge.specs import (
    NORM_RANGES,
    SCHEMA_VERSION,
    DamagedRecord,
    DescendantRecord,
    DescendantSpec,
    PoolSpec,
    PreprocessSpec,
    is_integer,
    is_number,
    norm_value_ok,
)

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
ANCESTRY = "ancestry.safetensors"
TRANSFORMS = "transforms.safetensors"
MANIFEST = "pool.json"


@dataclass(frozen=True)
class PoolManifest:
    """The contents of pool.json besides the weights."""

    spec: PoolSpec  # architecture; its hash is the pool id
    preprocess: PreprocessSpec  # what an app does to an image before the model
    data: str  # dataset the pool was trained on ("fashion-mnist", "imagefolder:…", "synthetic")
    stitch_init: str  # "learned" or "lstsq"
    stage: str  # "distilled", "finetuned", or "restitched" (fine-tuned instances, stitches re-initialised since)
    files: dict[str, str] = field(default_factory=dict)  # weight file -> sha256
    history: tuple[dict[str, Any], ...] = ()  # one entry per stage: command, recipe, time, wall seconds
    descendants: tuple[DescendantRecord, ...] = ()  # filled by 'pool eval'
    storage_dtype: str = "float32"  # dtype of weights.safetensors
    provenance: dict[str, Any] = field(default_factory=dict)  # how this pool was made (demo pool: command…)

    @property
    def synthetic(self) -> bool:
        return self.data == "synthetic"

    def record(self, key: str) -> DescendantRecord:
        """The descendant ``key``'s record: its evaluated one, else its sizes from the spec with no top-1
        (UsageError for a key the pool has not)."""
        found = next((r for r in self.descendants if r.key == key), None)
        return found or descendant_record(self.spec, find_descendant(self.spec, key))

    def last(self, stage: str) -> dict[str, Any] | None:
        """The history's last entry of ``stage`` (``"distill"``, ``"finetune"``, ``"eval"``…), or None."""
        return next((h for h in reversed(self.history) if h.get("stage") == stage), None)

    def top1_after_distill(self) -> dict[str, float]:
        """Each instance model's top-1 alone right after distillation, as its distill entry records it (pools made
        before it was measured: none)."""
        entry = next((h for h in self.history if h.get("stage") in ("distill", "snnet-anchors")), {})
        return dict(entry.get("top1") or {})

    @property
    def top1_data(self) -> str | None:
        """Dataset the descendants' top-1 were measured on (the records', else the last 'eval' stage's)."""
        named = {r.top1_data for r in self.descendants if r.top1 is not None and r.top1_data}
        if named:
            return "synthetic" if "synthetic" in named else sorted(named)[0]
        evals = [h for h in self.history if isinstance(h, dict) and h.get("stage") == "eval" and h.get("data")]
        if evals:
            return str(evals[-1]["data"])
        return self.data if any(r.top1 is not None for r in self.descendants) else None

    @property
    def top1_images(self) -> int | None:
        """How many validation images the descendants' top-1 were measured on (the last 'eval' stage's), or None
        when that is not recorded: a top-1 from 200 images reads like one from the whole test set otherwise."""
        last = self.last("eval")
        n = last.get("images") if last and any(r.top1 is not None for r in self.descendants) else None
        return n if isinstance(n, int) and not isinstance(n, bool) else None

    def check_top1(self, pool_dir: str | Path) -> str:
        """Refuse to choose by top-1 measured on synthetic data for a pool trained on real data.

        Returns a note for the output when the pool itself is synthetic ('' otherwise).
        """
        on = self.top1_data
        if on == "synthetic" and not self.synthetic:
            raise UsageError(f"the top-1 in '{pool_dir}' were measured on synthetic data, not {self.data}; choosing "
                             f"by them would be meaningless: run 'lgp-edge pool eval {pool_dir} --data {self.data}'")
        if on == "synthetic":
            return "top-1 measured on synthetic data: the choice demonstrates the tooling only"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "pool_id": self.spec.pool_id,
            "spec": self.spec.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "data": self.data,
            "synthetic_data": self.synthetic,
            "stitch_init": self.stitch_init,
            "stage": self.stage,
            "storage_dtype": self.storage_dtype,
            "files": dict(self.files),
            "history": list(self.history),
            "provenance": dict(self.provenance),
            "descendants": [r.to_dict() for r in self.descendants],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoolManifest:
        """The manifest of a pool.json; a damaged history or descendant record raises ``DamagedRecord``."""
        history = d.get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise DamagedRecord(f"history is {_json_kind(history)} (a list of objects expected)", fix=REBUILD)
        rows = d.get("descendants", [])
        if not isinstance(rows, list):
            raise DamagedRecord(f"descendants is {_json_kind(rows)} (a list of records expected)")
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise DamagedRecord(f"descendant {i} is {_json_kind(r)} (a record object expected)")
        spec, preprocess = PoolSpec.from_dict(d["spec"]), PreprocessSpec.from_dict(d["preprocess"])
        _check_numbers(spec, preprocess)
        _check_labels(spec, preprocess)
        keys = [r.get("key") for r in rows]
        twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if twice is not None:
            raise DamagedRecord(f"lists descendant {twice!r} twice (one evaluated record per descendant expected)")
        storage_dtype = d.get("storage_dtype", "float32")
        if storage_dtype not in STORAGE_DTYPES:
            raise DamagedRecord(f"has storage_dtype {storage_dtype!r} (one of {', '.join(STORAGE_DTYPES)} expected)",
                                fix=REBUILD)
        check_instance_names(spec)
        _check_history(history, tuple(i.name for i in spec.instances))
        for name in ("data", "stitch_init", "stage"):
            _check_label(name, d[name])
        _check_files(d["files"])
        if not isinstance(d.get("provenance", {}), dict):
            raise DamagedRecord(f"has provenance {_json_kind(d['provenance'])} (an object expected)", fix=REBUILD)
        return cls(spec=spec, preprocess=preprocess,
                   data=d["data"], stitch_init=d["stitch_init"], stage=d["stage"], files=dict(d["files"]),
                   history=tuple(history), descendants=tuple(DescendantRecord.from_dict(r) for r in rows),
                   storage_dtype=storage_dtype, provenance=dict(d.get("provenance", {})))

    def replace(self, **changes: Any) -> PoolManifest:
        return dataclasses.replace(self, **changes)


def read_manifest(path: str | Path) -> PoolManifest:
    p = Path(path)
    check_utf8(p, "pool")
    mf = p / MANIFEST
    recover_unlocked(p)  # a run killed while replacing the pool directory
    if not mf.is_file():
        raise UsageError(f"'{p}' is not a pool directory (no {MANIFEST}); build one with 'lgp-edge pool build'")
    try:
        raw = json_loads(mf.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"'{mf}' is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"'{mf}' cannot be read ({exc}); restore it or rebuild the pool") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"'{mf}' holds a JSON {type(raw).__name__}, not an object; the file is damaged")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CheckpointError(f"'{mf}' has schema_version {version}, this lgp-edge reads {SCHEMA_VERSION}; "
                              "rebuild the pool or use a matching lgp-edge version")
    try:
        return current_records(PoolManifest.from_dict(raw))
    except DamagedRecord as exc:
        fix = exc.fix or (f"restore it, or empty its \"descendants\" list and run 'lgp-edge pool eval {p} "
                          "--data DATA' again")
        raise CheckpointError(f"'{mf}' is damaged: {exc}; {fix}") from None
    except KeyError as exc:
        raise CheckpointError(f"'{mf}' is missing field {exc}; the file is damaged") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"'{mf}' has a field of the wrong type or value ({exc}); the file is damaged") \
            from None


REBUILD = "restore it or rebuild the pool"


def _check_label(name: str, value: Any) -> None:
    """A name pool.json records (its data, stitch init, stage): a line without control characters, as lgp-edge
    writes it (an image folder's name may hold any other character: a no-break space, an emoji's joiner)."""
    if not isinstance(value, str) or not value or len(value) > 4096 or control_character(value):
        raise DamagedRecord(f"has {name} {repr(value)[:60]} (a non-empty line without control characters "
                            "expected)", fix=REBUILD)


def _check_files(files: Any) -> None:
    """``files``: the pool's own file names (no folders) with their sha256, as ``save_pool`` writes them."""
    if not isinstance(files, dict):
        raise DamagedRecord(f"has files {_json_kind(files)} (an object of file names and sha256 hashes expected)",
                            fix=REBUILD)
    for name, digest in files.items():
        if not (name and "/" not in name and "\\" not in name and name not in (".", "..")
                and not control_character(name)):
            raise DamagedRecord(f"has files entry {name[:60]!r} (a file name in the pool directory expected)",
                                fix=REBUILD)
        if not (isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest)):
            raise DamagedRecord(f"has files[{name[:60]!r}] {repr(digest)[:60]} (a sha256 hex digest expected)",
                                fix=REBUILD)


STORAGE_DTYPES = ("float32", "float16")  # what save_pool writes weights.safetensors in


# Upper bounds on the numbers of a pool's architecture: far above any real ViT (ViT-22B: width 6144, 48 blocks, 48
# heads; SAM at 1024 px; ImageNet-21k's 21,843 classes) and low enough that a damaged or edited pool.json
# cannot make reading it hang or run out of memory: a pool of depth d has on the order of d^2 descendants (Ti->S->B
# chains), and the shapes the spec implies are compared with the weights file before anything is built.
MAX_DEPTH = 256  # blocks: spec.depth, each instance's, the ancestry's
MAX_WIDTH = 65536  # token width (embed_dim) of the ancestry and of each instance; heads at most the width
MAX_IMG_SIZE = 8192  # input side in pixels (spec.ancestry and preprocess); the patch side at most the input side
MAX_IN_CHANS = 1024  # input channels (hyperspectral images have a few hundred)
MAX_CLASSES = 1 << 20  # classifier outputs
MAX_MLP_RATIO = 64  # hidden width of each MLP / embed_dim
MAX_IMAGES = 1 << 31  # images an evaluation or a stitch init of the history ran on


def _int_in(value: Any, name: str, high: int, bound: str = "") -> None:
    """``value`` is an integer in [1, high]; ``bound`` names ``high`` in the message ("the width 32")."""
    if not is_integer(value) or not 1 <= value <= high:
        raise DamagedRecord(f"has {name} {value!r} (an integer in [1, {bound or f'{high:,}'}] expected)", fix=REBUILD)


def _check_numbers(spec: PoolSpec, pre: PreprocessSpec) -> None:
    """The numbers of the architecture and the preprocessing that every choice, prediction and export is
    computed from: sizes are integers in [1, MAX_*], ratios and normalisation constants finite (std > 0)."""
    a = spec.ancestry
    for f, high in (("img_size", MAX_IMG_SIZE), ("in_chans", MAX_IN_CHANS), ("num_classes", MAX_CLASSES),
                    ("embed_dim", MAX_WIDTH), ("depth", MAX_DEPTH)):
        _int_in(getattr(a, f), f"spec.ancestry.{f}", high)
    _int_in(a.num_heads, "spec.ancestry.num_heads", a.embed_dim, f"the width {a.embed_dim}")
    _int_in(a.patch_size, "spec.ancestry.patch_size", a.img_size, f"the image size {a.img_size}")
    r = a.mlp_ratio
    if not is_number(r) or not 0 < r <= MAX_MLP_RATIO:
        raise DamagedRecord(f"has spec.ancestry.mlp_ratio {r!r} (a finite number in (0, {MAX_MLP_RATIO}] expected)",
                            fix=REBUILD)
    _int_in(spec.depth, "spec.depth", MAX_DEPTH)
    if not spec.instances:
        raise DamagedRecord("has no spec.instances (the pool's auxiliary models expected)", fix=REBUILD)
    for i, inst in enumerate(spec.instances):
        _int_in(inst.embed_dim, f"spec.instances[{i}].embed_dim", MAX_WIDTH)
        _int_in(inst.depth, f"spec.instances[{i}].depth", MAX_DEPTH)
        _int_in(inst.num_heads, f"spec.instances[{i}].num_heads", inst.embed_dim, f"the width {inst.embed_dim}")
    _int_in(pre.img_size, "preprocess.img_size", MAX_IMG_SIZE)
    _int_in(pre.in_chans, "preprocess.in_chans", MAX_IN_CHANS)
    for f in ("img_size", "in_chans"):  # what the app feeds is what the models take
        if getattr(pre, f) != getattr(a, f):
            raise DamagedRecord(f"has preprocess.{f} {getattr(pre, f)!r} where the ancestry takes {getattr(a, f)} "
                                "(the same expected)", fix=REBUILD)
    if pre.layout != "NCHW":
        raise DamagedRecord(f"has preprocess.layout {pre.layout!r} ('NCHW', the layout every export takes, "
                            "expected)", fix=REBUILD)
    for f in ("mean", "std"):
        values = getattr(pre, f)
        if len(values) != pre.in_chans:
            raise DamagedRecord(f"preprocess.{f} has {len(values)} values for "
                                f"{counted(pre.in_chans, 'input channel')}", fix=REBUILD)
        for i, v in enumerate(values):
            if not norm_value_ok(f, v):
                raise DamagedRecord(f"has preprocess.{f}[{i}] {v!r} (a number in {NORM_RANGES[f]}, on pixel values "
                                    "scaled to 0..1, expected)", fix=REBUILD)


MAX_LABEL = 256  # characters of one class name


def label_problem(value: Any) -> str | None:
    """What is wrong with a class name (None: nothing): one line of 1 to MAX_LABEL characters without control
    characters or line breaks. An image folder's class may hold any other character (a no-break space, an emoji's
    joiner): what ``pool build`` writes from one, every reader takes."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_LABEL:
        return f"a class name of 1 to {MAX_LABEL} characters expected"
    bad = control_character(value) or next((c for c in value if c in "\u2028\u2029"), None)
    return None if bad is None else f"it holds {bad!r}: one line without control characters expected"


def _check_labels(spec: PoolSpec, pre: PreprocessSpec) -> None:
    """The class names every export writes beside the logits (ONNX metadata, Core ML labels, EMBEDDING.md): one
    printable, non-empty string per class of the head, each once."""
    labels, n = pre.labels, spec.ancestry.num_classes
    if len(labels) != n:
        raise DamagedRecord(f"preprocess.labels has {len(labels)} names for {n} classes (one per class expected)",
                            fix=REBUILD)
    seen: set[str] = set()
    for i, v in enumerate(labels):
        problem = label_problem(v)
        if problem:
            raise DamagedRecord(f"has preprocess.labels[{i}] {repr(v)[:60]} ({problem})", fix=REBUILD)
        if v in seen:
            raise DamagedRecord(f"has preprocess.labels[{i}] {v!r} twice (one name per class expected)", fix=REBUILD)
        seen.add(v)


def _check_history(history: list[dict[str, Any]], instances: tuple[str, ...]) -> None:
    """The image counts of the history (what a top-1 or a stitch init was measured on): integers in
    [1, MAX_IMAGES]; the top-1 of instance models alone right after distillation: percentages of the pool's
    instances."""
    for i, h in enumerate(history):
        where = f"history[{i}] ({h.get('stage', '?')})"
        if "images" in h:
            _int_in(h["images"], f"{where} images", MAX_IMAGES)
        if "top1" in h:
            top1 = h["top1"]
            if not isinstance(top1, dict) or not all(
                    k in instances and is_number(v) and 0 <= v <= 100 for k, v in top1.items()):
                raise DamagedRecord(f"has {where} top1 {_json_kind(top1)} (a top-1 percentage per instance of "
                                    f"{', '.join(instances)} expected)", fix=REBUILD)
            _int_in(h.get("top1_images"), f"{where} top1_images", MAX_IMAGES)


def _json_kind(value: Any) -> str:
    """How a damaged value reads in an error: ``a str 'abc'``, ``null``."""
    if value is None:
        return "null"
    text = repr(value)
    return f"a {type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


INSTANCE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # what lgp-edge names instances: ti6, b6, s9, b12


def check_instance_names(spec: PoolSpec) -> None:
    """Instance names are parts of every descendant key, so of file names, report.csv and report.md cells and
    store rows: lowercase letters, digits and '_', a letter first (no formula, no '|', no '+' or '.'), unique."""
    for i, inst in enumerate(spec.instances):
        if not isinstance(inst.name, str) or not INSTANCE_NAME.fullmatch(inst.name):
            raise DamagedRecord(f"has spec.instances[{i}].name {_json_kind(inst.name)} (a name such as 'ti6': "
                                "lowercase letters, digits and '_', a letter first, at most 32)", fix=REBUILD)
        if any(other.name == inst.name for other in spec.instances[:i]):
            raise DamagedRecord(f"has spec.instances[{i}].name {inst.name!r} twice (one name per instance "
                                "expected)", fix=REBUILD)


def current_records(manifest: PoolManifest) -> PoolManifest:
    """The manifest without evaluated records whose descendant this version enumerates differently (other
    blocks or stitch layers under the same key, or a key it no longer has): their top-1 belongs to another
    model. Such a pool needs 'lgp-edge pool eval' again; a warning says so.

    A record's own ``pool_id`` is not compared but rewritten: the record lies in this pool's manifest, and
    earlier lgp-edge versions hashed, into ``pool_id``, the directory the ancestry weights were read from."""
    if not manifest.descendants:
        return manifest
    current = {d.key: d for d in enumerate_descendants(manifest.spec)}
    kept = tuple(dataclasses.replace(r, spec=current[r.key]) for r in manifest.descendants
                 if r.key in current and (current[r.key].segments, current[r.key].stitches)
                 == (r.spec.segments, r.spec.stitches))
    for r in kept:
        _check_sizes(manifest.spec, r)
    if len(kept) != len(manifest.descendants):
        dropped = len(manifest.descendants) - len(kept)
        log.warning("pool %s: %s defined differently by the lgp-edge that evaluated %s and %s dropped; run "
                    "'lgp-edge pool eval' again", manifest.spec.pool_id,
                    f"{counted(dropped, 'evaluated descendant')} {'was' if dropped == 1 else 'were'}",
                    "it" if dropped == 1 else "them", "is" if dropped == 1 else "are")
    return manifest.replace(descendants=kept)


def _check_sizes(spec: PoolSpec, record: DescendantRecord) -> None:
    """A record's blocks, params and FLOPs are facts of its architecture: recomputed here (arithmetic, no model is
    built), a record that says otherwise was damaged or edited, and choosing by it would be silently wrong."""
    found = {"blocks": record.blocks, "params": record.params, "flops": record.flops}
    facts = {"blocks": record.spec.num_blocks, "params": descendant_params(spec, record.spec),
             "flops": descendant_flops(spec, record.spec)}
    wrong = [k for k in found if found[k] != facts[k]]
    if wrong:
        raise DamagedRecord(f"descendant {record.key} has {' and '.join(f'{k} {found[k]}' for k in wrong)}, but the "
                            f"architecture in the spec gives {' and '.join(f'{facts[k]} {k}' for k in wrong)} "
                            "(pool.json was edited or damaged)")


def verified_file(path: str | Path, manifest: PoolManifest, name: str) -> Path:
    """Path of a weight file after checking its sha256 against the manifest."""
    f = Path(path) / name
    expected = manifest.files.get(name)
    if expected is None or not f.is_file():
        raise CheckpointError(f"pool '{path}' has no {name}")
    check_sha256(f, expected, recorded_in="pool.json", fix="restore it or rebuild the pool")
    return f


def _shape(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def check_weight_shapes(weights: Path, expected: dict[str, tuple[int, ...]]) -> None:
    """The tensors named in the header of the safetensors file ``weights`` are ``expected`` (name -> shape);
    nothing is loaded (and torch is not imported). CheckpointError naming the first difference otherwise."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "numpy") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"'{weights}' is not a readable safetensors file ({str(exc).splitlines()[0][:160]}); "
                              "restore it or rebuild the pool") from None
    problems = [f"tensor {k} is {_shape(found[k])} there, {_shape(v)} in the spec" for k, v in expected.items()
                if k in found and found[k] != v]
    problems += [f"it has no tensor {k}" for k in expected if k not in found]
    problems += [f"its tensor {k} is not in the spec" for k in found if k not in expected]
    if problems:
        more = f" (and {len(problems) - 1} more difference(s))" if len(problems) > 1 else ""
        raise CheckpointError(f"'{weights}' does not fit the pool spec in pool.json: {problems[0]}{more}; "
                              "pool.json was edited or damaged: restore it or rebuild the pool")


def verified_weights(path: str | Path, manifest: PoolManifest) -> Path:
    """The pool's ``weights.safetensors`` after checking it without loading it: its sha256 against the manifest,
    the spec against what can be built (whole heads), and the names and shapes in the file's header against those
    the spec implies (``plan.pool_shapes``, arithmetic: a pool.json whose architecture is not the weights' is
    refused before anything is allocated). ``load_pool`` loads the tensors after it; ``pool info`` needs no more."""
    weights = verified_file(path, manifest, WEIGHTS)
    if any(i.embed_dim % i.num_heads for i in manifest.spec.instances):  # what timm's Attention asserts on building
        raise CheckpointError(f"'{Path(path) / MANIFEST}' describes a pool that cannot be built (dim should be "
                              "divisible by num_heads); the file is damaged")
    check_weight_shapes(weights, pool_shapes(manifest.spec))
    return weights


def demo_pool_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "demo_pool"


def find_descendant(spec: PoolSpec, key: str) -> DescendantSpec:
    """The descendant ``key`` of the pool ``spec`` describes, from the spec alone (no weights loaded)."""
    for d in enumerate_descendants(spec):
        if d.key == key:
            return d
    raise UsageError(f"pool {spec.pool_id} has no descendant '{key}'; see 'lgp-edge pool info'")


def recorded_pool_id(path: str | Path) -> str | None:
    """The ``pool_id`` a pool's pool.json records (None when it records none, or cannot be read): an older
    lgp-edge computed another id for the same pool (before 2026-12-03 the ancestry's folder was hashed in), and
    its board timing files carry that one."""
    try:
        value = json_loads((Path(path) / MANIFEST).read_text(encoding="utf-8")).get("pool_id")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def resolve_pool(path: str | Path | None) -> Path:
    """``--pool`` or, when absent, the demo pool bundled with the package."""
    if path is not None:
        return Path(path)
    demo = demo_pool_dir()
    if not (demo / MANIFEST).is_file():
        raise UsageError("no --pool given and this installation has no bundled demo pool; pass --pool POOL")
    return demo
