"""The latency harness on a tiny pruned model (figures are checked for shape, never for speed)."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import tfpconv  # noqa: E402
from tfpconv.runtime import bench, bench_report  # noqa: E402
from tfpconv.runtime.layer_models import single_conv_model  # noqa: E402
from tfpconv.runtime.machine import cpu_slug, microarchitecture_of  # noqa: E402
from tfpconv.runtime.memory import peak_memory_mb  # noqa: E402
from tfpconv.runtime.timing import interleaved_latencies  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 5)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="a"),
            keras.layers.Conv2D(24, 3, strides=2, padding="valid", activation="relu6", name="b"),
            keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c"),
        ]
    )
    tfpconv.prune_patterns(model, num_patterns=8, connectivity=0.5)
    path = tmp_path_factory.mktemp("bench") / "tiny.tflite"
    tfpconv.convert(model, output_path=path)
    return path


def test_bench_reports_both_paths_per_layer_and_memory(tiny_model, tmp_path):
    report = bench.bench(tiny_model, threads=(1, 2), runs=3, layers=True, memory=False)
    assert report.planned_convs == 3
    assert report.weights_kept < report.weights
    assert [r.threads for r in report.results] == [1, 2]
    for result in report.results:
        assert result.delegated_nodes == 3
        # Packing keeps only the non-zeros (with their offsets): less than the dense filters.
        assert 0 < result.packed_weight_bytes < 4 * report.weights
        assert result.max_rel_diff <= 1e-4
        assert result.xnnpack_ms > 0 and result.delegate_ms > 0
        assert result.speedup == pytest.approx(result.xnnpack_ms / result.delegate_ms)
        for layer, keras_name in zip(result.layers, "abc", strict=True):
            assert f"/{keras_name}_" in layer.name  # e.g. "sequential/a_1/Relu"
        assert all(layer.claimed for layer in result.layers)
        b = result.layers[1]
        assert b.input_shape == (1, 12, 12, 16) and b.output_shape == (1, 5, 5, 24)
        assert b.delegate_effective_gflops == pytest.approx(
            2 * 25 * b.weights_kept / (b.delegate_ms * 1e6)
        )
    # Both thread counts of both paths, timed in one interleaved loop.
    assert set(report.scaling) == {"xnnpack", "delegate"}
    for path in ("xnnpack", "delegate"):
        assert set(report.scaling[path]) == {1, 2}
        assert all(ms > 0 for ms in report.scaling[path].values())
        ratio = report.scaling[path][1] / report.scaling[path][2]
        assert report.thread_ratio(path, 1, 2) == pytest.approx(ratio)
    assert report.thread_ratio("delegate", 1, 4) is None
    bench_report.write_report([report], tmp_path)
    data = json.loads((tmp_path / "latency.json").read_text())
    assert data[0]["results"][0]["layers"][0]["name"] == result.layers[0].name
    assert set(data[0]["thread_scaling_ms"]["delegate"]) == {"1", "2"}
    markdown = (tmp_path / "latency.md").read_text()
    assert f"| {result.layers[0].name} |" in markdown
    assert "- tfpconv: 1 thread(s) " in markdown and "(2 vs 1: " in markdown


def test_one_thread_count_has_no_scaling_run(tiny_model):
    report = bench.bench(tiny_model, threads=(1,), runs=2, layers=False, memory=False)
    assert report.scaling == {}
    assert "Thread scaling" not in report.markdown()


def test_delegate_options_reach_every_delegate_it_loads(tiny_model):
    report = bench.bench(
        tiny_model, threads=(1, 2), runs=2, memory=False, delegate_options={"isa": "scalar"}
    )
    for result in report.results:
        assert result.delegated_nodes == 3 and result.max_rel_diff < 1e-4
        assert all(layer.claimed for layer in result.layers)
    assert set(report.scaling["delegate"]) == {1, 2}
    with pytest.raises(ValueError, match="isa"):
        bench.bench(tiny_model, runs=1, memory=False, delegate_options={"isa": "sse9"})


def test_peak_memory_is_measured_in_a_fresh_process(tiny_model):
    assert peak_memory_mb(tiny_model, threads=1, use_delegate=True) > 0


def test_single_conv_model_reproduces_the_layer(tiny_model):
    model = bench.TFLiteModel.from_file(tiny_model)
    plan = tfpconv.read_plan(tiny_model)
    single = single_conv_model(model, plan.convs[1])
    single_plan = tfpconv.read_plan(single)
    np.testing.assert_array_equal(single_plan.convs[0].codes, plan.convs[1].codes)
    interpreter = tfpconv.Interpreter(model_content=single, use_delegate=False)
    interpreter.allocate_tensors()
    assert tuple(interpreter.get_input_details()[0]["shape"]) == (1, 12, 12, 16)


def test_interleaved_latencies_validates_runs():
    with pytest.raises(ValueError, match="runs"):
        interleaved_latencies([], runs=0)
    assert np.asarray(interleaved_latencies([], runs=2)).size == 0


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        bench.bench(tmp_path / "nope.tflite")


def test_cli_bench_prints_the_table_and_writes_json(tiny_model, tmp_path, capsys):
    from tfpconv import cli

    out = tmp_path / "bench.json"
    status = cli.main(
        [
            "bench",
            str(tiny_model),
            "--threads",
            "1",
            "--runs",
            "2",
            "--no-layers",
            "--json",
            str(out),
        ]
    )
    assert status == 0
    assert "| 1 |" in capsys.readouterr().out
    assert json.loads(out.read_text())["planned_convs"] == 3


@pytest.mark.parametrize("argv", [["--runs", "0"], ["--threads", "0"], ["--threads", "a,b"]])
def test_cli_bench_rejects_bad_arguments(tiny_model, argv):
    from tfpconv import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", str(tiny_model), *argv])
    assert exit_info.value.code == 2


def test_cli_bench_missing_file_is_a_one_line_error(tmp_path, capsys):
    from tfpconv import cli

    assert cli.main(["bench", str(tmp_path / "missing.tflite")]) == 1
    assert capsys.readouterr().err.strip().startswith("tfpconv: error:")


def test_cli_bench_of_a_non_model_names_the_file(tmp_path, capsys):
    from tfpconv import cli

    fake = tmp_path / "fake.tflite"
    fake.write_text("not a model\n")
    with pytest.raises(tfpconv.TFLiteModelError, match="fake.tflite: not a TFLite model"):
        bench.bench(fake)
    assert cli.main(["bench", str(fake)]) == 1
    err = capsys.readouterr().err
    assert err == f"tfpconv: error: {fake}: not a TFLite model (no TFL3 file identifier)\n"


def _small_report() -> bench_report.BenchReport:
    result = bench_report.ThreadResult(
        threads=1,
        xnnpack_ms=2.0,
        delegate_ms=1.0,
        max_abs_diff=0.0,
        max_rel_diff=0.0,
        delegated_nodes=1,
        packed_weight_bytes=100,
    )
    return bench_report.BenchReport("m.tflite", 1, 900, 400, [result])


def test_write_report_replaces_the_files(tmp_path):
    # A reader holding the old file keeps its complete old contents (a rename, not a rewrite).
    for name in ("latency.json", "latency.md"):
        (tmp_path / name).write_text("old\n")
        os.link(tmp_path / name, tmp_path / f"held_{name}")
    bench_report.write_report([_small_report()], tmp_path)
    assert json.loads((tmp_path / "latency.json").read_text())[0]["model"] == "m.tflite"
    assert "### m.tflite" in (tmp_path / "latency.md").read_text()
    for name in ("latency.json", "latency.md"):
        assert (tmp_path / f"held_{name}").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _latency_benchmark():
    spec = importlib.util.spec_from_file_location(
        "latency_benchmark", Path(__file__).resolve().parents[1] / "benchmarks" / "latency.py"
    )
    latency = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(latency)
    return latency


def test_latency_targets_name_allocation_and_verdict():
    latency = _latency_benchmark()
    reports = {  # 2.0x measured (2 ms vs 1 ms), one thread
        ("vgg16_224", 0.72, "erdos_renyi"): _small_report(),
        ("vgg16_32", 0.72, "uniform"): _small_report(),
    }
    lines = latency.target_lines(reports)
    ratio = "1 thread vs XNNPACK | >= 2.5x | 2.00x | NOT met |"
    assert f"| vgg16_224 | 0.72 | erdos_renyi | {ratio}" in lines
    assert f"| vgg16_32 | 0.72 | uniform | {ratio}" in lines
    # Targets without a run (ResNet, connectivity 0, the uniform VGG-16 224 rows) are left out.
    assert len(lines) == 2 + 2


def test_latency_plot_replaces_the_file(tmp_path):
    pytest.importorskip("matplotlib")
    latency = _latency_benchmark()
    png = tmp_path / "latency.png"
    png.write_text("old\n")
    os.link(png, tmp_path / "held.png")
    latency.plot({("vgg16_32", 0.5, "uniform"): _small_report()}, png)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "held.png").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _cpuinfo(vendor: str, family: int, model: int) -> str:
    """A /proc/cpuinfo text of two processors, the second of another vendor (only the first
    counts)."""
    first = f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
    return first + "model name\t: AMD EPYC\n\nprocessor\t: 1\nvendor_id\t: Other\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (_cpuinfo("AuthenticAMD", 26, 2), "zen5"),
        (_cpuinfo("AuthenticAMD", 25, 17), "zen4"),
        (_cpuinfo("AuthenticAMD", 25, 1), "zen3"),
        (_cpuinfo("GenuineIntel", 6, 143), "sapphirerapids"),
        (_cpuinfo("GenuineIntel", 6, 2), ""),
        ("model name\t: Some Arm core\n", ""),
    ],
)
def test_microarchitecture_from_family_and_model(cpuinfo, expected):
    assert microarchitecture_of(cpuinfo) == expected
    tag = cpu_slug("AMD EPYC", expected)
    assert tag == ("amd-epyc-" + expected if expected else "amd-epyc")
