"""The latency model: tables measured through the runtime, interpolation, files, the CLI.

Timing figures are noisy here, so the tests check structure and only a loose sanity bound on
predictions; the accuracy of the model (median error) is measured by benchmarks/latency_model.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import tfpconv  # noqa: E402
from tfpconv.keras.candidates import build_candidate  # noqa: E402
from tfpconv.runtime import latency_table as lt  # noqa: E402
from tfpconv.runtime.machine import TableMismatchError  # noqa: E402
from tfpconv.tflite.conversion import convert_model  # noqa: E402


def test_grid_interpolates_exactly_at_and_linearly_between_points():
    grid = lt.ShapeGrid(
        in_channels=[8, 16],
        out_channels=[4, 12],
        connectivities=[0.0, 0.5],
        ms=[[[1.0, 3.0], [2.0, 6.0]], [[0.5, 1.5], [1.0, 3.0]]],
    )
    assert grid.at(16, 12, 0.0) == 6.0 and grid.at(8, 4, 0.5) == 0.5
    assert grid.at(12, 4, 0.0) == pytest.approx(1.5)
    assert grid.at(8, 8, 0.0) == pytest.approx(2.0)
    assert grid.at(16, 12, 0.25) == pytest.approx(4.5)
    assert grid.at(64, 64, 0.9) == 3.0  # clamped to the grid


@pytest.fixture(scope="module")
def small():
    model = tfpconv.models.small_vgg((24, 24, 3), widths=(16, 32), name="small")
    table = lt.measure_table(model, calibration=3)
    return model, table


def test_measured_table_covers_every_convolution(small):
    model, table = small
    sites = lt.conv_sites(model)
    assert [s.layer for s in sites] == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
    assert {s.key for s in sites} == {"24x24_k3_s1_same", "12x12_k3_s1_same"}
    # Each 3x3 shape also has its dense twin: the layer without patterns, as TFLite runs it.
    assert set(table.shapes) == {
        "24x24_k3_s1_same", "24x24_k3_s1_same_dense", "12x12_k3_s1_same", "12x12_k3_s1_same_dense"
    }  # fmt: skip
    assert table.shapes["12x12_k3_s1_same_dense"].connectivities == [0.0]
    first = table.shapes["24x24_k3_s1_same"]
    # The grid spans the channel counts of every layer of the shape, RGB input included.
    assert 3 in first.in_channels and 16 in first.in_channels and 16 in first.out_channels
    assert first.connectivities == list(lt.CONNECTIVITIES)
    assert np.all(np.asarray(first.ms) > 0)
    assert table.machine["threads"] == 1 and table.machine["cpu"]
    # Prediction = overhead + scale x the table's convolutions, both calibrated on the model
    # (as it is: dense).
    convs = sum(table.conv_ms(s, s.in_channels, s.out_channels, None) for s in sites)
    assert table.convs_ms(model) == pytest.approx(convs)
    assert 0.2 <= table.scale["small"] <= 5.0
    assert table.predict(model) == pytest.approx(
        table.overhead_ms["small"] + table.scale["small"] * convs
    )


def test_calibration_fits_overhead_and_scale_by_least_squares(small):
    model, table = small
    points = [(1.0, 0.0, 5.0), ({"conv1_1": 0.5}, 0.0, 4.0), (0.5, 0.5, 2.0), (0.25, 0.9, 1.5)]
    table = copy.deepcopy(table)  # the fixture's own calibration stays for the other tests
    fitted = lt._assemble_table(model, table, None, lambda: points, None)  # every shape is known
    summed = np.array([table.convs_ms(model, w, c) for w, c, _ in points])
    scale, overhead = np.polyfit(summed, [ms for *_, ms in points], 1)
    if overhead >= 0:
        assert fitted.scale["small"] == pytest.approx(float(np.clip(scale, 0.2, 5.0)))
    if 0.2 < scale < 5.0 and overhead >= 0:
        assert fitted.overhead_ms["small"] == pytest.approx(overhead)
    one = lt._assemble_table(model, copy.deepcopy(table), None, lambda: points[:1], None)
    assert one.scale["small"] == 1.0 and one.overhead_ms["small"] == pytest.approx(5.0 - summed[0])


def test_a_negative_fitted_overhead_gives_way_to_a_scale_through_the_origin(small):
    # Timing noise can make the least-squares line cross zero above the smallest model: its
    # prediction would be negative. The calibration then fits the scale alone, overhead 0.
    model, table = small
    table = copy.deepcopy(table)
    candidates = [(1.0, 0.0), ({"conv1_1": 0.5}, 0.0), (0.5, 0.5), (0.25, 0.9)]
    summed = np.array([table.convs_ms(model, w, c) for w, c in candidates])
    measured = 2.0 * summed - 0.5 * summed.mean()
    assert np.polyfit(summed, measured, 1)[1] < 0
    points = [(w, c, float(ms)) for (w, c), ms in zip(candidates, measured, strict=True)]
    fitted = lt._assemble_table(model, table, None, lambda: points, None)
    through_origin = float(summed @ measured / (summed @ summed))
    assert fitted.scale["small"] == pytest.approx(np.clip(through_origin, 0.2, 5.0))
    assert fitted.overhead_ms["small"] >= 0.0
    assert all(fitted.predict(model, w, c) > 0 for w, c in candidates)


def test_predictions_of_candidates_are_sane(small):
    model, table = small
    rng = np.random.default_rng(0)
    for _ in range(3):
        widths = {
            g.name: float(rng.choice([0.25, 0.5, 1.0]))
            for g in tfpconv.channels.groups(model)
            if g.prunable
        }
        connectivity = {  # None: left dense
            s.layer: [None, 0.0, 0.5, 0.9][int(rng.integers(4))] for s in lt.conv_sites(model)[1:]
        }
        predicted = table.predict(model, widths, connectivity)
        measured = lt.measured_latency(convert_model(build_candidate(model, widths, connectivity)))
        assert predicted > 0
        assert measured / 4 < predicted < measured * 4, (predicted, measured)


def test_side_by_side_latencies_time_every_model_in_order(small):
    model, _ = small
    dense = convert_model(model)
    widths = {g.name: 0.25 for g in tfpconv.channels.groups(model) if g.prunable}
    thin = convert_model(build_candidate(model, widths, 0.5))
    times = lt.measured_latencies([dense, thin, dense], runs=7)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert lt.measured_latencies([]) == []
    with pytest.raises(ValueError, match="runs must be >= 1"):
        lt.measured_latencies([dense], runs=0)


def test_table_files_round_trip_and_refuse_other_machines(small, tmp_path: Path):
    _, table = small
    path = tmp_path / "table.json"
    table.save(path)
    again = lt.LatencyTable.load(path)
    assert again.shapes.keys() == table.shapes.keys() and again.overhead_ms == table.overhead_ms
    data = json.loads(path.read_text())
    data["machine"]["cpu"] = "Some Other CPU 9000"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(TableMismatchError, match="Some Other CPU 9000.*--force"):
        lt.LatencyTable.load(other)
    assert lt.LatencyTable.load(other, force=True).machine["cpu"] == "Some Other CPU 9000"
    with pytest.raises(TableMismatchError, match="threads"):
        lt.LatencyTable.load(path, threads=2)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a tfpconv latency table"):
        lt.LatencyTable.load(tmp_path / "bad.json")


def test_cli_measures_a_table(tmp_path: Path, capsys):
    model = tfpconv.models.small_vgg((12, 12, 1), widths=(8, 16), name="tiny")
    model.save(tmp_path / "tiny.keras")
    out = tmp_path / "tiny.json"
    assert tfpconv.cli.main(["latency-table", str(tmp_path / "tiny.keras"), "-o", str(out)]) == 0
    assert "2 convolution shapes (2 of them 3x3, also timed without patterns)" in (
        capsys.readouterr().out
    )
    assert "tiny" in lt.LatencyTable.load(out).overhead_ms


def test_per_layer_connectivity_in_prune_patterns():
    model = tfpconv.models.small_vgg((16, 16, 3), widths=(8, 16), name="m")
    report = tfpconv.prune_patterns(model, connectivity={"conv1_2": 0.5, "conv2_2": 0.75})
    kept = {s.name: s.kernels_kept / s.kernels for s in report.layers}
    assert kept["conv1_1"] == 1.0 and kept["conv2_1"] == 1.0
    assert kept["conv1_2"] == 0.5 and kept["conv2_2"] == 0.25
    with pytest.raises(ValueError, match="not pruned 3x3 convolutions: \\['nope'\\]"):
        tfpconv.prune_patterns(model, connectivity={"nope": 0.5})
