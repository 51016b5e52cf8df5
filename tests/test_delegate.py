"""The tfpconv delegate inside real TFLite interpreters (LiteRT and tf.lite).

Every model here is pattern-pruned, converted with ``tfpconv.convert`` and run twice: on plain
TFLite and with the delegate. Outputs must agree within 1e-4 relative, and the test checks which
CONV_2D nodes the delegate really ran (``Interpreter.delegated_nodes()``: the delegate's record).
"""

from __future__ import annotations

import logging
import os
import platform
import re
from dataclasses import dataclass

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import tfpconv  # noqa: E402
from tfpconv.api import convert  # noqa: E402
from tfpconv.runtime.delegate import claimed_nodes, tuning_candidates  # noqa: E402
from tfpconv.runtime.machine import cpu_model  # noqa: E402
from tfpconv.sparsity import patterns  # noqa: E402
from tfpconv.tflite.model_file import TFLiteModel  # noqa: E402
from tfpconv.tflite.plan import METADATA_NAME, Feature, Tuning, pack_plan  # noqa: E402

RTOL = 1e-4
LIBRARY = [int(patterns.CANDIDATE_MASKS[i]) for i in (0, 5, 9, 20, 33, 41, 50, 55)]


# -- model helpers ---------------------------------------------------------------------------------


@dataclass
class ConvSpec:
    filters: int
    strides: tuple[int, int] = (1, 1)
    padding: str = "same"
    activation: str | None = None
    use_bias: bool = True
    connectivity: float = 0.0
    pruned_filters: int = 0  # output filters zeroed whole
    pool_after: bool = False  # a MaxPool after it (run in the delegate's partition)
    filter_group: int = 1  # consecutive filters sharing patterns and connectivity


