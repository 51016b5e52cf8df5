"""Filter norms restored after a projection (tfpconv.sparsity.norms) and the callback option."""

import numpy as np
import pytest

from tfpconv.sparsity import patterns
from tfpconv.sparsity.norms import MAX_SCALE, restore_norms


def test_each_output_channel_gets_its_norm_back_and_zeros_stay():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(3, 3, 5, 7)).astype(np.float32)
    after = before * (rng.random(before.shape) < 0.5)  # about half of the energy removed
    restored = restore_norms(before, after)
    assert restored.dtype == np.float32
    np.testing.assert_array_equal(restored == 0, after == 0)
    np.testing.assert_allclose(
        np.linalg.norm(restored.reshape(-1, 7), axis=0),
        np.linalg.norm(before.reshape(-1, 7), axis=0),
        rtol=1e-5,
    )
    # One factor per channel: the kept weights keep their ratios.
    kept = after[..., 2] != 0
    ratio = restored[..., 2][kept] / after[..., 2][kept]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
    assert ratio[0] > 1.0


def test_a_channel_that_lost_almost_everything_is_capped_and_an_empty_one_stays_empty():
    before = np.ones((4, 3), np.float32)
    after = np.zeros_like(before)
    after[0, 0] = 0.01  # channel 0 keeps 0.5% of its norm: capped
    after[:2, 1] = 1.0  # channel 1 keeps half of its weights: sqrt(2)
    restored = restore_norms(before, after)  # channel 2 is all zero
    assert restored[0, 0] == pytest.approx(0.01 * MAX_SCALE)
    np.testing.assert_allclose(restored[:2, 1], np.sqrt(2.0), rtol=1e-6)
    assert not restored[:, 2].any()
    assert restore_norms(before, after, max_scale=1.0)[0, 0] == pytest.approx(0.01)


def test_pattern_kernels_and_shared_magnitudes_survive_bit_for_bit():
    rng = np.random.default_rng(1)
    before = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    library = patterns.select_library([before], 4)
    after, _ = patterns.project(before, library, 0.5)
    after[..., 0, 0] = np.sign(after[..., 0, 0]) * 0.25  # one kernel of equal magnitudes
    restored = restore_norms(before, after)
    np.testing.assert_array_equal(
        patterns.classify_kernels(restored), patterns.classify_kernels(after)
    )
    magnitudes = np.abs(restored[..., 0, 0])[after[..., 0, 0] != 0]
    assert len(set(magnitudes.tolist())) == 1


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        restore_norms(np.ones((3, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="max_scale"):
        restore_norms(np.ones((3, 2)), np.ones((3, 2)), max_scale=0.5)


def plain_and_normalized_model(keras):
    """first (exempt) -> plain (nothing renormalizes it) -> normalized (a BatchNorm follows)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="first")(inputs)
    x = keras.layers.Conv2D(10, 3, padding="same", activation="relu", name="plain")(x)
    x = keras.layers.Conv2D(10, 3, padding="same", name="normalized")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    # A learning rate of 0: what fit leaves is the projection alone.
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    return model


def channel_norms(kernel):
    return np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0)


@pytest.mark.parametrize("restore", [True, False])
def test_pattern_pruning_restores_the_filter_norms_where_no_batch_norm_follows(restore):
    keras = pytest.importorskip("keras")
    import tfpconv

    model = plain_and_normalized_model(keras)
    before = {name: model.get_layer(name).kernel.numpy() for name in ("plain", "normalized")}
    callback = tfpconv.callbacks.PatternPruning(
        4,
        0.5,
        connectivity_allocation="uniform",
        filter_group=1,
        pruning_epochs=0,
        restore_norms=restore,
        verbose=0,
    )
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 4)).astype(np.float32)
    model.fit(x, np.zeros(16, np.int64), epochs=1, batch_size=8, callbacks=[callback], verbose=0)
    for name in ("plain", "normalized"):
        after = model.get_layer(name).kernel.numpy()
        codes = patterns.classify_kernels(after)
        assert (codes >= 0).sum() == after.shape[2] * after.shape[3] // 2  # 0.5 of the kernels
        norms_before, norms_after = channel_norms(before[name]), channel_norms(after)
        if restore and name == "plain":
            np.testing.assert_allclose(norms_after, norms_before, rtol=1e-5)
        else:  # not asked for, or BatchNorm renormalizes the output anyway
            assert (norms_after < 0.9 * norms_before).all(), name


@pytest.mark.parametrize("restore", [True, False])
def test_admm_targets_restored_norms_like_the_magnitude_projection(restore):
    keras = pytest.importorskip("keras")
    import tfpconv

    model = plain_and_normalized_model(keras)
    pruning = tfpconv.callbacks.PatternPruning(
        4,
        0.5,
        method="admm",
        connectivity_allocation="uniform",
        filter_group=1,
        pruning_epochs=1,
        update_every=1,
        rho_growth=1.0,  # U is never rescaled, so after an update W + U_before = Z + U
        restore_norms=restore,
        verbose=0,
    )
    states = []

    class ReadState(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            # The first update: at later ones W + U can outgrow Z's norm past the 3x cap.
            if pruning._step == 1:
                names = [entry.name for entry in pruning._layers]
                states.append({n: (s.z, s.u) for n, s in zip(names, pruning._admm, strict=True)})

    x = np.random.default_rng(0).normal(size=(32, 8, 8, 4)).astype(np.float32)
    model.fit(
        x,
        np.zeros(32, np.int64),
        epochs=2,
        batch_size=4,
        callbacks=[pruning, ReadState()],
        verbose=0,
    )
    for name, (z, u) in states[0].items():
        assert (patterns.classify_kernels(z) != patterns.NOT_A_PATTERN).all(), name
        projected_from = channel_norms(z + u)  # W + U as the update projected it
        if restore and name == "plain":
            np.testing.assert_allclose(channel_norms(z), projected_from, rtol=1e-5)
        else:
            assert (channel_norms(z) < 0.97 * projected_from).all(), name


def test_the_layers_a_batch_norm_renormalizes_are_found_in_nested_models_too():
    keras = pytest.importorskip("keras")
    from tfpconv.keras.graph import renormalized_layers

    inner = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(4, 3, padding="same", name="inner_bn"),
            keras.layers.BatchNormalization(),
            keras.layers.Conv2D(4, 3, padding="same", name="inner_plain"),
        ]
    )
    inputs = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(4, 3, padding="same", name="two_users")(inputs)
    b = keras.layers.BatchNormalization()(a)
    c = keras.layers.Add()([a, b])  # a goes into the BatchNorm and elsewhere: not renormalized
    d = inner(c)
    model = keras.Model(inputs, [d, keras.layers.BatchNormalization()(d)])
    found = renormalized_layers(model)
    names = {layer.name for layer in [*model.layers, *inner.layers] if id(layer) in found}
    assert names == {"inner_bn"}
    assert renormalized_layers(keras.Sequential()) == set()
