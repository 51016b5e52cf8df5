package com.tfpconv.demo

import android.app.Activity
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.os.Bundle
import android.util.Log
import android.widget.Button
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.TextView
import java.io.FileInputStream
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Runs the bundled converted Fashion-MNIST model (assets/model.tflite) on the bundled test images
 * with plain TFLite and with TFLite + the tfpconv delegate, and shows per image the prediction of
 * both, and at the top both latencies and the speedup.
 *
 * Settings come from the launch intent:
 * `adb shell am start -n com.tfpconv.demo/.MainActivity --ei threads 2 --ei runs 50`.
 * The summary is also written to logcat (tag "tfpconv-demo").
 */
class MainActivity : Activity() {
    private lateinit var summary: TextView
    private lateinit var results: LinearLayout
    private lateinit var runButton: Button
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()

    private class Settings(val threads: Int, val runs: Int)

    private class Row(
        val image: TestImage,
        val thumbnail: Bitmap,
        val plain: Prediction,
        val tfpconv: Prediction
    )

    private class Report(
        val settings: Settings,
        val rows: List<Row>,
        val plain: LatencyStats,
        val tfpconv: LatencyStats,
        val claimedNodes: IntArray,
        val maxDifference: Float
    )

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        summary = findViewById(R.id.summary)
        results = findViewById(R.id.results)
        runButton = findViewById(R.id.run_button)
        runButton.setOnClickListener { start() }
        start()
    }

    override fun onDestroy() {
        worker.shutdownNow()
        super.onDestroy()
    }

    private fun settings(): Settings {
        val threads = intent.getIntExtra("threads", DEFAULT_THREADS)
        val runs = intent.getIntExtra("runs", DEFAULT_RUNS)
        return Settings(
            threads.coerceIn(1, NativeBridge.MAX_THREADS),
            runs.coerceIn(1, 10_000)
        )
    }

    private fun start() {
        val settings = settings()
        runButton.isEnabled = false
        results.removeAllViews()
        summary.text = getString(R.string.running, settings.threads, settings.runs)
        worker.execute {
            val outcome: Any = try {
                benchmark(settings)
            } catch (e: Throwable) {
                Log.e(TAG, "demo failed", e)
                e
            }
            runOnUiThread {
                if (isDestroyed) return@runOnUiThread
                runButton.isEnabled = true
                if (outcome is Report) show(outcome) else showError(outcome as Throwable)
            }
        }
    }

    private fun loadModel(): MappedByteBuffer =
        // Stored uncompressed (androidResources.noCompress), so it can be mapped from the APK.
        assets.openFd(MODEL_ASSET).use { fd ->
            FileInputStream(fd.fileDescriptor).use { stream ->
                stream.channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        }

    private fun loadImage(image: TestImage): Pair<Bitmap, FloatArray> {
        val bitmap = assets.open("images/" + image.file).use { BitmapFactory.decodeStream(it) }
            ?: throw IllegalStateException("cannot decode images/${image.file}")
        require(bitmap.width == IMAGE_SIDE && bitmap.height == IMAGE_SIDE) {
            "images/${image.file} is ${bitmap.width}x${bitmap.height}, expected 28x28"
        }
        val pixels = IntArray(IMAGE_SIDE * IMAGE_SIDE)
        bitmap.getPixels(pixels, 0, IMAGE_SIDE, 0, 0, IMAGE_SIDE, IMAGE_SIDE)
        return Pair(bitmap, pixelsToInput(pixels))
    }

    private fun benchmark(settings: Settings): Report {
        val images = Manifest.parse(assets.open(Manifest.PATH).bufferedReader().use { it.readText() })
        require(images.isNotEmpty()) { "no test images in ${Manifest.PATH}" }
        val loaded = images.map { loadImage(it) }
        val inputs = loaded.map { it.second }
        val model = loadModel()

        // Closed in reverse order: both interpreters before the delegate they use.
        return TfpconvDelegate(settings.threads).use { delegate ->
            ModelRunner(model, settings.threads, null).use { plain ->
                ModelRunner(model, settings.threads, delegate).use { withTfpconv ->
                    // First pass: warms both up and gives the predictions.
                    val plainOut = inputs.map { plain.run(it).output }
                    val tfpconvOut = inputs.map { withTfpconv.run(it).output }
                    var maxDifference = 0.0f
                    for (i in inputs.indices) {
                        maxDifference = Math.max(maxDifference, maxAbsDifference(plainOut[i], tfpconvOut[i]))
                    }
                    // Timed passes, the two interleaved image by image so that clock and thermal
                    // changes hit both alike.
                    val samples = settings.runs * inputs.size
                    val plainNs = LongArray(samples)
                    val tfpconvNs = LongArray(samples)
                    var k = 0
                    for (run in 0 until settings.runs) {
                        for (input in inputs) {
                            plainNs[k] = plain.run(input).latencyNs
                            tfpconvNs[k] = withTfpconv.run(input).latencyNs
                            k++
                        }
                    }
                    val rows = images.indices.map { i ->
                        val thumbnail = Bitmap.createScaledBitmap(
                            loaded[i].first, THUMBNAIL_PX, THUMBNAIL_PX, false)
                        Row(images[i], thumbnail, predict(plainOut[i]), predict(tfpconvOut[i]))
                    }
                    Report(
                        settings, rows, LatencyStats(plainNs), LatencyStats(tfpconvNs),
                        delegate.claimedNodes(), maxDifference)
                }
            }
        }
    }

    private fun className(label: Int, rows: List<Row>): String {
        val named = rows.firstOrNull { it.image.label == label }
        return named?.image?.labelName ?: (CLASS_NAMES.getOrNull(label) ?: "class $label")
    }

    private fun show(report: Report) {
        val rows = report.rows
        val agree = rows.count { it.plain.label == it.tfpconv.label }
        val plainCorrect = rows.count { it.plain.label == it.image.label }
        val tfpconvCorrect = rows.count { it.tfpconv.label == it.image.label }
        val known = rows.filter { it.image.hostPrediction >= 0 }
        val matchesHost = known.count { it.plain.label == it.image.hostPrediction }
        val claimed = if (report.claimedNodes.isEmpty()) {
            getString(R.string.claimed_none)
        } else {
            getString(R.string.claimed_nodes, report.claimedNodes.size,
                report.claimedNodes.joinToString(", "))
        }
        val text = StringBuilder()
            .append(claimed).append('\n')
            .append(getString(R.string.latency_plain, report.settings.threads,
                formatMs(report.plain.meanMs), formatMs(report.plain.medianMs))).append('\n')
            .append(getString(R.string.latency_tfpconv,
                formatMs(report.tfpconv.meanMs), formatMs(report.tfpconv.medianMs))).append('\n')
            .append(getString(R.string.speedup,
                String.format(java.util.Locale.US, "%.2f", speedup(report.plain, report.tfpconv)),
                rows.size, report.settings.runs)).append('\n')
            .append(getString(R.string.agreement, agree, rows.size,
                String.format(java.util.Locale.US, "%.1e", report.maxDifference))).append('\n')
            .append(getString(R.string.accuracy, plainCorrect, tfpconvCorrect, rows.size))
        if (known.isNotEmpty()) {
            text.append('\n').append(getString(R.string.host_match, matchesHost, known.size))
        }
        summary.text = text.toString()
        Log.i(TAG, text.toString().replace("\n", " | "))

        results.removeAllViews()
        for (row in rows) {
            val item = layoutInflater.inflate(R.layout.item_result, results, false)
            item.findViewById<ImageView>(R.id.thumbnail).setImageBitmap(row.thumbnail)
            item.findViewById<TextView>(R.id.truth).text =
                getString(R.string.truth, row.image.labelName)
            item.findViewById<TextView>(R.id.prediction_plain).text = getString(
                R.string.prediction_plain, mark(row.plain, row.image),
                className(row.plain.label, rows), formatPercent(row.plain.probability))
            item.findViewById<TextView>(R.id.prediction_tfpconv).text = getString(
                R.string.prediction_tfpconv, mark(row.tfpconv, row.image),
                className(row.tfpconv.label, rows), formatPercent(row.tfpconv.probability))
            results.addView(item)
        }
    }

    private fun mark(prediction: Prediction, image: TestImage): String =
        if (prediction.label == image.label) "\u2713" else "\u2717"

    private fun showError(error: Throwable) {
        results.removeAllViews()
        summary.text = getString(R.string.failed, error.toString())
    }

    companion object {
        private const val TAG = "tfpconv-demo"
        private const val MODEL_ASSET = "model.tflite"
        private const val DEFAULT_THREADS = 2
        private const val DEFAULT_RUNS = 20
        private const val THUMBNAIL_PX = 112
        private val CLASS_NAMES = listOf(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
        )
    }
}
