// LgpClassifier.kt: run an lgp-edge ONNX Runtime export (model.ort or model.onnx) in an Android app.
//
// Gradle: implementation("com.microsoft.onnxruntime:onnxruntime-android:1.20.0")
// (1.20.0 is the version EMBEDDING.md pins too. model.ort needs the ONNX Runtime its EMBEDDING.md names, >= 1.16
// for ORT format v6; model.onnx is ONNX IR 10, which ONNX Runtime reads from 1.18 on.)
// Put model.ort in app/src/main/assets/. The model file carries its own preprocessing constants
// (metadata keys img_size, in_chans, mean, std, labels), read here, so this class fits any export:
//
//     val classifier = LgpClassifier(assets.open("model.ort").readBytes())
//     val (label, probability) = classifier.classify(bitmap).first()      // a model of batch 1
//     val perImage = classifier.classifyAll(bitmaps)                       // exactly `batch` images per call
//     classifier.close()
package ai.lgpedge.sample

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import ai.onnxruntime.TensorInfo
import android.graphics.Bitmap
import org.json.JSONArray
import java.nio.FloatBuffer
import kotlin.math.exp

class LgpClassifier(modelBytes: ByteArray, threads: Int = 0) : AutoCloseable {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val options = OrtSession.SessionOptions()  // closed with the session
    private val session: OrtSession
    private val inputName: String
    private val mean: FloatArray
    private val std: FloatArray
    val labels: List<String>
    val size: Int       // square input side, pixels
    val channels: Int   // 1 = grayscale, 3 = RGB
    val batch: Int      // images per call: the model's static batch, or 0 when any number (a dynamic batch)
    val descendantKey: String

    init {
        // EMBEDDING.md passes the thread count the manifest's latency is for; 0: ONNX Runtime's default (one per core)
        if (threads > 0) options.setIntraOpNumThreads(threads)
        session = env.createSession(modelBytes, options)
        val meta = session.metadata.customMetadata
        fun floats(key: String): FloatArray =
            JSONArray(meta.getValue(key)).let { a -> FloatArray(a.length()) { a.getDouble(it).toFloat() } }
        mean = floats("mean")
        std = floats("std")
        labels = JSONArray(meta.getValue("labels")).let { a -> List(a.length()) { a.getString(it) } }
        size = meta.getValue("img_size").toInt()
        channels = meta.getValue("in_chans").toInt()
        descendantKey = meta["descendant_key"] ?: "unknown"
        inputName = session.inputNames.first()
        val first = (session.inputInfo.getValue(inputName).info as TensorInfo).shape[0]
        batch = if (first > 0) first.toInt() else 0
    }

    /** NCHW float tensor data: resize to size x size, then (pixel / 255 - mean[c]) / std[c]. */
    fun preprocess(bitmap: Bitmap): FloatBuffer {
        val scaled = Bitmap.createScaledBitmap(bitmap, size, size, true)
        val pixels = IntArray(size * size)
        scaled.getPixels(pixels, 0, size, 0, 0, size, size)
        val buffer = FloatBuffer.allocate(channels * size * size)
        for (c in 0 until channels) {
            for (p in pixels) {
                val r = (p shr 16) and 0xFF
                val g = (p shr 8) and 0xFF
                val b = p and 0xFF
                // Grayscale models: the mean of R, G and B (as the training data loader does).
                val v = if (channels == 1) (r + g + b) / 3f else when (c) { 0 -> r; 1 -> g; else -> b }.toFloat()
                buffer.put((v / 255f - mean[c]) / std[c])
            }
        }
        buffer.rewind()
        return buffer
    }

    /** Class probabilities of each image, most likely first. A model with a static batch takes exactly
     *  `batch` images per call (the batch its profile was exported for); a dynamic batch any number. */
    fun classifyAll(bitmaps: List<Bitmap>): List<List<Pair<String, Float>>> {
        require(bitmaps.isNotEmpty() && (batch == 0 || bitmaps.size == batch)) {
            "this model takes ${if (batch == 0) "one or more" else "exactly $batch"} images per call, got ${bitmaps.size}"
        }
        val data = FloatBuffer.allocate(bitmaps.size * channels * size * size)
        for (bitmap in bitmaps) data.put(preprocess(bitmap))
        data.rewind()
        val shape = longArrayOf(bitmaps.size.toLong(), channels.toLong(), size.toLong(), size.toLong())
        OnnxTensor.createTensor(env, data, shape).use { input ->
            session.run(mapOf(inputName to input)).use { result ->
                @Suppress("UNCHECKED_CAST")
                val rows = result[0].value as Array<FloatArray>
                return rows.map { logits ->
                    val max = logits.maxOrNull() ?: 0f
                    val e = logits.map { exp((it - max).toDouble()) }
                    val sum = e.sum()
                    labels.indices.map { labels[it] to (e[it] / sum).toFloat() }.sortedByDescending { it.second }
                }
            }
        }
    }

    /** Class probabilities of one image, most likely first (a model of batch 1, or a dynamic batch). */
    fun classify(bitmap: Bitmap): List<Pair<String, Float>> = classifyAll(listOf(bitmap)).first()

    override fun close() {
        session.close()
        options.close()
    }
}
