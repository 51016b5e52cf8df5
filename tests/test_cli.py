"""The `tfpconv` command: convert and inspect, and one-line errors for every bad input."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tfpconv.cli import COMMANDS, main  # noqa: E402
from tfpconv.sparsity import patterns  # noqa: E402
from tfpconv.tflite.plan import read_plan  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``python3 -m tfpconv.cli`` the way a user runs the console script.

    TF_CPP_MIN_LOG_LEVEL is left unset, as in a user's shell: silencing TensorFlow is the
    command's job.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "tfpconv.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A pruned .keras model, a model without convolutions, and some bad files."""
    root = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="first"),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", name="second"),
            keras.layers.Conv2D(4, 5, padding="same", name="big"),
        ]
    )
    convs = [model.get_layer("first"), model.get_layer("second")]
    library = patterns.select_library([c.get_weights()[0] for c in convs], 4)
    for conv in convs:
        kernel, bias = conv.get_weights()
        conv.set_weights([patterns.project(kernel, library, 0.5)[0], bias])
    model.save(root / "pruned.keras")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(root / "dense.keras")
    (root / "notes.txt").write_text("this is not a model\n")
    return {
        "pruned": root / "pruned.keras",
        "dense": root / "dense.keras",
        "notes": root / "notes.txt",
        "root": root,
    }


