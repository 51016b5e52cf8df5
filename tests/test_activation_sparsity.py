"""Activation sparsity end to end: the callback trains and freezes the masks, conversion records
them in the plan, and the delegate runs each masked convolution together with its MUL (pattern
kernels or the dense path), skipping masked units, within 1e-4 of plain TFLite; stale or wrong
masks are left to TFLite with a warning while the model still runs right.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from test_delegate import assert_close, random_inputs, run  # noqa: E402

import tfpconv  # noqa: E402
from tfpconv.api import convert  # noqa: E402
from tfpconv.keras import training  # noqa: E402
from tfpconv.runtime.library import activation_unit  # noqa: E402
from tfpconv.sparsity import activation  # noqa: E402
from tfpconv.tflite.model_file import TFLiteModel  # noqa: E402
from tfpconv.tflite.plan import (  # noqa: E402
    METADATA_NAME,
    ActivationMaskPlan,
    DenseConvPlan,
    Plan,
    PlanError,
    pack_plan,
)


def conv_net(seed, size=32, patterns=False, batch_norm=True):
    """Conv -> Conv (stride 2) -> Conv [-> BN -> ReLU] -> Conv, 3x3, on size x size x 8."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 8))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(24, 3, strides=2, padding="same", activation="relu6")(x)
    if batch_norm:
        x = keras.layers.Conv2D(24, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    else:
        x = keras.layers.Conv2D(24, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(8, 3, padding="valid")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            rng = np.random.default_rng(seed)
            layer.moving_mean.assign(rng.normal(size=24).astype(np.float32) * 0.1)
            layer.moving_variance.assign(rng.uniform(0.5, 2, size=24).astype(np.float32))
    if patterns:
        tfpconv.prune_patterns(model, num_patterns=8, connectivity=0.5)
    return model


def masked(model, sparsity=0.3, seed=0):
    model = tfpconv.activation.sparsify(model, sparsity=sparsity)
    tfpconv.activation.apply_random_masks(model, seed=seed)
    return model


def mask_nodes(data):
    return [
        op.operator_index for op in TFLiteModel.from_bytes(data).operators() if op.name == "MUL"
    ]


# -- the unit and the one-shot masks -------------------------------------------------------------


def test_the_unit_comes_from_the_engine():
    # ActivationUnitRows(out_h) x kActivationUnitPixels
    assert [activation_unit(h, 20) for h in (224, 56, 55, 14, 13, 1)] == [
        (8, 16),
        (8, 16),
        (4, 16),
        (4, 16),
        (1, 16),
        (1, 16),
    ]
    with pytest.raises(ValueError, match="0x5"):
        activation_unit(0, 5)
    model = tfpconv.activation.sparsify(conv_net(0), sparsity=0.2)
    layers = tfpconv.activation.mask_layers(model)
    engine_units = [activation_unit(*layer.mask_shape) for layer in layers]
    assert [layer.unit for layer in layers] == engine_units
    assert {layer.unit for layer in layers} == {(4, 16)}  # 32x32, 16x16, 16x16, 14x14


def test_random_masks_hit_the_target_in_whole_units():
    model = masked(conv_net(1), sparsity=0.3)
    for layer in tfpconv.activation.mask_layers(model):
        mask = layer.mask
        units = activation.unit_count(*mask.shape, layer.unit)
        expected = activation.masked_unit_count(units, 0.3)
        assert activation.is_unit_structured(mask, layer.unit)
        assert round(activation.masked_unit_fraction(mask, layer.unit) * units) == expected


# -- training --------------------------------------------------------------------------------------


def _fit(model, callbacks, epochs=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((96, 32, 32, 8)).astype(np.float32)
    y = rng.standard_normal((96, 14, 14, 8)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(x, y, batch_size=16, epochs=epochs, callbacks=callbacks, verbose=0)
    return x, y


def test_the_callback_ramps_the_masks_and_freezes_them():
    model = tfpconv.activation.sparsify(conv_net(2), sparsity=0.25)
    rng = np.random.default_rng(0)
    sample = (
        rng.standard_normal((16, 32, 32, 8)).astype(np.float32),
        rng.standard_normal((16, 14, 14, 8)).astype(np.float32),
    )
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(logs["act_masked"])

    callback = tfpconv.callbacks.ActivationSparsity(sample=sample, candidates=3, verbose=0)
    _fit(model, [callback, Watch()], epochs=4)
    layers = tfpconv.activation.mask_layers(model)
    frozen = callback.masks
    assert set(frozen) == {layer.name for layer in layers}
    for layer in layers:
        units = activation.unit_count(*layer.mask.shape, layer.unit)
        assert activation.masked_unit_fraction(layer.mask, layer.unit) * units == pytest.approx(
            activation.masked_unit_count(units, 0.25)
        )
        np.testing.assert_array_equal(layer.mask, frozen[layer.name])
    assert 0 < seen[0] <= seen[-1] and seen[-1] == pytest.approx(seen[1])  # ramp, then frozen


def test_the_callback_needs_masks_and_rejects_bad_arguments():
    model = conv_net(3)
    with pytest.raises(ValueError, match="tfpconv.activation.sparsify"):
        _fit(model, [tfpconv.callbacks.ActivationSparsity(verbose=0)])
    with pytest.raises(ValueError, match="candidates"):
        tfpconv.callbacks.ActivationSparsity(candidates=0)
    with pytest.raises(ValueError, match="sample"):
        tfpconv.callbacks.ActivationSparsity(sample=np.zeros(3))


def test_one_learning_rate_schedule_with_several_sparsity_callbacks():
    model = tfpconv.activation.sparsify(conv_net(4), sparsity=0.2)
    masks = tfpconv.callbacks.ActivationSparsity(verbose=0)
    patterns = tfpconv.callbacks.PatternPruning(num_patterns=8, connectivity=0.5, verbose=0)
    _fit(model, [masks, patterns], epochs=2)
    assert masks._lr_decay is None and patterns._lr_decay is None  # both gave it back
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert not training._LR_OWNERS


# -- conversion and the plan -----------------------------------------------------------------------


def test_conversion_records_the_masks():
    model = masked(conv_net(5, patterns=True))
    data = convert(model)
    plan = tfpconv.read_plan(data)
    muls = mask_nodes(data)
    assert len(plan.convs) == 4 and len(muls) == 4
    for conv, layer in zip(plan.convs, tfpconv.activation.mask_layers(model), strict=True):
        mask = conv.activation_mask
        assert mask is not None and mask.operator_index in muls
        assert (mask.height, mask.width) == layer.mask.shape
        assert mask.masked_pixels == int(np.count_nonzero(layer.mask == 0))
    assert Plan.from_bytes(plan.to_bytes()) == plan


def test_dense_masked_convolutions_become_dense_conv_plans():
    data = convert(masked(conv_net(6)))
    plan = tfpconv.read_plan(data)
    assert len(plan.dense_convs) == 4 and not plan.convs
    assert all(op.requires[0].name == "dense_conv" for op in plan.dense_convs)
    unmasked = tfpconv.read_plan(convert(conv_net(6)))
    assert not unmasked.ops  # without masks a dense convolution has nothing to gain


def test_a_mask_that_is_not_zero_one_or_has_two_readers_is_not_recorded():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 4))
    conv = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    half = keras.layers.Lambda(lambda t: t * np.full((1, 8, 8, 1), 0.5, np.float32))(conv)
    twice = keras.layers.Add()([half, conv])  # the conv output has two readers
    plan = tfpconv.read_plan(convert(keras.Model(inputs, twice)))
    assert not plan.dense_convs


def test_mask_records_are_validated():
    good = ActivationMaskPlan(3, 11, 7, 8, 8, 10)
    base = dict(
        subgraph_index=0,
        operator_index=2,
        weight_tensor_index=1,
        kernel_shape=(4, 3, 3, 2),
        weight_checksum=0,
        weight_bytes=4 * 9 * 2 * 4,
    )
    DenseConvPlan(**base, activation_mask=good).validate()
    for bad, message in (
        (None, "needs its activation mask"),
        (ActivationMaskPlan(2, 11, 7, 8, 8, 10), "itself"),
        (ActivationMaskPlan(3, -1, 7, 8, 8, 10), "tensor index"),
        (ActivationMaskPlan(3, 11, 7, 8, 8, 65), "masked pixels"),
    ):
        with pytest.raises(PlanError, match=message):
            DenseConvPlan(**base, activation_mask=bad).validate()


# -- the delegate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("patterns", [True, False], ids=["pattern", "dense"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9])
def test_masked_convolutions_run_on_the_delegate_exactly(patterns, sparsity):
    data = convert(masked(conv_net(8, patterns=patterns), sparsity=sparsity))
    plan = tfpconv.read_plan(data)
    inputs = random_inputs((1, 32, 32, 8), 1)
    expected = run(tfpconv.Interpreter(model_content=data, use_delegate=False), inputs)
    interpreter = tfpconv.Interpreter(model_content=data)
    assert_close(run(interpreter, inputs), expected)
    delegated = set(interpreter.delegated_nodes())
    if patterns:
        assert {op.operator_index for op in plan.convs} <= delegated
    elif sparsity >= 0.3:  # the dense path takes a layer only where its mask skips enough
        assert {op.operator_index for op in plan.dense_convs} <= delegated
    else:
        assert not delegated


@pytest.mark.parametrize("patterns", [True, False], ids=["pattern", "dense"])
def test_resized_batch_and_two_threads_give_the_same_numbers(patterns):
    data = convert(masked(conv_net(9, patterns=patterns, batch_norm=False), sparsity=0.5))
    for batch, threads in ((4, 1), (3, 2)):
        inputs = random_inputs((batch, 32, 32, 8), batch)
        expected = run(tfpconv.Interpreter(model_content=data, use_delegate=False), inputs)
        interpreter = tfpconv.Interpreter(model_content=data, num_threads=threads)
        assert_close(run(interpreter, inputs), expected)
        assert interpreter.delegated_nodes()


def pointwise_net(seed):
    """1x1 (stride 1, then stride 2 VALID) -> 3x3 -> 1x1, on 32 x 32 x 8."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 8))
    x = keras.layers.Conv2D(16, 1, activation="relu")(inputs)
    x = keras.layers.Conv2D(24, 1, strides=2, padding="valid", activation="relu6")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(8, 1, padding="same")(x)
    return keras.Model(inputs, outputs)


def test_masked_pointwise_convolutions_run_on_the_dense_path():
    model = tfpconv.activation.sparsify(pointwise_net(13), sparsity=0.5, pointwise=True)
    tfpconv.activation.apply_random_masks(model, seed=1)
    data = convert(model)
    plan = tfpconv.read_plan(data)
    assert sorted(op.kernel_shape[1:3] for op in plan.dense_convs) == [(1, 1)] * 3 + [(3, 3)]
    for batch, threads in ((1, 1), (3, 2)):
        inputs = random_inputs((batch, 32, 32, 8), 5 + batch)
        expected = run(tfpconv.Interpreter(model_content=data, use_delegate=False), inputs)
        interpreter = tfpconv.Interpreter(model_content=data, num_threads=threads)
        assert_close(run(interpreter, inputs), expected)
        assert {op.operator_index for op in plan.dense_convs} <= set(interpreter.delegated_nodes())


def test_a_pointwise_convolution_is_claimed_only_where_its_mask_skips_a_quarter():
    model = tfpconv.activation.sparsify(pointwise_net(14), sparsity=0.2, pointwise=True)
    tfpconv.activation.apply_random_masks(model, seed=2)
    data = convert(model)
    interpreter = tfpconv.Interpreter(model_content=data)
    inputs = random_inputs((1, 32, 32, 8), 9)
    assert_close(
        run(interpreter, inputs),
        run(tfpconv.Interpreter(model_content=data, use_delegate=False), inputs),
    )
    decisions = {}
    for op in tfpconv.read_plan(data).dense_convs:
        mask = op.activation_mask
        computed = 1 - mask.masked_pixels / (mask.height * mask.width)
        decisions[(op.kernel_shape[1], round(computed, 2))] = (
            op.operator_index in interpreter.delegated_nodes()
        )
    # 1x1: at most 75% computed; 3x3: up to 90% (AVX2) or 95% (AVX-512)
    assert decisions == {(1, 0.81): False, (1, 0.75): True, (3, 0.75): True}, decisions


def _with_mask_bytes(data, change):
    """The model with its first mask tensor's bytes changed by ``change(values)``."""
    plan = tfpconv.read_plan(data)
    op = plan.ops[0]
    model = TFLiteModel.from_bytes(data)
    raw = model.tensor_data(0, op.activation_mask.mask_tensor_index)
    values = change(np.frombuffer(raw, dtype=np.float32).copy())
    model.set_tensor_data(0, op.activation_mask.mask_tensor_index, values.tobytes())
    return model.to_bytes(), op.operator_index


@pytest.mark.parametrize("patterns", [True, False], ids=["pattern", "dense"])
def test_a_stale_mask_is_left_to_tflite_with_a_warning(patterns, capfd):
    data = convert(masked(conv_net(10, patterns=patterns), sparsity=0.5))

    def flip_a_unit(values):
        values[:16] = 1.0 - values[:16]
        return values

    stale, node = _with_mask_bytes(data, flip_a_unit)
    inputs = random_inputs((1, 32, 32, 8), 3)
    expected = run(tfpconv.Interpreter(model_content=stale, use_delegate=False), inputs)
    capfd.readouterr()
    interpreter = tfpconv.Interpreter(model_content=stale)
    assert_close(run(interpreter, inputs), expected)
    err = capfd.readouterr().err
    assert "tfpconv warning" in err and f"node {node}" in err and "checksum" in err, err
    # a pattern convolution still runs on the delegate (its MUL on TFLite); a dense one does not
    assert (node in interpreter.delegated_nodes()) == patterns


def test_a_plan_naming_the_wrong_operator_is_declined(capfd):
    data = convert(masked(conv_net(11), sparsity=0.5))
    plan = tfpconv.read_plan(data)
    op = plan.dense_convs[0]
    op.activation_mask = ActivationMaskPlan(
        **{**op.activation_mask.__dict__, "operator_index": op.operator_index + 2}
    )
    model = TFLiteModel.from_bytes(data)
    model.set_metadata(METADATA_NAME, pack_plan(plan))
    bad = model.to_bytes()
    inputs = random_inputs((1, 32, 32, 8), 4)
    expected = run(tfpconv.Interpreter(model_content=bad, use_delegate=False), inputs)
    capfd.readouterr()
    interpreter = tfpconv.Interpreter(model_content=bad)
    assert_close(run(interpreter, inputs), expected)
    assert op.operator_index not in interpreter.delegated_nodes()
    assert "tfpconv warning" in capfd.readouterr().err


def test_inspect_and_the_cli_report_the_masks(tmp_path, capsys):
    model = masked(conv_net(12, patterns=True), sparsity=0.5)
    report = tfpconv.inspect_model(convert(model))
    layers = [layer for layer in report.layers if layer.planned]
    assert len(layers) == 4 and {layer.kind for layer in layers} == {"pattern_conv"}
    for layer, mask_layer in zip(layers, tfpconv.activation.mask_layers(model), strict=True):
        zero = 1.0 - float(mask_layer.mask.mean())
        assert layer.activation_masked == pytest.approx(zero)
        assert layer.flops_kept < layer.flops
    path = tmp_path / "masked.keras"
    model.save(path)
    from tfpconv.cli import main

    assert main(["convert", str(path), "-o", str(tmp_path / "masked.tflite")]) == 0
    assert "4 of 4 CONV_2D planned (4 with an activation mask)" in capsys.readouterr().out
