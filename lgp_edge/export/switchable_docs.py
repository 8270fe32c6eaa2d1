"""EMBEDDING.md of a switchable export: the descendants table and how an app picks one at run time.

The Kotlin (ONNX Runtime Android) and Swift (Core ML) snippets are also in docs/SWITCHABLE.md; a test
keeps the two copies identical.
"""

from __future__ import annotations

from typing import Any

KOTLIN = """\
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import android.content.Context
import android.os.Build
import android.os.PowerManager
import org.json.JSONArray
import java.nio.FloatBuffer
import java.nio.LongBuffer

/** One ONNX file, every descendant; `descendant` (int64, shape [1]) picks which one runs. */
class SwitchableClassifier(context: Context, model: ByteArray) {
    private val env = OrtEnvironment.getEnvironment()
    private val session = env.createSession(model, OrtSession.SessionOptions())
    private val power = context.getSystemService(PowerManager::class.java)
    private val meta = session.metadata.customMetadata
    private val size = meta.getValue("img_size").toLong()
    private val chans = meta.getValue("in_chans").toLong()
    private val rows = JSONArray(meta.getValue("descendants"))
        .let { t -> (0 until t.length()).map { t.getJSONObject(it) } }
    private val fastest = rows.minBy { it.optDouble("latency_ms", Double.MAX_VALUE) }.getInt("index")
    private val best = rows.maxBy { it.optDouble("top1", 0.0) }.getInt("index")
    private val middle = rows.sortedBy { it.optDouble("latency_ms", Double.MAX_VALUE) }[rows.size / 2].getInt("index")

    /** Hot phone -> the fastest descendant; known slow models -> the middle one; else the most accurate. */
    fun pickIndex(): Int {
        val thermal = if (Build.VERSION.SDK_INT >= 29) power.currentThermalStatus else PowerManager.THERMAL_STATUS_NONE
        return when {
            thermal >= PowerManager.THERMAL_STATUS_SEVERE -> fastest
            thermal >= PowerManager.THERMAL_STATUS_MODERATE -> middle
            Build.MODEL in SLOW_MODELS -> middle
            else -> best
        }
    }

    /** `pixels`: NCHW float32, normalised as the metadata's mean/std say. Returns the logits. */
    fun classify(pixels: FloatArray, index: Int = pickIndex()): FloatArray =
        OnnxTensor.createTensor(env, FloatBuffer.wrap(pixels), longArrayOf(1, chans, size, size)).use { x ->
            OnnxTensor.createTensor(env, LongBuffer.wrap(longArrayOf(index.toLong())), longArrayOf(1)).use { d ->
                session.run(mapOf("input" to x, "descendant" to d)).use { out ->
                    @Suppress("UNCHECKED_CAST")
                    (out[0].value as Array<FloatArray>)[0]
                }
            }
        }

    companion object {
        val SLOW_MODELS = setOf("SM-A135F", "Redmi 9A")  // Build.MODEL values your telemetry marks slow
    }
}
"""

SWIFT = """\
import CoreML
import Foundation

/** One .mlpackage, one function per descendant; MLModelConfiguration.functionName picks it (iOS 18+). */
final class SwitchableClassifier {
    struct Row: Decodable {
        let index: Int, key: String, function: String
        let top1: Double?, latency_ms: Double?
    }

    let rows: [Row]
    private let url: URL  // the compiled model (.mlmodelc) in the app bundle
    private var loaded: [String: MLModel] = [:]

    init(compiledModelURL: URL) throws {
        url = compiledModelURL
        let probe = try MLModel(contentsOf: url)  // the default function
        let meta = probe.modelDescription.metadata[.creatorDefinedKey] as? [String: String] ?? [:]
        rows = try JSONDecoder().decode([Row].self, from: Data((meta["descendants"] ?? "[]").utf8))
    }

    /** Hot device -> the fastest descendant; older chips -> the middle one; else the most accurate. */
    func pick() -> Row {
        let bySpeed = rows.sorted { ($0.latency_ms ?? .infinity) < ($1.latency_ms ?? .infinity) }
        let best = rows.max { ($0.top1 ?? 0) < ($1.top1 ?? 0) }!
        switch ProcessInfo.processInfo.thermalState {
        case .serious, .critical: return bySpeed[0]
        case .fair: return bySpeed[bySpeed.count / 2]
        default: return Self.isOlderDevice() ? bySpeed[bySpeed.count / 2] : best
        }
    }

    func model(_ row: Row) throws -> MLModel {
        if let m = loaded[row.function] { return m }
        let config = MLModelConfiguration()
        config.functionName = row.function  // e.g. "ti6_0to4__b6_5to5" for key "ti6.0-4+b6.5-5"
        let m = try MLModel(contentsOf: url, configuration: config)
        loaded[row.function] = m
        return m
    }

    /** The class label for a CGImage (the model resizes nothing: pass img_size x img_size). */
    func classify(_ image: CGImage) throws -> String {
        let m = try model(pick())
        let constraint = m.modelDescription.inputDescriptionsByName["image"]!.imageConstraint!
        let input = try MLDictionaryFeatureProvider(dictionary: [
            "image": try MLFeatureValue(cgImage: image, constraint: constraint, options: nil)])
        return try m.prediction(from: input).featureValue(for: "classLabel")!.stringValue
    }

    /** "iPhone14,5" style identifier; list the ones your measurements mark as slow. */
    static func isOlderDevice() -> Bool {
        var info = utsname()
        uname(&info)
        let id = withUnsafeBytes(of: &info.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return ["iPhone12,1", "iPhone12,8", "iPhone13,1"].contains(id)
    }
}
"""


