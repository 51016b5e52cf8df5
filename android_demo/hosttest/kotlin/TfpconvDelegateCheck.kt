package com.tfpconv.demo

import org.tensorflow.lite.Delegate

// Host check of the app's TfpconvDelegate.kt on a desktop JVM, through the real JNI bridge
// (libtfpconv_jni.so from the app's tfpconv_jni.cc, linked against the real x86-64 delegate).
// Compiled by tests/test_android_bridge.py with kotlinc against the compile-only TFLite signatures
// in hosttest/compile_only/ (only the Delegate interface is loaded at run time: nothing here runs
// an Interpreter). Prints "PASS name" / "FAIL name: why" per check; exits non-zero on a failure.
//
// Arguments: [create/close cycles for the leak check] (default 5000).

private var failures = 0

private fun check(name: String, body: () -> Unit) {
    try {
        body()
        println("PASS $name")
    } catch (e: Throwable) {
        failures++
        println("FAIL $name: $e")
    }
    System.out.flush()
}

private fun expect(condition: Boolean, message: String) {
    if (!condition) throw AssertionError(message)
}

private inline fun <reified E : Throwable> throws(body: () -> Unit): Boolean =
    try {
        body()
        false
    } catch (e: Throwable) {
        e is E
    }

/** A live handle is the delegate's own object: it answers the claimed-nodes query (none yet). */
private fun expectLive(handle: Long, what: String) {
    expect(handle != 0L, "$what: handle is 0")
    val nodes = NativeBridge.nativeClaimedNodes(handle)
    expect(nodes != null && nodes.isEmpty(), "$what: claimed nodes ${nodes?.toList()}")
}

private fun expectClosed(delegate: TfpconvDelegate, what: String) {
    expect(throws<IllegalStateException> { delegate.getNativeHandle() }, "$what: handle")
    expect(throws<IllegalStateException> { delegate.claimedNodes() }, "$what: claimed nodes")
}

private fun createAndClose() {
    val delegate = TfpconvDelegate(2)
    val handle = delegate.getNativeHandle()
    expectLive(handle, "TfpconvDelegate(2)")
    expect(delegate.numThreads == 2, "numThreads ${delegate.numThreads}")
    expect(delegate.claimedNodes().isEmpty(), "a fresh delegate claims nodes")
    expect(delegate.getNativeHandle() == handle, "the handle changed between calls")
    delegate.close()
    expectClosed(delegate, "close()")
    delegate.close() // a second close is a no-op
    expectClosed(delegate, "second close()")
}

private fun defaultsAndOverloads() {
    TfpconvDelegate().use {
        expectLive(it.getNativeHandle(), "TfpconvDelegate()")
        expect(it.numThreads == 1, "default numThreads ${it.numThreads}")
    }
    TfpconvDelegate(3, NativeBridge.LOG_ERROR).use {
        expectLive(it.getNativeHandle(), "TfpconvDelegate(3, LOG_ERROR)")
    }
    // A set this CPU lacks (neon on x86-64) falls back to the best available one.
    for (isa in listOf(null, "auto", "scalar", "avx2", "avx512", "neon")) {
        TfpconvDelegate(2, NativeBridge.LOG_ERROR, isa).use {
            expectLive(it.getNativeHandle(), "isa=$isa")
        }
    }
}

private fun useCloses() {
    val delegate = TfpconvDelegate(1)
    val result = delegate.use { it.getNativeHandle() }
    expect(result != 0L, "handle inside use {}")
    expectClosed(delegate, "after use {}")
    val failing = TfpconvDelegate(1)
    val rethrown = throws<IllegalStateException> {
        failing.use { throw IllegalStateException("failure inside use {}") }
    }
    expect(rethrown, "use {} did not rethrow")
    expectClosed(failing, "after a failing use {}")
}

private fun asTfliteDelegate() {
    // What Interpreter.Options.addDelegate sees: TFLite's Delegate interface.
    val delegate: Delegate = TfpconvDelegate(2)
    expectLive(delegate.getNativeHandle(), "Delegate.getNativeHandle()")
    delegate.close() // TFLite's Delegate.close() must reach ours and free the native delegate
    expectClosed(delegate as TfpconvDelegate, "Delegate.close()")
}

private fun distinctHandles() {
    TfpconvDelegate(1).use { first ->
        TfpconvDelegate(1).use { second ->
            val shared = first.getNativeHandle() == second.getNativeHandle()
            expect(!shared, "two live delegates share a handle")
        }
        expectLive(first.getNativeHandle(), "first after the second was closed")
    }
}

private fun invalidArguments() {
    for (threads in intArrayOf(0, -1, NativeBridge.MAX_THREADS + 1)) {
        expect(throws<IllegalArgumentException> { TfpconvDelegate(threads) }, "numThreads=$threads")
    }
    expect(throws<IllegalArgumentException> { TfpconvDelegate(1, 4) }, "logLevel=4")
    val badIsa = throws<IllegalArgumentException> {
        TfpconvDelegate(1, NativeBridge.LOG_WARNING, "sse")
    }
    expect(badIsa, "isa=sse")
}

private fun noLeak(cycles: Int) {
    HostHeapProbe.load()
    repeat(200) { TfpconvDelegate(2).close() } // warm-up: lazy JVM and libc state
    val growth = HostHeapProbe.smallestGrowth("$cycles create/close cycles") {
        repeat(cycles) { TfpconvDelegate(2).close() }
    }
    // A close() that did not delete would leave the delegate's state (far more than 8 bytes).
    val limit = Math.max(64L * 1024L, 8L * cycles)
    expect(
        growth < limit,
        "C heap grew by at least $growth bytes in each of ${HostHeapProbe.LEAK_ROUNDS} rounds " +
            "of $cycles cycles (limit $limit)"
    )
}

fun main(args: Array<String>) {
    val cycles = if (args.isNotEmpty()) args[0].toInt() else 5000
    check("create_and_close") { createAndClose() }
    check("defaults_and_overloads") { defaultsAndOverloads() }
    check("use_closes") { useCloses() }
    check("as_tflite_delegate") { asTfliteDelegate() }
    check("distinct_handles") { distinctHandles() }
    check("invalid_arguments") { invalidArguments() }
    check("no_leak") { noLeak(cycles) }
    println("tfpconv delegate checks: ${if (failures == 0) "all ok" else "$failures failing"}")
    if (failures != 0) System.exit(1)
}
