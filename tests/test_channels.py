"""Channel pruning by model surgery (``tfpconv.channels``): groups, and the smaller model's numbers.

The smaller model must compute exactly what the original computes when the removed channels are
masked out: the reference zeroes, in a copy of the original, the input weights of every Conv2D and
Dense at the channels the surgery removed. Removing a channel and silencing it where it is
consumed are the same function, whatever BatchNorm, pooling, Add or Flatten lie in between.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import tfpconv  # noqa: E402
from tfpconv.keras import channels  # noqa: E402

tf_keras = pytest.importorskip("tf_keras")


def _inputs(model, batch=2, seed=0):
    shape = (batch, *tuple(model.inputs[0].shape)[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _randomize(model, seed=0):
    """Random weights everywhere, BatchNorm statistics included (so BN is not an identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        names = [w.name for w in layer.weights]
        new = []
        for name, w in zip(names, weights, strict=True):
            if "variance" in name:
                new.append(rng.uniform(0.5, 2.0, w.shape).astype(w.dtype))
            else:
                new.append((rng.standard_normal(w.shape) * 0.2).astype(w.dtype))
        layer.set_weights(new)
    return model


def _masked_reference(model, decision, clone_model):
    reference = clone_model(model)
    reference.set_weights(model.get_weights())
    for layer in reference.layers:
        if type(layer).__name__ not in ("Conv2D", "Dense") or not layer.get_weights():
            continue
        keep = decision.input_keep(layer.name)
        weights = layer.get_weights()
        kernel = weights[0].copy()
        kernel[..., ~keep, :] = 0.0  # the input-channel axis is the second to last
        layer.set_weights([kernel, *weights[1:]])
    return reference


def _check_surgery(model, widths, clone_model=keras.models.clone_model, atol=1e-5):
    decision = channels.plan(model, widths)
    smaller = channels.prune(model, widths)
    x = _inputs(model)
    expected = np.asarray(_masked_reference(model, decision, clone_model)(x, training=False))
    got = np.asarray(smaller(x, training=False))
    scale = max(float(np.abs(expected).max()), 1e-6)
    np.testing.assert_allclose(got, expected, atol=atol * scale, rtol=1e-4)
    return decision, smaller


def _chain_model():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(12, 3, strides=2, name="c2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(5, name="fc2")(x)
    return _randomize(keras.Model(inputs, outputs))


def test_nothing_removed_gives_the_same_outputs():
    model = tfpconv.models.resnet18((32, 32, 3), num_classes=10)
    same = channels.prune(model, 1.0)
    x = _inputs(model)
    np.testing.assert_array_equal(np.asarray(same(x)), np.asarray(model(x)))
    assert same.count_params() == model.count_params()


def test_chain_through_bn_depthwise_pool_flatten_and_dense():
    model = _chain_model()
    decision, smaller = _check_surgery(model, {"c1": 5, "c2": 0.5, "fc1": 9})
    assert smaller.get_layer("c1").kernel.shape == (3, 3, 3, 5)
    assert smaller.get_layer("bn1").get_weights()[0].shape == (5,)
    assert smaller.get_layer("dw").kernel.shape == (3, 3, 5, 1)
    assert smaller.get_layer("c2").kernel.shape == (3, 3, 5, 6)
    # Flatten of a 2x2x6 map: the Dense keeps 4 positions x 6 channels of its rows.
    assert smaller.get_layer("fc1").kernel.shape == (24, 9)
    assert smaller.get_layer("fc2").kernel.shape == (9, 5)
    assert [len(decision.kept[name]) for name in ("c1", "c2", "fc1", "fc2")] == [5, 6, 9, 5]


def test_l2_criterion_keeps_the_strongest_filters_in_order():
    model = _chain_model()
    kernel = model.get_layer("c1").get_weights()[0]
    strongest = np.sort(np.argsort(-np.sqrt((kernel.reshape(-1, 8) ** 2).sum(axis=0)))[:3])
    assert channels.plan(model, {"c1": 3}).kept["c1"].tolist() == strongest.tolist()
    weakest_first = np.argsort(np.abs(kernel).reshape(-1, 8).sum(axis=0))
    kept_l1 = channels.plan(model, {"c1": 7}, criterion="l1").kept["c1"]
    assert weakest_first[0] not in kept_l1


def test_add_joins_groups_and_resnet18_prunes_consistently():
    model = _randomize(tfpconv.models.resnet18((32, 32, 3), num_classes=10))
    found = {g.name: g for g in channels.groups(model)}
    stem = next(g for g in found.values() if "stem" in g.producers)
    # The stem and the second conv of every block of stage 1 meet in Adds: one group.
    assert {"stem", "s1b1_conv2", "s1b2_conv2"} <= set(stem.producers)
    assert not found["classifier"].prunable and "model output" in found["classifier"].reason
    _, smaller = _check_surgery(model, 0.5)
    assert smaller.count_params() < 0.3 * model.count_params()


def test_vgg16_builder():
    model = _randomize(tfpconv.models.vgg16((32, 32, 3), num_classes=10))
    _check_surgery(model, {"block1_conv1": 0.5, "block3_conv2": 100, "block5_conv3": 0.25})


def test_concatenate_slices():
    inputs = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(6, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(10, 1, name="b")(inputs)
    x = keras.layers.Concatenate(name="cat")([a, b])
    x = keras.layers.Conv2D(7, 3, name="after")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = _randomize(keras.Model(inputs, keras.layers.Dense(3, name="head")(x)))
    _, smaller = _check_surgery(model, {"a": 2, "b": 0.5, "after": 4})
    assert smaller.get_layer("after").kernel.shape == (3, 3, 7, 4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ResNet50", "MobileNetV2"])
def test_keras_applications(name):
    build = getattr(keras.applications, name)
    extra = {"alpha": 0.35} if name == "MobileNetV2" else {}
    model = _randomize(build(weights=None, input_shape=(32, 32, 3), classes=10, **extra))
    prunable = [g for g in channels.groups(model) if g.prunable]
    assert len(prunable) > 10
    _, smaller = _check_surgery(model, 0.6, atol=1e-4)
    assert smaller.count_params() < model.count_params()


def test_tf_keras_sequential_and_functional():
    layers = tf_keras.layers
    sequential = tf_keras.Sequential(
        [
            tf_keras.Input((10, 10, 2)),
            layers.Conv2D(6, 3, name="c1"),
            layers.BatchNormalization(name="bn"),
            layers.Activation("relu"),
            layers.Flatten(),
            layers.Dense(8, name="fc"),
            layers.Dense(2, name="out"),
        ]
    )
    _randomize(sequential)
    _, smaller = _check_surgery(sequential, 0.5, clone_model=tf_keras.models.clone_model)
    assert smaller.get_layer("c1").kernel.shape == (3, 3, 2, 3)
    assert type(smaller).__module__.startswith("tf_keras")

    inputs = tf_keras.Input((9, 9, 3))
    x = layers.Conv2D(8, 3, padding="same", name="x1")(inputs)
    y = layers.Conv2D(8, 3, padding="same", name="y1")(x)
    x = layers.Add(name="add")([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    functional = _randomize(tf_keras.Model(inputs, layers.Dense(2, name="out")(x)))
    _check_surgery(functional, {"x1": 3}, clone_model=tf_keras.models.clone_model)


def test_layers_that_cannot_be_followed_are_named():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(6, 3, name="a")(inputs)
    flipped = keras.layers.Lambda(lambda t: t[..., ::-1], name="flip")(a)
    b = keras.layers.Conv2D(4, 3, name="b")(flipped)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(b))
    found = {g.name: g for g in channels.groups(model)}
    assert not found["a"].prunable and "'flip' (Lambda)" in found["a"].reason
    with pytest.raises(ValueError, match="'a' cannot be pruned: layer 'flip' \\(Lambda\\)"):
        channels.prune(model, {"a": 3})
    # A uniform ratio prunes what can be pruned and leaves the rest.
    assert channels.prune(model, 0.5).get_layer("a").kernel.shape == (3, 3, 3, 6)


@pytest.mark.parametrize(
    ("widths", "message"),
    [
        ({"nope": 2}, "no channel group or Conv2D/Dense layer named 'nope'"),
        ({"c1": 0}, "outside 1..8"),
        ({"c1": 1.5}, "outside \\(0, 1\\]"),
        ({"c1": "half"}, "must be a number"),
    ],
)
def test_bad_widths_are_rejected(widths, message):
    with pytest.raises(ValueError, match=message):
        channels.prune(_chain_model(), widths)


def test_subclassed_models_are_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="subclassed"):
        channels.groups(net)
    with pytest.raises(ValueError, match="criterion"):
        channels.plan(_chain_model(), 0.5, criterion="random")
