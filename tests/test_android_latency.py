"""Latency tables for a phone: the host's export, the app's latency-table mode, the assembly.

* ``export_table_models`` writes the one-layer models of the host's grid and a manifest;
  ``table_from_device`` turns timings of them into the same LatencyTable ``measure_table`` makes
  (synthetic timings here; the CLI's --export-models / --from-device too).
* The app's latency-table Kotlin (LatencyTableLogic.kt) runs on the JVM over a real exported
  manifest with a fake timer and writes timings.json, which ``table_from_device`` must accept;
  all the app's Kotlin, LatencyTableActivity included, is compiled against the compile-only
  TFLite / Android signatures (android_demo/hosttest/compile_only). Skipped without kotlinc / JDK.

No timing figures are checked (nothing here times a model).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from test_android_bridge import (  # noqa: E402
    _java_home,
    _run,
    compile_app_kotlin,
)

import tfpconv  # noqa: E402
from tfpconv.runtime import latency_table as lt  # noqa: E402
from tfpconv.runtime.machine import TableMismatchError  # noqa: E402

FULL_MODEL_MS = 2.5


def _fake_ms(key: str, cin: int, cout: int, connectivity: float) -> float:
    """The fake timer's latency (hosttest/kotlin/LatencyTableCheck.kt has the same formula)."""
    return 0.01 * (1 + cin * cout) * (1.0 - 0.5 * connectivity) + (0.002 if "_k3_" in key else 0)


def _tiny_model():
    """Three convolution shapes: 3x3 (patterns), 1x1 (dense only), 3x3 at half the size."""
    inputs = keras.Input((8, 8, 1), batch_size=1, name="image")
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(3, 1, activation="relu", name="p1")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="classifier")(x)
    return keras.Model(inputs, outputs, name="tiny_latency")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _tiny_model()
    out = tmp_path_factory.mktemp("exported")
    calls = []
    manifest = lt.export_table_models(model, out, threads=2, progress=lambda *a: calls.append(a))
    assert calls and calls[-1][0] == calls[-1][1]
    return model, out, manifest


def _synthetic_timings(manifest_path: Path, model=None) -> dict:
    """Timings as the fake timer gives them; with ``model``, calibration candidates timed exactly
    as an uncalibrated table of the grid predicts them (so the fit gives scale 1)."""
    spec = json.loads(manifest_path.read_text())
    timings = {
        "format": lt.TIMINGS_FORMAT,
        "kind": lt.TIMINGS_KIND,
        "model": spec["model"],
        "threads": spec["threads"],
        "machine": {"cpu": "Fake SoC (Fake Phone)", "isa": "neon", "app": "0.1.0"},
        "entries": [
            {
                "file": e["file"],
                "key": e["key"],
                "in_channels": e["in_channels"],
                "out_channels": e["out_channels"],
                "connectivity": e["connectivity"],
                "median_ms": _fake_ms(
                    e["key"], e["in_channels"], e["out_channels"], e["connectivity"]
                ),
                "runs": 5,
            }
            for e in spec["entries"]
        ],
        "full_model": {"file": spec["full_model"]["file"], "median_ms": FULL_MODEL_MS},
        "calibration": [],
    }
    if model is not None:
        bare = {**spec, "calibration": []}
        bare_path = manifest_path.parent / "bare_manifest.json"
        bare_path.write_text(json.dumps(bare))
        timings_path = manifest_path.parent / "bare_timings.json"
        timings_path.write_text(json.dumps(timings))
        uncalibrated = lt.table_from_device(bare_path, timings_path, model)
        timings["calibration"] = [
            {
                "file": c["file"],
                "median_ms": uncalibrated.predict(model, c["widths"], c["connectivity"]),
            }
            for c in spec["calibration"]
        ]
    return timings


