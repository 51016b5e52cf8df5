"""tfpconv.convert: TF's conversion + the plan as metadata; outputs identical to TF's conversion."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

import tfpconv  # noqa: E402
from tfpconv.api import convert  # noqa: E402
from tfpconv.sparsity import patterns, unification  # noqa: E402
from tfpconv.tflite.errors import ConversionError  # noqa: E402
from tfpconv.tflite.inspect import inspect_model  # noqa: E402
from tfpconv.tflite.model_file import TFLiteModel, TFLiteModelError, schema  # noqa: E402
from tfpconv.tflite.plan import (  # noqa: E402
    METADATA_NAME,
    PatternConvPlan,
    Plan,
    UnifiedFcPlan,
    read_plan,
    unified_packed_bytes,
)
from tfpconv.tflite.planner import MAX_PACKED_FRACTION, embed_plan, plan_model  # noqa: E402

# -- helpers -----------------------------------------------------------------------------------


def _is_3x3_conv(layer) -> bool:
    return type(layer).__name__ == "Conv2D" and tuple(layer.kernel_size) == (3, 3)


def _prune(model, layers=None, connectivity: float = 0.4, num_patterns: int = 6) -> None:
    """Pattern + connectivity prune the 3x3 Conv2D kernels of a model in place (NumPy math)."""
    layers = [x for x in model.layers if _is_3x3_conv(x)] if layers is None else layers
    library = patterns.select_library([x.get_weights()[0] for x in layers], num_patterns)
    for layer in layers:
        weights = layer.get_weights()
        weights[0], _ = patterns.project(weights[0], library, connectivity)
        layer.set_weights(weights)


def _tf_convert(model) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _run(model_bytes: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    results = []
    for x in inputs:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        results.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    return results


def _inputs(shape, count: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, *shape)).astype(np.float32) for _ in range(count)]


def _assert_identical_outputs(reference: bytes, ours: bytes, input_shape) -> None:
    for a, b in zip(
        _run(reference, _inputs(input_shape)), _run(ours, _inputs(input_shape)), strict=True
    ):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), "outputs differ from TF's own conversion"


def _filters(model_bytes: bytes) -> dict[tuple[int, int], np.ndarray]:
    """(subgraph, operator) -> OHWI filter of every CONV_2D with a constant float filter."""
    model = TFLiteModel.from_bytes(model_bytes)
    found = {}
    for ref in model.operators():
        if ref.name == "CONV_2D":
            tensor = model.tensor(ref.subgraph_index, int(ref.op.inputs[1]))
            data = model.tensor_data(ref.subgraph_index, int(ref.op.inputs[1]))
            if data is not None and tensor.type == schema.TensorType.FLOAT32:
                found[(ref.subgraph_index, ref.operator_index)] = np.frombuffer(
                    data, "<f4"
                ).reshape(tuple(tensor.shape))
    return found


def _fc_skips(plan: Plan) -> list[str]:
    """Reasons of the skipped FULLY_CONNECTED operators (dense heads of the pruned test models)."""
    return [s.reason for s in plan.skipped if s.op_name == "FULLY_CONNECTED"]


def _dense_head_skipped(plan: Plan) -> bool:
    """The model's (random, not unified) Dense head is skipped, naming how little it packs."""
    reasons = _fc_skips(plan)
    return len(reasons) == 1 and reasons[0].startswith("weights not unified or pruned (packed 1.")


def _check_plan_matches_keras(model, model_bytes: bytes) -> Plan:
    """Every pruned 3x3 Keras kernel is planned with exactly its zero structure."""
    plan = read_plan(model_bytes)
    filters = _filters(model_bytes)
    for layer in [x for x in model.layers if _is_3x3_conv(x)]:
        kernel = layer.get_weights()[0]  # HWIO
        structure = np.transpose(kernel != 0, (3, 0, 1, 2))  # OHWI
        matches = [key for key, w in filters.items() if np.array_equal(w != 0, structure)]
        assert len(matches) == 1, f"{layer.name}: zero structure not found exactly once in TFLite"
        # TF's float32 conversion keeps the weights bit for bit, exact zeros included.
        assert filters[matches[0]].tobytes() == np.transpose(kernel, (3, 0, 1, 2)).tobytes()
        conv = plan.find(*matches[0])
        assert isinstance(conv, PatternConvPlan), f"{layer.name}: {conv}"
        taps = structure.reshape(structure.shape[0], 9, structure.shape[3])  # (out, 9, in)
        for o in range(conv.out_channels):
            for i in range(conv.in_channels):
                bits = patterns.mask_from_taps(taps[o, :, i])
                code = int(conv.codes[o, i])
                if bits == 0:
                    assert code == patterns.PRUNED
                else:
                    assert code >= 0 and conv.library[code] == bits
        # The checksum is the one of the filter bytes in the model.
        assert conv.matches_weights(filters[matches[0]].tobytes())
    return plan


