"""tf_keras (Keras 2) models, tensorflow-model-optimization schedules, and MirroredStrategy."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

tf_keras = pytest.importorskip("tf_keras")
tfmot = pytest.importorskip("tensorflow_model_optimization")

import tfpconv  # noqa: E402
from tfpconv.sparsity import patterns  # noqa: E402
from tfpconv.sparsity.allocation import layer_fractions  # noqa: E402


def tf_keras_model():
    inputs = tf_keras.Input((10, 10, 3))
    x = tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="k1")(inputs)
    x = tf_keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="k2")(x)
    x = tf_keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)  # a Conv2D subclass there
    x = tf_keras.layers.Conv2D(10, 3, strides=2, name="k3")(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, activation="softmax")(x))
    model.compile(
        tf_keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def data(n=48):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 10, 10, 3)).astype(np.float32)
    return x, rng.integers(0, 3, size=n)


def check_sparse(model, connectivity, one_shot=False):
    """The callback's defaults: k1, the first convolution, left dense, the erdos_renyi split;
    ``prune_patterns``' (``one_shot``): patterns only in k1, the same fraction elsewhere."""
    prunable, skipped = tfpconv.keras.layer_selection.find_conv_layers(model)
    assert [layer.name for layer in prunable] == ["k1", "k2", "k3"]
    assert [s.name for s in skipped] == ["dw"]
    first = patterns.classify_kernels(prunable[0].kernel.numpy())
    if one_shot:
        assert (first >= 0).all()
        fractions = [connectivity] * 2
    else:
        assert (first == patterns.NOT_A_PATTERN).any()
        # k2 has 8x12 kernels, k3 12x10
        fractions = layer_fractions([(8, 12), (12, 10)], connectivity, "erdos_renyi")
    for layer, fraction in zip(prunable[1:], fractions, strict=True):
        codes = patterns.classify_kernels(layer.kernel.numpy())
        assert (codes != patterns.NOT_A_PATTERN).all()
        assert (codes == patterns.PRUNED).sum() == patterns.num_to_prune(codes.size, fraction)


def test_tf_keras_model_trains_into_pattern_sparsity_and_reloads(tmp_path):
    model = tf_keras_model()
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(num_patterns=6, connectivity=0.5, verbose=0)
    history = model.fit(x, y, batch_size=16, epochs=3, callbacks=[callback], verbose=0)
    check_sparse(model, 0.5)
    assert "pconv_gap" in history.history and history.history["pconv_gap"][-1] == 0.0
    path = tmp_path / "pruned.keras"
    model.save(path)
    check_sparse(tf_keras.models.load_model(path), 0.5)


def test_tf_keras_dense_layers_are_unified_and_reload_exactly(tmp_path):
    from tfpconv.sparsity import unification

    inputs = tf_keras.Input((12,))
    x = tf_keras.layers.Dense(20, activation="relu", name="h1")(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, activation="softmax", name="out")(x))
    model.compile(tf_keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    x_data, y_data = rng.normal(size=(64, 12)).astype(np.float32), rng.integers(0, 3, size=64)
    callback = tfpconv.callbacks.WeightUnification(0.5, 0.25, block_size=4, verbose=0)
    model.fit(x_data, y_data, epochs=3, batch_size=16, callbacks=[callback], verbose=0)
    assert set(callback.states) == {"h1"}  # the output layer is left dense by default
    kernel = model.get_layer("h1").kernel.numpy()
    states = unification.read_dense_states(kernel, 4)
    np.testing.assert_array_equal(states, callback.states["h1"])
    assert np.bincount(states.ravel(), minlength=3).tolist() == [15, 30, 15]
    path = tmp_path / "unified.keras"
    model.save(path)
    reloaded = tf_keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.get_layer("h1").kernel.numpy(), kernel)


@pytest.mark.parametrize(
    "schedule",
    [
        lambda: tfmot.sparsity.keras.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=6),
        lambda: tfmot.sparsity.keras.ConstantSparsity(0.6, begin_step=0),
    ],
    ids=["PolynomialDecay", "ConstantSparsity"],
)
def test_tfmot_schedules_drive_the_connectivity(schedule):
    model = tf_keras_model()
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(
        8, schedule(), method="magnitude", update_every=1, pruning_epochs=2, verbose=0
    )
    history = model.fit(x, y, batch_size=16, epochs=3, callbacks=[callback], verbose=0)
    assert history.history["pconv_connectivity"][-1] == pytest.approx(0.6)
    check_sparse(model, 0.6)