def _check_grids(table: lt.LatencyTable, model) -> None:
    """The table has the host's grid layout and the fake's values."""
    expected = lt._missing_grids(model, lt.LatencyTable(machine={}))
    # (a table read back from its file has its shapes in sorted order)
    assert sorted(table.shapes) == sorted(expected)
    assert list(expected) == [
        "8x8_k3_s1_same", "8x8_k3_s1_same_dense", "8x8_k1_s1_valid",
        "4x4_k3_s1_same", "4x4_k3_s1_same_dense",
    ]  # fmt: skip
    for key, (site, ins, outs) in expected.items():
        grid = table.shapes[key]
        assert (grid.in_channels, grid.out_channels) == (ins, outs)
        assert grid.connectivities == (list(lt.CONNECTIVITIES) if site.pattern else [0.0])
        for c_index, c in enumerate(grid.connectivities):
            for i, cin in enumerate(ins):
                for o, cout in enumerate(outs):
                    assert grid.ms[c_index][i][o] == pytest.approx(_fake_ms(key, cin, cout, c))


def _check_table(table: lt.LatencyTable, model) -> None:
    """The grids, and the overhead rule of timings that the grid explains exactly (scale 1)."""
    _check_grids(table, model)
    assert table.scale[model.name] == pytest.approx(1.0)
    convs = sum(table.conv_ms(s, s.in_channels, s.out_channels, None) for s in lt.conv_sites(model))
    assert table.overhead_ms[model.name] == pytest.approx(FULL_MODEL_MS - convs)
    assert table.predict(model) == pytest.approx(FULL_MODEL_MS)
    smaller = table.predict(model, 0.5, {"c2": 0.9})
    assert 0 < smaller < FULL_MODEL_MS


def test_export_writes_the_host_grid(exported):
    model, out, manifest = exported
    spec = json.loads(manifest.read_text())
    assert manifest == out / "manifest.json"
    assert spec["kind"] == lt.MANIFEST_KIND and spec["format"] == lt.MANIFEST_FORMAT
    assert spec["model"] == "tiny_latency" and spec["threads"] == 2
    assert spec["schedule"] == {
        "warmup": lt.WARMUP_RUNS,
        "probe_runs": lt.PROBE_RUNS,
        "grid_budget_ms": lt.GRID_BUDGET_MS,
        "model_budget_ms": lt.MODEL_BUDGET_MS,
        "min_runs": lt.MIN_RUNS,
        "max_runs": lt.MAX_RUNS,
    }
    expected = lt._missing_grids(model, lt.LatencyTable(machine={}))
    points = [
        (key, cin, cout, c)
        for key, (site, ins, outs) in expected.items()
        for cin in ins
        for cout in outs
        for c in lt._connectivities(site)
    ]
    entries = spec["entries"]
    got = [(e["key"], e["in_channels"], e["out_channels"], e["connectivity"]) for e in entries]
    assert got == points
    # A group is one grid point's connectivities.
    groups = {}
    for e in entries:
        groups.setdefault(e["group"], set()).add((e["key"], e["in_channels"], e["out_channels"]))
    assert all(len(g) == 1 for g in groups.values())
    assert len(groups) == len({p[:3] for p in points})
    for e in entries:
        data = (out / e["file"]).read_bytes()
        assert data[4:8] == b"TFL3"
        if e["key"].startswith(("8x8_k3", "4x4_k3")) and e["connectivity"] > 0:
            assert len(tfpconv.read_plan(data).convs) == 1, e["file"]
    assert (out / spec["full_model"]["file"]).read_bytes()[4:8] == b"TFL3"
    # The calibration candidates measure_table times here, for the phone to time as well.
    assert len(spec["calibration"]) == lt.CALIBRATION_CANDIDATES
    for candidate in spec["calibration"]:
        assert (out / candidate["file"]).read_bytes()[4:8] == b"TFL3"
        assert candidate["widths"] and isinstance(candidate["connectivity"], dict)