# -- models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sequential():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(24, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, padding="valid"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ]
    )
    _prune(model, connectivity=0.5)
    return model


@pytest.fixture(scope="module")
def functional():
    """Residual add, a stride-2 conv, a 5x5 conv and an unpruned 3x3 conv."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((12, 12, 4))
    stem = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inp)
    branch = keras.layers.Conv2D(16, 3, padding="same", name="branch")(stem)
    x = keras.layers.Add()([stem, branch])
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="down")(x)
    x = keras.layers.Conv2D(8, 5, padding="same", name="five")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="dense3x3")(x)
    model = keras.Model(inp, x)
    _prune(model, [model.get_layer(n) for n in ("stem", "branch", "down")], connectivity=0.3)
    return model


@pytest.fixture(scope="module")
def tf_keras_model():
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(3)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((8, 8, 3)),
            tf_keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
            tf_keras.layers.BatchNormalization(),
            tf_keras.layers.ReLU(),
            tf_keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(3),
        ]
    )
    bn = model.layers[1]
    rng = np.random.default_rng(3)
    bn.set_weights(
        [
            rng.uniform(0.5, 2, 16),
            rng.normal(0, 1, 16),
            rng.normal(0, 1, 16),
            rng.uniform(0.5, 2, 16),
        ]
    )
    _prune(model, connectivity=0.25)
    return model


@pytest.fixture(scope="module")
def sequential_bytes(sequential):
    return convert(sequential)


# -- identical outputs -------------------------------------------------------------------------


def test_sequential_identical_to_tf(sequential, sequential_bytes) -> None:
    _assert_identical_outputs(_tf_convert(sequential), sequential_bytes, (10, 10, 3))
    plan = _check_plan_matches_keras(sequential, sequential_bytes)
    assert len(plan.convs) == 3 and not plan.unified_fcs
    assert _dense_head_skipped(plan) and len(plan.skipped) == 1
    for conv in plan.convs:
        assert 1 <= len(conv.library) <= 6
        assert conv.kernels_kept == conv.kernels - int(np.floor(0.5 * conv.kernels + 0.5))


def test_functional_identical_to_tf(functional) -> None:
    ours = convert(functional)
    _assert_identical_outputs(_tf_convert(functional), ours, (12, 12, 4))
    plan = _check_plan_subset(functional, ours)
    reasons = [s.reason for s in plan.skipped]
    assert {s.op_name for s in plan.skipped} == {"CONV_2D"}
    assert len(plan.convs) == 3 and len(reasons) == 2
    assert "kernel 5x5" in reasons
    [dense] = [r for r in reasons if r != "kernel 5x5"]
    assert dense.startswith("kernel (out 0, in 0) has 9 non-zeros: not pattern-pruned")
    strides = {(r.subgraph_index, r.operator_index): r.strides for r in inspect_model(ours).layers}
    assert [2, 2] in [strides[(c.subgraph_index, c.operator_index)] for c in plan.convs]


def _check_plan_subset(model, model_bytes: bytes) -> Plan:
    pruned = [model.get_layer(n) for n in ("stem", "branch", "down")]

    class _View:  # only the pruned layers are expected in the plan
        layers = pruned

    return _check_plan_matches_keras(_View, model_bytes)


def test_tf_keras_model_identical_to_tf(tf_keras_model) -> None:
    ours = convert(tf_keras_model)
    _assert_identical_outputs(_tf_convert(tf_keras_model), ours, (8, 8, 3))
    plan = read_plan(ours)
    # BatchNormalization is folded into the first filter (scaled per output channel): zeros stay.
    assert len(plan.convs) == 2 and _dense_head_skipped(plan) and len(plan.skipped) == 1
    keras_kernels = [x.get_weights()[0] for x in tf_keras_model.layers if _is_3x3_conv(x)]
    filters = _filters(ours)
    for conv, kernel in zip(plan.convs, keras_kernels, strict=True):
        folded = filters[(conv.subgraph_index, conv.operator_index)]
        assert np.array_equal(folded != 0, np.transpose(kernel != 0, (3, 0, 1, 2)))


def test_pruned_away_layer_is_still_planned() -> None:
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(3, 3, padding="same"),
        ]
    )
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), np.linspace(-1, 1, bias.size).astype(np.float32)])
    ours = convert(model)
    _assert_identical_outputs(_tf_convert(model), ours, (6, 6, 2))
    plan = read_plan(ours)
    assert len(plan.convs) == 2 and not plan.skipped
    for conv in plan.convs:
        assert conv.library == () and conv.kernels_kept == 0
        assert np.all(conv.codes == patterns.PRUNED)


# -- inputs: paths, bytes, options --------------------------------------------------------------


def test_keras_file_and_saved_model(sequential, sequential_bytes, tmp_path: Path) -> None:
    keras_file = tmp_path / "model.keras"
    sequential.save(keras_file)
    from_file = convert(keras_file)
    saved_model = tmp_path / "saved"
    sequential.export(saved_model, format="tf_saved_model", verbose=False)
    from_saved = convert(str(saved_model))
    for data in (from_file, from_saved):
        assert read_plan(data).convs == read_plan(sequential_bytes).convs
        _assert_identical_outputs(sequential_bytes, data, (10, 10, 3))


def test_tflite_input_is_replanned(sequential_bytes, tmp_path: Path) -> None:
    path = tmp_path / "in.tflite"
    path.write_bytes(sequential_bytes)
    assert convert(path) == sequential_bytes  # same plan, same bytes: no duplicate entry
    assert convert(sequential_bytes) == sequential_bytes


def test_tf_options_pass_through() -> None:
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6, 6, 16)), keras.layers.Conv2D(32, 3)])
    _prune(model)
    data = convert(model, optimizations=[tf.lite.Optimize.DEFAULT])  # dynamic range: int8 filter
    plan = read_plan(data)
    assert not plan.convs and [s.reason for s in plan.skipped] == ["int8 weights"]
    data = convert(
        model,
        optimizations=[tf.lite.Optimize.DEFAULT],
        target_spec={"supported_types": [tf.float16]},
    )
    [skipped] = read_plan(data).skipped
    assert skipped.reason == "filter is computed at run time (by DEQUANTIZE)"


def test_filter_group_size_option(sequential) -> None:
    plan = read_plan(convert(sequential, filter_group_size=8))
    assert [len(c.group_offsets) - 1 for c in plan.convs] == [2, 3, 1]


# -- metadata, checksum, layout ----------------------------------------------------------------


def test_metadata_preserved_and_replaced(sequential) -> None:
    reference = TFLiteModel.from_bytes(_tf_convert(sequential))
    reference.set_metadata("TFLITE_METADATA", b"\x00model card\xff" * 7)
    with_card = reference.to_bytes()
    before = {n: reference.metadata(n) for n in reference.metadata_names()}
    assert "CONVERSION_METADATA" in before and "min_runtime_version" in before

    ours = convert(with_card)
    model = TFLiteModel.from_bytes(ours)
    assert model.metadata_names() == [*before, METADATA_NAME]
    for name, data in before.items():
        assert model.metadata(name) == data, name
    # The operators, tensors and buffers of TF's conversion are all still there, unchanged.
    original = reference.model
    assert len(model.model.buffers) == len(original.buffers) + 1
    for a, b in zip(original.buffers, model.model.buffers, strict=False):
        assert bytes(np.asarray(a.data if a.data is not None else [], np.uint8)) == bytes(
            np.asarray(b.data if b.data is not None else [], np.uint8)
        )
    for sa, sb in zip(original.subgraphs, model.model.subgraphs, strict=True):
        assert [op.opcodeIndex for op in sa.operators] == [op.opcodeIndex for op in sb.operators]
        assert [t.name for t in sa.tensors] == [t.name for t in sb.tensors]

    # Converting again replaces the tfpconv entry in place.
    again = TFLiteModel.from_bytes(convert(ours))
    assert again.metadata_names() == model.metadata_names()
    assert len(again.model.buffers) == len(model.model.buffers)
    assert read_plan(convert(ours)) == read_plan(ours)


def test_buffers_are_16_byte_aligned(sequential_bytes) -> None:
    root = schema.Model.GetRootAs(sequential_bytes, 0)
    checked = 0
    for i in range(root.BuffersLength()):
        buffer = root.Buffers(i)
        field = buffer._tab.Offset(4)
        if field and buffer.DataLength():
            assert buffer._tab.Vector(field) % 16 == 0, f"buffer {i}"
            checked += 1
    assert checked >= 4


def test_tampered_weights_no_longer_match(sequential_bytes) -> None:
    plan = read_plan(sequential_bytes)
    conv = plan.convs[1]
    model = TFLiteModel.from_bytes(sequential_bytes)
    tensor = model.tensor(conv.subgraph_index, conv.weight_tensor_index)
    buffer = model.model.buffers[tensor.buffer]
    weights = np.frombuffer(buffer.data.tobytes(), "<f4").copy()
    assert conv.matches_weights(weights.tobytes())
    weights[np.flatnonzero(weights)[0]] *= 1.5  # still pattern-pruned, different values
    buffer.data = np.frombuffer(weights.tobytes(), np.uint8)
    tampered = model.to_bytes()
    assert not conv.matches_weights(model.tensor_data(0, conv.weight_tensor_index))
    report = inspect_model(tampered)
    stale = [layer for layer in report.layers if layer.operator_index == conv.operator_index]
    assert not stale[0].planned and "stale plan" in stale[0].reason
    # Re-planning the edited model brings the checksum up to date.
    replanned, new_plan = embed_plan(tampered)
    assert new_plan.convs[1].matches_weights(weights.tobytes())
    layers = inspect_model(replanned).layers
    assert all(layer.planned for layer in layers if layer.op_name == "CONV_2D")
    assert [layer.op_name for layer in layers if not layer.planned] == ["FULLY_CONNECTED"]


# -- synthetic single-op models for the skip reasons ----------------------------------------------


def _conv_model(
    filter_shape=(4, 3, 3, 2),
    filter_type=schema.TensorType.FLOAT32,
    dilation=1,
    input_channels=None,
    constant_filter=True,
    op=schema.BuiltinOperator.CONV_2D,
    weights=None,
) -> bytes:
    """A one-operator TFLite model built with the schema's object API."""
    rng = np.random.default_rng(0)
    out_ch = filter_shape[0]
    channels = filter_shape[3] if input_channels is None else input_channels
    if weights is not None:
        weights = np.asarray(weights, np.float32).reshape(filter_shape)
    elif filter_type == schema.TensorType.INT8:
        weights = rng.integers(-5, 5, filter_shape).astype(np.int8)
    else:
        weights = np.zeros(filter_shape, np.float32)
        weights[:, filter_shape[1] // 2, filter_shape[2] // 2, :] = 1.0  # centre taps only
    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = op
    model.operatorCodes = [code]

    def tensor(name, shape, buffer, tensor_type=schema.TensorType.FLOAT32):
        t = schema.TensorT()
        t.name, t.shape = name.encode(), np.array(shape, np.int32)
        t.buffer, t.type = buffer, tensor_type
        return t

    empty = schema.BufferT()
    filt = schema.BufferT()
    filt.data = np.frombuffer(weights.tobytes(), np.uint8) if constant_filter else None
    bias = schema.BufferT()
    bias.data = np.frombuffer(np.zeros(out_ch, np.float32).tobytes(), np.uint8)
    model.buffers = [empty, empty, filt, bias, empty]
    subgraph = schema.SubGraphT()
    subgraph.tensors = [
        tensor("input", (1, 6, 6, channels), 1),
        tensor("filter", filter_shape, 2, filter_type),
        tensor("bias", (out_ch,), 3),
        tensor("output", (1, 6, 6, out_ch), 4),
    ]
    operator = schema.OperatorT()
    operator.opcodeIndex = 0
    operator.inputs = np.array([0, 1, 2], np.int32)
    operator.outputs = np.array([3], np.int32)
    if op == schema.BuiltinOperator.CONV_2D:
        options = schema.Conv2DOptionsT()
        options.padding, options.strideW, options.strideH = schema.Padding.SAME, 1, 1
        options.dilationWFactor = options.dilationHFactor = dilation
        operator.builtinOptionsType = schema.BuiltinOptions.Conv2DOptions
        operator.builtinOptions = options
    subgraph.operators = [operator]
    subgraph.inputs = np.array([0] if constant_filter else [0, 1], np.int32)
    subgraph.outputs = np.array([3], np.int32)
    model.subgraphs = [subgraph]
    return TFLiteModel(model).to_bytes()


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"dilation": 2}, "dilation 2"),
        ({"filter_shape": (4, 5, 5, 2)}, "kernel 5x5"),
        ({"filter_shape": (4, 1, 3, 2)}, "kernel 1x3"),
        (
            {"filter_shape": (4, 1, 1, 2), "weights": np.arange(1, 9, dtype=np.float32)},
            "weights not unified or pruned (packed 1.03x of dense)",  # (8 + 1 byte of states) / 8
        ),
        ({"filter_shape": (4, 1, 1, 2), "dilation": 2}, "dilation 2"),
        ({"filter_type": schema.TensorType.INT8}, "int8 weights"),
        ({"input_channels": 4}, "grouped convolution (2 groups)"),
        ({"constant_filter": False}, "filter is not a constant tensor"),
    ],
)
def test_skip_reasons(kwargs: dict, reason: str) -> None:
    _, plan = embed_plan(_conv_model(**kwargs))
    assert not plan.convs
    assert [s.reason for s in plan.skipped] == [reason]