def test_prune_patterns_on_a_tf_keras_model():
    model = tf_keras_model()
    report = tfpconv.prune_patterns(model, 8, 0.72)
    assert report.compression > 5
    check_sparse(model, 0.72, one_shot=True)


class TfKerasSubclassed(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.stem = tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="s1")
        self.body = tf_keras.layers.Conv2D(8, 3, strides=2, name="s2")
        self.head = tf_keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.head(tf.reduce_mean(self.body(self.stem(x)), axis=(1, 2)))


def test_an_unbuilt_tf_keras_subclassed_model_is_pruned_and_summarised():
    model = TfKerasSubclassed()
    assert not model.built
    model.compile(tf_keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = data(n=32)
    callback = tfpconv.callbacks.PatternPruning(4, 0.5, verbose=0)
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[callback], verbose=0)
    assert set(callback.codes) == {"s2"}  # s1, the first convolution, is left dense
    codes = patterns.classify_kernels(model.body.kernel.numpy())
    assert (codes != patterns.NOT_A_PATTERN).all()
    assert (codes == patterns.PRUNED).sum() == patterns.num_to_prune(64, 0.5)
    report = tfpconv.summary(model, print_fn=None)
    s2 = report.layer("s2")
    assert s2.flops == 2 * 4 * 4 * s2.weights  # 10x10, valid, stride 2: 4x4


def test_tf_keras_steps_per_execution_warns():
    model = tf_keras_model()
    model.compile("adam", "sparse_categorical_crossentropy", steps_per_execution=3)
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(8, 0.5, verbose=0)
    with pytest.warns(UserWarning, match="steps_per_execution=3"):
        model.fit(x, y, batch_size=8, epochs=2, callbacks=[callback], verbose=0)
    check_sparse(model, 0.5)


def test_tf_keras_tensorboard_after_the_callback_records_the_pconv_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    model = tf_keras_model()
    x, y = data(n=32)
    callbacks = [
        tfpconv.callbacks.PatternPruning(8, 0.5, verbose=0),
        tf_keras.callbacks.TensorBoard(log_dir=str(tmp_path)),
    ]
    model.fit(x, y, batch_size=16, epochs=2, callbacks=callbacks, verbose=0)
    tags = set()
    for path in tmp_path.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {value.tag for value in event.summary.value}
    assert {"epoch_pconv_connectivity", "epoch_pconv_density", "epoch_pconv_gap"} <= tags


DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, tfpconv
    from tfpconv.sparsity import patterns
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = keras.Sequential([
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(24, activation="relu", name="hidden"),
            keras.layers.Dense(3, activation="softmax"),
        ])
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10, 10, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    callback = tfpconv.callbacks.PatternPruning(4, 0.5, verbose=0)
    unify = tfpconv.callbacks.WeightUnification(0.5, 0.25, block_size=4, verbose=0)
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[callback, unify], verbose=0)
    from tfpconv.sparsity import unification
    hidden = [v.numpy() for v in model.get_layer("hidden").kernel.value.values]
    np.testing.assert_array_equal(hidden[0], hidden[1])
    states = unification.read_dense_states(hidden[0], 4)
    np.testing.assert_array_equal(states, unify.states["hidden"])
    assert np.bincount(states.ravel(), minlength=3).tolist() == [24, 48, 24]
    kernel = model.layers[1].kernel
    values = [v.numpy() for v in kernel.value.values]  # one copy per replica
    assert len(values) == 2
    np.testing.assert_array_equal(values[0], values[1])
    codes = patterns.classify_kernels(values[0])
    assert (codes != patterns.NOT_A_PATTERN).all()
    assert (codes == patterns.PRUNED).sum() == patterns.num_to_prune(128, 0.5)
    print("DISTRIBUTED OK")
    """
)


def test_mirrored_strategy_on_two_logical_cpus():
    # Logical devices must be configured before TensorFlow starts: a fresh interpreter.
    result = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]),
    )
    assert "DISTRIBUTED OK" in result.stdout, result.stderr[-3000:]
