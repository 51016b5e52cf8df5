"""Semi-structured activation sparsity: the unit-mask math, the SpatialMask layer, the surgery that
inserts it, saving, and what TFLite's converter makes of it (CONV_2D -> MUL by a [1, H, W, 1]
constant)."""

from __future__ import annotations

import numpy as np
import pytest

from tfpconv.sparsity import activation as act

# -- the math (NumPy only) ---------------------------------------------------------------------


def test_unit_ids_and_counts_with_short_row_ends():
    ids = act.unit_index(3, 35, 16)
    assert ids.shape == (3, 35) and ids.dtype == np.int64
    assert act.units_per_row(35, 16) == 3 and act.unit_count(3, 35, 16) == 9
    # Row 1: columns 0..15 -> unit 3, 16..31 -> unit 4, 32..34 (the short last unit) -> unit 5.
    np.testing.assert_array_equal(ids[1], [3] * 16 + [4] * 16 + [5] * 3)
    np.testing.assert_array_equal(np.bincount(ids.ravel()), [16, 16, 3] * 3)
    assert act.unit_count(2, 32, 16) == 4  # no partial unit when the width divides
    np.testing.assert_array_equal(act.unit_index(2, 5, 16), [[0] * 5, [1] * 5])  # width < unit
    np.testing.assert_array_equal(act.unit_index(2, 3, 1), [[0, 1, 2], [3, 4, 5]])


def test_block_units_with_short_bands_and_columns():
    ids = act.unit_index(19, 35, (8, 16))
    assert act.check_unit((8, 16)) == (8, 16) and act.check_unit(16) == (1, 16)
    assert act.unit_count(19, 35, (8, 16)) == 9 and act.unit_count(16, 32, [8, 16]) == 4
    # Bands of rows 0..7, 8..15 and 16..18 (3 rows); columns 0..15, 16..31 and 32..34.
    np.testing.assert_array_equal(ids[7], [0] * 16 + [1] * 16 + [2] * 3)
    np.testing.assert_array_equal(ids[8], [3] * 16 + [4] * 16 + [5] * 3)
    np.testing.assert_array_equal(ids[18], [6] * 16 + [7] * 16 + [8] * 3)
    np.testing.assert_array_equal(np.bincount(ids.ravel()), [128, 128, 24, 128, 128, 24, 48, 48, 9])
    # (1, n) is the same as n: runs along a row.
    np.testing.assert_array_equal(act.unit_index(3, 35, (1, 16)), act.unit_index(3, 35, 16))
    assert act.describe_unit((8, 16)) == "8x16 px"


@pytest.mark.parametrize("unit", [0, -1, 1.5, True, "16", (0, 16), (8,), (8, 16, 1), (8, 2.0)])
def test_invalid_unit(unit):
    with pytest.raises(ValueError, match="unit"):
        act.unit_index(4, 4, unit)


def test_invalid_sizes():
    with pytest.raises(ValueError, match="height"):
        act.unit_count(0, 4, 2)
    with pytest.raises(ValueError, match="width"):
        act.layer_scores(np.ones((4, 4)), 2, 0)
    with pytest.raises(ValueError, match="2-D"):
        act.layer_scores(np.ones(4), 2, 2)
    with pytest.raises(ValueError, match="NaN"):
        act.layer_scores(np.full((2, 2), np.nan), 2, 2)


@pytest.mark.parametrize(
    ("height", "width", "unit", "sparsity"),
    [
        (8, 35, 16, 0.3),
        (5, 5, 2, 0.5),
        (16, 16, 16, 0.0),
        (7, 40, 16, 0.95),
        (3, 9, 4, 0.25),
        (28, 28, (8, 16), 0.3),
        (56, 56, (8, 16), 0.2),
        (9, 11, (2, 3), 0.5),
    ],
)
def test_exact_masked_count_and_lowest_units(height, width, unit, sparsity):
    scores = np.random.default_rng(height * width).random((height, width))
    mask = act.unit_mask(scores, sparsity, unit)
    assert mask.shape == (height, width) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert act.is_unit_structured(mask, unit)
    n_units = act.unit_count(height, width, unit)
    masked = round(sparsity * n_units)
    assert act.masked_unit_count(n_units, sparsity) == masked
    assert act.masked_unit_fraction(mask, unit) == pytest.approx(masked / n_units)
    # The masked units are the lowest by mean score (a short row-end unit by its own mean).
    ids = act.unit_index(height, width, unit)
    means = np.array([scores[ids == u].mean() for u in range(n_units)])
    unit_masked = np.array([mask[ids == u][0] == 0.0 for u in range(n_units)])
    np.testing.assert_allclose(act.unit_scores(scores, unit), means)
    if 0 < masked < n_units:
        assert means[unit_masked].max() < means[~unit_masked].min()


