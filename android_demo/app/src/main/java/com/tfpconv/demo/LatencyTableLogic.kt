package com.tfpconv.demo

import java.io.Closeable
import java.io.File
import java.io.IOException
import java.util.Locale

// The latency-table mode's plain logic: the manifest `tfpconv latency-table --export-models` writes,
// the run schedule (the host's: warm-up, a probe, interleaved timed runs, medians), and the
// timings.json that `tfpconv latency-table --from-device` reads. No Android or TFLite classes here,
// so it also compiles and runs on a desktop JVM (hosttest/kotlin/LatencyTableCheck.kt, driven by
// tests/test_android_latency.py). LatencyTableActivity supplies the models (TFLite + the tfpconv
// delegate) and the device description. Kept to Kotlin 1.3 language and library features.

// -- JSON ------------------------------------------------------------------------------------------

/**
 * A small JSON reader and writer (Android's org.json is not on a desktop JVM). Objects are read as
 * [LinkedHashMap] (key order kept), arrays as [List], numbers as [Double], and written from maps,
 * lists, strings, numbers, booleans and null.
 */
object Json {
    fun parse(text: String): Any? {
        val reader = Reader(text)
        val value = reader.value()
        reader.skipSpace()
        if (!reader.atEnd()) throw reader.error("trailing characters")
        return value
    }

    /** [value] as JSON, one member or element a line, indented by one space per level. */
    fun write(value: Any?): String {
        val out = StringBuilder()
        write(value, out, 0)
        return out.toString()
    }

    private fun write(value: Any?, out: StringBuilder, depth: Int) {
        when (value) {
            null -> out.append("null")
            is Boolean -> out.append(if (value) "true" else "false")
            is Int, is Long, is Short, is Byte -> out.append(value.toString())
            is Number -> {
                val d = value.toDouble()
                require(!d.isNaN() && !d.isInfinite()) { "JSON has no $d" }
                out.append(d.toString())
            }
            is String -> quote(value, out)
            is Map<*, *> -> {
                if (value.isEmpty()) {
                    out.append("{}")
                    return
                }
                out.append("{")
                var first = true
                for ((key, item) in value) {
                    require(key is String) { "JSON object keys are strings, got $key" }
                    out.append(if (first) "\n" else ",\n")
                    first = false
                    indent(out, depth + 1)
                    quote(key, out)
                    out.append(": ")
                    write(item, out, depth + 1)
                }
                out.append("\n")
                indent(out, depth)
                out.append("}")
            }
            is List<*> -> {
                if (value.isEmpty()) {
                    out.append("[]")
                    return
                }
                out.append("[")
                for ((index, item) in value.withIndex()) {
                    out.append(if (index == 0) "\n" else ",\n")
                    indent(out, depth + 1)
                    write(item, out, depth + 1)
                }
                out.append("\n")
                indent(out, depth)
                out.append("]")
            }
            else -> throw IllegalArgumentException("cannot write ${value.javaClass.name} as JSON")
        }
    }

    private fun indent(out: StringBuilder, depth: Int) {
        for (i in 0 until depth) out.append(' ')
    }

    private fun quote(text: String, out: StringBuilder) {
        out.append('"')
        for (c in text) {
            when {
                c == '"' -> out.append("\\\"")
                c == '\\' -> out.append("\\\\")
                c == '\n' -> out.append("\\n")
                c == '\r' -> out.append("\\r")
                c == '\t' -> out.append("\\t")
                c < ' ' -> out.append(String.format(Locale.US, "\\u%04x", c.toInt()))
                else -> out.append(c)
            }
        }
        out.append('"')
    }

    private class Reader(val text: String) {
        var pos = 0

        fun atEnd() = pos >= text.length

        fun error(what: String) = IllegalArgumentException("bad JSON at character $pos: $what")

        fun skipSpace() {
            while (pos < text.length && text[pos] in " \t\r\n") pos++
        }

