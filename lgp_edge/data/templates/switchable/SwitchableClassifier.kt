import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import android.content.Context
import android.os.Build
import android.os.PowerManager
import org.json.JSONArray
import java.nio.FloatBuffer
import java.nio.LongBuffer

/** One ONNX file, every descendant; `descendant` (int64, shape [1]) picks which one runs. `threads`: the table's
 *  `threads`, the intra-op thread count its latencies are for (0: ONNX Runtime's default, one per core). */
class SwitchableClassifier(context: Context, model: ByteArray, threads: Int = 0) {
    private val env = OrtEnvironment.getEnvironment()
    private val session = env.createSession(model, OrtSession.SessionOptions().apply {
        if (threads > 0) setIntraOpNumThreads(threads)
    })
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
