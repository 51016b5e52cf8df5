package com.tfpconv.demo

import android.app.Activity
import android.content.pm.PackageManager
import android.os.Build
import android.os.Bundle
import android.util.Log
import android.widget.LinearLayout
import android.widget.TextView
import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import java.util.Random
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.TensorFlowLite

/**
 * The latency-table mode: times on the phone the one-layer models (and the full model) that
 * `tfpconv latency-table MODEL --export-models DIR` wrote, as the host times them for its table
 * (TFLite with the tfpconv delegate added, its default claim policy; warm-up, interleaved runs,
 * medians: see [LatencyTableRun]), and writes timings.json next to the manifest for
 * `tfpconv latency-table MODEL --from-device timings.json --manifest DIR -o table.json`.
 *
 * The exported folder is read from the app's external files dir
 * (`/sdcard/Android/data/com.tfpconv.demo/files/<dir>`, default dir "latency"; `adb push` it there):
 * `adb shell am start -n com.tfpconv.demo/.LatencyTableActivity [--es dir latency] [--es isa neon]`.
 * The thread count is the manifest's (the table is for it). Progress and the result are shown and
 * written to logcat (tag "tfpconv-latency").
 */
class LatencyTableActivity : Activity() {
    private lateinit var status: TextView
    private lateinit var details: TextView
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()

    @Volatile
    private var stopping = false

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val layout = LinearLayout(this)
        layout.orientation = LinearLayout.VERTICAL
        layout.setPadding(PADDING_PX, PADDING_PX, PADDING_PX, PADDING_PX)
        status = TextView(this)
        details = TextView(this)
        layout.addView(status)
        layout.addView(details)
        setContentView(layout)
        start()
    }

    override fun onDestroy() {
        stopping = true
        worker.shutdownNow()
        super.onDestroy()
    }

    private fun start() {
        val externalDir: File? = getExternalFilesDir(null)
        val dirName = intent.getStringExtra(EXTRA_DIR) ?: DEFAULT_DIR
        val isa = intent.getStringExtra(EXTRA_ISA)
        status.text = "latency table: starting"
        worker.execute {
            val outcome: Any = try {
                val base = checkNotNull(externalDir) { "no external files dir (storage not mounted?)" }
                val dir = File(base, LatencyManifest.checkFileName(dirName, "--es $EXTRA_DIR"))
                measure(dir, isa)
            } catch (e: Throwable) {
                Log.e(TAG, "latency table run failed", e)
                e
            }
            runOnUiThread {
                if (isDestroyed) return@runOnUiThread
                if (outcome is String) {
                    status.text = outcome
                    details.text = ""
                } else {
                    showError(outcome as Throwable)
                }
            }
        }
    }

    /** Times everything and writes timings.json; returns the summary line. */
    private fun measure(dir: File, isa: String?): String {
        val manifestFile = File(dir, LatencyManifest.FILE)
        require(manifestFile.isFile) {
            "$manifestFile not found: adb push the folder `tfpconv latency-table --export-models` wrote"
        }
        val manifest = LatencyManifest.parse(manifestFile.readText())
        require(manifest.threads <= NativeBridge.MAX_THREADS) {
            "the manifest asks for ${manifest.threads} threads, at most ${NativeBridge.MAX_THREADS}"
        }
        val device = deviceInfo()
        Log.i(TAG, "timing ${manifest.entries.size} models + the full model of '${manifest.model}' " +
            "with ${manifest.threads} thread(s) on ${device.cpu()}, isa ${device.isa(isa)}")
        val run = LatencyTableRun(manifest, InterpreterLoader(dir, manifest.threads, isa))
        run.cancelled = { stopping }
        run.progress = { done, total, what ->
            val line = formatProgress(done, total, what)
            Log.i(TAG, line)
            runOnUiThread {
                if (!isDestroyed) {
                    status.text = "latency table of '${manifest.model}', ${manifest.threads} thread(s)"
                    details.text = line
                }
            }
        }
        val timings = run.run()
        val machine = timings.machine(device, isa, appVersion(), tfliteVersion())
        val out = File(dir, DeviceTimings.FILE)
        writeAtomically(out, timings.toJson(machine))
        val summary = String.format(java.util.Locale.US,
            "wrote %s: %d models, full model %.3f ms (%s, %s, %d thread(s))",
            out, timings.entries.size, timings.fullModel.medianMs,
            machine["cpu"], machine["isa"], manifest.threads)
        Log.i(TAG, summary)
        return summary
    }

    private fun deviceInfo(): DeviceInfo {
        val sdk = Build.VERSION.SDK_INT
        // SOC_MANUFACTURER / SOC_MODEL exist from Android 12 (API 31).
        val socManufacturer = if (sdk >= 31) Build.SOC_MANUFACTURER else null
        val socModel = if (sdk >= 31) Build.SOC_MODEL else null
        return DeviceInfo(Build.MANUFACTURER, Build.MODEL, socManufacturer, socModel,
            Build.HARDWARE, Build.SUPPORTED_ABIS.toList(), sdk)
    }

    private fun appVersion(): String? = try {
        packageManager.getPackageInfo(packageName, 0).versionName
    } catch (e: PackageManager.NameNotFoundException) {
        null
    }

    private fun tfliteVersion(): String? = try {
        TensorFlowLite.runtimeVersion()
    } catch (e: RuntimeException) {
        null
    }

    private fun showError(error: Throwable) {
        status.text = "latency table: failed"
        details.text = error.toString()
    }

    companion object {
        private const val TAG = "tfpconv-latency"
        const val EXTRA_DIR = "dir"
        const val EXTRA_ISA = "isa"
        const val DEFAULT_DIR = "latency"
        private const val PADDING_PX = 32
    }
}