def _fc_model(
    weights: np.ndarray,
    *,
    constant: bool = True,
    weights_format: int = schema.FullyConnectedOptionsWeightsFormat.DEFAULT,
    options: bool = True,
    bias: bool = True,
) -> bytes:
    """A one-FULLY_CONNECTED TFLite model (weights [out, in]) built with the schema's object API."""
    weights = np.asarray(weights, np.float32)
    out_features, in_features = weights.shape
    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FULLY_CONNECTED
    model.operatorCodes = [code]

    def tensor(name, shape, buffer):
        t = schema.TensorT()
        t.name, t.shape = name.encode(), np.array(shape, np.int32)
        t.buffer, t.type = buffer, schema.TensorType.FLOAT32
        return t

    def buffer(data=None):
        b = schema.BufferT()
        b.data = None if data is None else np.frombuffer(data.tobytes(), np.uint8)
        return b

    model.buffers = [
        buffer(),
        buffer(),
        buffer(weights if constant else None),
        buffer(np.linspace(-1, 1, out_features).astype(np.float32)),
        buffer(),
    ]
    subgraph = schema.SubGraphT()
    subgraph.tensors = [
        tensor("input", (1, in_features), 1),
        tensor("dense/weights", (out_features, in_features), 2),
        tensor("dense/bias", (out_features,), 3),
        tensor("dense/output", (1, out_features), 4),
    ]
    operator = schema.OperatorT()
    operator.opcodeIndex = 0
    operator.inputs = np.array([0, 1, 2 if bias else -1], np.int32)
    operator.outputs = np.array([3], np.int32)
    if options:
        fc_options = schema.FullyConnectedOptionsT()
        fc_options.weightsFormat = weights_format
        operator.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
        operator.builtinOptions = fc_options
    subgraph.operators = [operator]
    subgraph.inputs = np.array([0] if constant else [0, 1], np.int32)
    subgraph.outputs = np.array([3], np.int32)
    model.subgraphs = [subgraph]
    return TFLiteModel(model).to_bytes()


