package com.tfpconv.demo

import java.util.Locale

// The app's plain logic: the test-set manifest, pixels to model input, predictions, latency
// statistics. No Android or TFLite classes here, so it also compiles and runs on a desktop JVM
// (hosttest/kotlin/DemoMathCheck.kt). Kept to Kotlin 1.3 language and library features.

/** Side of the square Fashion-MNIST images the model takes. */
const val IMAGE_SIDE = 28

/** One bundled test image (assets/images/manifest.csv, written by android_demo/make_assets.py). */
class TestImage(
    val file: String,
    val label: Int,
    val labelName: String,
    /** What plain TFLite predicted on the host when the assets were made; -1 if unknown. */
    val hostPrediction: Int
)

object Manifest {
    const val PATH = "images/manifest.csv"
    const val HEADER = "file,label,name,host_prediction"

    /** Parses the manifest (a header line, then `file,label,name,host_prediction` per image). */
    fun parse(text: String): List<TestImage> {
        val lines = text.lines().map { it.trim() }.filter { it.isNotEmpty() && !it.startsWith("#") }
        require(lines.isNotEmpty() && lines[0] == HEADER) {
            "$PATH: the first line must be '$HEADER'"
        }
        return lines.drop(1).mapIndexed { index, line ->
            val fields = line.split(",")
            require(fields.size == 4) { "$PATH line ${index + 2}: expected 4 fields, got '$line'" }
            val label = fields[1].trim().toIntOrNull()
            val host = fields[3].trim().toIntOrNull()
            require(label != null && label >= 0 && host != null && host >= -1) {
                "$PATH line ${index + 2}: bad label or host_prediction in '$line'"
            }
            TestImage(fields[0].trim(), label, fields[2].trim(), host)
        }
    }
}

/**
 * Model input from decoded ARGB pixels of a grayscale image: the gray level (the red channel;
 * red = green = blue for a grayscale PNG) scaled to [0, 1], as tfpconv.datasets.fashion_mnist does
 * for training.
 */
fun pixelsToInput(argb: IntArray): FloatArray {
    val input = FloatArray(argb.size)
    for (i in argb.indices) {
        input[i] = ((argb[i] shr 16) and 0xff) / 255.0f
    }
    return input
}

class Prediction(val label: Int, val probability: Float)

/** The most probable class of a model output (the first one on ties). */
fun predict(output: FloatArray): Prediction {
    require(output.isNotEmpty()) { "empty model output" }
    var best = 0
    for (i in 1 until output.size) {
        if (output[i] > output[best]) best = i
    }
    return Prediction(best, output[best])
}

fun maxAbsDifference(a: FloatArray, b: FloatArray): Float {
    require(a.size == b.size) { "outputs of different sizes: ${a.size} and ${b.size}" }
    var max = 0.0f
    for (i in a.indices) {
        max = Math.max(max, Math.abs(a[i] - b[i]))
    }
    return max
}

/** Latency statistics of one configuration, from per-inference times in nanoseconds. */
class LatencyStats(samplesNs: LongArray) {
    val count: Int = samplesNs.size
    val meanMs: Double
    val medianMs: Double
    val minMs: Double

    init {
        require(samplesNs.isNotEmpty()) { "no latency samples" }
        val sorted = samplesNs.sortedArray()
        meanMs = samplesNs.sum().toDouble() / count / 1e6
        medianMs = if (count % 2 == 1) {
            sorted[count / 2] / 1e6
        } else {
            (sorted[count / 2 - 1] + sorted[count / 2]) / 2.0 / 1e6
        }
        minMs = sorted[0] / 1e6
    }
}

/** How many times faster [candidate] is than [baseline], by mean latency. */
fun speedup(baseline: LatencyStats, candidate: LatencyStats): Double =
    baseline.meanMs / candidate.meanMs

fun formatMs(ms: Double): String = String.format(Locale.US, "%.3f ms", ms)

fun formatPercent(probability: Float): String =
    String.format(Locale.US, "%.1f%%", probability * 100.0f)
