package com.tfpconv.demo

import java.io.Closeable
import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Delegate
import org.tensorflow.lite.Interpreter

/**
 * One TFLite [Interpreter] over the model, with or without an extra delegate. Without one it is
 * plain TFLite (its default CPU path, XNNPACK); with the tfpconv delegate, the planned CONV_2D run
 * on tfpconv and the rest on TFLite as before. Not thread-safe: use from one thread.
 */
class ModelRunner(model: ByteBuffer, numThreads: Int, delegate: Delegate?) : Closeable {
    private val interpreter: Interpreter
    private val input: ByteBuffer
    private val output: ByteBuffer
    val numClasses: Int

    init {
        val options = Interpreter.Options().setNumThreads(numThreads)
        if (delegate != null) options.addDelegate(delegate)
        interpreter = Interpreter(model, options)
        try {
            val inputTensor = interpreter.getInputTensor(0)
            val outputTensor = interpreter.getOutputTensor(0)
            require(inputTensor.dataType() == DataType.FLOAT32) {
                "the model's input is ${inputTensor.dataType()}, expected FLOAT32"
            }
            require(inputTensor.numElements() == IMAGE_SIDE * IMAGE_SIDE) {
                "the model's input has shape ${inputTensor.shape().contentToString()}, " +
                    "expected 28x28x1 (a Fashion-MNIST model)"
            }
            require(outputTensor.dataType() == DataType.FLOAT32) {
                "the model's output is ${outputTensor.dataType()}, expected FLOAT32"
            }
            numClasses = outputTensor.numElements()
            input = ByteBuffer.allocateDirect(inputTensor.numBytes()).order(ByteOrder.nativeOrder())
            output = ByteBuffer.allocateDirect(outputTensor.numBytes()).order(ByteOrder.nativeOrder())
        } catch (e: RuntimeException) {
            interpreter.close()
            throw e
        }
    }

    class Result(val output: FloatArray, val latencyNs: Long)

    /** Runs one image (28*28 floats in [0, 1]); the latency is TFLite's own native invoke time. */
    fun run(pixels: FloatArray): Result {
        input.rewind()
        input.asFloatBuffer().put(pixels)
        output.rewind()
        val start = System.nanoTime()
        interpreter.run(input, output)
        val wallNs = System.nanoTime() - start
        val nativeNs: Long? = interpreter.lastNativeInferenceDurationNanoseconds
        val values = FloatArray(numClasses)
        output.rewind()
        output.asFloatBuffer().get(values)
        return Result(values, nativeNs ?: wallNs)
    }

    override fun close() = interpreter.close()
}