def _table(rows: list[dict[str, Any]], with_function: bool) -> str:
    head = "| index | key | " + ("Core ML function | " if with_function else "") + \
           "params | MFLOPs | top-1 % | p90 ms on target |\n"
    head += "|---:|---|" + ("---|" if with_function else "") + "---:|---:|---:|---:|\n"
    for r in rows:
        top1 = f"{r['top1']:.2f}" if r.get("top1") is not None else "n/a"
        lat = f"{r['latency_ms']:.3g} ({r['latency_source']})" if r.get("latency_ms") is not None else "n/a"
        fn = f"`{r['function']}` | " if with_function else ""
        head += f"| {r['index']} | `{r['key']}` | {fn}{r['params']:,} | {r['flops'] / 1e6:.1f} | {top1} | {lat} |\n"
    return head


def embedding_markdown(mf: dict[str, Any]) -> str:
    """The EMBEDDING.md text for a switchable export's manifest."""
    arts = {a["format"]: a for a in mf["artifacts"]}
    rows = mf["descendants"]
    coreml = arts.get("coreml")
    if coreml is not None:
        names = {f["key"]: f["function"] for f in coreml["functions"]}
        rows = [{**r, "function": names[r["key"]]} for r in rows]
    out = [f"# Embedding the switchable model (pool `{mf['pool']['pool_id']}`, target `{mf['target']['name']}`)\n",
           f"{len(rows)} descendants ({mf['selection']}) in one artifact; each weight is stored once. "
           "The app picks one at run time, e.g. by the device model or its thermal state.\n",
           _table(rows, coreml is not None)]
    if "onnx" in arts:
        a = arts["onnx"]
        out.append(f"""
## ONNX (`{a['path']}`): ONNX Runtime, OpenVINO

Inputs: `input` float32 {a['inputs'][0]['shape']} (preprocessing as in the pool's metadata: `mean`, `std`,
`img_size`, `in_chans`), and `descendant` int64 [1] = the `index` column. Output: `logits`. Any other
index makes ONNX Runtime's `run` raise ("descendant index out of range"); OpenVINO returns NaN logits for
it. The table is in the model's metadata (`descendants`, JSON).

```python
import numpy as np, onnxruntime as ort
sess = ort.InferenceSession("{a['path']}")
logits = sess.run(["logits"], {{"input": x, "descendant": np.array([index], dtype=np.int64)}})[0]
```

### Android (Kotlin, ONNX Runtime)

```kotlin
{KOTLIN}```
""")
    if coreml is not None:
        out.append(f"""
## Core ML (`{coreml['path']}`): one function per descendant

Minimum deployment target {coreml['deployment']} (multifunction models need iOS 18 / macOS 15).
Function names replace the key's '.' by '_', '-' by 'to' and '+' by '__' (the `functions` metadata
maps keys to names); the default function is `{coreml['default_function']}`. Input `image`
(normalisation inside), outputs `classLabel` and `classLabel_probs`.

```swift
{SWIFT}```
""")
    return "\n".join(out)
