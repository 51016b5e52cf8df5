package com.tfpconv.demo

// Host check of the app's plain logic (app/src/main/java/com/tfpconv/demo/DemoMath.kt) on a
// desktop JVM: compiled together with that file by tests/test_android_bridge.py when kotlinc is
// installed. Prints "PASS name" / "FAIL name: why" per check; exits non-zero on a failure.

private var failures = 0

private fun check(name: String, body: () -> Unit) {
    try {
        body()
        println("PASS $name")
    } catch (e: Throwable) {
        failures++
        println("FAIL $name: $e")
    }
}

private fun expect(condition: Boolean, message: String) {
    if (!condition) throw AssertionError(message)
}

private fun rejects(body: () -> Unit): Boolean =
    try {
        body()
        false
    } catch (e: IllegalArgumentException) {
        true
    }

fun main(args: Array<String>) {
    val manifestFile = if (args.isNotEmpty()) args[0] else null

    check("manifest_parse") {
        val images = Manifest.parse(
            "${Manifest.HEADER}\n00_ankle_boot.png,9,Ankle boot,9\n\n01_pullover.png,2,Pullover,-1\n")
        expect(images.size == 2, "2 images, got ${images.size}")
        expect(images[0].file == "00_ankle_boot.png" && images[0].label == 9, "first row")
        expect(images[0].labelName == "Ankle boot" && images[0].hostPrediction == 9, "first row names")
        expect(images[1].hostPrediction == -1, "unknown host prediction")
    }
    check("manifest_rejects_bad_input") {
        expect(rejects { Manifest.parse("file,label\na.png,1") }, "wrong header accepted")
        expect(rejects { Manifest.parse("${Manifest.HEADER}\na.png,x,A,1") }, "bad label accepted")
        expect(rejects { Manifest.parse("${Manifest.HEADER}\na.png,1,A") }, "3 fields accepted")
        expect(rejects { Manifest.parse("") }, "empty manifest accepted")
    }
    if (manifestFile != null) {
        check("bundled_manifest") {
            val images = Manifest.parse(java.io.File(manifestFile).readText())
            expect(images.isNotEmpty(), "no images in $manifestFile")
            val dir = java.io.File(manifestFile).parentFile
            for (image in images) {
                expect(java.io.File(dir, image.file).isFile, "missing ${image.file}")
                expect(image.label in 0..9, "label ${image.label} of ${image.file}")
            }
        }
    }
    check("pixels_to_input") {
        val gray = intArrayOf(0xff000000.toInt(), 0xffffffff.toInt(), 0xff808080.toInt())
        val input = pixelsToInput(gray)
        expect(input[0] == 0.0f && input[1] == 1.0f, "black/white: ${input.toList()}")
        expect(Math.abs(input[2] - 128 / 255.0f) < 1e-6f, "gray: ${input[2]}")
        expect(pixelsToInput(IntArray(IMAGE_SIDE * IMAGE_SIDE)).size == 784, "size")
    }
    check("predict") {
        val p = predict(floatArrayOf(0.1f, 0.7f, 0.2f))
        expect(p.label == 1 && p.probability == 0.7f, "argmax")
        expect(predict(floatArrayOf(0.5f, 0.5f)).label == 0, "first on ties")
        expect(rejects { predict(FloatArray(0)) }, "empty output accepted")
    }
    check("max_abs_difference") {
        val d = maxAbsDifference(floatArrayOf(1f, 2f, 3f), floatArrayOf(1f, 2.5f, 2f))
        expect(d == 1.0f, "got $d")
        expect(rejects { maxAbsDifference(FloatArray(2), FloatArray(3)) }, "size mismatch")
    }
    check("latency_stats") {
        val stats = LatencyStats(longArrayOf(4_000_000, 1_000_000, 2_000_000, 3_000_000))
        expect(stats.count == 4, "count")
        expect(Math.abs(stats.meanMs - 2.5) < 1e-9, "mean ${stats.meanMs}")
        expect(Math.abs(stats.medianMs - 2.5) < 1e-9, "median ${stats.medianMs}")
        expect(Math.abs(stats.minMs - 1.0) < 1e-9, "min ${stats.minMs}")
        expect(Math.abs(LatencyStats(longArrayOf(3, 1, 2)).medianMs - 2e-6) < 1e-15, "odd median")
        val fast = LatencyStats(longArrayOf(1_000_000, 1_500_000))
        expect(Math.abs(speedup(stats, fast) - 2.0) < 1e-9, "speedup")
        expect(formatMs(1.23456) == "1.235 ms", formatMs(1.23456))
        expect(formatPercent(0.9876f) == "98.8%", formatPercent(0.9876f))
        expect(rejects { LatencyStats(LongArray(0)) }, "no samples accepted")
    }
    println("kotlin logic checks: ${if (failures == 0) "all ok" else "$failures failing"}")
    if (failures != 0) System.exit(1)
}