def _unified_rows(out_features: int, in_features: int, group: int, seed: int = 0) -> np.ndarray:
    """[out, in] weights whose runs of `group` inputs share one magnitude (random signs), the
    magnitudes differing between runs."""
    rng = np.random.default_rng(seed)
    runs = -(-in_features // group)
    magnitudes = np.repeat(rng.uniform(0.1, 1.0, (out_features, runs)), group, axis=1)
    signs = rng.choice([-1.0, 1.0], (out_features, runs * group))
    return (magnitudes * signs)[:, :in_features].astype(np.float32)


@pytest.mark.parametrize(
    ("group", "block_size"),
    [
        (16, 16),  # every block size reads unified blocks: the largest packs smallest
        (8, 8),  # 16-blocks hold two magnitudes: free
        (4, 4),
    ],
)
def test_unified_fully_connected_is_planned_with_the_best_block_size(group, block_size) -> None:
    weights = _unified_rows(6, 40, group)  # 40 inputs: the last block is shorter
    data, plan = embed_plan(_fc_model(weights))
    [fc] = plan.ops
    assert isinstance(fc, UnifiedFcPlan) and plan.unified_fcs == [fc] and not plan.convs
    assert not plan.skipped
    assert (fc.weight_shape, fc.block_size, fc.conv1x1) == ((6, 40), block_size, False)
    assert (fc.subgraph_index, fc.operator_index, fc.weight_tensor_index) == (0, 0, 1)
    assert np.array_equal(fc.states, unification.read_dense_states(weights.T, block_size))
    assert fc.matches_weights(weights.tobytes())
    assert fc.packed_bytes == min(
        unified_packed_bytes(unification.read_dense_states(weights.T, b), 40, b) for b in (4, 8, 16)
    )
    assert read_plan(data) == plan
    # Plain TFLite still runs the model from the real weights.
    x = np.random.default_rng(1).standard_normal((1, 40)).astype(np.float32)
    [out] = _run(data, [x])
    assert np.allclose(out, x @ weights.T + np.linspace(-1, 1, 6), rtol=1e-5, atol=1e-5)


def test_unified_and_pruned_blocks_and_the_threshold() -> None:
    rng = np.random.default_rng(2)
    # Half the rows pruned, the rest free: packed 0.5x of dense (plus 2 bits per block).
    weights = rng.standard_normal((8, 32)).astype(np.float32)
    weights[::2] = 0.0
    _, plan = embed_plan(_fc_model(weights))
    [fc] = plan.unified_fcs
    assert fc.block_size == 16 and fc.state_counts() == {"free": 8, "unified": 0, "pruned": 8}
    assert fc.packed_bytes == 8 * 16 * 4 + 4
    # Just over the threshold: a quarter of the rows pruned packs to 0.75x + the state bytes.
    weights = rng.standard_normal((8, 32)).astype(np.float32)
    weights[::4] = 0.0
    plan = plan_model(TFLiteModel.from_bytes(_fc_model(weights)))
    assert not plan.ops
    ratio = (6 * 32 * 4 + 4) / (8 * 32 * 4)
    assert ratio > MAX_PACKED_FRACTION
    assert [s.reason for s in plan.skipped] == [
        f"weights not unified or pruned (packed {ratio:.2f}x of dense)"
    ]
    assert plan.skipped[0].op_name == "FULLY_CONNECTED"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"constant": False}, "weights are not a constant tensor"),
        (
            {"weights_format": schema.FullyConnectedOptionsWeightsFormat.SHUFFLED4x16INT8},
            "weights in a shuffled format",
        ),
        ({"options": False}, "FULLY_CONNECTED without options"),
    ],
)
def test_fully_connected_skip_reasons(kwargs: dict, reason: str) -> None:
    model = _fc_model(_unified_rows(4, 16, 16), **kwargs)
    plan = plan_model(TFLiteModel.from_bytes(model))
    assert not plan.ops
    assert [(s.op_name, s.reason) for s in plan.skipped] == [("FULLY_CONNECTED", reason)]
    # No CONV_2D and nothing planned: there is nothing for tfpconv to do.
    with pytest.raises(ConversionError, match="no CONV_2D operator and no FULLY_CONNECTED"):
        embed_plan(model)


