package com.tfpconv.demo

import java.io.Closeable
import org.tensorflow.lite.Delegate

/**
 * The tfpconv delegate for TFLite's Android [org.tensorflow.lite.Interpreter]:
 *
 * ```
 * TfpconvDelegate(numThreads = 2).use { delegate ->
 *     Interpreter(model, Interpreter.Options().addDelegate(delegate)).use { it.run(input, output) }
 * }
 * ```
 *
 * It owns one native `TfLiteDelegate` (created through [NativeBridge]); TFLite applies it with
 * `ModifyGraphWithDelegate` to the handle from [getNativeHandle]. The delegate runs the CONV_2D
 * operators that the model's "tfpconv" plan (written by `tfpconv.convert`) describes and leaves
 * everything else to TFLite. Close it only after every interpreter using it has been closed.
 *
 * Needs the bundled runtime `org.tensorflow:tensorflow-lite`, whose JNI takes the handle as a
 * `TfLiteDelegate*` (not the Play-services runtime, which expects a stable-ABI opaque delegate).
 */
class TfpconvDelegate @JvmOverloads constructor(
    val numThreads: Int = 1,
    logLevel: Int = NativeBridge.LOG_WARNING,
    isa: String? = null
) : Delegate, Closeable {

    private var handle: Long = NativeBridge.create(numThreads, logLevel, isa)

    /** The native `TfLiteDelegate*`. */
    @Synchronized
    override fun getNativeHandle(): Long {
        check(handle != 0L) { "TfpconvDelegate is closed" }
        return handle
    }

    /**
     * Indices of the CONV_2D nodes the delegate claimed when it was last applied to a model; empty
     * if the model has no (valid) tfpconv plan, in which case TFLite ran everything itself.
     */
    @Synchronized
    fun claimedNodes(): IntArray = NativeBridge.claimedNodes(getNativeHandle())

    @Synchronized
    override fun close() {
        val closing = handle
        handle = 0L
        NativeBridge.delete(closing)
    }
}