@pytest.fixture(scope="module")
def converted(models: dict[str, Path]) -> Path:
    out = models["root"] / "pruned.tflite"
    result = _cli("convert", str(models["pruned"]), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 of 3 CONV_2D planned" in result.stdout
    assert "kernel 5x5" in result.stdout
    assert result.stderr == ""  # nothing from TensorFlow's C++ logging either
    return out


def test_convert_via_subprocess_and_inspect(
    converted: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = read_plan(converted)
    assert len(plan.convs) == 2 and [s.reason for s in plan.skipped] == ["kernel 5x5"]
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["inspect", str(converted)]) == 0
    text = capsys.readouterr().out
    assert "2 of 3 CONV_2D planned" in text
    for expected in (
        "16x3x3x3",
        "16x3x3x16",
        "4x5x5x16",
        "kernel 5x5",
        "planned",
        "K=4",
        "4.50x",
        "total",
    ):
        assert expected in text, expected


def test_inspect_json(converted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(converted), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    layers = report["layers"]
    assert [layer["planned"] for layer in layers] == [True, True, False]
    assert layers[2]["reason"] == "kernel 5x5"
    first = layers[0]
    assert first["kernels"] == 48 and first["kernels_kept"] == 24
    assert first["weights"] == 432 and first["weights_kept"] == 96
    assert first["flops"] == 2 * 64 * 432 and first["flops_kept"] == 2 * 64 * 96
    assert first["compression"] == 4.5
    assert sum(first["pattern_histogram"].values()) == 24
    # Patterns are 9-bit masks (JSON object keys are strings): 4 taps, the centre among them.
    masks = [int(mask) for mask in first["pattern_histogram"]]
    assert all(bin(mask).count("1") == 4 and mask & (1 << 4) for mask in masks)
    assert layers[1]["strides"] == [2, 2] and layers[1]["output_shape"] == [1, 4, 4, 16]
    assert report["totals"]["planned"] == 2 and report["totals"]["convs"] == 3
    assert report["metadata"][-1] == "tfpconv"


def test_inspect_verbose_draws_patterns(converted: Path, capsys) -> None:
    assert main(["inspect", str(converted), "-v"]) == 0
    out = capsys.readouterr().out
    assert out.count("pattern library") == 2
    assert len(re.findall(r"^  [x.]{3}/[x.]{3}/[x.]{3}  \d+$", out, re.MULTILINE)) >= 2


def test_convert_tflite_and_group_size(converted: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "regrouped.tflite"
    assert main(["convert", str(converted), "-o", str(out), "--filter-group-size", "8", "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert [len(c.group_offsets) - 1 for c in read_plan(out).convs] == [2, 2]


def test_convert_with_tuning(converted: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tuned.tflite"
    assert main(["convert", str(converted), "-o", str(out), "--tune", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("tuned conv ") == 2
    assert all(len(conv.tunings) == 1 for conv in read_plan(out).convs)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(converted), "-o", str(out), "--tune", "--tune-threads", "0"])
    assert exit_info.value.code == 2
    assert "--tune-threads" in capsys.readouterr().err


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """``err`` is exactly one line, ours, with every fragment in it."""
    assert code == 1
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("tfpconv: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_bad_input_via_subprocess(models: dict[str, Path], tmp_path: Path) -> None:
    # Every other bad input is checked in-process through main(), which the script calls.
    result = _cli("inspect", str(models["notes"]))
    _assert_one_line_error(result.returncode, result.stderr, "not a TFLite model")
    # This one imports TensorFlow before it fails: still nothing on stderr but our line.
    fake = tmp_path / "fake.keras"
    fake.write_bytes(b"not a zip archive")
    result = _cli("convert", str(fake), "-o", str(tmp_path / "out.tflite"))
    _assert_one_line_error(result.returncode, result.stderr, "fake.keras", "cannot load")


def test_output_location_is_checked_before_the_input_is_converted(
    models: dict[str, Path], tmp_path: Path
) -> None:
    # The input (a text file) is bad too: the output error coming first shows the order.
    result = _cli("convert", str(models["notes"]), "-o", str(tmp_path / "nowhere" / "x.tflite"))
    _assert_one_line_error(result.returncode, result.stderr, "nowhere", "does not exist")


def test_corrupt_plans_give_one_line_errors(
    converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every byte of the embedded plan changed in turn: a clean result or one line, never more."""
    from tfpconv.tflite.model_file import read_metadata
    from tfpconv.tflite.plan import PlanError

    data = converted.read_bytes()
    payload = read_metadata(data, "tfpconv")
    start = data.find(payload)
    assert payload and data.count(payload) == 1
    rng = np.random.default_rng(0)
    corrupt = tmp_path / "corrupt.tflite"
    outcomes = {0: 0, 1: 0}
    for offset in range(len(payload)):
        mangled = bytearray(data)
        mangled[start + offset] ^= int(rng.integers(1, 256))
        corrupt.write_bytes(mangled)
        with contextlib.suppress(PlanError):  # the only error read_plan may raise here
            read_plan(corrupt)
        argv = ["inspect", str(corrupt)] + (["--json"] if offset % 2 else [])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main(argv)
        err = capsys.readouterr().err
        assert [str(w.message) for w in caught] == [], offset
        assert code in outcomes, offset
        if code == 0:
            assert err == "", offset
        else:
            _assert_one_line_error(code, err)
        outcomes[code] += 1
    assert outcomes[0] and outcomes[1]  # some flips are harmless, most are caught


@pytest.mark.parametrize(
    ("kind", "fragments"),
    [
        ("missing", ["missing.tflite", "No such file"]),
        ("notes", ["notes.txt", "not a TFLite model"]),
        ("corrupt", ["corrupt.tflite", "corrupt flatbuffer"]),
        ("plain", ["plain.tflite", "no 'tfpconv' metadata"]),
        ("directory", ["is a directory"]),
    ],
)
def test_inspect_bad_inputs(
    kind: str, fragments: list[str], models, converted: Path, tmp_path: Path, capsys
) -> None:
    if kind == "missing":
        path = tmp_path / "missing.tflite"
    elif kind == "notes":
        path = models["notes"]
    elif kind == "corrupt":
        path = tmp_path / "corrupt.tflite"
        data = converted.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "plain":
        from tfpconv.tflite.model_file import TFLiteModel

        model = TFLiteModel.from_file(converted)
        model.model.metadata = [m for m in model.model.metadata if m.name != b"tfpconv"]
        path = tmp_path / "plain.tflite"
        path.write_bytes(model.to_bytes())
    else:
        path = tmp_path
    code = main(["inspect", str(path)])
    _assert_one_line_error(code, capsys.readouterr().err, *fragments)


@pytest.mark.parametrize(
    ("kind", "fragments"),
    [
        ("missing", ["missing.keras", "no such model file"]),
        ("notes", ["notes.txt", "not a model tfpconv can read"]),
        ("corrupt", ["corrupt.tflite", "corrupt flatbuffer"]),
        ("fake_keras", ["fake.keras", "cannot load the Keras model"]),
        ("empty_keras", ["empty.keras", "is empty"]),
        ("dense", ["no CONV_2D operator"]),
        ("directory", ["not a SavedModel"]),
        ("out_dir", ["nowhere", "does not exist"]),
        ("out_is_dir", ["is a directory"]),
        ("out_under_file", ["notes.txt", "not a directory"]),
    ],
)
def test_convert_bad_inputs(
    kind: str, fragments: list[str], models, converted: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out.tflite"
    if kind == "missing":
        source = tmp_path / "missing.keras"
    elif kind == "notes":
        source = models["notes"]
    elif kind == "corrupt":
        source = tmp_path / "corrupt.tflite"
        data = converted.read_bytes()
        source.write_bytes(data[: len(data) // 3])
    elif kind == "fake_keras":
        source = tmp_path / "fake.keras"
        source.write_bytes(b"not a zip archive")
    elif kind == "empty_keras":
        source = tmp_path / "empty.keras"
        source.write_bytes(b"")
    elif kind == "dense":
        source = models["dense"]
    elif kind == "directory":
        source = tmp_path
    elif kind == "out_dir":
        source, out = converted, tmp_path / "nowhere" / "out.tflite"
    elif kind == "out_is_dir":
        source, out = converted, tmp_path
    else:
        source, out = converted, models["notes"] / "out.tflite"
    code = main(["convert", str(source), "-o", str(out)])
    _assert_one_line_error(code, capsys.readouterr().err, *fragments)
    assert kind == "out_is_dir" or not out.exists()


def test_usage_errors_exit_2(capsys) -> None:
    for argv in ([], ["convert", "model.keras"], ["frobnicate"], ["inspect"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()


def test_commands_are_extensible() -> None:
    assert [c.name for c in COMMANDS] == [
        "convert",
        "inspect",
        "bench",
        "latency-table",
        "search",
    ]
    assert all(callable(c.add_arguments) and callable(c.run) for c in COMMANDS)


def test_inspect_reports_stale_plan(converted: Path, tmp_path: Path, capsys) -> None:
    from tfpconv.tflite.model_file import TFLiteModel

    plan = read_plan(converted)
    model = TFLiteModel.from_file(converted)
    tensor = model.tensor(0, plan.convs[0].weight_tensor_index)
    weights = np.frombuffer(model.model.buffers[tensor.buffer].data.tobytes(), "<f4").copy()
    weights[np.flatnonzero(weights)[:3]] += 1.0
    model.model.buffers[tensor.buffer].data = np.frombuffer(weights.tobytes(), np.uint8)
    stale = tmp_path / "stale.tflite"
    stale.write_bytes(model.to_bytes())
    assert main(["inspect", str(stale), "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert not layers[0]["planned"] and "checksum mismatch" in layers[0]["reason"]
    assert layers[1]["planned"]