def test_fully_connected_without_bias_is_planned() -> None:
    weights = _unified_rows(3, 8, 8)
    data, plan = embed_plan(_fc_model(weights, bias=False))
    assert len(plan.unified_fcs) == 1
    x = np.ones((1, 8), np.float32)
    [out] = _run(data, [x])
    assert np.allclose(out, x @ weights.T, rtol=1e-5)


def test_unified_1x1_convolution_is_planned() -> None:
    data, plan = embed_plan(_conv_model(filter_shape=(4, 1, 1, 2)))  # every weight 1.0
    [fc] = plan.unified_fcs
    assert fc.conv1x1 and fc.weight_shape == (4, 1, 1, 2) and fc.block_size == 16
    assert fc.state_counts() == {"free": 0, "unified": 4, "pruned": 0}
    [out] = _run(data, [np.ones((1, 6, 6, 2), np.float32)])
    assert np.allclose(out, 2.0)


def test_synthetic_model_runs_and_is_planned() -> None:
    data, plan = embed_plan(_conv_model())
    # Centre-only kernels fit many patterns; with no unambiguous kernel the lowest index wins.
    [conv] = plan.convs
    assert conv.library == (int(patterns.CANDIDATE_MASKS[0]),)
    assert conv.kernels_kept == 8
    [out] = _run(data, [np.ones((1, 6, 6, 2), np.float32)])
    assert np.allclose(out, 2.0)