def test_table_from_synthetic_device_timings(exported, tmp_path):
    model, out, manifest = exported
    timings = tmp_path / "timings.json"
    timings.write_text(json.dumps(_synthetic_timings(manifest, model)))
    table = lt.table_from_device(out, timings, model)
    _check_table(table, model)
    assert table.machine["cpu"] == "Fake SoC (Fake Phone)" and table.machine["isa"] == "neon"
    assert table.machine["threads"] == 2 and table.machine["tfpconv"] == tfpconv.__version__
    # The manifest file works as well as its folder.
    again = lt.table_from_device(manifest, timings, model)
    assert again.to_json() == table.to_json()
    path = tmp_path / "table.json"
    table.save(path)
    with pytest.raises(TableMismatchError, match="Fake SoC"):
        lt.LatencyTable.load(path)
    loaded = lt.LatencyTable.load(path, force=True)
    assert loaded.predict(model) == pytest.approx(FULL_MODEL_MS)


def test_table_from_device_rejects_bad_timings(exported, tmp_path):
    model, out, manifest = exported
    good = _synthetic_timings(manifest, model)
    cases = {
        "no timing of calibration model": lambda d: d["calibration"].pop(),
        "no timing of": lambda d: d["entries"].pop(),
        "bad median_ms": lambda d: d["entries"][0].update(median_ms=-1.0),
        "not the manifest": lambda d: d["entries"][0].update(in_channels=99),
        "full model": lambda d: d.pop("full_model"),
        "no machine 'cpu'": lambda d: d["machine"].pop("cpu"),
        "thread": lambda d: d["machine"].update(threads=4),
        "not 'tiny_latency'": lambda d: d.update(model="other"),
        "not a tfpconv device timings": lambda d: d.update(kind="x"),
    }
    for message, damage in cases.items():
        data = json.loads(json.dumps(good))
        damage(data)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message):
            lt.table_from_device(out, path, model)
    other = keras.Sequential(
        [keras.Input((8, 8, 1), batch_size=1), keras.layers.Conv2D(5, 3, name="c1")],
        name="tiny_latency",
    )
    path = tmp_path / "good.json"
    path.write_text(json.dumps(good))
    with pytest.raises(ValueError, match="exported for another model"):
        lt.table_from_device(out, path, other)