        fun value(): Any? {
            skipSpace()
            if (atEnd()) throw error("unexpected end")
            return when (val c = text[pos]) {
                '{' -> obj()
                '[' -> array()
                '"' -> string()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> if (c == '-' || c in '0'..'9') number() else throw error("unexpected '$c'")
            }
        }

        private fun literal(word: String, value: Any?): Any? {
            if (!text.startsWith(word, pos)) throw error("expected $word")
            pos += word.length
            return value
        }

        private fun expect(c: Char) {
            skipSpace()
            if (atEnd() || text[pos] != c) throw error("expected '$c'")
            pos++
        }

        private fun obj(): Map<String, Any?> {
            val result = LinkedHashMap<String, Any?>()
            expect('{')
            skipSpace()
            if (!atEnd() && text[pos] == '}') {
                pos++
                return result
            }
            while (true) {
                skipSpace()
                if (atEnd() || text[pos] != '"') throw error("expected a member name")
                val key = string()
                expect(':')
                result[key] = value()
                skipSpace()
                if (atEnd()) throw error("unexpected end in an object")
                when (text[pos++]) {
                    ',' -> {}
                    '}' -> return result
                    else -> throw error("expected ',' or '}'")
                }
            }
        }

        private fun array(): List<Any?> {
            val result = ArrayList<Any?>()
            expect('[')
            skipSpace()
            if (!atEnd() && text[pos] == ']') {
                pos++
                return result
            }
            while (true) {
                result.add(value())
                skipSpace()
                if (atEnd()) throw error("unexpected end in an array")
                when (text[pos++]) {
                    ',' -> {}
                    ']' -> return result
                    else -> throw error("expected ',' or ']'")
                }
            }
        }

        private fun string(): String {
            val out = StringBuilder()
            pos++ // the opening quote
            while (true) {
                if (atEnd()) throw error("unterminated string")
                val c = text[pos++]
                when {
                    c == '"' -> return out.toString()
                    c == '\\' -> {
                        if (atEnd()) throw error("unterminated escape")
                        when (val e = text[pos++]) {
                            '"', '\\', '/' -> out.append(e)
                            'b' -> out.append('\b')
                            'f' -> out.append('\u000c')
                            'n' -> out.append('\n')
                            'r' -> out.append('\r')
                            't' -> out.append('\t')
                            'u' -> {
                                if (pos + 4 > text.length) throw error("short \\u escape")
                                val code = text.substring(pos, pos + 4).toIntOrNull(16)
                                    ?: throw error("bad \\u escape")
                                out.append(code.toChar())
                                pos += 4
                            }
                            else -> throw error("bad escape \\$e")
                        }
                    }
                    c < ' ' -> throw error("control character in a string")
                    else -> out.append(c)
                }
            }
        }

        private fun number(): Double {
            val start = pos
            if (text[pos] == '-') pos++
            while (pos < text.length && (text[pos].isDigit() || text[pos] in ".eE+-")) pos++
            return text.substring(start, pos).toDoubleOrNull() ?: throw error("bad number")
        }
    }
}

private fun Map<String, Any?>.member(name: String, where: String): Any =
    this[name] ?: throw IllegalArgumentException("$where: no \"$name\"")

private fun Map<String, Any?>.string(name: String, where: String): String =
    member(name, where) as? String ?: throw IllegalArgumentException("$where: \"$name\" is not a string")

private fun Map<String, Any?>.double(name: String, where: String): Double =
    (member(name, where) as? Double) ?: throw IllegalArgumentException("$where: \"$name\" is not a number")

private fun Map<String, Any?>.int(name: String, where: String): Int {
    val value = double(name, where)
    require(value == Math.rint(value) && Math.abs(value) < Int.MAX_VALUE) {
        "$where: \"$name\" is not an integer ($value)"
    }
    return value.toInt()
}