# -- errors and atomic output ------------------------------------------------------------------


def test_model_without_convolutions(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ConversionError, match="no CONV_2D"):
        convert(model)  # its Dense is not unified
    with pytest.raises(ConversionError, match="no CONV_2D"):
        embed_plan(_conv_model(op=schema.BuiltinOperator.ADD))


# -- unified weights from Keras --------------------------------------------------------------------


@pytest.fixture(scope="module")
def unified_model():
    """A pattern-pruned 3x3 conv with unified kernels, a unified 1x1 conv and a unified Dense."""
    keras.utils.set_random_seed(8)
    inp = keras.Input((8, 8, 8))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="pattern")(inp)
    x = keras.layers.Conv2D(24, 1, name="pointwise")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10, name="head")(x)
    model = keras.Model(inp, x)
    conv = model.get_layer("pattern")
    _prune(model, [conv], connectivity=0.25)
    kernel, bias = conv.get_weights()
    library, codes = patterns.library_by_use(patterns.classify_kernels(kernel))
    keep = patterns.projection_mask(codes, library)
    unified, _ = unification.project_pattern(kernel, keep, unify=0.5)
    conv.set_weights([unified, bias])
    for name, block_size in (("pointwise", 8), ("head", 4)):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        projected, _ = unification.project_dense(kernel, 0.6, 0.2, block_size)
        layer.set_weights([projected, bias])
    return model


