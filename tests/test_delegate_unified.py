"""The delegate on unified FULLY_CONNECTED and 1x1 CONV_2D layers (plan kind ``unified_fc``).

Models get their Dense / 1x1 weights unified in one shot (``tfpconv.unify_weights``), are converted
with ``tfpconv.convert`` and run on plain TFLite and with the delegate: outputs within 1e-4
relative, the unified nodes delegated, fewer weight bytes resident; bad plans declined with a
warning while the model still runs right.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from test_delegate import assert_close, random_inputs, run  # noqa: E402

import tfpconv  # noqa: E402
from tfpconv.api import convert  # noqa: E402
from tfpconv.sparsity import unification  # noqa: E402
from tfpconv.tflite.model_file import TFLiteModel  # noqa: E402
from tfpconv.tflite.plan import METADATA_NAME, pack_plan  # noqa: E402


def head_model(seed, block_size=8, batch=None, relu6=False):
    """Conv 3x3 -> 1x1 conv on a 2x2 map -> Flatten -> two Dense layers -> output Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 3), batch_size=batch)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(24, 1, activation="relu", name="squeeze")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(70, activation="relu6" if relu6 else "relu", name="fc1")(x)
    x = keras.layers.Dense(37, name="fc2")(x)
    outputs = keras.layers.Dense(5, name="out")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:  # biases too, so that they are checked
        if hasattr(layer, "bias") and layer.bias is not None:
            layer.bias.assign(np.random.default_rng(seed).normal(size=layer.bias.shape) * 0.1)
    tfpconv.unify_weights(model, 0.5, 0.25, layers=["squeeze", "fc1", "fc2"], block_size=block_size)
    return model


def fc_nodes(data):
    model = TFLiteModel.from_bytes(data)
    return [op.operator_index for op in model.operators() if op.name == "FULLY_CONNECTED"]


@pytest.mark.parametrize("block_size", [4, 8, 16])
def test_unified_layers_run_on_the_delegate_exactly(block_size):
    data = convert(head_model(0, block_size))
    plan = tfpconv.read_plan(data)
    # the planner recovers the block size from the weights (squeeze, 8 inputs: one block a row)
    assert {op.block_size for op in plan.unified_fcs if op.in_features > 16} == {block_size}
    assert len(plan.unified_fcs) == 3  # squeeze (1x1 CONV_2D over 2x2 pixels), fc1, fc2
    inputs = random_inputs((1, 4, 4, 3), 1)
    expected = run(tfpconv.Interpreter(model_content=data, use_delegate=False), inputs)
    interpreter = tfpconv.Interpreter(model_content=data)
    assert_close(run(interpreter, inputs), expected)
    delegated = set(interpreter.delegated_nodes())
    assert set(fc_nodes(data)[:2]) <= delegated  # fc1, fc2; "out" was not unified
    assert {op.operator_index for op in plan.unified_fcs} <= delegated
    dense = sum(op.weight_bytes for op in plan.unified_fcs)
    assert 0 < interpreter.packed_weight_bytes() < dense


def test_resized_batch_and_several_threads_give_the_same_numbers():
    data = convert(head_model(1, relu6=True))
    for batch, threads in ((4, 1), (3, 2), (1, 2)):
        inputs = random_inputs((batch, 4, 4, 3), batch)
        expected = run(tfpconv.Interpreter(model_content=data, use_delegate=False), inputs)
        interpreter = tfpconv.Interpreter(model_content=data, num_threads=threads)
        assert_close(run(interpreter, inputs), expected)
        assert len(interpreter.delegated_nodes()) >= 2


def test_dynamic_batch_model_loads_and_runs():
    data = convert(head_model(2, batch=None))
    inputs = random_inputs((2, 4, 4, 3), 2)
    expected = run(tfpconv.Interpreter(model_content=data, use_delegate=False), inputs)
    assert_close(run(tfpconv.Interpreter(model_content=data), inputs), expected)


def test_a_1x1_convolution_over_many_pixels_is_left_to_tflite(capfd):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 32), batch_size=1)
    x = keras.layers.Conv2D(32, 1, name="wide")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same")(x))
    tfpconv.unify_weights(model, 0.5, 0.25, layers=["wide"])
    data = convert(model)
    assert len(tfpconv.read_plan(data).unified_fcs) == 1
    capfd.readouterr()
    interpreter = tfpconv.Interpreter(model_content=data, log_level="info")
    assert_close(
        run(interpreter, random_inputs((1, 16, 16, 32), 3)),
        run(
            tfpconv.Interpreter(model_content=data, use_delegate=False),
            random_inputs((1, 16, 16, 32), 3),
        ),
    )
    assert 0 not in interpreter.delegated_nodes()
    assert "256 rows (batch x pixels) > 16" in capfd.readouterr().err


def with_states(data, change):
    """The model with its first unified plan's states changed by ``change(states)``."""
    plan = tfpconv.read_plan(data)
    op = plan.unified_fcs[0]
    op.states = change(op.states.copy())
    model = TFLiteModel.from_bytes(data)
    model.set_metadata(METADATA_NAME, pack_plan(plan))
    return model.to_bytes(), op.operator_index


def test_a_plan_that_does_not_fit_the_weights_is_declined_with_a_warning(capfd):
    data = convert(head_model(4))

    def free_block_marked_unified(states):
        row, block = np.argwhere(states == unification.FREE)[0]
        states[row, block] = unification.UNIFIED
        return states

    def unified_block_marked_pruned(states):
        row, block = np.argwhere(states == unification.UNIFIED)[0]
        states[row, block] = unification.PRUNED
        return states

    for change, message in (
        (free_block_marked_unified, "magnitudes differ"),
        (unified_block_marked_pruned, "is pruned but"),
    ):
        bad, node = with_states(data, change)
        inputs = random_inputs((1, 4, 4, 3), 5)
        expected = run(tfpconv.Interpreter(model_content=bad, use_delegate=False), inputs)
        capfd.readouterr()
        interpreter = tfpconv.Interpreter(model_content=bad)
        assert_close(run(interpreter, inputs), expected)
        assert node not in interpreter.delegated_nodes()
        err = capfd.readouterr().err
        assert "tfpconv warning" in err and f"node {node}" in err and message in err, err


def test_fine_tuned_weights_after_conversion_make_the_plan_stale(capfd):
    data = convert(head_model(5))
    model = TFLiteModel.from_bytes(data)
    op = tfpconv.read_plan(data).unified_fcs[-1]
    raw = model.tensor_data(0, op.weight_tensor_index)
    weights = np.frombuffer(raw, dtype=np.float32).copy()
    weights[np.flatnonzero(weights)[0]] *= 1.5
    stale = bytes(data).replace(raw, weights.tobytes(), 1)
    capfd.readouterr()
    interpreter = tfpconv.Interpreter(model_content=stale)
    inputs = random_inputs((1, 4, 4, 3), 6)
    assert_close(
        run(interpreter, inputs),
        run(tfpconv.Interpreter(model_content=stale, use_delegate=False), inputs),
    )
    assert op.operator_index not in interpreter.delegated_nodes()
    assert "checksum mismatch" in capfd.readouterr().err