/**
 * One exported model in a TFLite [Interpreter] with its own tfpconv delegate (default claim
 * policy), inputs filled once with uniform random values as the host does. Closes the interpreter
 * before the delegate.
 */
private class InterpreterModel(file: File, threads: Int, isa: String?) : TimedModel {
    private val delegate = TfpconvDelegate(threads, NativeBridge.LOG_WARNING, isa)
    private val interpreter: Interpreter
    private val inputs: Array<Any>
    private val outputs: HashMap<Int, Any> = HashMap()
    override val claimedNodes: Int

    init {
        try {
            val model = FileInputStream(file).use { stream ->
                stream.channel.map(FileChannel.MapMode.READ_ONLY, 0, stream.channel.size())
            }
            interpreter = Interpreter(model,
                Interpreter.Options().setNumThreads(threads).addDelegate(delegate))
        } catch (e: Throwable) {
            delegate.close()
            throw e
        }
        try {
            val random = Random(0)
            inputs = Array(interpreter.inputTensorCount) { i ->
                val tensor = interpreter.getInputTensor(i)
                val buffer = ByteBuffer.allocateDirect(tensor.numBytes()).order(ByteOrder.nativeOrder())
                if (tensor.dataType() == DataType.FLOAT32) {
                    val floats = buffer.asFloatBuffer()
                    while (floats.hasRemaining()) floats.put(random.nextFloat())
                }
                buffer
            }
            for (i in 0 until interpreter.outputTensorCount) {
                val bytes = interpreter.getOutputTensor(i).numBytes()
                outputs[i] = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())
            }
            claimedNodes = delegate.claimedNodes().size
        } catch (e: Throwable) {
            interpreter.close()
            delegate.close()
            throw e
        }
    }

    override fun invokeNs(): Long {
        for (input in inputs) (input as ByteBuffer).rewind()
        for (output in outputs.values) (output as ByteBuffer).rewind()
        val start = System.nanoTime()
        interpreter.runForMultipleInputsOutputs(inputs, outputs)
        val wallNs = System.nanoTime() - start
        // TFLite's own time of the native invoke (without the Java copies), as the host times
        // Interpreter.invoke().
        return interpreter.lastNativeInferenceDurationNanoseconds ?: wallNs
    }

    override fun close() {
        try {
            interpreter.close()
        } finally {
            delegate.close()
        }
    }
}

private class InterpreterLoader(
    private val dir: File,
    private val threads: Int,
    private val isa: String?
) : ModelLoader {
    override fun load(file: String): TimedModel {
        val path = File(dir, LatencyManifest.checkFileName(file, LatencyManifest.FILE))
        require(path.isFile) { "$path not found (the manifest lists it)" }
        return InterpreterModel(path, threads, isa)
    }
}
