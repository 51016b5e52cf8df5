"""What of the Android demo (android_demo/) can be checked here, without the Android SDK / NDK.

* The JNI bridge: the app's own ``tfpconv_jni.cc`` compiled with g++ against the JDK's ``jni.h`` and
  the delegate's public header, linked against the real x86-64 ``libtfpconv_delegate.so``; the
  app's own ``NativeBridge.java`` compiled with javac; then a JVM (``-Xcheck:jni``) drives create /
  claimed nodes / delete through it (android_demo/hosttest/java/.../BridgeHostTest.java),
  including 20,000 create/delete cycles with the C heap, RSS and thread count watched for leaks.
* The app's plain Kotlin logic (DemoMath.kt) compiled and run on the JVM, when kotlinc is installed.
* All the app's Kotlin (TfpconvDelegate.kt, ModelRunner.kt, MainActivity.kt, DemoMath.kt) compiled
  with kotlinc against compile-only signatures of the TFLite Java API and the Android classes it
  uses (android_demo/hosttest/compile_only/) and an R class made from app/src/main/res; then
  TfpconvDelegate, the app's org.tensorflow.lite.Delegate, driven through the real JNI bridge.
* The app's native CMake project configured for aarch64 Linux with Debian's cross compiler (a
  stand-in for the NDK's arm64-v8a build): the delegate's sources come in, with the NEON kernels.
  It is also built, and its JNI entry points run under qemu-aarch64 (the NEON kernels take a few
  minutes to compile on two cores).
* make_assets.py's images (real Fashion-MNIST test images as PNGs), its model path (a tiny trained
  and pattern-pruned Keras model converted with a tfpconv plan, host predictions filled in) and
  the resources' consistency.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "android_demo"
APP_MAIN = DEMO / "app" / "src" / "main"
CPP = APP_MAIN / "cpp"
AARCH64_TOOLCHAIN = REPO / "delegate" / "engine" / "cmake" / "aarch64-linux-gnu.cmake"
JAVA_PKG = APP_MAIN / "java" / "com" / "tfpconv" / "demo"
HOSTTEST = DEMO / "hosttest"
HOST_JAVA_PKG = HOSTTEST / "java" / "com" / "tfpconv" / "demo"
COMPILE_ONLY = HOSTTEST / "compile_only"
ANDROID_NS = "{http://schemas.android.com/apk/res/android}"
DELEGATE_INCLUDE = REPO / "delegate" / "include"

HOST_CHECKS = [
    "load",
    "create_default",
    "create_two_threads",
    "create_each_isa",
    "handles_distinct",
    "invalid_arguments_rejected",
    "invalid_num_threads_native",
    "null_handle",
    "create_delete_100",
    "no_leak",
]
LEAK_CYCLES = 20000
APP_KOTLIN_SOURCES = [
    "DemoMath.kt",
    "LatencyTableActivity.kt",
    "LatencyTableLogic.kt",
    "MainActivity.kt",
    "ModelRunner.kt",
    "TfpconvDelegate.kt",
]
DELEGATE_CHECKS = [
    "create_and_close",
    "defaults_and_overloads",
    "use_closes",
    "as_tflite_delegate",
    "distinct_handles",
    "invalid_arguments",
    "no_leak",
]


def _run(cmd, timeout=300, **kwargs):
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def _java_home() -> Path | None:
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    javac = shutil.which("javac")
    if javac:
        candidates.append(Path(os.path.realpath(javac)).parent.parent)
    candidates += [Path("/usr/lib/jvm/java-17-openjdk-amd64"), Path("/usr/lib/jvm/default-java")]
    for home in candidates:
        if (home / "include" / "jni.h").is_file() and (home / "bin" / "javac").is_file():
            return home
    return None


@pytest.fixture(scope="module")
def java_home() -> Path:
    home = _java_home()
    if home is None:
        pytest.skip("no JDK with jni.h and javac (apt-get install openjdk-17-jdk-headless)")
    if shutil.which("g++") is None:
        pytest.skip("no g++")
    return home


@pytest.fixture(scope="module")
def delegate_library() -> Path:
    """The real x86-64 delegate library: the one tfpconv uses (pip install . builds it)."""
    from tfpconv.runtime.library import delegate_path

    return Path(delegate_path())


@pytest.fixture(scope="module")
def host_build(tmp_path_factory, java_home, delegate_library) -> Path:
    """libtfpconv_jni.so (+ the heap probe) and the compiled Java classes, in a temp dir."""
    out = tmp_path_factory.mktemp("android_bridge")
    include = java_home / "include"
    common = [
        "-std=c++17",
        "-O2",
        "-fPIC",
        "-shared",
        "-Wall",
        "-Wextra",
        "-Werror",
        f"-I{include}",
        f"-I{include / 'linux'}",
    ]
    lib_dir = delegate_library.parent
    lib_name = delegate_library.name
    _run(
        [
            "g++",
            *common,
            f"-I{DELEGATE_INCLUDE}",
            CPP / "tfpconv_jni.cc",
            f"-L{lib_dir}",
            f"-l:{lib_name}",
            f"-Wl,-rpath,{lib_dir}",
            "-Wl,--no-undefined",
            f"-Wl,--version-script={CPP / 'tfpconv_jni.lds'}",
            "-o",
            out / "libtfpconv_jni.so",
        ]
    )
    _run(
        [
            "g++",
            *common,
            HOSTTEST / "native" / "heap_probe.cc",
            "-o",
            out / "libtfpconv_heap_probe.so",
        ]
    )
    classes = out / "classes"
    _run(
        [
            java_home / "bin" / "javac",
            "--release",
            "17",
            "-Xlint:all",
            "-Werror",
            "-d",
            classes,
            JAVA_PKG / "NativeBridge.java",
            HOST_JAVA_PKG / "BridgeHostTest.java",
            HOST_JAVA_PKG / "HostHeapProbe.java",
        ]
    )
    return out


@pytest.fixture(scope="module")
def host_run(host_build, java_home):
    """One JVM run of the host harness; its output lines, checked one by one below."""
    result = subprocess.run(
        [
            str(java_home / "bin" / "java"),
            "-Xcheck:jni",
            "-Xint",
            "-XX:+UseSerialGC",
            f"-Djava.library.path={host_build}",
            "-cp",
            str(host_build / "classes"),
            "com.tfpconv.demo.BridgeHostTest",
            str(LEAK_CYCLES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result


def test_bridge_links_the_real_delegate(host_build, delegate_library):
    needed = _run(["readelf", "-d", host_build / "libtfpconv_jni.so"]).stdout
    assert f"[{delegate_library.name}]" in needed or delegate_library.name in needed


def test_bridge_exports_exactly_the_declared_natives(host_build):
    source = (JAVA_PKG / "NativeBridge.java").read_text()
    declared = set(re.findall(r"\bnative\s+[\w\[\]]+\s+(\w+)\s*\(", source))
    assert declared == {"nativeCreate", "nativeDelete", "nativeClaimedNodes"}
    symbols = _run(["nm", "-D", "--defined-only", host_build / "libtfpconv_jni.so"]).stdout
    exported = {line.split()[-1] for line in symbols.splitlines() if " T " in line}
    assert exported == {f"Java_com_tfpconv_demo_NativeBridge_{name}" for name in declared}


def test_host_harness_exits_cleanly(host_run):
    assert host_run.returncode == 0, host_run.stdout + host_run.stderr
    assert f"host bridge checks: {len(HOST_CHECKS)} ok, 0 failing" in host_run.stdout
    # -Xcheck:jni reports JNI misuse as warnings on stderr.
    assert "WARNING in native method" not in host_run.stderr, host_run.stderr


def _assert_check_passed(run, name):
    """A JVM check program prints PASS name or FAIL name: why, a line per check."""
    lines = run.stdout.splitlines()
    failed = [line for line in lines if line.startswith(f"FAIL {name}:")]
    assert not failed, failed[0] + "\n" + run.stderr[-2000:]
    assert f"PASS {name}" in lines, run.stdout + run.stderr[-2000:]


@pytest.mark.parametrize("name", HOST_CHECKS)
def test_host_check(host_run, name):
    _assert_check_passed(host_run, name)


# -- the app's Kotlin logic on the JVM ------------------------------------------------------------


def test_kotlin_logic_on_the_jvm(tmp_path):
    kotlinc = shutil.which("kotlinc")
    if kotlinc is None:
        pytest.skip("kotlinc not installed (Debian: apt-get install kotlin)")
    jar = tmp_path / "demo_math.jar"
    _run(
        [
            kotlinc,
            JAVA_PKG / "DemoMath.kt",
            HOSTTEST / "kotlin" / "DemoMathCheck.kt",
            "-include-runtime",
            "-d",
            jar,
        ],
        timeout=600,
    )
    args = [shutil.which("java") or "java", "-cp", jar, "com.tfpconv.demo.DemoMathCheckKt"]
    manifest = APP_MAIN / "assets" / "images" / "manifest.csv"
    if manifest.is_file():
        args.append(manifest)
    result = _run(args)
    assert "kotlin logic checks: all ok" in result.stdout, result.stdout


# -- all the app's Kotlin against the TFLite and Android APIs; TfpconvDelegate on the JVM ---------


def _resource_names() -> dict[str, set[str]]:
    """The names aapt2 would put in R for app/src/main/res: strings, layouts, ids, drawables."""
    res = APP_MAIN / "res"
    strings = {s.get("name") for s in ET.parse(res / "values" / "strings.xml").iter("string")}
    ids = set()
    for path in (res / "layout").glob("*.xml"):
        for element in ET.parse(path).iter():
            value = element.get(ANDROID_NS + "id")
            if value and value.startswith("@+id/"):
                ids.add(value[len("@+id/") :])
    return {
        "string": strings,
        "layout": {p.stem for p in (res / "layout").glob("*.xml")},
        "id": ids,
        "drawable": {p.stem for p in (res / "drawable").glob("*.xml")},
    }


def _write_r_java(directory: Path) -> Path:
    """com.tfpconv.demo.R with a field per resource, as aapt2 makes it (arbitrary values)."""
    lines = ["package com.tfpconv.demo;", "", "public final class R {", "  private R() {}"]
    for type_index, (kind, names) in enumerate(sorted(_resource_names().items())):
        lines.append(f"  public static final class {kind} {{")
        lines.append(f"    private {kind}() {{}}")
        for entry, name in enumerate(sorted(names)):
            value = 0x7F000000 | (type_index + 1) << 16 | entry
            lines.append(f"    public static final int {name} = {value:#x};")
        lines.append("  }")
    lines.append("}")
    path = directory / "com" / "tfpconv" / "demo" / "R.java"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def compile_app_kotlin(
    out: Path, java_home: Path, check: str, bridge_classes: Path | None = None
) -> Path:
    """All the app's Kotlin plus ``hosttest/kotlin/<check>``, compiled by kotlinc against the
    compile-only TFLite / Android signatures (hosttest/compile_only), the generated R and the app's
    NativeBridge (from ``bridge_classes``, else compiled here); returns the jar."""
    kotlinc = shutil.which("kotlinc")
    if kotlinc is None:
        pytest.skip("kotlinc not installed (Debian: apt-get install kotlin)")
    api_classes = out / "api"
    bridge = [] if bridge_classes is not None else [JAVA_PKG / "NativeBridge.java"]
    _run(
        [
            java_home / "bin" / "javac",
            "--release",
            "17",
            "-Xlint:all",
            "-Werror",
            "-d",
            api_classes,
            *sorted(COMPILE_ONLY.rglob("*.java")),
            _write_r_java(out / "generated"),
            *bridge,
        ]
    )
    classpath = [*([bridge_classes] if bridge_classes is not None else []), api_classes]
    jar = out / "app_kotlin.jar"
    _run(
        [
            kotlinc,
            "-jvm-target",
            "1.8",
            "-Werror",
            "-cp",
            os.pathsep.join(str(c) for c in classpath),
            *(JAVA_PKG / name for name in APP_KOTLIN_SOURCES),
            HOSTTEST / "kotlin" / check,
            "-include-runtime",
            "-d",
            jar,
        ],
        timeout=900,
    )
    return jar


@pytest.fixture(scope="module")
def app_kotlin_build(host_build, java_home, tmp_path_factory) -> Path:
    """The app's Kotlin with TfpconvDelegateCheck.kt, against host_build's NativeBridge."""
    out = tmp_path_factory.mktemp("app_kotlin")
    compile_app_kotlin(out, java_home, "TfpconvDelegateCheck.kt", host_build / "classes")
    return out


def test_app_kotlin_compiles_against_the_tflite_and_android_api(app_kotlin_build, java_home):
    assert sorted(p.name for p in JAVA_PKG.glob("*.kt")) == sorted(APP_KOTLIN_SOURCES)
    jar = app_kotlin_build / "app_kotlin.jar"
    entries = _run([java_home / "bin" / "jar", "tf", jar]).stdout.splitlines()
    for name in ("TfpconvDelegate", "ModelRunner", "MainActivity", "Manifest"):
        assert f"com/tfpconv/demo/{name}.class" in entries, name
    # The signatures are only compiled against, never packaged with the app's classes.
    assert not [e for e in entries if e.startswith(("org/tensorflow/", "android/"))]
    assert "com/tfpconv/demo/R.class" not in entries
    classpath = f"{jar}{os.pathsep}{app_kotlin_build / 'api'}"
    javap = [java_home / "bin" / "javap", "-cp", classpath]
    delegate = _run([*javap, "com.tfpconv.demo.TfpconvDelegate"]).stdout
    assert re.search(r"implements org\.tensorflow\.lite\.Delegate\b", delegate), delegate
    assert re.search(r"public (synchronized )?long getNativeHandle\(\);", delegate), delegate
    # close() without a checked exception, like TFLite's Delegate.close()
    assert re.search(r"public (synchronized )?void close\(\);", delegate), delegate
    runner = _run([*javap, "com.tfpconv.demo.ModelRunner"]).stdout
    assert "ModelRunner(java.nio.ByteBuffer, int, org.tensorflow.lite.Delegate)" in runner, runner
    activity = _run([*javap, "com.tfpconv.demo.MainActivity"]).stdout
    assert "extends android.app.Activity" in activity, activity


@pytest.fixture(scope="module")
def delegate_run(app_kotlin_build, host_build, java_home):
    """TfpconvDelegate (the app's Kotlin) create / use / close through the real JNI bridge."""
    jar = app_kotlin_build / "app_kotlin.jar"
    classpath = os.pathsep.join(map(str, (jar, host_build / "classes", app_kotlin_build / "api")))
    return subprocess.run(
        [
            str(java_home / "bin" / "java"),
            "-Xcheck:jni",
            f"-Djava.library.path={host_build}",
            "-cp",
            classpath,
            "com.tfpconv.demo.TfpconvDelegateCheckKt",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tfpconv_delegate_exits_cleanly(delegate_run):
    assert delegate_run.returncode == 0, delegate_run.stdout + delegate_run.stderr
    assert "tfpconv delegate checks: all ok" in delegate_run.stdout, delegate_run.stdout
    assert "WARNING in native method" not in delegate_run.stderr, delegate_run.stderr


@pytest.mark.parametrize("name", DELEGATE_CHECKS)
def test_tfpconv_delegate_check(delegate_run, name):
    _assert_check_passed(delegate_run, name)


# -- the native CMake project, cross-configured for aarch64 (NDK stand-in) -------------------------


def _cross_configure(build_dir: Path, java_home: Path) -> None:
    _run(
        [
            "cmake",
            "-S",
            CPP,
            "-B",
            build_dir,
            # Debian's cross compiler and sysroot, and Debian's arm64 pthreadpool
            f"-DCMAKE_TOOLCHAIN_FILE={AARCH64_TOOLCHAIN}",
            # what Gradle's debug variant passes: the app's CMakeLists must still optimize
            "-DCMAKE_BUILD_TYPE=Debug",
            f"-DTFPCONV_JNI_INCLUDE_DIR={java_home / 'include'}",
        ],
        timeout=300,
    )


@pytest.fixture(scope="module")
def cross_build_dir(java_home) -> Path:
    if shutil.which("aarch64-linux-gnu-g++") is None or shutil.which("cmake") is None:
        pytest.skip(
            "no aarch64-linux-gnu-g++ / cmake (apt-get install g++-aarch64-linux-gnu cmake)"
        )
    build_dir = REPO / "build" / "android_demo_aarch64"
    _cross_configure(build_dir, java_home)
    return build_dir


def test_app_cmake_configures_the_delegate_for_arm64(cross_build_dir):
    # The compiler CMake detected (a toolchain file's compiler is not a cache entry).
    detected = "".join(
        p.read_text() for p in (cross_build_dir / "CMakeFiles").glob("*/CMakeCXXCompiler.cmake")
    )
    compiler = re.findall(r'set\(CMAKE_CXX_COMPILER "([^"]*)"\)', detected)
    assert compiler and compiler[0].endswith("aarch64-linux-gnu-g++"), compiler
    engine_dir = cross_build_dir / "tfpconv_delegate" / "engine"
    build_files = "".join(p.read_text(errors="replace") for p in engine_dir.rglob("build.make"))
    assert "kernels/neon.cc" in build_files, "the NEON kernels are not part of the arm64 build"
    assert "kernels/avx512.cc" not in build_files
    flags = "".join(p.read_text(errors="replace") for p in cross_build_dir.rglob("flags.make"))
    assert "-O3" in flags and "-O0" not in flags, "native code not optimized in the Debug variant"
    assert (cross_build_dir / "CMakeFiles" / "tfpconv_jni.dir").is_dir()


def test_arm64_bridge_runs_under_qemu(cross_build_dir, java_home):
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("no qemu-aarch64 (apt-get install qemu-user)")
    _run(["cmake", "--build", cross_build_dir, "-j2", "--target", "tfpconv_jni"], timeout=3600)
    library = cross_build_dir / "libtfpconv_jni.so"
    header = _run(["readelf", "-h", library]).stdout
    assert "AArch64" in header
    symbols = _run(["nm", "-D", "--defined-only", library]).stdout
    exported = {line.split()[-1] for line in symbols.splitlines() if " T " in line}
    assert exported == {
        f"Java_com_tfpconv_demo_NativeBridge_native{name}"
        for name in ("Create", "Delete", "ClaimedNodes")
    }
    driver = cross_build_dir / "jni_driver"
    include = java_home / "include"
    _run(
        [
            "aarch64-linux-gnu-g++",
            "-std=c++17",
            "-O1",
            f"-I{include}",
            f"-I{include / 'linux'}",
            HOSTTEST / "native" / "jni_driver.cc",
            library,
            f"-Wl,-rpath,{cross_build_dir}",
            "-o",
            driver,
        ]
    )
    result = _run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", driver], timeout=300)
    assert "jni driver: all ok" in result.stdout, result.stdout + result.stderr
    assert "isa neon" in result.stderr, result.stderr


# -- assets and resources --------------------------------------------------------------------------


def _decode_gray_png(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert (depth, color) == (8, 0), "not 8-bit grayscale"
            size = (width, height)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height = size
    raw = zlib.decompress(idat)
    rows = [raw[y * (width + 1) : (y + 1) * (width + 1)] for y in range(height)]
    assert all(row[0] == 0 for row in rows), "unexpected PNG filter"
    return width, height, b"".join(row[1:] for row in rows)


def _make_assets_module():
    sys.path.insert(0, str(DEMO))
    try:
        import make_assets
    finally:
        sys.path.remove(str(DEMO))
    return make_assets


def test_make_assets_writes_real_test_images(tmp_path):
    make_assets = _make_assets_module()
    dataset = make_assets.DEFAULT_DATASET
    if not (dataset / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    assert make_assets.main(["--images-only", "--out", str(tmp_path), "--per-class", "2"]) == 0
    lines = (tmp_path / "images" / "manifest.csv").read_text().splitlines()
    assert lines[0] == "file,label,name,host_prediction"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[1]) for r in rows] == [label for label in range(10) for _ in range(2)]
    shape, pixels = make_assets.read_idx(dataset / "t10k-images-idx3-ubyte.gz")
    _, labels = make_assets.read_idx(dataset / "t10k-labels-idx1-ubyte.gz")
    first = {}
    for index, label in enumerate(labels):
        first.setdefault(label, []).append(index)
    for position, (name, label, class_name, host) in enumerate(rows):
        width, height, gray = _decode_gray_png((tmp_path / "images" / name).read_bytes())
        index = first[int(label)][position % 2]
        assert (width, height) == (28, 28)
        assert gray == pixels[index * 784 : (index + 1) * 784], f"{name} is not test image {index}"
        assert class_name == make_assets.CLASS_NAMES[int(label)] and host == "-1"


def _tiny_pruned_fashion_model(keras, make_assets):
    """A small CNN for 28x28x1 inputs, trained for a few seconds on 2,000 Fashion-MNIST training
    images, its 3x3 kernels then pattern- and connectivity-pruned (as tfpconv's pruning leaves
    them): a stand-in for examples/demo.py's model that converts with a tfpconv plan."""
    from tfpconv.sparsity import patterns

    shape, pixels = make_assets.read_idx(make_assets.DEFAULT_DATASET / "train-images-idx3-ubyte.gz")
    _, labels = make_assets.read_idx(make_assets.DEFAULT_DATASET / "train-labels-idx1-ubyte.gz")
    count = 2000
    x = np.frombuffer(pixels, np.uint8)[: count * 784].reshape(count, 28, 28, 1) / 255.0
    y = np.frombuffer(labels, np.uint8)[:count]
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x.astype(np.float32), y, epochs=2, batch_size=64, verbose=0)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    library = patterns.select_library([layer.get_weights()[0] for layer in convs], 6)
    for layer in convs:
        weights = layer.get_weights()
        weights[0], _ = patterns.project(weights[0], library, 0.25)
        layer.set_weights(weights)
    return model


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    make_assets = _make_assets_module()
    if not (make_assets.DEFAULT_DATASET / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    model = _tiny_pruned_fashion_model(keras, make_assets)
    path = tmp_path_factory.mktemp("tiny_model") / "tiny_fashion.keras"
    model.save(path)
    images = make_assets.select_test_images(make_assets.DEFAULT_DATASET, 1)
    x = np.stack([np.frombuffer(p, np.uint8).reshape(28, 28, 1) for _, _, p in images]) / 255.0
    probabilities = model.predict(x.astype(np.float32), verbose=0)
    keras_predictions = [int(i) for i in np.argmax(probabilities, axis=1)]
    return path, keras_predictions


def _manifest_rows(out: Path) -> list[list[str]]:
    lines = (out / "images" / "manifest.csv").read_text().splitlines()
    assert lines[0] == "file,label,name,host_prediction"
    return [line.split(",") for line in lines[1:]]


def test_make_assets_converts_a_keras_model(tiny_model_file, tmp_path, capsys):
    """The model path: a Keras file -> model.tflite with a tfpconv plan, host predictions filled."""
    from tfpconv import read_plan

    model_file, keras_predictions = tiny_model_file
    make_assets = _make_assets_module()
    out = tmp_path / "assets"
    assert make_assets.main(["--model", str(model_file), "--out", str(out)]) == 0
    data = (out / "model.tflite").read_bytes()
    assert data[4:8] == b"TFL3"
    plan = read_plan(data)
    assert len(plan.convs) == 2, plan  # both 3x3 convolutions, as pruned
    rows = _manifest_rows(out)
    assert [int(r[1]) for r in rows] == list(range(10))
    host = [int(r[3]) for r in rows]
    # Plain TFLite on the host predicts what Keras predicts for the same images.
    assert host == keras_predictions
    printed = capsys.readouterr().out
    assert "tfpconv plan: 2 CONV_2D planned" in printed, printed
    correct = sum(p == label for p, label in zip(host, range(10), strict=True))
    assert f"plain TFLite on this machine: {correct}/10 correct" in printed, printed


def test_make_assets_replans_or_copies_a_tflite(tiny_model_file, tmp_path):
    """A .tflite without a plan gets one (re-planned); with --no-plan it is copied byte for byte."""
    import keras
    import tensorflow as tf

    from tfpconv import PlanError, read_plan

    model_file, keras_predictions = tiny_model_file
    plain = tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(model_file))
    plain_path = tmp_path / "plain.tflite"
    plain_path.write_bytes(plain.convert())
    with pytest.raises(PlanError):
        read_plan(plain_path.read_bytes())
    make_assets = _make_assets_module()

    replanned = tmp_path / "replanned"
    assert make_assets.main(["--model", str(plain_path), "--out", str(replanned)]) == 0
    assert len(read_plan((replanned / "model.tflite").read_bytes()).convs) == 2
    assert [int(r[3]) for r in _manifest_rows(replanned)] == keras_predictions

    copied = tmp_path / "copied"
    assert make_assets.main(["--model", str(plain_path), "--no-plan", "--out", str(copied)]) == 0
    assert (copied / "model.tflite").read_bytes() == plain_path.read_bytes()
    assert [int(r[3]) for r in _manifest_rows(copied)] == keras_predictions


def test_make_assets_reports_a_missing_model(tmp_path, capsys):
    make_assets = _make_assets_module()
    if not (make_assets.DEFAULT_DATASET / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed")
    missing = tmp_path / "nope.keras"
    assert make_assets.main(["--model", str(missing), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == f"make_assets: {missing}: no such model"
    assert not (tmp_path / "out").exists()


def test_bundled_images_are_reproducible(tmp_path):
    """The committed images are exactly what make_assets.py writes (host predictions aside)."""
    bundled = APP_MAIN / "assets" / "images" / "manifest.csv"
    if not bundled.is_file():
        pytest.skip("no bundled images")
    make_assets = _make_assets_module()
    if not (make_assets.DEFAULT_DATASET / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed")
    assert make_assets.main(["--images-only", "--out", str(tmp_path)]) == 0
    fresh = (tmp_path / "images" / "manifest.csv").read_text().splitlines()
    committed = bundled.read_text().splitlines()
    assert [line.rsplit(",", 1)[0] for line in committed] == [
        line.rsplit(",", 1)[0] for line in fresh
    ]
    for line in fresh[1:]:
        name = line.split(",")[0]
        assert (bundled.parent / name).read_bytes() == (tmp_path / "images" / name).read_bytes()


def test_resources_are_well_formed_and_consistent():
    xml_files = [APP_MAIN / "AndroidManifest.xml", *sorted((APP_MAIN / "res").rglob("*.xml"))]
    for path in xml_files:
        ET.parse(path)  # raises on malformed XML
    manifest = ET.parse(APP_MAIN / "AndroidManifest.xml").getroot()
    activities = [a.get(ANDROID_NS + "name") for a in manifest.iter("activity")]
    assert activities == [".MainActivity", ".LatencyTableActivity"]
    assert (JAVA_PKG / "MainActivity.kt").is_file()

    kotlin = "".join(p.read_text() for p in JAVA_PKG.glob("*.kt"))
    xml_text = "".join(p.read_text() for p in xml_files)
    for kind, known in _resource_names().items():
        used = set(re.findall(rf"\bR\.{kind}\.(\w+)", kotlin))
        used |= set(re.findall(rf"@{kind}/(\w+)", xml_text))
        assert used <= known, f"undefined {kind} resources: {sorted(used - known)}"