def test_cli_export_and_from_device(exported, tmp_path, capsys):
    model, out, manifest = exported
    model.save(tmp_path / "tiny.keras")
    timings = tmp_path / "timings.json"
    timings.write_text(json.dumps(_synthetic_timings(manifest, model)))
    table = tmp_path / "table.json"
    argv = ["latency-table", str(tmp_path / "tiny.keras"), "-o", str(table)]
    assert tfpconv.cli.main([*argv, "--from-device", str(timings), "--manifest", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 convolution shapes" in printed and "Fake SoC" in printed and "neon" in printed
    _check_table(lt.LatencyTable.load(table, force=True), model)
    # Usage errors: status 2, one line.
    assert tfpconv.cli.main([*argv, "--from-device", str(timings)]) == 2
    assert "--manifest" in capsys.readouterr().err
    assert tfpconv.cli.main([*argv, "--export-models", str(tmp_path / "x")]) == 2
    capsys.readouterr()
    # A timings file of another model: one error line, status 1.
    bad = json.loads(timings.read_text())
    bad["model"] = "other"
    timings.write_text(json.dumps(bad))
    assert tfpconv.cli.main([*argv, "--from-device", str(timings), "--manifest", str(out)]) == 1
    assert capsys.readouterr().err.startswith("tfpconv: error: ")
    # --export-models on a one-convolution model (2 grid points x 4 connectivities).
    single = keras.Sequential(
        [keras.Input((6, 6, 1), batch_size=1), keras.layers.Conv2D(2, 3, name="only")],
        name="single",
    )
    single.save(tmp_path / "single.keras")
    export = tmp_path / "export"
    assert (
        tfpconv.cli.main(
            ["latency-table", str(tmp_path / "single.keras"), "--export-models", str(export)]
        )
        == 0
    )
    # 1 x 2 channel counts: 4 connectivities each, and the dense twin
    assert "10 one-layer models" in capsys.readouterr().out
    assert len(json.loads((export / "manifest.json").read_text())["entries"]) == 10


# -- the app's Kotlin on the JVM -----------------------------------------------------------------


@pytest.fixture(scope="module")
def kotlin_build(tmp_path_factory) -> Path:
    """All the app's Kotlin (the latency-table mode included) + LatencyTableCheck.kt."""
    java_home = _java_home()
    if java_home is None:
        pytest.skip("no JDK (apt-get install openjdk-17-jdk-headless)")
    out = tmp_path_factory.mktemp("latency_kotlin")
    compile_app_kotlin(out, java_home, "LatencyTableCheck.kt").rename(out / "latency.jar")
    return out


def test_app_kotlin_with_the_latency_mode_compiles(kotlin_build):
    java_home = _java_home()
    jar = kotlin_build / "latency.jar"
    entries = _run([java_home / "bin" / "jar", "tf", jar]).stdout.splitlines()
    for name in ("LatencyTableActivity", "LatencyTableRun", "LatencyManifest", "MainActivity"):
        assert f"com/tfpconv/demo/{name}.class" in entries, name
    assert not [e for e in entries if e.startswith(("org/tensorflow/", "android/"))]
    javap = [java_home / "bin" / "javap", "-cp", f"{jar}{os.pathsep}{kotlin_build / 'api'}"]
    activity = _run([*javap, "com.tfpconv.demo.LatencyTableActivity"]).stdout
    assert "extends android.app.Activity" in activity, activity


def test_latency_mode_on_the_jvm_feeds_table_from_device(kotlin_build, exported, tmp_path):
    model, out, manifest = exported
    timings = tmp_path / "timings.json"
    result = subprocess.run(
        [
            str(_java_home() / "bin" / "java"),
            "-cp",
            str(kotlin_build / "latency.jar"),
            "com.tfpconv.demo.LatencyTableCheckKt",
            str(out),
            str(timings),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "latency table checks: all ok" in result.stdout, result.stdout
    data = json.loads(timings.read_text())
    assert data["machine"]["cpu"] == "FakeSoc FS-1 (FakeMaker Fake Phone)"
    assert data["machine"]["device"]["abis"] == ["arm64-v8a"]
    for entry in data["entries"]:
        # The app's run counts follow the host's rule for the probe it measured.
        assert entry["runs"] == lt._runs_for(entry["probe_ms"])
    assert data["full_model"]["runs"] == lt._runs_for(FULL_MODEL_MS, lt.MODEL_BUDGET_MS)
    table = lt.table_from_device(out, timings, model)
    _check_grids(table, model)
    # The calibration is the host's least-squares fit of the phone's whole-model timings.
    spec = json.loads(manifest.read_text())
    points = [(1.0, 0.0, data["full_model"]["median_ms"])] + [
        (c["widths"], c["connectivity"], t["median_ms"])
        for c, t in zip(spec["calibration"], data["calibration"], strict=True)
    ]
    summed = np.array([table.convs_ms(model, w, c) for w, c, _ in points])
    measured = np.array([ms for *_, ms in points])
    scale = float(np.clip(np.polyfit(summed, measured, 1)[0], 0.2, 5.0))
    assert table.scale[model.name] == pytest.approx(scale)
    assert table.overhead_ms[model.name] == pytest.approx(float(np.mean(measured - scale * summed)))
    assert table.machine["isa"] == "neon" and table.machine["app"] == "0.1.0"
    assert table.machine["tflite"] == "2.16.1" and table.machine["threads"] == 2
    path = tmp_path / "table.json"
    table.save(path)
    loaded = lt.LatencyTable.load(path, force=True)
    assert loaded.predict(model) == pytest.approx(table.predict(model))