@Suppress("UNCHECKED_CAST")
private fun Map<String, Any?>.obj(name: String, where: String): Map<String, Any?> =
    member(name, where) as? Map<String, Any?>
        ?: throw IllegalArgumentException("$where: \"$name\" is not an object")

// -- the manifest ----------------------------------------------------------------------------------

/** One exported one-layer model: a grid point of one convolution shape at one connectivity. */
class ManifestEntry(
    /** Entries of one group (a grid point's connectivities) are timed interleaved. */
    val group: Int,
    /** The shape, e.g. "24x24_k3_s1_same" (tfpconv's ConvSite.key). */
    val key: String,
    val inChannels: Int,
    val outChannels: Int,
    val connectivity: Double,
    val file: String
)

/** How models are timed (the host's constants, written into the manifest by the host). */
class RunSchedule(
    val warmup: Int,
    val probeRuns: Int,
    val gridBudgetMs: Double,
    val modelBudgetMs: Double,
    val minRuns: Int,
    val maxRuns: Int
) {
    init {
        require(warmup >= 0 && probeRuns >= 1 && minRuns >= 1 && maxRuns >= minRuns) {
            "bad schedule: warmup $warmup, probe runs $probeRuns, runs $minRuns..$maxRuns"
        }
        require(gridBudgetMs > 0 && modelBudgetMs > 0) { "bad schedule: budgets must be > 0" }
    }

    /** Timed runs for a model whose probe took [probeMs]: the budget's worth, clamped (as
     * tfpconv.runtime.latency_table._runs_for: int(clip(budget / max(ms, 1e-3), min, max))). */
    fun runsFor(probeMs: Double, budgetMs: Double): Int {
        val runs = budgetMs / Math.max(probeMs, 1e-3)
        return Math.min(maxRuns.toDouble(), Math.max(minRuns.toDouble(), runs)).toInt()
    }

    fun toMap(): Map<String, Any?> = linkedMapOf(
        "warmup" to warmup,
        "probe_runs" to probeRuns,
        "grid_budget_ms" to gridBudgetMs,
        "model_budget_ms" to modelBudgetMs,
        "min_runs" to minRuns,
        "max_runs" to maxRuns
    )
}

