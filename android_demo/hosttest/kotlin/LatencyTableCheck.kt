package com.tfpconv.demo

import java.io.File

// Host check of the latency-table mode's plain logic (app/src/main/java/com/tfpconv/demo/
// LatencyTableLogic.kt) on a desktop JVM, driven by tests/test_android_latency.py:
//
//   LatencyTableCheckKt MANIFEST_DIR TIMINGS_OUT
//
// reads a real manifest.json written by `tfpconv latency-table --export-models`, times every model
// it lists with a fake timer (each file's bytes are read and must be a .tflite; the fake latency
// follows a formula of the entry that the Python test checks in the resulting table, with an
// outlier every 7th invoke that only a median ignores), checks the run schedule, and writes
// TIMINGS_OUT as the app writes timings.json. Prints "PASS name" / "FAIL name: why" per check.

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

/** The fake latency of an entry, in ms; test_android_latency.py has the same formula. */
fun fakeMs(entry: ManifestEntry?): Double =
    if (entry == null) FULL_MODEL_MS
    else 0.01 * (1 + entry.inChannels * entry.outChannels) * (1.0 - 0.5 * entry.connectivity) +
        (if (entry.key.contains("_k3_")) 0.002 else 0.0)

const val FULL_MODEL_MS = 2.5

/** Every invoke in order (file names), and the models open at a time. */
class FakeLoader(private val dir: File, private val manifest: LatencyManifest) : ModelLoader {
    val invokes = ArrayList<String>()
    var open = 0
    var maxOpen = 0
    private val byFile = manifest.entries.associateBy { it.file }

    override fun load(file: String): TimedModel {
        val bytes = File(dir, file).readBytes()
        expect(bytes.size > 8 && String(bytes, 4, 4, Charsets.US_ASCII) == "TFL3", "$file is not a .tflite")
        val entry = byFile[file]
        expect(
            entry != null || file == manifest.fullModelFile || file in manifest.calibrationFiles,
            "$file is not in the manifest")
        val ns = Math.round(fakeMs(entry) * 1e6)
        open++
        maxOpen = Math.max(maxOpen, open)
        return object : TimedModel {
            var count = 0
            override val claimedNodes: Int =
                if (entry != null && entry.key.contains("_k3_") && !entry.key.endsWith("_dense")) 1 else 0

            override fun invokeNs(): Long {
                invokes.add(file)
                count++
                return if (count % 7 == 0) ns * 10 else ns
            }

            override fun close() {
                open--
            }
        }
    }
}