def build_model(input_shape, batch, convs, seed, dense_head=False):
    """A Keras model of 3x3 convolutions, pattern-pruned with ``patterns.project``."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, batch_size=batch)
    x = inputs
    for spec in convs:
        x = keras.layers.Conv2D(
            spec.filters,
            3,
            strides=spec.strides,
            padding=spec.padding,
            activation=spec.activation,
            use_bias=spec.use_bias,
        )(x)
        if spec.pool_after:
            x = keras.layers.MaxPooling2D(2, padding="same")(x)
    if dense_head:
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(5)(x)
    model = keras.Model(inputs, x)
    conv_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    for layer, spec in zip(conv_layers, convs, strict=True):
        weights = layer.get_weights()
        kernel = rng.standard_normal(weights[0].shape).astype(np.float32)
        kernel, _ = patterns.project(kernel, LIBRARY, spec.connectivity, spec.filter_group)
        if spec.pruned_filters:
            kernel[..., : spec.pruned_filters] = 0.0
        weights[0] = kernel
        if spec.use_bias:
            weights[1] = rng.standard_normal(weights[1].shape).astype(np.float32) * 0.1
        layer.set_weights(weights)
    return model


def conv_nodes(model_bytes):
    """Operator indices of the CONV_2D operators of subgraph 0."""
    model = TFLiteModel.from_bytes(model_bytes)
    return [op.operator_index for op in model.operators() if op.name == "CONV_2D"]


def planned_nodes(model_bytes):
    return sorted(conv.operator_index for conv in tfpconv.read_plan(model_bytes).convs)


def run(interpreter, inputs):
    details = interpreter.get_input_details()[0]
    if list(details["shape"]) != list(inputs.shape):
        interpreter.resize_tensor_input(details["index"], inputs.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def assert_close(actual, expected):
    assert actual.shape == expected.shape
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    error = float(np.max(np.abs(actual - expected))) / scale
    assert error <= RTOL, f"relative error {error:.3g} > {RTOL}"


def compare(model_bytes, inputs, num_threads=1, **options):
    """Runs plain TFLite and the delegate; returns the delegated interpreter.

    The delegate claims every planned convolution it can run (``claim="all"``), also the ones with
    fewer than 4 input channels that it leaves to TFLite by default: these tests are about what it
    computes. The default policy has its own tests below.
    """
    options.setdefault("claim", "all")
    expected = run(tfpconv.Interpreter(model_content=model_bytes, use_delegate=False), inputs)
    interpreter = tfpconv.Interpreter(model_content=model_bytes, num_threads=num_threads, **options)
    assert_close(run(interpreter, inputs), expected)
    return interpreter


def random_inputs(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- the library and its Python API ------------------------------------------------------------


def test_delegate_path_finds_the_library():
    path = tfpconv.delegate_path()
    assert os.path.isfile(path) and path.endswith("libtfpconv_delegate.so")


def test_load_delegate_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown option"):
        tfpconv.load_delegate(threads=2)
    with pytest.raises(ValueError, match="num_threads"):
        tfpconv.load_delegate(num_threads="two")
    with pytest.raises(ValueError, match="log_level"):
        tfpconv.load_delegate(log_level="loud")
    assert tfpconv.load_delegate(num_threads=2, log_level="error", isa="auto") is not None


# -- correctness on randomized models -------------------------------------------------------------


def random_case(seed):
    """A random chain of 1-3 pruned convolutions with odd sizes and awkward channel counts."""
    rng = np.random.default_rng(1000 + seed)
    height, width = (int(v) for v in rng.integers(5, 18, size=2))
    channels = int(rng.choice([1, 3, 5, 7, 13, 17, 19]))
    batch = int(rng.choice([1, 2]))
    convs = []
    h, w = height, width
    for _ in range(int(rng.integers(1, 4))):
        valid = bool(rng.random() < 0.35) and min(h, w) >= 5
        strides = tuple(int(s) for s in rng.choice([1, 2], size=2))
        convs.append(
            ConvSpec(
                filters=int(rng.choice([1, 2, 6, 9, 11, 16, 21])),
                strides=strides,
                padding="valid" if valid else "same",
                activation=rng.choice([None, "relu", "relu6"]),
                use_bias=bool(rng.random() < 0.7),
                connectivity=float(rng.choice([0.0, 0.3, 0.6, 0.95])),
                pruned_filters=int(rng.choice([0, 0, 1])),
            )
        )
        shrink = 2 if valid else 0
        h = (h - shrink + strides[0] - 1) // strides[0]
        w = (w - shrink + strides[1] - 1) // strides[1]
        if min(h, w) < 3:
            break
    return (height, width, channels), batch, convs


@pytest.mark.parametrize("seed", range(12))
def test_random_pruned_models_match_tflite(seed):
    input_shape, batch, convs = random_case(seed)
    model = build_model(input_shape, batch, convs, seed)
    data = convert(model)
    interpreter = compare(data, random_inputs((batch, *input_shape), seed))
    assert conv_nodes(data) == planned_nodes(data), "every pruned 3x3 conv should be planned"
    assert interpreter.delegated_nodes() == planned_nodes(data)
    assert "DELEGATE" in [op["op_name"] for op in interpreter._get_ops_details()]


def test_stride2_valid_relu6_and_no_bias():
    convs = [
        ConvSpec(7, strides=(2, 2), padding="valid", activation="relu6", use_bias=False),
        ConvSpec(5, strides=(1, 2), padding="same", activation="relu"),
        ConvSpec(3, strides=(2, 1), padding="valid", connectivity=0.6),
    ]
    model = build_model((15, 17, 3), 2, convs, seed=3)
    data = convert(model)
    interpreter = compare(data, random_inputs((2, 15, 17, 3), 3) * 4.0)
    assert interpreter.delegated_nodes() == conv_nodes(data)


def test_two_consecutive_convs_share_one_partition():
    """The tensor between the two convolutions is internal: the delegate provides it."""
    model = build_model((11, 9, 4), 1, [ConvSpec(6, activation="relu"), ConvSpec(5)], seed=4)
    data = convert(model)
    interpreter = compare(data, random_inputs((1, 11, 9, 4), 4))
    assert interpreter.delegated_nodes() == [0, 1]
    delegate_ops = [op for op in interpreter._get_ops_details() if op["index"] >= 2]
    assert len(delegate_ops) == 1, "one delegate kernel for the whole chain"


def test_filter_groups_run_from_shared_kernels():
    """Filters with equal kernel codes (PatternPruning's filter_group) share the engine's input
    loads; the numbers stay TFLite's, with groups of 4, of 2 and a remainder."""
    convs = [
        ConvSpec(12, activation="relu", connectivity=0.5, filter_group=4),
        ConvSpec(10, connectivity=0.7, filter_group=4),  # 4 + 4 + 2
        ConvSpec(7, strides=(2, 2), connectivity=0.3, filter_group=2),  # 2 + 2 + 2 + 1
    ]
    model = build_model((13, 18, 6), 2, convs, seed=9)
    data = convert(model)
    for num_threads in (1, 2):
        interpreter = compare(data, random_inputs((2, 13, 18, 6), 9), num_threads=num_threads)
        assert interpreter.delegated_nodes() == conv_nodes(data)


def test_fully_pruned_filters_and_layers():
    convs = [
        ConvSpec(6, pruned_filters=4, activation="relu"),
        ConvSpec(4, connectivity=0.0, pruned_filters=4),  # the whole layer: bias only
        ConvSpec(3, connectivity=0.95),
    ]
    model = build_model((7, 8, 5), 1, convs, seed=5)
    data = convert(model)
    interpreter = compare(data, random_inputs((1, 7, 8, 5), 5))
    assert interpreter.delegated_nodes() == conv_nodes(data)


def test_other_ops_stay_with_tflite_and_partitions_split():
    convs = [ConvSpec(8, activation="relu", pool_after=True), ConvSpec(6, activation="relu")]
    model = build_model((12, 12, 3), 1, convs, seed=6, dense_head=True)
    data = convert(model)
    interpreter = compare(data, random_inputs((1, 12, 12, 3), 6), num_threads=2)
    assert interpreter.delegated_nodes() == conv_nodes(data)


# The instruction sets of this architecture (the delegate falls back to the best one, with a
# warning, when asked for one the CPU lacks: such a case is skipped, visibly).
ARM = platform.machine() in ("aarch64", "arm64")
ISAS = ["auto", "scalar", *(["neon"] if ARM else ["avx2", "avx512"])]


def isa_available(isa):
    try:
        return bool(tuning_candidates((8, 8, 8), 8, isa=isa))
    except ValueError:  # the engine has no such instruction set on this CPU
        return False


@pytest.mark.parametrize("isa", ISAS)
def test_multithreaded_and_every_isa_give_the_same_numbers(capfd, isa):
    if not isa_available(isa):
        pytest.skip(f"{isa}: not available on this CPU or build")
    model = build_model((13, 10, 9), 2, [ConvSpec(17, activation="relu"), ConvSpec(11)], seed=7)
    data = convert(model)
    inputs = random_inputs((2, 13, 10, 9), 7)
    outputs = []
    for num_threads in (1, 2, 3):
        capfd.readouterr()
        interpreter = compare(data, inputs, num_threads=num_threads, isa=isa, log_level="info")
        assert interpreter.delegated_nodes() == [0, 1]
        if isa != "auto":  # it really ran on that instruction set
            claims = re.findall(r"claimed CONV_2D node \d+ \([^)]*, (\w+)", capfd.readouterr().err)
            assert claims == [isa, isa]
        outputs.append(run(interpreter, inputs))
    # More threads split the same work differently, never the arithmetic: identical bits.
    for output in outputs[1:]:
        np.testing.assert_array_equal(output, outputs[0])


def test_input_resize_prepares_again():
    model = build_model((9, 9, 3), 1, [ConvSpec(5, strides=(2, 2)), ConvSpec(4)], seed=8)
    data = convert(model)
    interpreter = compare(data, random_inputs((1, 9, 9, 3), 8))
    for shape in [(2, 14, 11, 3), (1, 5, 6, 3)]:
        inputs = random_inputs(shape, 9)
        expected = run(tfpconv.Interpreter(model_content=data, use_delegate=False), inputs)
        assert_close(run(interpreter, inputs), expected)
        assert interpreter.delegated_nodes() == [0, 1]


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tf_lite_interpreter_uses_the_delegate():
    tf = pytest.importorskip("tensorflow")
    model = build_model((10, 10, 3), 1, [ConvSpec(6, activation="relu6"), ConvSpec(4)], seed=9)
    data = convert(model)
    inputs = random_inputs((1, 10, 10, 3), 9)
    expected = run(tf.lite.Interpreter(model_content=data), inputs)
    delegate = tf.lite.experimental.load_delegate(
        tfpconv.delegate_path(), {"num_threads": "2", "claim": "all"}
    )
    interpreter = tf.lite.Interpreter(model_content=data, experimental_delegates=[delegate])
    assert_close(run(interpreter, inputs), expected)
    assert claimed_nodes(delegate) == [0, 1]


def test_model_path_and_plain_interpreter(tmp_path):
    model = build_model((8, 8, 2), 1, [ConvSpec(3)], seed=10)
    path = tmp_path / "model.tflite"
    convert(model, path)
    inputs = random_inputs((1, 8, 8, 2), 10)
    with_delegate = tfpconv.Interpreter(model_path=path, num_threads=2, claim="all")
    without = tfpconv.Interpreter(model_path=str(path), use_delegate=False)
    assert_close(run(with_delegate, inputs), run(without, inputs))
    assert with_delegate.delegated_nodes() == [0]
    assert without.delegated_nodes() == [] and without.delegate is None


# -- which layers the delegate takes by default ----------------------------------------------------


def test_rgb_input_layer_is_left_to_tflite_unless_claimed(capfd):
    model = build_model((12, 12, 3), 1, [ConvSpec(8, activation="relu"), ConvSpec(6)], seed=13)
    data = convert(model)
    inputs = random_inputs((1, 12, 12, 3), 13)
    capfd.readouterr()
    default = compare(data, inputs, claim="auto", log_level="info")
    assert default.delegated_nodes() == [1]
    assert "3 input channel(s)" in capfd.readouterr().err
    assert compare(data, inputs, claim="all").delegated_nodes() == [0, 1]
    with pytest.raises(ValueError, match="claim"):
        tfpconv.load_delegate(claim="some")


def test_tuning_records_the_fastest_variant_or_leaves_the_layer(caplog):
    model = build_model(
        (16, 16, 3), 1, [ConvSpec(16, activation="relu"), ConvSpec(32, connectivity=0.7)], seed=14
    )
    with caplog.at_level(logging.INFO, logger="tfpconv"):
        data = convert(model, tune=True)
    progress = caplog.text
    assert progress.count("tuned conv") == 2, progress
    convs = tfpconv.read_plan(data).convs
    here = running_isa()
    for conv in convs:
        assert [t.isa for t in conv.tunings] == [here]  # one decision, for this instruction set
        tuning = conv.tunings[0]
        assert tuning.cpu == cpu_model()
        if not tuning.claim:
            assert (tuning.variant, tuning.params) == ("", {})  # a declined layer says only that
            continue
        # A claimed layer holds what the engine offered: one of its candidates or its defaults.
        offered = tuning_candidates((16, 16, conv.in_channels), conv.out_channels)
        assert (tuning.variant, tuning.params) == ("", {}) or tuning in offered, tuning
    expected = [c.operator_index for c in convs if c.tunings[0].claim]
    interpreter = compare(data, random_inputs((1, 16, 16, 3), 14), claim="auto")
    assert interpreter.delegated_nodes() == expected
    # Plain TFLite still runs the tuned model: tuning only changed the plan.
    assert conv_nodes(data) == planned_nodes(data)


def test_tuning_candidates_come_from_the_engine():
    candidates = tuning_candidates((28, 28, 64), 64)
    assert candidates
    assert all(c.variant and set(c.params) == {"tile_oc", "tile_ic"} for c in candidates)
    assert len({(c.variant, tuple(c.params.items())) for c in candidates}) == len(candidates)
    # Tagged with the instruction set they were made for (its stable name) and this CPU.
    assert {c.isa for c in candidates} == {running_isa()}
    assert {c.cpu for c in candidates} == {cpu_model()}
    scalar = tuning_candidates((28, 28, 64), 64, isa="scalar")
    assert {c.isa for c in scalar} == {"scalar"}
    assert tuning_candidates((2, 2, 64), 64)  # whole-row variants
    with pytest.raises(ValueError, match="cannot tune"):  # VALID 3x3 on 2x2: no output
        tuning_candidates((2, 2, 64), 64, padding="valid")
    with pytest.raises(ValueError, match="strides"):
        tuning_candidates((8, 8, 4), 4, strides=(3, 3))
    with pytest.raises(ValueError, match="padding"):
        tuning_candidates((8, 8, 4), 4, padding="causal")


def running_isa():
    """The instruction set the delegate runs by default (isa="auto"), by its stable name."""
    return tuning_candidates((8, 8, 8), 8)[0].isa


def with_tunings(model_bytes, tunings):
    """The model with every planned convolution's tunings replaced by `tunings`."""
    plan = tfpconv.read_plan(model_bytes)
    for conv in plan.convs:
        conv.tunings = list(tunings)
    model = TFLiteModel.from_bytes(model_bytes)
    model.set_metadata(METADATA_NAME, plan.to_bytes())
    return model.to_bytes()


def other_isa():
    return "neon" if running_isa() != "neon" else "avx2"


def test_plan_tuned_for_another_isa_still_runs_delegated(capfd):
    """A decision measured on another instruction set, even "leave it to TFLite", is not this
    machine's: the delegate runs its defaults and keeps the layers."""
    model = build_model((16, 16, 8), 1, [ConvSpec(16, activation="relu"), ConvSpec(8)], seed=15)
    data = with_tunings(convert(model), [Tuning(other_isa(), "a phone", claim=False)])
    interpreter = compare(data, random_inputs((1, 16, 16, 8), 15), claim="auto")
    assert interpreter.delegated_nodes() == planned_nodes(data)


def test_plan_tuned_here_to_stay_with_tflite_is_obeyed():
    model = build_model((16, 16, 8), 1, [ConvSpec(16, activation="relu"), ConvSpec(8)], seed=15)
    data = with_tunings(
        convert(model), [Tuning(running_isa(), claim=False), Tuning(other_isa(), claim=True)]
    )
    interpreter = compare(data, random_inputs((1, 16, 16, 8), 15), claim="auto")
    assert interpreter.delegated_nodes() == []
    # claim="all" takes every planned layer whatever the tuning says.
    assert compare(data, random_inputs((1, 16, 16, 8), 15), claim="all").delegated_nodes() == [0, 1]


def test_unknown_variant_name_gives_the_defaults(capfd):
    model = build_model((16, 16, 8), 1, [ConvSpec(16, activation="relu"), ConvSpec(8)], seed=15)
    tuning = Tuning(running_isa(), variant="no_such_variant", params={"tile_oc": 4})
    data = with_tunings(convert(model), [tuning])
    capfd.readouterr()
    interpreter = compare(data, random_inputs((1, 16, 16, 8), 15), claim="auto", log_level="info")
    assert interpreter.delegated_nodes() == planned_nodes(data)
    err = capfd.readouterr().err
    assert err.count("no_such_variant") >= 2, err


def test_operator_needing_an_unknown_feature_is_declined_alone(capfd):
    model = build_model((12, 12, 8), 1, [ConvSpec(8, activation="relu"), ConvSpec(8)], seed=16)
    data = convert(model)
    plan = tfpconv.read_plan(data)
    future = Feature("unified_weights", "9.9.0")
    plan.convs[0].requires = (*plan.convs[0].requires, future)
    tflite = TFLiteModel.from_bytes(data)
    tflite.set_metadata(METADATA_NAME, pack_plan(plan))
    data = tflite.to_bytes()
    capfd.readouterr()
    interpreter = compare(data, random_inputs((1, 12, 12, 8), 16), claim="all")
    assert interpreter.delegated_nodes() == [1]
    err = capfd.readouterr().err
    assert "unified_weights" in err and "9.9.0" in err, err


# -- bad or stale plans: declined with a warning, outputs still right ------------------------------


@pytest.fixture(scope="module")
def planned():
    model = build_model((9, 7, 4), 1, [ConvSpec(6, activation="relu"), ConvSpec(5)], seed=11)
    import tensorflow as tf

    plain = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return plain, convert(model)


def with_metadata(model_bytes, payload):
    model = TFLiteModel.from_bytes(model_bytes)
    model.set_metadata("tfpconv", payload)
    return model.to_bytes()


def check_declined(capfd, model_bytes, expected_delegated, message):
    capfd.readouterr()
    interpreter = compare(model_bytes, random_inputs((1, 9, 7, 4), 12))
    assert interpreter.delegated_nodes() == expected_delegated
    err = capfd.readouterr().err
    assert "tfpconv warning" in err and message in err, err


def test_missing_metadata(capfd, planned):
    plain, _ = planned
    check_declined(capfd, plain, [], 'no "tfpconv" metadata')


def test_corrupt_metadata(capfd, planned):
    plain, _ = planned
    check_declined(capfd, with_metadata(plain, b"\x00garbage" * 9), [], "unusable")


def test_truncated_metadata(capfd, planned):
    _, data = planned
    plan = TFLiteModel.from_bytes(data).metadata("tfpconv")
    check_declined(capfd, with_metadata(data, plan[: len(plan) // 2]), [], "unusable")


def test_stale_metadata_checksum_mismatch(capfd, planned):
    """Fine-tuned weights after conversion: same shape and pattern, different checksum."""
    _, data = planned
    model = TFLiteModel.from_bytes(data)
    first_conv = next(op for op in model.operators() if op.name == "CONV_2D")
    filter_index = first_conv.op.inputs[1]
    weights = np.frombuffer(model.tensor_data(0, filter_index), dtype=np.float32)
    raw = weights.tobytes()
    changed = weights.copy()
    changed[np.flatnonzero(changed)[0]] *= 1.5
    stale = bytes(data).replace(raw, changed.tobytes(), 1)
    assert stale != bytes(data)
    check_declined(capfd, stale, [1], "checksum mismatch")


def test_plan_of_another_model(capfd, planned):
    """A plan copied from a different model: weights and checksums do not match."""
    _, data = planned
    other = build_model((9, 7, 4), 1, [ConvSpec(6, activation="relu"), ConvSpec(5)], seed=12)
    other_plan = TFLiteModel.from_bytes(convert(other)).metadata("tfpconv")
    check_declined(capfd, with_metadata(data, other_plan), [], "stale plan")