/** manifest.json of an exported folder (tfpconv.runtime.latency_table.export_table_models). */
class LatencyManifest(
    val model: String,
    val threads: Int,
    /** The tfpconv version that exported the models (and wrote their plans). */
    val tfpconvVersion: String,
    val schedule: RunSchedule,
    val entries: List<ManifestEntry>,
    val fullModelFile: String,
    /** Random candidates of the model, timed whole like it, for the table's calibration. */
    val calibrationFiles: List<String> = emptyList()
) {
    /** The entries by group, groups in manifest order. */
    fun groups(): List<List<ManifestEntry>> {
        val byGroup = LinkedHashMap<Int, MutableList<ManifestEntry>>()
        for (entry in entries) byGroup.getOrPut(entry.group) { ArrayList() }.add(entry)
        return byGroup.values.toList()
    }

    companion object {
        const val FILE = "manifest.json"
        const val KIND = "tfpconv-latency-manifest"
        const val FORMAT = 1

        private val SAFE_NAME = Regex("[A-Za-z0-9_][A-Za-z0-9._-]*")

        /** A file name of the manifest: plain, inside the folder (no paths, no "..", no hidden). */
        fun checkFileName(name: String, where: String): String {
            require(SAFE_NAME.matches(name) && !name.contains("..")) {
                "$where: file name '$name' is not a plain file name"
            }
            return name
        }

        fun parse(text: String): LatencyManifest {
            val where = FILE
            @Suppress("UNCHECKED_CAST")
            val root = Json.parse(text) as? Map<String, Any?>
                ?: throw IllegalArgumentException("$where: not a JSON object")
            require(root["kind"] == KIND) { "$where: not a tfpconv latency manifest" }
            val format = root.int("format", where)
            require(format == FORMAT) {
                "$where: format $format, this app reads format $FORMAT (update the app or tfpconv)"
            }
            val threads = root.int("threads", where)
            require(threads >= 1) { "$where: threads $threads" }
            val s = root.obj("schedule", where)
            val sw = "$where schedule"
            val schedule = RunSchedule(
                s.int("warmup", sw), s.int("probe_runs", sw), s.double("grid_budget_ms", sw),
                s.double("model_budget_ms", sw), s.int("min_runs", sw), s.int("max_runs", sw))
            val list = root.member("entries", where) as? List<*>
                ?: throw IllegalArgumentException("$where: \"entries\" is not a list")
            val entries = list.mapIndexed { index, item ->
                val ew = "$where entry $index"
                @Suppress("UNCHECKED_CAST")
                val e = item as? Map<String, Any?> ?: throw IllegalArgumentException("$ew: not an object")
                val entry = ManifestEntry(
                    e.int("group", ew), e.string("key", ew), e.int("in_channels", ew),
                    e.int("out_channels", ew), e.double("connectivity", ew),
                    checkFileName(e.string("file", ew), ew))
                require(entry.inChannels >= 1 && entry.outChannels >= 1) { "$ew: channel counts" }
                require(entry.connectivity >= 0.0 && entry.connectivity < 1.0) { "$ew: connectivity" }
                entry
            }
            val files = entries.map { it.file }
            require(files.toSet().size == files.size) { "$where: a file is listed twice" }
            val full = checkFileName(root.obj("full_model", where).string("file", where), where)
            val calibration = (root["calibration"] as? List<*> ?: emptyList<Any?>()).mapIndexed {
                index, item ->
                val cw = "$where calibration $index"
                @Suppress("UNCHECKED_CAST")
                val c = item as? Map<String, Any?> ?: throw IllegalArgumentException("$cw: not an object")
                checkFileName(c.string("file", cw), cw)
            }
            val all = files + full + calibration
            require(all.toSet().size == all.size) { "$where: a file is listed twice" }
            return LatencyManifest(
                root.string("model", where), threads, (root["tfpconv"] as? String) ?: "",
                schedule, entries, full, calibration)
        }
    }
}

// -- statistics ------------------------------------------------------------------------------------