fun main(args: Array<String>) {
    require(args.size == 2) { "usage: LatencyTableCheckKt MANIFEST_DIR TIMINGS_OUT" }
    val dir = File(args[0])
    val out = File(args[1])

    check("json_round_trip") {
        val text = "{\"a\": [1, 2.5, -3e-2, true, false, null], \"b\": \"x\\\"\\\\\\n\\u00e9\\t\", \"c\": {}}"
        val value = Json.parse(text) as Map<*, *>
        expect(value.keys.toList() == listOf("a", "b", "c"), "key order ${value.keys}")
        expect(value["a"] == listOf(1.0, 2.5, -0.03, true, false, null), "array ${value["a"]}")
        expect(value["b"] == "x\"\\\n\u00e9\t", "string ${value["b"]}")
        expect(Json.parse(Json.write(value)) == value, "write then parse")
        expect(Json.write(linkedMapOf("n" to 3, "d" to 0.72)) == "{\n \"n\": 3,\n \"d\": 0.72\n}",
            Json.write(linkedMapOf("n" to 3, "d" to 0.72)))
        expect(Json.write(listOf("\u0001")) == "[\n \"\\u0001\"\n]", "control characters escaped")
        expect(rejects { Json.parse("{\"a\": 1,}") }, "trailing comma accepted")
        expect(rejects { Json.parse("[1] 2") }, "trailing value accepted")
        expect(rejects { Json.parse("\"open") }, "unterminated string accepted")
        expect(rejects { Json.write(listOf(Double.NaN)) }, "NaN written")
    }

    check("median_and_runs") {
        expect(median(doubleArrayOf(3.0, 1.0, 2.0)) == 2.0, "odd median")
        expect(median(doubleArrayOf(4.0, 1.0, 2.0, 3.0)) == 2.5, "even median")
        expect(rejects { median(DoubleArray(0)) }, "median of nothing")
        val s = RunSchedule(2, 3, 300.0, 1000.0, 5, 60)
        // int(clip(budget / max(ms, 1e-3), 5, 60)), as tfpconv's _runs_for
        expect(s.runsFor(1.0, 300.0) == 60, "fast model: max runs")
        expect(s.runsFor(100.0, 300.0) == 5, "slow model: min runs")
        expect(s.runsFor(7.0, 300.0) == 42, "300/7 = 42.9 -> 42, got ${s.runsFor(7.0, 300.0)}")
        expect(s.runsFor(0.0, 300.0) == 60, "zero probe")
        expect(s.runsFor(40.0, 1000.0) == 25, "model budget")
    }

    check("device_description") {
        val old = DeviceInfo("Samsung", "SM-G960F", null, null, "samsungexynos9810",
            listOf("arm64-v8a", "armeabi-v7a"), 29)
        expect(old.cpu() == "samsungexynos9810 (Samsung SM-G960F)", old.cpu())
        expect(old.isa(null) == "neon" && old.isa("auto") == "neon", "arm64 is neon")
        expect(old.isa("scalar") == "scalar", "forced ISA reported")
        val new = DeviceInfo("Google", "Pixel 8", "Google", "Tensor G3", "husky", listOf("arm64-v8a"), 34)
        expect(new.cpu() == "Google Tensor G3 (Google Pixel 8)", new.cpu())
        val emulator = DeviceInfo("Google", "sdk_gphone64_x86_64", "unknown", "unknown", "ranchu",
            listOf("x86_64"), 34)
        expect(emulator.cpu() == "ranchu (Google sdk_gphone64_x86_64)", emulator.cpu())
        expect(emulator.isa(null) == "auto (x86_64)", emulator.isa(null))
    }

    check("manifest_rejects_bad_input") {
        expect(rejects { LatencyManifest.parse("[]") }, "not an object")
        expect(rejects { LatencyManifest.parse("{\"kind\": \"other\"}") }, "other kind")
        val good = File(dir, LatencyManifest.FILE).readText()
        expect(rejects { LatencyManifest.parse(good.replace("\"format\": 1", "\"format\": 99")) },
            "future format")
        val firstFile = LatencyManifest.parse(good).entries[0].file
        expect(rejects {
            LatencyManifest.parse(good.replace("\"$firstFile\"", "\"../../etc/$firstFile\""))
        }, "a path outside the folder")
        expect(rejects { LatencyManifest.checkFileName(".hidden", "x") }, "hidden file")
        expect(rejects { LatencyManifest.checkFileName("a/b.tflite", "x") }, "path")
    }

    val manifest = LatencyManifest.parse(File(dir, LatencyManifest.FILE).readText())
    val loader = FakeLoader(dir, manifest)
    val progress = ArrayList<String>()
    var timings: DeviceTimings? = null

    check("manifest_parse") {
        expect(manifest.entries.isNotEmpty(), "no entries")
        expect(manifest.threads >= 1 && manifest.model.isNotEmpty(), "model / threads")
        expect(manifest.schedule.warmup == 2 && manifest.schedule.probeRuns == 3, "host schedule")
        for (group in manifest.groups()) {
            val first = group[0]
            expect(group.all { it.key == first.key && it.inChannels == first.inChannels &&
                it.outChannels == first.outChannels }, "a group is one grid point")
            val cs = group.map { it.connectivity }
            val patterns = first.key.contains("_k3_") && !first.key.endsWith("_dense")
            expect(cs == if (patterns) listOf(0.0, 0.5, 0.72, 0.9) else listOf(0.0),
                "connectivities $cs of ${first.key}")
        }
    }

    check("run_schedule") {
        val run = LatencyTableRun(manifest, loader)
        run.progress = { done, total, what -> progress.add(formatProgress(done, total, what)) }
        val result = run.run()
        timings = result
        expect(loader.open == 0, "${loader.open} models left open")
        expect(loader.maxOpen <= 4, "at most a group open at once, saw ${loader.maxOpen}")
        val s = manifest.schedule
        var at = 0
        for (group in manifest.groups()) {
            val files = group.map { it.file }
            val runs = s.runsFor(fakeMs(group[0]), s.gridBudgetMs)
            val expected = ArrayList<String>()
            repeat(s.warmup + s.probeRuns) { expected.add(files[0]) }
            for (f in files) repeat(s.warmup) { expected.add(f) }
            repeat(runs) { expected.addAll(files) }
            val seen = loader.invokes.subList(at, at + expected.size)
            expect(seen == expected, "invokes of ${files[0]}: $seen, expected $expected")
            at += expected.size
            for (entry in group) {
                val t = result.entries.first { it.file == entry.file }
                expect(t.runs == runs, "${entry.file}: ${t.runs} runs, expected $runs")
                expect(Math.abs(t.medianMs - fakeMs(entry)) < 1e-9, "${entry.file}: median ${t.medianMs}")
            }
        }
        val fullRuns = s.runsFor(FULL_MODEL_MS, s.modelBudgetMs)
        val wholeModels = 1 + manifest.calibrationFiles.size
        expect(manifest.calibrationFiles.isNotEmpty(), "calibration candidates exported")
        expect(
            loader.invokes.size == at + wholeModels * (s.warmup * 2 + s.probeRuns + fullRuns),
            "full model and calibration invokes")
        expect(result.fullModel.runs == fullRuns && result.fullModel.medianMs == FULL_MODEL_MS, "full model")
        expect(result.calibration.map { it.file } == manifest.calibrationFiles, "calibration in order")
        expect(result.calibration.all { it.medianMs == FULL_MODEL_MS }, "calibration medians")
        expect(result.entries.map { it.file } == manifest.entries.map { it.file }, "entries in order")
        val total = manifest.groups().size + wholeModels
        expect(progress.size == total + 1, "progress lines ${progress.size}")
        expect(progress.last().startsWith("$total/$total (100%)"), progress.last())
    }

    check("cancel") {
        val run = LatencyTableRun(manifest, FakeLoader(dir, manifest))
        run.cancelled = { true }
        val stopped = try {
            run.run()
            false
        } catch (e: InterruptedException) {
            true
        }
        expect(stopped, "a cancelled run went on")
    }

    check("timings_json") {
        val result = timings ?: throw AssertionError("no timings (run_schedule failed)")
        val device = DeviceInfo("FakeMaker", "Fake Phone", "FakeSoc", "FS-1", "fakehw",
            listOf("arm64-v8a"), 34)
        val machine = result.machine(device, null, "0.1.0", "2.16.1")
        expect(machine["cpu"] == "FakeSoc FS-1 (FakeMaker Fake Phone)" && machine["isa"] == "neon",
            "machine $machine")
        writeAtomically(out, result.toJson(machine))
        val back = Json.parse(out.readText()) as Map<*, *>
        expect(back["kind"] == DeviceTimings.KIND && back["model"] == manifest.model, "header")
        expect((back["entries"] as List<*>).size == manifest.entries.size, "one row per entry")
        expect(!File(out.parentFile, out.name + ".tmp").exists(), "temporary file left")
    }

    if (failures == 0) println("latency table checks: all ok") else println("latency table checks: $failures failing")
    if (failures != 0) System.exit(1)
}