def test_ties_go_to_the_lower_unit_id():
    mask = act.unit_mask(np.ones((3, 10)), 0.5, 4)  # 9 units, round(4.5) = 4 masked: units 0..3
    expected = np.ones((3, 10), np.float32)
    expected[0, :] = 0.0  # units 0, 1, 2 (the last one 2 pixels wide)
    expected[1, :4] = 0.0  # unit 3
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(act.unit_mask(np.ones((3, 10)), 0.5, 4), mask)  # deterministic
    # Partial ties: units 1 and 4 tie lowest, then unit 2 and 0 tie next; the lower id goes first.
    scores = np.array([[2.0, 1.0, 2.0], [3.0, 1.0, 3.0]])
    np.testing.assert_array_equal(act.unit_mask(scores, 0.5, 1), [[0, 0, 1], [1, 0, 1]])


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), "0.2", True, None])
def test_invalid_sparsity_is_named(sparsity):
    with pytest.raises(ValueError, match="sparsity") as info:
        act.unit_mask(np.ones((4, 4)), sparsity, 2)
    assert repr(sparsity) in str(info.value)


def test_pooling_to_the_layer_size():
    score_map = np.random.default_rng(0).random((12, 18)).astype(np.float32)
    np.testing.assert_allclose(act.layer_scores(score_map, 12, 18), score_map, rtol=1e-6)
    halved = act.layer_scores(score_map, 6, 9)
    np.testing.assert_allclose(halved, score_map.reshape(6, 2, 9, 2).mean(axis=(1, 3)), rtol=1e-6)
    # Uneven: cell i covers rows floor(i*H0/h) .. ceil((i+1)*H0/h) - 1 (windows overlap).
    pooled = act.layer_scores(score_map, 5, 7)
    for i in range(5):
        for j in range(7):
            rows = slice(i * 12 // 5, -(-(i + 1) * 12 // 5))
            cols = slice(j * 18 // 7, -(-(j + 1) * 18 // 7))
            assert pooled[i, j] == pytest.approx(score_map[rows, cols].mean())
    # Upsampling repeats cells: a 2x3 map at 4x6 is each cell twice along both axes.
    small = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.testing.assert_allclose(act.layer_scores(small, 4, 6), np.kron(small, np.ones((2, 2))))


def test_layers_at_half_resolution_mask_the_same_region():
    # A map constant on 2x2 blocks: a unit of the 8x8 layer (2 pixels) covers 2 rows x 4 columns
    # of the input, exactly two units of the 16x16 layer (4 pixels) with its score; so the
    # layers, masking the same fraction, must mask the same region.
    coarse = np.random.default_rng(3).random((8, 8))
    score_map = np.kron(coarse, np.ones((2, 2)))
    full = act.layer_mask(score_map, 16, 16, 0.25, 4)
    half = act.layer_mask(score_map, 8, 8, 0.25, 2)
    assert act.masked_unit_fraction(half, 2) == 0.25
    np.testing.assert_array_equal(full, np.kron(half, np.ones((2, 2), np.float32)))
    # A generic (white noise) map: the masks still agree far above chance (0.5 at sparsity 0.5);
    # a misaligned pooling (transposed, shifted) would drop to chance.
    score_map = np.random.default_rng(4).random((32, 32))
    full = act.layer_mask(score_map, 32, 32, 0.5, 2)
    half = act.layer_mask(score_map, 16, 16, 0.5, 1)
    agreement = np.mean(full == np.kron(half, np.ones((2, 2), np.float32)))
    assert agreement > 0.65
    assert np.mean(full == np.kron(half.T, np.ones((2, 2), np.float32))) < 0.6


def test_random_score_map():
    a = act.random_score_map(np.random.default_rng(7), 5, 9)
    b = act.random_score_map(np.random.default_rng(7), 5, 9)
    assert a.shape == (5, 9) and a.dtype == np.float32
    assert np.all((a >= 0.0) & (a < 1.0))
    np.testing.assert_array_equal(a, b)


def test_check_mask():
    good = np.ones((2, 10), np.float32)
    good[1, 4:8] = 0.0
    act.check_mask(good, (2, 10), 4)
    act.check_mask(good.astype(bool), (2, 10), 4)
    with pytest.raises(ValueError, match=r"shape \(2, 10\)"):
        act.check_mask(good.T, (2, 10), 4)
    with pytest.raises(ValueError, match="0 or 1"):
        act.check_mask(good * 0.5, (2, 10), 4)
    partial = good.copy()
    partial[0, 9] = 0.0  # half of the short last unit of row 0
    with pytest.raises(
        ValueError, match=r"unit 2 \(rows 0..0, columns 8..9\) is partly masked; a unit of 1x4 px"
    ):
        act.check_mask(partial, (2, 10), 4)
    assert act.masked_unit_fraction(good, 4) == pytest.approx(1 / 6)
    assert "1 masked" in act.describe_mask(good, 4)
    # Block units: a 0 in the bottom band's short unit (rows 8..10, columns 16..19) alone.
    blocks = np.ones((11, 20), np.float32)
    blocks[:8, :16] = 0.0
    act.check_mask(blocks, (11, 20), (8, 16))
    assert act.describe_mask(blocks, (8, 16)) == "11x20 mask, 4 units of 8x16 px, 1 masked (25.0%)"
    blocks[10, 19] = 0.0
    with pytest.raises(ValueError, match=r"unit 3 \(rows 8..10, columns 16..19\) is partly"):
        act.check_mask(blocks, (11, 20), (8, 16))


# -- the Keras layer -----------------------------------------------------------------------------

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from tfpconv.data.models import small_vgg  # noqa: E402
from tfpconv.keras.activation_masks import (  # noqa: E402
    SpatialMask,
    TfKerasSpatialMask,
    insert_masks,
    mask_layers,
    masked_conv_of,
    set_masks,
)
from tfpconv.tflite.frontend import to_tflite  # noqa: E402
from tfpconv.tflite.model_file import (  # noqa: E402
    TFLiteModel,
    schema,
    tensor_shape,
    unpack_float32,
)


def _randomize(model, seed=0):
    """Random weights everywhere, BatchNorm statistics included (so BN is not an identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (SpatialMask, TfKerasSpatialMask)) or not layer.get_weights():
            continue
        new = []
        for weight, value in zip(layer.weights, layer.get_weights(), strict=True):
            if "variance" in weight.name:
                new.append(rng.uniform(0.5, 2.0, value.shape).astype(value.dtype))
            else:
                new.append((rng.standard_normal(value.shape) * 0.3).astype(value.dtype))
        layer.set_weights(new)
    return model


def _inputs(model, batch=2, seed=0):
    shape = (batch, *tuple(model.inputs[0].shape)[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _inbound(model, name):
    """Names of the layers whose outputs the layer ``name`` reads."""
    return [t._keras_history[0].name for t in tf.nest.flatten(model.get_layer(name).input)]


def _set_distinct_masks(model, sparsity=0.5):
    """A different random unit mask in every SpatialMask layer; returns them by name."""
    masks = {}
    for index, layer in enumerate(mask_layers(model)):
        height, width = layer.mask_shape
        score_map = act.random_score_map(np.random.default_rng(100 + index), height, width)
        masks[layer.name] = act.unit_mask(score_map, sparsity, layer.unit)
        layer.set_mask(masks[layer.name])
    return masks


def test_layer_multiplies_by_the_shared_mask():
    layer = SpatialMask(unit=2, sparsity=0.3, name="m")
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)  # starts all ones
    assert layer.mask.shape == (3, 5) and layer.mask_shape == (3, 5)
    assert [w.name for w in layer.weights] == ["mask"] and not layer.trainable_weights
    mask = act.unit_mask(np.random.default_rng(1).random((3, 5)), 0.5, 2)
    layer.set_mask(mask)
    np.testing.assert_array_equal(layer.mask, mask)
    np.testing.assert_array_equal(np.asarray(layer(x)), x * mask[None, :, :, None])
    assert layer.masked_fraction == pytest.approx(act.masked_unit_fraction(mask, 2))
    config = layer.get_config()
    assert config["unit"] == [1, 2] and config["sparsity"] == 0.3
    clone = SpatialMask.from_config(config)
    assert (clone.unit, clone.sparsity, clone.name) == ((1, 2), 0.3, "m")


@pytest.mark.parametrize("flavour_name", ["keras", "tf_keras"])
def test_training_and_inference_products_are_identical(flavour_name):
    # Outside training the layer multiplies with height and width swapped (for the converter):
    # the numbers must be exactly those of the plain product.
    layer = (SpatialMask if flavour_name == "keras" else TfKerasSpatialMask)(unit=3)
    x = np.random.default_rng(0).standard_normal((2, 5, 7, 3)).astype(np.float32)
    layer(x)
    mask = act.unit_mask(np.random.default_rng(1).random((5, 7)), 0.4, 3)
    layer.set_mask(mask)
    expected = x * mask[None, :, :, None]
    for training in (True, False, None):
        np.testing.assert_array_equal(np.asarray(layer(x, training=training)), expected)


def test_training_leaves_the_mask_alone():
    inputs = keras.Input((6, 8, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    outputs = keras.layers.Dense(1, name="out")(keras.layers.GlobalAveragePooling2D()(x))
    masked = insert_masks(keras.Model(inputs, outputs), unit=4)
    (mask,) = _set_distinct_masks(masked).values()
    masked.compile(optimizer="sgd", loss="mse")
    x = _inputs(masked, batch=8)
    masked.fit(x, np.ones((8, 1)), epochs=1, batch_size=4, verbose=0)
    np.testing.assert_array_equal(masked.get_layer("conv_mask").mask, mask)
    probe = keras.Model(masked.inputs[0], masked.get_layer("conv_mask").output)
    assert np.all(np.asarray(probe(x))[:, mask == 0, :] == 0.0)


def test_layer_set_mask_is_validated_and_names_the_layer():
    layer = SpatialMask(unit=2, name="guard")
    with pytest.raises(ValueError, match="'guard' is not built"):
        layer.set_mask(np.ones((3, 5)))
    layer.build((None, 3, 5, 4))
    with pytest.raises(ValueError, match=r"'guard'.*shape \(3, 5\)"):
        layer.set_mask(np.ones((5, 3)))
    with pytest.raises(ValueError, match="'guard'.*0 or 1"):
        layer.set_mask(np.full((3, 5), 0.5))
    partial = np.ones((3, 5))
    partial[0, 0] = 0.0
    with pytest.raises(ValueError, match="'guard'.*partly masked"):
        layer.set_mask(partial)
    np.testing.assert_array_equal(layer.mask, np.ones((3, 5)))  # nothing was assigned
    with pytest.raises(ValueError, match="sparsity"):
        SpatialMask(sparsity=1.0)


def test_layer_needs_a_static_height_and_width():
    inputs = keras.Input((None, None, 3))
    with pytest.raises(ValueError, match="'dyn' needs a static height and width"):
        SpatialMask(name="dyn")(inputs)
    with pytest.raises(ValueError, match="'flat' expects"):
        SpatialMask(name="flat")(keras.Input((7,)))


# -- surgery -------------------------------------------------------------------------------------


def _sequential(flavour=keras):
    layers = flavour.layers
    return _randomize(
        flavour.Sequential(
            [
                flavour.Input((9, 20, 3)),
                layers.Conv2D(6, 3, padding="same", name="c1"),
                layers.BatchNormalization(name="bn1"),
                layers.ReLU(name="r1"),
                layers.Conv2D(5, 1, name="pw"),
                layers.Conv2D(4, 3, strides=2, activation="relu", name="c2"),
                layers.DepthwiseConv2D(3, padding="same", name="dw"),
                layers.Activation("relu", name="act"),
                layers.Flatten(name="flat"),
                layers.Dense(3, name="fc"),
            ],
            name="seq",
        )
    )


def _resnet_like(flavour=keras):
    """Stem, a conv with two consumers, a residual block (conv -> BN -> Add), a model output."""
    layers = flavour.layers
    inputs = flavour.Input((12, 18, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    split = layers.Conv2D(8, 3, padding="same", name="split")(x)  # read by bn_s and add0
    y = layers.BatchNormalization(name="bn_s")(split)
    y = layers.ReLU(name="relu_s")(y)
    x = layers.Add(name="add0")([y, split])
    y = layers.Conv2D(8, 3, padding="same", name="b_conv1")(x)
    y = layers.BatchNormalization(name="b_bn1")(y)
    y = layers.Activation("relu", name="b_relu1")(y)
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="b_conv2")(y)
    y = layers.BatchNormalization(name="b_bn2")(y)
    x = layers.Add(name="add1")([x, y])
    x = layers.ReLU(name="relu_out")(x)
    head = layers.Conv2D(4, 3, strides=2, name="head")(x)
    head = layers.BatchNormalization(name="head_bn")(head)
    pooled = layers.GlobalAveragePooling2D(name="gap")(head)
    logits = layers.Dense(3, name="logits")(pooled)
    return _randomize(flavour.Model(inputs, [logits, head], name="resnetish"))


def _check_same_outputs_and_weights(model, masked):
    x = _inputs(model)
    for before, after in zip(
        tf.nest.flatten(model(x, training=False)),
        tf.nest.flatten(masked(x, training=False)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(after), np.asarray(before))
    for layer in model.layers:
        for a, b in zip(
            layer.get_weights(), masked.get_layer(layer.name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)


def test_sequential_surgery():
    model = _sequential()
    masked = insert_masks(model, sparsity=0.25, unit=8)
    assert isinstance(masked, keras.Sequential) and masked.name == "seq"
    assert [layer.name for layer in masked.layers] == [
        "c1", "bn1", "r1", "c1_mask", "pw", "c2", "c2_mask", "dw", "act", "flat", "fc",
    ]  # fmt: skip
    assert all(type(layer) is SpatialMask for layer in mask_layers(masked))
    assert [(m.unit, m.sparsity) for m in mask_layers(masked)] == [((1, 8), 0.25)] * 2
    assert [m.mask_shape for m in mask_layers(masked)] == [(9, 20), (4, 9)]
    assert masked_conv_of(masked) == {"c1_mask": "c1", "c2_mask": "c2"}
    _check_same_outputs_and_weights(model, masked)
    # The masks act: c1's masked output is the original ReLU output times the mask.
    masks = _set_distinct_masks(masked)
    x = _inputs(model)
    r1 = keras.Model(model.inputs[0], model.get_layer("r1").output)(x, training=False)
    got = keras.Model(masked.inputs[0], masked.get_layer("c1_mask").output)(x, training=False)
    np.testing.assert_allclose(
        np.asarray(got), np.asarray(r1) * masks["c1_mask"][None, :, :, None], rtol=1e-6
    )
    assert np.all(np.asarray(got)[0][masks["c1_mask"] == 0] == 0.0)
    # pointwise=True adds the 1x1 convolution; a predicate selects freely.
    assert masked_conv_of(insert_masks(model, pointwise=True)) == {
        "c1_mask": "c1", "pw_mask": "pw", "c2_mask": "c2",
    }  # fmt: skip
    only_strided = insert_masks(model, layers=lambda layer: layer.strides == (2, 2))
    assert [m.name for m in mask_layers(only_strided)] == ["c2_mask"]


def test_units_by_layer_size():
    seen = []

    def unit_of(height, width):
        seen.append((height, width))
        return (height // 4, 4) if height > 4 else 8

    masked = insert_masks(_sequential(), sparsity=0.25, unit=unit_of)
    assert seen == [(9, 20), (4, 9)]
    assert [m.unit for m in mask_layers(masked)] == [(2, 4), (1, 8)]
    with pytest.raises(ValueError, match="unit must be"):
        insert_masks(_sequential(), unit=lambda height, width: (0, 16))


def test_functional_surgery_follows_the_chain():
    model = _resnet_like()
    masked = insert_masks(model, sparsity=0.5, unit=4)
    assert masked_conv_of(masked) == {
        "stem_mask": "stem", "split_mask": "split", "b_conv1_mask": "b_conv1",
        "b_conv2_mask": "b_conv2", "head_mask": "head",
    }  # fmt: skip
    assert _inbound(masked, "stem_mask") == ["stem"]  # fused activation: right after the conv
    assert _inbound(masked, "split_mask") == ["split"]  # two consumers: right after the conv
    assert _inbound(masked, "bn_s") == ["split_mask"]
    assert _inbound(masked, "add0") == ["relu_s", "split_mask"]
    assert _inbound(masked, "b_conv1_mask") == ["b_relu1"]
    assert _inbound(masked, "b_conv2_mask") == ["b_bn2"]  # the Add is not element-wise chain
    assert _inbound(masked, "add1") == ["add0", "b_conv2_mask"]
    # head_bn's output is both a model output and the pooling's input: the mask goes after the
    # conv and the BN; the model output is the masked tensor.
    assert _inbound(masked, "head_mask") == ["head_bn"]
    assert masked.outputs[1]._keras_history[0].name == "head_mask"
    assert _inbound(masked, "gap") == ["head_mask"]
    _check_same_outputs_and_weights(model, masked)
    masks = _set_distinct_masks(masked)
    head = np.asarray(masked(_inputs(model), training=False)[1])
    assert np.all(head[:, masks["head_mask"] == 0, :] == 0.0)
    assert np.any(head[:, masks["head_mask"] == 1, :] != 0.0)


def test_small_vgg_masks_every_conv_after_its_relu():
    model = small_vgg(input_shape=(16, 16, 1), widths=(4, 8), convs_per_stage=2)
    masked = insert_masks(model, unit=16)
    convs = ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
    assert masked_conv_of(masked) == {f"{c}_mask": c for c in convs}
    for conv in convs:
        assert _inbound(masked, f"{conv}_mask") == [conv.replace("conv", "relu")]
    assert [m.mask_shape for m in mask_layers(masked)] == [(16, 16)] * 2 + [(8, 8)] * 2
    _check_same_outputs_and_weights(model, masked)


def test_masks_follow_their_layers_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((6, 8, 2))
        x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
        model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    masked = insert_masks(model)
    (layer,) = mask_layers(masked)
    assert layer.dtype_policy.name == "mixed_float16"
    assert layer.mask_variable.dtype == "float32" and masked.output.dtype == "float16"
    _check_same_outputs_and_weights(model, masked)


def test_chain_stops_at_a_model_output():
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    bn = keras.layers.BatchNormalization(name="bn")(conv)
    model = keras.Model(inputs, [conv, bn])  # conv's output is read by bn and is an output
    masked = insert_masks(model)
    assert _inbound(masked, "conv_mask") == ["conv"]
    assert [t._keras_history[0].name for t in masked.outputs] == ["conv_mask", "bn"]


def test_selection_errors():
    model = _resnet_like()
    with pytest.raises(ValueError, match="no Conv2D layer named 'nope'.*'b_conv1'"):
        insert_masks(model, layers=["stem", "nope"])
    with pytest.raises(ValueError, match="no Conv2D layer named 'bn_s'"):
        insert_masks(model, layers=["bn_s"])
    dw_model = _sequential()
    with pytest.raises(ValueError, match="no Conv2D layer named 'dw'"):
        insert_masks(dw_model, layers=["dw"])
    with pytest.raises(ValueError, match="sparsity must be a number in \\[0, 1\\), got 1.2"):
        insert_masks(model, sparsity=1.2)
    with pytest.raises(ValueError, match="unit"):
        insert_masks(model, unit=0)
    with pytest.raises(ValueError, match="no Conv2D layer .* is selected"):
        insert_masks(model, layers=lambda layer: False)
    masked = insert_masks(model, layers=["b_conv1"])
    assert [m.name for m in mask_layers(masked)] == ["b_conv1_mask"]
    with pytest.raises(ValueError, match="already has SpatialMask layers.*b_conv1_mask"):
        insert_masks(masked)


def test_nested_models_and_dynamic_sizes_are_refused():
    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="ic")])
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="oc")(inner(inputs)))
    with pytest.raises(ValueError, match="nested model with Conv2D layers.*'ic'"):
        insert_masks(outer)
    inputs = keras.Input((None, None, 3))
    dynamic = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="dc")(inputs))
    with pytest.raises(ValueError, match="'dc_mask' needs a static height and width"):
        insert_masks(dynamic)


def test_nested_model_without_convolutions_is_copied():
    inner = keras.Sequential(
        [keras.Input((8, 8, 4)), keras.layers.Dense(4, name="mix")], name="inner"
    )
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c")(inputs)
    model = _randomize(keras.Model(inputs, inner(x)))
    masked = insert_masks(model)
    assert masked.get_layer("inner") is not inner
    _check_same_outputs_and_weights(model, masked)


def test_tf_keras_sequential_and_functional():
    sequential = _sequential(tf_keras)
    masked = insert_masks(sequential, unit=8)
    assert isinstance(masked, tf_keras.Sequential)
    assert all(type(layer) is TfKerasSpatialMask for layer in mask_layers(masked))
    assert masked_conv_of(masked) == {"c1_mask": "c1", "c2_mask": "c2"}
    _check_same_outputs_and_weights(sequential, masked)

    functional = _resnet_like(tf_keras)
    masked = insert_masks(functional, unit=4)
    assert isinstance(masked, tf_keras.Model) and type(masked).__module__.startswith("tf_keras")
    assert _inbound(masked, "split_mask") == ["split"]
    assert _inbound(masked, "b_conv2_mask") == ["b_bn2"]
    assert _inbound(masked, "head_mask") == ["head_bn"]
    _check_same_outputs_and_weights(functional, masked)
    masks = _set_distinct_masks(masked)
    x = _inputs(functional)
    probe = tf_keras.Model(
        masked.inputs[0],
        [masked.get_layer("b_conv1_mask").output, masked.get_layer("b_relu1").output],
    )
    got, want = probe(x, training=False)
    np.testing.assert_allclose(
        np.asarray(got), np.asarray(want) * masks["b_conv1_mask"][None, :, :, None], rtol=1e-6
    )


def test_set_masks_uses_one_score_map_at_every_resolution():
    masked = insert_masks(_sequential(), sparsity=0.4, unit=4)
    score_map = act.random_score_map(np.random.default_rng(5), 9, 20)
    masks = set_masks(masked, score_map)
    for layer in mask_layers(masked):
        height, width = layer.mask_shape
        expected = act.layer_mask(score_map, height, width, 0.4, 4)
        np.testing.assert_array_equal(masks[layer.name], expected)
        np.testing.assert_array_equal(layer.mask, expected)
        n_units = act.unit_count(height, width, 4)
        assert layer.masked_fraction == pytest.approx(round(0.4 * n_units) / n_units)
    set_masks(masked, score_map, sparsity=0.0)
    assert all(np.all(layer.mask == 1.0) for layer in mask_layers(masked))


# -- saving --------------------------------------------------------------------------------------


def _check_reloaded(original, reloaded, mask_class):
    assert [type(m) for m in mask_layers(reloaded)] == [mask_class] * len(mask_layers(original))
    for before, after in zip(mask_layers(original), mask_layers(reloaded), strict=True):
        assert (after.name, after.unit, after.sparsity) == (before.name, before.unit, 0.3)
        np.testing.assert_array_equal(after.mask, before.mask)
    assert masked_conv_of(reloaded) == masked_conv_of(original)
    x = _inputs(original)
    for a, b in zip(
        tf.nest.flatten(original(x, training=False)),
        tf.nest.flatten(reloaded(x, training=False)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_keras3_save_and_reload(tmp_path):
    masked = insert_masks(_resnet_like(), sparsity=0.3, unit=4)
    _set_distinct_masks(masked)
    path = tmp_path / "masked.keras"
    masked.save(path)
    _check_reloaded(masked, keras.saving.load_model(path), SpatialMask)


@pytest.mark.parametrize("file_format", ["h5", "savedmodel"])
def test_tf_keras_save_and_reload(tmp_path, file_format):
    masked = insert_masks(_sequential(tf_keras), sparsity=0.3, unit=8)
    _set_distinct_masks(masked)
    path = tmp_path / ("masked.h5" if file_format == "h5" else "masked_savedmodel")
    masked.save(str(path), save_format="h5" if file_format == "h5" else "tf")
    _check_reloaded(masked, tf_keras.models.load_model(str(path)), TfKerasSpatialMask)


# -- conversion ----------------------------------------------------------------------------------


def _conversion_model(flavour):
    """The three placements: Conv2D(relu) -> mask; Conv2D -> BN -> ReLU -> mask; and a residual
    Conv2D -> BN -> mask -> Add."""
    layers = flavour.layers
    inputs = flavour.Input((10, 20, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_a")(x)
    y = layers.BatchNormalization(name="bn_a")(y)
    y = layers.ReLU(name="relu_a")(y)
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_b")(y)
    y = layers.BatchNormalization(name="bn_b")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="down")(x)
    return _randomize(flavour.Model(inputs, x, name="to_convert"))


def _consumers(subgraph, tensor):
    return [op for op in subgraph.operators if tensor in list(op.inputs)]


def _op_name(model, op):
    return next(ref.name for ref in model.operators() if ref.op is op)


@pytest.mark.parametrize("flavour_name", ["keras", "tf_keras"])
def test_conversion_gives_conv_then_mul_by_a_constant_mask(flavour_name):
    flavour = keras if flavour_name == "keras" else tf_keras
    masked = insert_masks(_conversion_model(flavour), unit=4)
    masks = _set_distinct_masks(masked)
    data, _ = to_tflite(masked, {})
    model = TFLiteModel.from_bytes(data)
    names = [ref.name for ref in model.operators()]
    assert sorted(set(names)) == ["ADD", "CONV_2D", "MUL"], names  # no BatchNorm left
    assert names.count("CONV_2D") == 4 and names.count("MUL") == 4
    subgraph = model.model.subgraphs[0]
    fused, muls = {}, {}
    for ref in model.operators():
        if ref.name != "CONV_2D":
            continue
        conv_out = ref.op.outputs[0]
        (mul,) = _consumers(subgraph, conv_out)  # exactly one consumer: the MUL
        assert _op_name(model, mul) == "MUL"
        (constant,) = [t for t in mul.inputs if t != conv_out]
        out_shape = tensor_shape(subgraph.tensors[conv_out])
        assert tensor_shape(subgraph.tensors[constant]) == (1, *out_shape[1:3], 1)
        values = unpack_float32(model.tensor_data(0, constant)).reshape(out_shape[1:3])
        name = next(n for n, m in masks.items() if np.array_equal(m, values))
        fused[name] = ref.op.builtinOptions.fusedActivationFunction
        muls[name] = mul
    relu, none = schema.ActivationFunctionType.RELU, schema.ActivationFunctionType.NONE
    assert fused == {
        "stem_mask": relu, "conv_a_mask": relu, "conv_b_mask": none, "down_mask": none,
    }  # fmt: skip
    (after_b,) = _consumers(subgraph, muls["conv_b_mask"].outputs[0])
    assert _op_name(model, after_b) == "ADD"
    assert muls["stem_mask"].outputs[0] in list(after_b.inputs)  # the residual's other input
    # Plain TFLite computes what Keras computes.
    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    x = _inputs(masked, batch=1)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(masked(x, training=False)), atol=1e-4, rtol=1e-4)