/** The median, as numpy.median: the middle value, or the mean of the two middle ones. */
fun median(values: DoubleArray): Double {
    require(values.isNotEmpty()) { "median of nothing" }
    val sorted = values.sortedArray()
    val n = sorted.size
    return if (n % 2 == 1) sorted[n / 2] else (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
}

// -- timing ----------------------------------------------------------------------------------------

/** A loaded model, ready to run (on a phone: a TFLite Interpreter with the tfpconv delegate). */
interface TimedModel : Closeable {
    /** Runs the model once on its input; the latency of that run in nanoseconds. */
    fun invokeNs(): Long

    /** How many nodes the tfpconv delegate claimed (-1 when unknown). */
    val claimedNodes: Int
}

/** Opens the manifest's files (names relative to the exported folder). */
interface ModelLoader {
    fun load(file: String): TimedModel
}

/** The timing of one file. */
class FileTiming(
    val file: String,
    val medianMs: Double,
    val probeMs: Double,
    val runs: Int,
    val claimedNodes: Int
)

/**
 * Times every model of a manifest the way tfpconv times them on the host
 * (tfpconv.runtime.latency_table.measure_grid / measured_latency): per group (the connectivities
 * of one grid point), a probe of the first model (warm-up, then `probe_runs` timed runs, median)
 * sets the number of timed runs from the budget; then every model of the group is warmed up and
 * the timed runs are interleaved model by model, so that clock and thermal changes hit all alike;
 * each model's figure is the median. Then the full model alone, with the model budget.
 *
 * Unlike the host, which opens fresh interpreters for the probe, the probe here reuses the
 * group's (the extra warm-up makes up for it).
 */
class LatencyTableRun(private val manifest: LatencyManifest, private val loader: ModelLoader) {
    /** Progress callback: (groups done, groups in all incl. the full model, what runs now). */
    var progress: (Int, Int, String) -> Unit = { _, _, _ -> }

    /** Checked between groups; true stops the run with an [InterruptedException]. */
    var cancelled: () -> Boolean = { false }

    private val schedule = manifest.schedule

    fun run(): DeviceTimings {
        val groups = manifest.groups()
        val total = groups.size + 1 + manifest.calibrationFiles.size
        val timings = ArrayList<FileTiming>()
        for ((index, group) in groups.withIndex()) {
            if (cancelled()) throw InterruptedException("latency table run cancelled")
            val first = group[0]
            progress(index, total, describeGroup(first, group.size))
            timings.addAll(timeGroup(group.map { it.file }, schedule.gridBudgetMs))
        }
        if (cancelled()) throw InterruptedException("latency table run cancelled")
        progress(groups.size, total, "${manifest.model}: the full model, for the overhead")
        val full = timeGroup(listOf(manifest.fullModelFile), schedule.modelBudgetMs)[0]
        val calibration = manifest.calibrationFiles.mapIndexed { index, file ->
            if (cancelled()) throw InterruptedException("latency table run cancelled")
            progress(groups.size + 1 + index, total, "${manifest.model}: calibration candidate ${index + 1}")
            timeGroup(listOf(file), schedule.modelBudgetMs)[0]
        }
        progress(total, total, "done")
        return DeviceTimings(manifest, timings, full, calibration)
    }

    /** The models of [files], probed and then timed interleaved; a timing per file, in order. */
    fun timeGroup(files: List<String>, budgetMs: Double): List<FileTiming> {
        val models = ArrayList<TimedModel>()
        try {
            for (file in files) models.add(loader.load(file))
            val probeModel = models[0]
            repeat(schedule.warmup) { probeModel.invokeNs() }
            val probe = median(DoubleArray(schedule.probeRuns) { probeModel.invokeNs() / 1e6 })
            val runs = schedule.runsFor(probe, budgetMs)
            for (model in models) repeat(schedule.warmup) { model.invokeNs() }
            val ms = Array(models.size) { DoubleArray(runs) }
            for (run in 0 until runs) {
                for (i in models.indices) ms[i][run] = models[i].invokeNs() / 1e6
            }
            return files.indices.map { i ->
                FileTiming(files[i], median(ms[i]), probe, runs, models[i].claimedNodes)
            }
        } finally {
            // In reverse: a model may share resources with the ones opened before it.
            for (model in models.asReversed()) model.close()
        }
    }

    companion object {
        fun describeGroup(entry: ManifestEntry, variants: Int): String =
            "${entry.key}: ${entry.inChannels} -> ${entry.outChannels} channels" +
                if (variants > 1) ", $variants connectivities" else ""
    }
}

/** What the phone is: the fields of android.os.Build the table records (null where unknown). */
class DeviceInfo(
    val manufacturer: String?,
    val model: String?,
    /** Build.SOC_MANUFACTURER / SOC_MODEL: API 31+ only. */
    val socManufacturer: String?,
    val socModel: String?,
    val hardware: String?,
    val abis: List<String>,
    val sdkInt: Int
) {
    private fun known(value: String?): String? =
        if (value == null || value.isBlank() || value == "unknown") null else value.trim()

    /** The table's "cpu": the SoC (or the hardware name before API 31) and the phone model. */
    fun cpu(): String {
        val soc = known(socModel)?.let { model ->
            val maker = known(socManufacturer)
            if (maker != null) "$maker $model" else model
        } ?: known(hardware) ?: "unknown SoC"
        val phone = listOfNotNull(known(manufacturer), known(model)).joinToString(" ")
        return if (phone.length == 0) soc else "$soc ($phone)"
    }

    /**
     * The delegate's instruction set: [forced] if the run forced one, else what its "auto" choice
     * is on this ABI: NEON on arm64-v8a (part of ARMv8-A). On x86_64 (emulators) the choice depends
     * on the host CPU, which the app cannot see: "auto (x86_64)".
     */
    fun isa(forced: String?): String {
        if (forced != null && forced != "auto") return forced
        val abi = abis.firstOrNull() ?: "unknown ABI"
        return if (abi == "arm64-v8a") "neon" else "auto ($abi)"
    }

    fun toMap(): Map<String, Any?> = linkedMapOf(
        "manufacturer" to manufacturer,
        "model" to model,
        "soc_manufacturer" to socManufacturer,
        "soc_model" to socModel,
        "hardware" to hardware,
        "abis" to abis,
        "android_sdk" to sdkInt
    )
}

/** The timings of a whole manifest; [toJson] is the timings.json `--from-device` reads. */
class DeviceTimings(
    val manifest: LatencyManifest,
    val entries: List<FileTiming>,
    val fullModel: FileTiming,
    val calibration: List<FileTiming> = emptyList()
) {
    /**
     * The table's "machine": cpu, isa, threads, tfpconv (the exporting version, whose plans were
     * timed), the app's and TFLite's versions, and the device fields.
     */
    fun machine(device: DeviceInfo, forcedIsa: String?, appVersion: String?, tfliteVersion: String?):
        Map<String, Any?> = linkedMapOf(
            "cpu" to device.cpu(),
            "isa" to device.isa(forcedIsa),
            "threads" to manifest.threads,
            "tfpconv" to manifest.tfpconvVersion,
            "app" to appVersion,
            "tflite" to tfliteVersion,
            "device" to device.toMap()
        )

    fun toJson(machine: Map<String, Any?>): String {
        val byFile = manifest.entries.associateBy { it.file }
        val rows = entries.map { t ->
            val entry = byFile[t.file] ?: throw IllegalStateException("${t.file} is not in the manifest")
            linkedMapOf<String, Any?>(
                "file" to t.file,
                "key" to entry.key,
                "in_channels" to entry.inChannels,
                "out_channels" to entry.outChannels,
                "connectivity" to entry.connectivity,
                "median_ms" to t.medianMs,
                "probe_ms" to t.probeMs,
                "runs" to t.runs,
                "claimed_nodes" to t.claimedNodes
            )
        }
        val root = linkedMapOf<String, Any?>(
            "format" to FORMAT,
            "kind" to KIND,
            "model" to manifest.model,
            "threads" to manifest.threads,
            "machine" to machine,
            "schedule" to manifest.schedule.toMap(),
            "entries" to rows,
            "full_model" to wholeModel(fullModel),
            "calibration" to calibration.map { wholeModel(it) }
        )
        return Json.write(root) + "\n"
    }

    private fun wholeModel(t: FileTiming): Map<String, Any?> = linkedMapOf(
        "file" to t.file,
        "median_ms" to t.medianMs,
        "probe_ms" to t.probeMs,
        "runs" to t.runs,
        "claimed_nodes" to t.claimedNodes
    )

    companion object {
        const val FILE = "timings.json"
        const val KIND = "tfpconv-latency-timings"
        const val FORMAT = 1
    }
}

/** Writes [text] to [file] through a temporary file in the same folder and a rename. */
fun writeAtomically(file: File, text: String) {
    val temporary = File(file.parentFile, file.name + ".tmp")
    temporary.writeText(text)
    if (!temporary.renameTo(file)) {
        temporary.delete()
        throw IOException("cannot write $file")
    }
}

/** The status line: "12/48  24x24_k3_s1_same: 16 -> 32 channels, 4 connectivities". */
fun formatProgress(done: Int, total: Int, what: String): String =
    String.format(Locale.US, "%d/%d (%.0f%%)  %s", done, total,
        if (total > 0) 100.0 * done / total else 100.0, what)