def test_unified_keras_model_identical_to_tf_and_planned(unified_model) -> None:
    ours = convert(unified_model)
    _assert_identical_outputs(_tf_convert(unified_model), ours, (8, 8, 8))
    plan = read_plan(ours)
    assert not plan.skipped
    [conv] = plan.convs
    pointwise, head = plan.unified_fcs
    model = TFLiteModel.from_bytes(ours)

    # The 3x3 convolution: its unified kernels are the ones whose four kept taps share |w|.
    kernel = unified_model.get_layer("pattern").get_weights()[0]  # HWIO
    keep = patterns.projection_mask(conv.codes.T, conv.library)
    states = unification.read_pattern_states(kernel, keep).T  # (out, in)
    assert conv.unified is not None
    assert np.array_equal(conv.unified, (states == unification.UNIFIED).astype(np.uint8))
    unified_kernels = int(np.count_nonzero(states == unification.UNIFIED))
    assert conv.kernels_unified == unified_kernels
    assert unified_kernels == round(0.5 * conv.kernels_kept)  # project_pattern's unify=0.5

    # The 1x1 convolution and the Dense head: states as read off the TFLite weights, at the block
    # size that packs smallest (the one they were unified with, or a larger one).
    for op, name in ((pointwise, "pointwise"), (head, "head")):
        keras_kernel = unified_model.get_layer(name).get_weights()[0]
        matrix = keras_kernel.reshape(keras_kernel.shape[-2], keras_kernel.shape[-1])  # (in, out)
        data = model.tensor_data(op.subgraph_index, op.weight_tensor_index)
        assert op.matches_weights(data)
        assert data == np.ascontiguousarray(matrix.T).tobytes()  # [out, in], bit for bit
        assert np.array_equal(op.states, unification.read_dense_states(matrix, op.block_size))
        assert op.packed_bytes <= MAX_PACKED_FRACTION * op.weight_bytes
    assert pointwise.conv1x1 and pointwise.weight_shape == (24, 1, 1, 16)
    assert not head.conv1x1 and head.weight_shape == (10, 24)


