"""Weight unification in model.fit (Keras 3): WeightUnification, PatternPruning(unify=...), both
callbacks together, ADMM, saving, the summary, and bad input."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import tfpconv  # noqa: E402
from tfpconv.sparsity import patterns, unification  # noqa: E402


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 3)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int64) + 2 * (x[..., 0].mean(axis=(1, 2)) > 0)
    return x, y


def model_with_head():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2"),
            keras.layers.Conv2D(12, 1, name="p1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(37, activation="relu", name="d1"),
            keras.layers.Dense(4, name="out"),
        ],
        name="head",
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def counts(states):
    return np.bincount(np.asarray(states).ravel(), minlength=3).tolist()


def expected_counts(num_blocks, unify, prune):
    num_unify, num_prune = unification.counts(num_blocks, unify, prune)
    return [num_blocks - num_unify - num_prune, num_unify, num_prune]


@pytest.mark.parametrize("method", ["magnitude", "admm"])
def test_dense_and_1x1_layers_end_exactly_unified(method):
    model = model_with_head()
    x, y = data()
    callback = tfpconv.callbacks.WeightUnification(0.5, 0.25, method=method, verbose=0)
    history = model.fit(x, y, epochs=4, batch_size=16, callbacks=[callback], verbose=0)
    assert set(callback.states) == {"p1", "d1"}  # "out", the output layer, is left dense
    for name, in_features in (("p1", 16), ("d1", 192)):
        kernel = model.get_layer(name).kernel.numpy()
        states = unification.read_dense_states(kernel, 8)
        np.testing.assert_array_equal(states, callback.states[name])
        out_features = kernel.shape[-1]
        blocks = out_features * unification.num_blocks_dense(in_features, 8)
        assert counts(states) == expected_counts(blocks, 0.5, 0.25)
    assert history.history["unify_unified"][-1] == 0.5
    assert history.history["unify_gap"][-1] == 0.0
    assert 0.5 < history.history["unify_density"][-1] < 0.9
    assert np.isfinite(history.history["loss"]).all()


def test_unified_blocks_keep_one_magnitude_through_fine_tuning():
    model = model_with_head()
    x, y = data()
    callback = tfpconv.callbacks.WeightUnification(0.75, 0.0, block_size=4, layers=["d1", "out"])
    model.fit(x, y, epochs=3, batch_size=16, callbacks=[callback], verbose=0)
    for name in ("d1", "out"):
        kernel = model.get_layer(name).kernel.numpy()
        matrix = np.pad(kernel, [(0, (-kernel.shape[0]) % 4), (0, 0)])
        blocks = np.abs(matrix).reshape(-1, 4, kernel.shape[1])  # (blocks, 4, out)
        unified = (callback.states[name] == unification.UNIFIED).T  # (blocks, out)
        spread = blocks.max(axis=1) - blocks.min(axis=1)
        # d1's 192 inputs split evenly; "out" (37 inputs) has a 1-weight last block, padded here
        if kernel.shape[0] % 4 == 0:
            assert (spread[unified] == 0).all()
        else:
            assert (spread[:-1][unified[:-1]] == 0).all()
        # the magnitudes moved in training: the unified values are not frozen
        assert len(np.unique(blocks.max(axis=1)[unified])) > 1


def test_pattern_pruning_unifies_half_of_the_kept_kernels():
    model = model_with_head()
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(4, 0.5, unify=0.5, verbose=0)
    history = model.fit(x, y, epochs=4, batch_size=16, callbacks=[callback], verbose=0)
    kernel = model.get_layer("c2").kernel.numpy()
    codes = patterns.classify_kernels(kernel)
    assert (codes != patterns.NOT_A_PATTERN).all()
    assert (codes == patterns.PRUNED).sum() == patterns.num_to_prune(128, 0.5)
    states = unification.read_pattern_states(kernel)
    assert counts(states) == [32, 32, 64]  # of 64 kept kernels, 32 unified; 64 removed
    np.testing.assert_array_equal(states, callback.unification.states["c2"])
    taps = np.abs(kernel).reshape(9, -1)[:, (states == unification.UNIFIED).ravel()]
    assert ((taps > 0).sum(axis=0) == 4).all()
    assert (taps.max(axis=0) == np.where(taps > 0, taps, np.inf).min(axis=0)).all()
    assert history.history["pconv_unified"][-1] == 0.5
    assert callback.codes["c2"].shape == (8, 16)


def test_both_callbacks_in_one_fit_and_the_model_reloads(tmp_path):
    model = model_with_head()
    x, y = data()
    pruning = tfpconv.callbacks.PatternPruning(4, 0.5, verbose=0)
    unify = tfpconv.callbacks.WeightUnification(0.5, 0.25, verbose=0)
    model.fit(x, y, epochs=4, batch_size=16, callbacks=[pruning, unify], verbose=0)
    assert set(pruning.codes) == {"c2"} and set(unify.states) == {"p1", "d1"}
    path = tmp_path / "unified.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    for name in ("c2", "p1", "d1"):
        np.testing.assert_array_equal(
            reloaded.get_layer(name).kernel.numpy(), model.get_layer(name).kernel.numpy()
        )
    np.testing.assert_array_equal(
        unification.read_dense_states(reloaded.get_layer("d1").kernel.numpy(), 8),
        unify.states["d1"],
    )


def test_pruning_epochs_zero_fixes_the_blocks_at_once_and_early_stop_keeps_them():
    model = model_with_head()
    x, y = data()
    callback = tfpconv.callbacks.WeightUnification(0.5, 0.5, pruning_epochs=0, verbose=0)

    class StopAfterTwoSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    model.fit(x, y, epochs=3, batch_size=16, callbacks=[callback, StopAfterTwoSteps()], verbose=0)
    states = unification.read_dense_states(model.get_layer("d1").kernel.numpy(), 8)
    assert counts(states) == expected_counts(37 * 24, 0.5, 0.5)
    assert counts(states)[0] == 0


def test_bad_arguments_and_layers_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="unify"):
        tfpconv.callbacks.WeightUnification(0.8, 0.4)
    with pytest.raises(ValueError, match="block"):
        tfpconv.callbacks.WeightUnification(0.5, 0.0, block_size=0)
    with pytest.raises(ValueError, match="unify"):
        tfpconv.callbacks.PatternPruning(4, 0.5, unify=1.5)
    x, y = data(16)
    model = model_with_head()
    callback = tfpconv.callbacks.WeightUnification(0.5, layers=["c2"], verbose=0)
    with pytest.raises(ValueError, match=r"'c2'.*cannot be unified.*unifiable layers"):
        model.fit(x, y, epochs=1, callbacks=[callback], verbose=0)
    conv_only = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()]
    )
    conv_only.compile("adam", "mse")
    with pytest.raises(ValueError, match="no layer .* to unify"):
        conv_only.fit(x, np.zeros((16, 4)), epochs=1, callbacks=[callback.__class__()], verbose=0)


def test_summary_reports_unified_blocks_stored_values_and_bytes():
    model = model_with_head()
    x, y = data()
    pruning = tfpconv.callbacks.PatternPruning(4, 0.5, unify=0.5, verbose=0)
    unify = tfpconv.callbacks.WeightUnification(0.5, 0.25, block_size=4, verbose=0)
    model.fit(x, y, epochs=3, batch_size=16, callbacks=[pruning, unify], verbose=0)
    printed = []
    report = tfpconv.summary(model, print_fn=printed.append)
    assert report.layer("c2").kernels_unified == 32
    assert report.layer("c2").stored_values == 64 * 4 - 32 * 3
    assert report.layer("c1").kernels_unified == 0  # left dense
    by_name = {s.name: s for s in report.unified}
    assert set(by_name) == {"p1", "d1"}  # "out" was left alone, so it is not listed
    d1 = by_name["d1"]
    assert d1.block_size == 4  # recovered from the weights
    assert (d1.blocks, d1.blocks_unified, d1.blocks_pruned) == (37 * 48, 888, 444)
    assert d1.stored_values == 4 * d1.blocks_free + d1.blocks_unified
    assert d1.packed_bytes == 16 * d1.blocks_free + 5 * d1.blocks_unified + (2 * d1.blocks + 7) // 8
    assert d1.dense_bytes == 192 * 37 * 4
    text = printed[0]
    assert "tfpconv weight unification" in text and "32 kernels unified" in text
    assert "unified layers:" in text
    assert report.to_dict()["unified"][0]["name"] == "p1"


def test_unify_weights_projects_a_trained_model_at_once():
    model = model_with_head()
    before = model.get_layer("out").kernel.numpy().copy()
    report = tfpconv.unify_weights(model, unify=0.5, prune=0.25, block_size=16)
    by_name = {s.name: s for s in report.unified}
    assert set(by_name) == {"p1", "d1"}
    d1 = by_name["d1"]
    assert (d1.block_size, d1.blocks) == (16, 37 * 12)
    assert (d1.blocks_unified, d1.blocks_pruned) == (222, 111)
    np.testing.assert_array_equal(model.get_layer("out").kernel.numpy(), before)
    with pytest.raises(ValueError, match=r"tfpconv: layer 'nope'"):
        tfpconv.unify_weights(model, layers=["nope"])