def test_inspect_reports_bytes_and_file_sizes(unified_model, tmp_path: Path) -> None:
    ours = convert(unified_model)
    path = tmp_path / "unified.tflite"
    path.write_bytes(ours)
    report = inspect_model(path)
    plan = read_plan(ours)
    assert report.file_bytes == len(ours)
    assert report.gzip_bytes == len(gzip.compress(ours, compresslevel=9))
    by_op = {layer.operator_index: layer for layer in report.layers}
    assert [layer.op_name for layer in report.layers] == ["CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    assert all(layer.planned for layer in report.layers)
    [conv] = plan.convs
    pattern = by_op[conv.operator_index]
    assert pattern.kind == "pattern_conv" and pattern.dense_bytes == conv.weights * 4
    assert pattern.kept_bytes == conv.weights_kept * 4
    assert pattern.kernels_unified == conv.kernels_unified
    for op in plan.unified_fcs:
        layer = by_op[op.operator_index]
        assert layer.kind == "unified_fc" and layer.block_size == op.block_size
        assert layer.dense_bytes == op.weight_bytes and layer.kept_bytes == op.packed_bytes
        assert layer.blocks == op.states.size
        assert layer.blocks_unified == op.state_counts()["unified"]
        assert layer.blocks_pruned == op.state_counts()["pruned"]
        assert layer.weights_kept == op.stored_values < layer.weights
        assert layer.flops_kept < layer.flops
    totals = report.totals()
    assert totals["dense_bytes"] == sum(layer.dense_bytes for layer in report.layers)
    assert totals["kept_bytes"] == sum(layer.kept_bytes for layer in report.layers)
    assert totals["planned_kept_bytes"] == totals["kept_bytes"] < totals["dense_bytes"]
    assert (totals["convs"], totals["planned"]) == (2, 2)
    assert (totals["fully_connected"], totals["planned_fully_connected"]) == (1, 1)
    assert (totals["file_bytes"], totals["gzip_bytes"]) == (report.file_bytes, report.gzip_bytes)
    data = report.to_dict()
    assert data["file_bytes"] == len(ours) and data["totals"]["layers"] == 3
    head = report.layers[2]
    assert data["layers"][2]["kept_bytes"] == head.kept_bytes
    assert data["layers"][2]["bytes_ratio"] == round(head.kept_bytes / head.dense_bytes, 4)
    text = report.size_table()
    for expected in (
        "pattern_conv",
        "unified_fc",
        f"{totals['dense_bytes']:,}",
        f"{totals['kept_bytes']:,}",
        "planned total (3 of 3 layers)",
        f"file: {len(ours):,} bytes, gzip -9: {report.gzip_bytes:,} bytes",
    ):
        assert expected in text, (expected, text)


def test_inspect_of_skipped_and_stale_unified_layers(sequential_bytes) -> None:
    report = inspect_model(sequential_bytes)
    [head] = [layer for layer in report.layers if layer.op_name == "FULLY_CONNECTED"]
    assert not head.planned and head.reason.startswith("weights not unified or pruned")
    assert head.kept_bytes == head.dense_bytes == head.weights * 4 == 4 * 8 * 4
    totals = report.totals()
    assert totals["planned"] == 3 and totals["convs"] == 3 and totals["layers"] == 4
    assert totals["kept_bytes"] == totals["planned_kept_bytes"] + head.dense_bytes
    # A unified plan whose weights changed is stale.
    weights = _unified_rows(4, 16, 16)
    data, plan = embed_plan(_fc_model(weights))
    model = TFLiteModel.from_bytes(data)
    changed = weights.copy()
    changed[0, 0] *= 2
    model.set_tensor_data(0, plan.unified_fcs[0].weight_tensor_index, changed.tobytes())
    [layer] = inspect_model(model.to_bytes()).layers
    assert not layer.planned and "checksum mismatch" in layer.reason
    assert layer.kept_bytes == layer.dense_bytes


def test_bad_inputs(tmp_path: Path, sequential, sequential_bytes) -> None:
    with pytest.raises(FileNotFoundError):
        convert(tmp_path / "missing.keras")
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(ConversionError, match="not a model tfpconv can read"):
        convert(text)
    fake = tmp_path / "fake.keras"
    fake.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ConversionError, match="cannot load the Keras model"):
        convert(fake)
    with pytest.raises(ConversionError, match="not a SavedModel"):
        convert(tmp_path)
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(sequential_bytes[: len(sequential_bytes) // 3])
    with pytest.raises(TFLiteModelError, match="corrupt"):
        convert(corrupt)
    with pytest.raises(ConversionError, match="cannot convert a builtins.dict"):
        convert({"not": "a model"})
    with pytest.raises(ConversionError, match="unknown option 'optimisations'"):
        convert(sequential, optimisations=[])
    with pytest.raises(ConversionError, match="configure TF's converter"):
        convert(sequential_bytes, allow_custom_ops=True)
    with pytest.raises(ConversionError, match="filter_group_size"):
        convert(sequential_bytes, filter_group_size=0)
    assert issubclass(ConversionError, ValueError) and tfpconv.ConversionError is ConversionError


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_output_path_is_written_atomically(
    tmp_path: Path, sequential_bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model.tflite"
    assert convert(sequential_bytes, out) == sequential_bytes
    assert out.read_bytes() == sequential_bytes
    assert _leftovers(tmp_path) == []

    # A conversion error leaves the existing file alone and writes nothing.
    out.write_bytes(b"old contents")
    with pytest.raises(ConversionError):
        convert(_conv_model(op=schema.BuiltinOperator.ADD), out)
    assert out.read_bytes() == b"old contents"

    # A failure while writing (here: the final rename) leaves the old file and no temporary.
    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        convert(sequential_bytes, out)
    monkeypatch.undo()
    assert out.read_bytes() == b"old contents"
    assert _leftovers(tmp_path) == []
    new = tmp_path / "new.tflite"
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        convert(sequential_bytes, new)
    monkeypatch.undo()
    assert not new.exists() and _leftovers(tmp_path) == []

    with pytest.raises(FileNotFoundError):
        convert(sequential_bytes, tmp_path / "no" / "such" / "dir.tflite")


def test_output_location_and_tune_threads_are_checked_first(tmp_path: Path) -> None:
    # The input is bad as well: getting the output error shows nothing was converted first.
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert(text, tmp_path / "nowhere" / "out.tflite")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        convert(text, tmp_path)
    with pytest.raises(NotADirectoryError, match="not a directory"):
        convert(text, text / "out.tflite")
    for threads in (0, -2, 1.5, True):
        with pytest.raises(ConversionError, match="tune_threads"):
            convert(text, tune=True, tune_threads=threads)


def test_empty_keras_file_is_named_as_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    with pytest.raises(ConversionError, match=r"empty\.keras: the file is empty"):
        convert(empty)


def test_plan_naming_a_missing_tensor_is_a_stale_plan(sequential_bytes) -> None:
    model = TFLiteModel.from_bytes(sequential_bytes)
    count = len(model.model.subgraphs[0].tensors)
    with pytest.raises(TFLiteModelError, match=f"tensor {count + 5} .*{count} tensors"):
        model.tensor(0, count + 5)
    with pytest.raises(TFLiteModelError, match="tensor -1 "):
        model.tensor(0, -1)
    with pytest.raises(TFLiteModelError, match="subgraph 3 .*1 subgraph"):
        model.tensor(3, 0)
    plan = read_plan(sequential_bytes)
    plan.convs[0].weight_tensor_index = count + 5
    model.set_metadata(METADATA_NAME, plan.to_bytes())
    layers = inspect_model(model.to_bytes()).layers
    first = [layer for layer in layers if layer.operator_index == plan.convs[0].operator_index]
    assert not first[0].planned and "names another filter tensor" in first[0].reason
