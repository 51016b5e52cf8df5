"""The Keras 3 side: PatternPruning in model.fit, prune_patterns, summary, saving, bad input."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import tfpconv  # noqa: E402
from tfpconv.keras.callbacks import PATTERN_PROJECTIONS_PER_PHASE  # noqa: E402
from tfpconv.keras.one_shot import layer_connectivities, layer_targets  # noqa: E402
from tfpconv.keras.pattern_constraint import PatternConnectivity  # noqa: E402
from tfpconv.keras.training import UPDATES_PER_PHASE, SparsityTraining  # noqa: E402
from tfpconv.sparsity import patterns  # noqa: E402
from tfpconv.sparsity.allocation import layer_fractions  # noqa: E402


def data(n=64, size=10, channels=3, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, channels)).astype(np.float32)
    y = (x[:, : size // 2].mean(axis=(1, 2, 3)) > 0).astype(np.int64) + 2 * (
        x[..., 0].mean(axis=(1, 2)) > 0
    )
    return x, y % classes


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
            keras.layers.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="c2"),
            keras.layers.Conv2D(6, 5, padding="same", name="c5x5"),
            keras.layers.Conv2D(10, 3, padding="valid", activation="relu", name="c3"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, activation="softmax"),
        ],
        name="seq",
    )


def functional_model():
    inputs = keras.Input((10, 10, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="f1")(inputs)
    b = keras.layers.Conv2D(8, 3, padding="same", name="f2")(a)
    x = keras.layers.Add()([a, b])
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x), name="func")


class Block(keras.layers.Layer):
    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv_a = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")
        self.conv_b = keras.layers.Conv2D(filters, 3, padding="same")

    def call(self, x):
        return self.conv_b(self.conv_a(x))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.stem = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
        self.block = Block(8)
        self.head = keras.layers.Dense(4, activation="softmax")

    def call(self, x):
        x = self.block(self.stem(x))
        return self.head(keras.ops.mean(x, axis=(1, 2)))


def nested_model():
    inner = keras.Sequential(
        [keras.Input((10, 10, 8)), keras.layers.Conv2D(8, 3, padding="same", name="inner_conv")],
        name="inner",
    )
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="outer_conv")(inputs)
    x = inner(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x), name="nested")


def build(model_fn):
    model = model_fn()
    model(np.zeros((1, 10, 10, 3), np.float32))
    model.compile(
        keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def assert_pattern_sparse(
    model, num_patterns, connectivity, first_layer="dense", allocation="erdos_renyi"
):
    """Every pruned conv is exactly pattern-sparse with the right kernel count removed (split
    over the layers by ``allocation``); a first layer left dense is no pattern layer."""
    targets = layer_targets(model, None, first_layer)
    fractions = dict(
        zip(
            [t.name for t in targets],
            layer_connectivities(targets, connectivity, allocation),
            strict=True,
        )
    )
    prunable, _ = tfpconv.keras.layer_selection.find_conv_layers(model)
    assert prunable
    used = set()
    for layer in prunable:
        kernel = layer.kernel.numpy()
        codes = patterns.classify_kernels(kernel)
        if layer.name not in fractions:
            assert first_layer == "dense" and (codes == patterns.NOT_A_PATTERN).any(), layer.name
            continue
        assert (codes != patterns.NOT_A_PATTERN).all(), layer.name
        kept = codes != patterns.PRUNED
        assert (np.count_nonzero(kernel, axis=(0, 1))[kept] == 4).all(), layer.name
        expected = patterns.num_to_prune(codes.size, fractions[layer.name])
        assert (~kept).sum() == expected, layer.name
        used |= set(codes[kept].tolist())
    assert len(used) <= num_patterns


@pytest.mark.parametrize(
    "model_fn",
    [sequential_model, functional_model, Subclassed, nested_model],
    ids=["sequential", "functional", "subclassed", "nested"],
)
def test_admm_training_ends_exactly_pattern_sparse(model_fn):
    model = build(model_fn)
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(
        num_patterns=4, connectivity=0.5, method="admm", verbose=0
    )
    history = model.fit(x, y, batch_size=16, epochs=3, callbacks=[callback], verbose=0)
    assert_pattern_sparse(model, 4, 0.5)
    assert len(callback.library) == 4
    # Metrics reach the logs: ADMM epochs carry rho and a gap, the hard phase a zero gap.
    assert history.history["pconv_rho"][0] > 0
    assert history.history["pconv_gap"][-1] == 0.0
    assert history.history["pconv_density"][-1] < 0.45
    assert np.isfinite(history.history["loss"]).all()


def _distance_to_pull_target(rho):
    """||W - (Z - U)|| / ||W|| one optimizer step after each ADMM round."""
    keras.utils.set_random_seed(0)
    model = build(sequential_model)
    x, y = data()
    pruning = tfpconv.callbacks.PatternPruning(
        8, lambda step: 0.5, method="admm", rho=rho, update_every=4, pruning_epochs=2, verbose=0
    )
    distances = []

    class OneStepAfterRound(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if pruning._phase == "admm" and pruning._step % 4 == 1 and pruning._step > 4:
                for entry, state in zip(pruning._layers, pruning._admm, strict=True):
                    weights = entry.kernel()
                    distances.append(
                        np.linalg.norm(weights - state.target()) / np.linalg.norm(weights)
                    )

    model.fit(x, y, batch_size=8, epochs=3, callbacks=[pruning, OneStepAfterRound()], verbose=0)
    return np.array(distances)


def test_admm_penalty_pulls_weights_towards_z_minus_u():
    # The proximal step W <- (W + s (Z - U)) / (1 + s), s = lr * rho (Adam's lr 1e-3 here).
    assert (_distance_to_pull_target(rho=1e5) < 0.02).all()
    assert (_distance_to_pull_target(rho=1.0) > 0.05).any()


def test_admm_rounds_restart_the_weights_from_z():
    model = build(sequential_model)
    x, y = data()
    pruning = tfpconv.callbacks.PatternPruning(
        8, lambda step: 0.5, method="admm", update_every=3, pruning_epochs=2, verbose=0
    )
    rounds = []

    class AfterEachRound(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if pruning._phase == "admm" and pruning._step % 3 == 0:
                for entry, state in zip(pruning._layers, pruning._admm, strict=True):
                    np.testing.assert_array_equal(entry.kernel(), state.z, err_msg=entry.name)
                    codes = patterns.classify_kernels(state.z)
                    assert (codes != patterns.NOT_A_PATTERN).all(), entry.name
                rounds.append(sum(float(np.abs(state.u).sum()) for state in pruning._admm))

    model.fit(x, y, batch_size=8, epochs=3, callbacks=[pruning, AfterEachRound()], verbose=0)
    assert len(rounds) == 2 * len(x) // 8 // 3
    assert rounds[-1] > 0  # U holds what the projections removed


def test_magnitude_method_and_a_given_library():
    model = build(sequential_model)
    x, y = data()
    library = [int(patterns.CANDIDATE_MASKS[i]) for i in (0, 7, 20, 33, 50, 55)]
    callback = tfpconv.callbacks.PatternPruning(
        6, 0.72, method="magnitude", library=library, update_every=2, verbose=0
    )
    history = model.fit(x, y, batch_size=16, epochs=4, callbacks=[callback], verbose=0)
    assert_pattern_sparse(model, 6, 0.72)
    assert callback.library.tolist() == library
    for layer in tfpconv.keras.layer_selection.find_conv_layers(model)[0]:
        codes = patterns.classify_kernels(layer.kernel.numpy())
        assert set(codes[codes >= 0].tolist()) <= set(library)
    ramp = history.history["pconv_connectivity"]
    assert ramp[0] < ramp[-1] == pytest.approx(0.72)
    assert "pconv_rho" not in history.history


@pytest.mark.parametrize("method", ["admm", "magnitude"])
def test_filter_groups_end_with_equal_codes(method):
    model = build(sequential_model)
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(4, 0.5, method=method, filter_group=2, verbose=0)
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[callback], verbose=0)
    for name, codes in callback.codes.items():
        kernel = model.get_layer(name).kernel.numpy()
        np.testing.assert_array_equal(patterns.classify_kernels(kernel) >= 0, codes >= 0)
        for o in range(0, codes.shape[1] - 1, 2):
            np.testing.assert_array_equal(codes[:, o], codes[:, o + 1], err_msg=name)
        kept = codes >= 0
        assert (np.count_nonzero(kernel, axis=(0, 1))[kept] == 4).all(), name
        assert 0.3 < 1 - kept.mean() < 0.7, name


def batchnorm_model():
    """c1 (first, exempt from connectivity), c2 feeding a BatchNormalization, c3 not."""
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(12, 3, padding="same", use_bias=False, name="c2")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(x))
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="c3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x), name="bn_model")


def grouped(codes: np.ndarray, group: int) -> bool:
    """Whether every run of ``group`` consecutive filters has equal codes on every input."""
    return all(
        (codes[:, o : o + group] == codes[:, o : o + 1]).all()
        for o in range(0, codes.shape[1], group)
    )


@pytest.mark.parametrize("method", ["admm", "magnitude"])
def test_auto_filter_groups_tie_four_filters_where_batchnorm_follows(method):
    model = build(batchnorm_model)
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(
        8, 0.5, method=method, first_layer="full", connectivity_allocation="uniform", verbose=0
    )
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[callback], verbose=0)
    assert callback.patterns.groups == [1, 4, 1]
    assert grouped(callback.codes["c2"], 4)
    assert not grouped(callback.codes["c3"], 4)
    for name in ("c2", "c3"):  # 96 / 144 kernels: half of the groups or kernels removed
        kernels = callback.codes[name].size
        assert (callback.codes[name] == patterns.PRUNED).sum() == kernels // 2, name


@pytest.mark.parametrize("dual_decay, expected", [("auto", [1.0, 0.9, 1.0]), (0.5, [0.5] * 3)])
def test_admm_fades_the_dual_of_grouped_layers(monkeypatch, dual_decay, expected):
    """With ``dual_decay="auto"`` only c2 (filter groups of 4, BatchNorm after it) fades its U."""
    from tfpconv.sparsity import admm

    seen: dict[tuple, set[float]] = {}
    update = admm.ADMMState.update

    def recording_update(state, weights, project, dual_decay=1.0):
        seen.setdefault(np.shape(weights), set()).add(dual_decay)
        update(state, weights, project, dual_decay)

    monkeypatch.setattr(admm.ADMMState, "update", recording_update)
    model = build(batchnorm_model)
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(
        8, 0.5, method="admm", first_layer="full", dual_decay=dual_decay, verbose=0
    )
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[callback], verbose=0)
    assert callback.dual_decay == dual_decay
    shapes = [tuple(model.get_layer(n).kernel.shape) for n in ("c1", "c2", "c3")]
    assert [seen[shape] for shape in shapes] == [{d} for d in expected]


def test_prune_patterns_groups_filters_by_the_same_rule():
    model = build(batchnorm_model)
    tfpconv.prune_patterns(model, connectivity=0.5)
    codes = {n: patterns.classify_kernels(model.get_layer(n).kernel.numpy()) for n in ("c2", "c3")}
    assert grouped(codes["c2"], 4) and not grouped(codes["c3"], 4)
    model = build(batchnorm_model)
    tfpconv.prune_patterns(model, connectivity=0.5, filter_group=1)
    assert not grouped(patterns.classify_kernels(model.get_layer("c2").kernel.numpy()), 4)
    model = build(batchnorm_model)
    tfpconv.prune_patterns(model, connectivity=0.5, filter_group=2)
    for name in ("c1", "c2", "c3"):
        assert grouped(patterns.classify_kernels(model.get_layer(name).kernel.numpy()), 2)


def test_first_layer_connectivity_can_be_enabled_and_layers_selected():
    model = build(sequential_model)
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(
        8,
        0.5,
        layers=["c1", "c3"],
        first_layer="full",
        connectivity_allocation="uniform",
        verbose=0,
    )
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[callback], verbose=0)
    assert set(callback.codes) == {"c1", "c3"}
    assert (callback.codes["c1"] == patterns.PRUNED).sum() == patterns.num_to_prune(24, 0.5)
    c2 = model.get_layer("c2").kernel.numpy()
    assert (patterns.classify_kernels(c2) == patterns.NOT_A_PATTERN).all()  # left dense


@pytest.mark.parametrize("method", ["admm", "magnitude"])
def test_erdos_renyi_allocation_splits_the_target_over_the_layers(method, capsys):
    model = build(sequential_model)
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(
        8, 0.6, method=method, connectivity_allocation="erdos_renyi", update_every=2
    )
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[callback], verbose=0)
    # c1 is the first convolution (exempt); c2 has 8x12 kernels, c3 6x10 (c5x5 is not pruned).
    fractions = layer_fractions([(8, 12), (6, 10)], 0.6, "erdos_renyi")
    assert fractions[0] > 0.6 > fractions[1]  # c2 has the lower (in + out) / (in * out)
    assert (
        f"kernels removed per layer (erdos_renyi): c2 {fractions[0]:.2f}, "
        f"c3 {fractions[1]:.2f}" in capsys.readouterr().out
    )
    removed = {
        name: int((callback.codes[name] == patterns.PRUNED).sum()) for name in callback.codes
    }
    assert removed == {
        "c2": patterns.num_to_prune(96, fractions[0]),
        "c3": patterns.num_to_prune(60, fractions[1]),
    }
    assert abs(removed["c2"] + removed["c3"] - 0.6 * 156) <= 1
    for name, count in removed.items():
        codes = patterns.classify_kernels(model.get_layer(name).kernel.numpy())
        assert (codes == patterns.PRUNED).sum() == count

    one_shot = build(sequential_model)
    report = tfpconv.prune_patterns(
        one_shot, connectivity=0.6, connectivity_allocation="erdos_renyi"
    )
    assert {name: report.layer(name).kernels_kept for name in ("c2", "c3")} == {
        "c2": 96 - removed["c2"],
        "c3": 60 - removed["c3"],
    }


def test_a_3x3_layer_behind_a_stem_of_another_size_loses_kernels_too():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 7, strides=2, padding="same", name="stem7x7")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="after_stem")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="next")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    report = tfpconv.prune_patterns(model, num_patterns=8, connectivity=0.5)
    for name in ("after_stem", "next"):
        assert report.layer(name).kernels_kept == 64 - patterns.num_to_prune(64, 0.5), name


def test_masks_hold_through_the_hard_phase_and_early_stop():
    model = build(sequential_model)
    x, y = data()

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    callback = tfpconv.callbacks.PatternPruning(8, 0.5, pruning_epochs=3, verbose=0)
    model.fit(x, y, batch_size=16, epochs=5, callbacks=[callback, StopAfterFirstEpoch()], verbose=0)
    assert_pattern_sparse(model, 8, 0.5)  # stopped inside the ADMM phase: projected at the end


def test_saving_and_reloading_keeps_the_sparsity(tmp_path):
    model = build(functional_model)
    x, y = data()
    model.fit(
        x, y, epochs=2, verbose=0, callbacks=[tfpconv.callbacks.PatternPruning(4, 0.6, verbose=0)]
    )
    path = tmp_path / "pruned.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    for name in ("f1", "f2"):
        np.testing.assert_array_equal(
            reloaded.get_layer(name).kernel.numpy(), model.get_layer(name).kernel.numpy()
        )
    assert_pattern_sparse(reloaded, 4, 0.6)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_prune_patterns_one_shot_and_summary():
    model = build(sequential_model)
    report = tfpconv.prune_patterns(model, num_patterns=8, connectivity=0.72)
    assert [s.name for s in report.layers] == ["c1", "c2", "c3"]
    assert all(s.pattern_conforming for s in report.layers)
    assert_pattern_sparse(model, 8, 0.72, first_layer="patterns", allocation="uniform")
    lines = []
    full = tfpconv.summary(model, print_fn=lines.append)
    assert "c5x5" in full.skipped and "5x5" in full.skipped["c5x5"]
    assert "c2" in lines[0] and "fewer" in lines[0]
    c2 = full.layer("c2")
    assert c2.kernels == 8 * 12 and c2.kernels_kept == 96 - patterns.num_to_prune(96, 0.72)
    assert c2.weights_kept == 4 * c2.kernels_kept
    assert sum(c2.pattern_histogram.values()) == c2.kernels_kept
    assert c2.flops == 2 * 5 * 5 * c2.weights  # stride 2: 5x5 output
    assert c2.flops_kept == 2 * 5 * 5 * c2.weights_kept
    assert full.to_dict()["layers"][1]["name"] == "c2"


def test_summary_of_a_dense_model_shows_nothing_pattern_sparse():
    report = tfpconv.summary(build(sequential_model), print_fn=None)
    assert all(s.kernels_not_pattern == s.kernels for s in report.layers)


def test_no_prunable_layer_says_what_was_found():
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(4, 5, name="big"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="fc"),
        ]
    )
    with pytest.raises(ValueError, match=r"no prunable layer.*big: kernel 5x5.*fc \(Dense\)"):
        tfpconv.prune_patterns(model)
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="no prunable layer"):
        model.fit(
            np.zeros((4, 10, 10, 3)),
            np.zeros((4, 2)),
            verbose=0,
            callbacks=[tfpconv.callbacks.PatternPruning(verbose=0)],
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_patterns": 0}, "num_patterns"),
        ({"num_patterns": 57}, "num_patterns"),
        ({"connectivity": 1.0}, "connectivity"),
        ({"connectivity": -0.2}, "connectivity"),
        ({"method": "l1"}, "unknown method 'l1'"),
        ({"library": [0b000111010, 0b000111010]}, "repeated"),
        ({"library": [3]}, "not a 3x3 pattern"),
        ({"rho": 0}, "rho"),
        ({"pruning_epochs": -1}, "pruning_epochs"),
        ({"update_every": 0}, "update_every"),
        ({"connectivity_allocation": "random"}, "unknown connectivity_allocation 'random'"),
        ({"filter_group": 0}, "filter_group must be >= 1"),
        ({"filter_group": "four"}, "filter_group must be 'auto' or a positive integer"),
        ({"method": "admm", "dual_decay": 1.5}, r"dual_decay must be in \[0, 1\]"),
        ({"dual_decay": -0.1}, r"dual_decay must be in \[0, 1\]"),
        ({"dual_decay": "fast"}, "dual_decay must be 'auto' or a number in"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfpconv.callbacks.PatternPruning(**kwargs)


def test_bad_prune_patterns_arguments_and_layer_names():
    model = build(sequential_model)
    with pytest.raises(ValueError, match="num_patterns"):
        tfpconv.prune_patterns(model, num_patterns=99)
    with pytest.raises(ValueError, match="connectivity"):
        tfpconv.prune_patterns(model, connectivity=1.2)
    with pytest.raises(ValueError, match="unknown connectivity_allocation 'ER'"):
        tfpconv.prune_patterns(model, connectivity_allocation="ER")
    with pytest.raises(ValueError, match="'nope' is not a 3x3 Conv2D"):
        tfpconv.prune_patterns(model, layers=["nope"])
    with pytest.raises(ValueError, match="'c5x5' cannot be pruned: kernel 5x5"):
        tfpconv.prune_patterns(model, layers=["c5x5"])


def test_pruning_epochs_must_leave_a_hard_phase():
    model = build(sequential_model)
    x, y = data(n=16)
    with pytest.raises(ValueError, match="leaves no epoch for the hard phase"):
        model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[tfpconv.callbacks.PatternPruning(pruning_epochs=2, verbose=0)],
        )


@pytest.mark.parametrize("method", ["admm", "magnitude"])
def test_fine_tuning_a_one_shot_pruned_model_keeps_its_library(method):
    model = build(sequential_model)
    x, y = data(n=32)
    report = tfpconv.prune_patterns(model, num_patterns=8, connectivity=0.72)
    projected = {name: model.get_layer(name).kernel.numpy() for name in ("c1", "c2", "c3")}
    seen_at_start = {}

    class RecordKernels(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen_at_start.update({n: model.get_layer(n).kernel.numpy() for n in projected})

    callback = tfpconv.callbacks.PatternPruning(  # the one-shot defaults, to keep its masks
        8,
        0.72,
        method=method,
        first_layer="patterns",
        connectivity_allocation="uniform",
        verbose=0,
    )
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[callback, RecordKernels()], verbose=0)
    assert sorted(callback.library.tolist()) == sorted(report.library)
    for name, kernel in projected.items():  # the start of training moved no weight
        np.testing.assert_array_equal(seen_at_start[name], kernel, err_msg=name)
    assert_pattern_sparse(model, 8, 0.72, first_layer="patterns", allocation="uniform")


@pytest.mark.parametrize("pruning_epochs", [1, 0])
def test_a_subclassed_model_never_called_before_fit_is_pruned(pruning_epochs):
    model = Subclassed()
    assert not model.built
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = data(n=32)
    callback = tfpconv.callbacks.PatternPruning(4, 0.5, pruning_epochs=pruning_epochs, verbose=0)
    history = model.fit(x, y, batch_size=16, epochs=2, callbacks=[callback], verbose=0)
    assert_pattern_sparse(model, 4, 0.5)
    assert len(callback.codes) == 2  # the stem is the first convolution, left dense
    assert history.history["pconv_gap"][-1] == 0.0


def read_scalars(log_dir):
    """Every scalar TensorBoard event under ``log_dir``: tag -> list of values."""
    scalars = {}
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = float(tf.make_ndarray(value.tensor))
                    scalars.setdefault(value.tag, []).append(number)
    return scalars


def test_tensorboard_listed_after_the_callback_records_the_pconv_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    model = build(sequential_model)
    x, y = data(n=32)
    callbacks = [
        tfpconv.callbacks.PatternPruning(8, 0.5, verbose=0),
        keras.callbacks.TensorBoard(log_dir=str(tmp_path)),
    ]
    history = model.fit(x, y, batch_size=16, epochs=2, callbacks=callbacks, verbose=0)
    scalars = read_scalars(tmp_path)
    assert scalars["epoch_pconv_connectivity"] == pytest.approx([0.5, 0.5])
    assert scalars["epoch_pconv_density"] == pytest.approx(history.history["pconv_density"])
    assert scalars["epoch_pconv_density"][-1] < 0.45


def test_summary_of_a_subclassed_model_counts_flops():
    class Strided(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, strides=2, name="strided")
            self.same = keras.layers.Conv2D(4, 3, padding="same", name="same")

        def call(self, x):
            return self.same(self.conv(x))

    model = Strided()
    model(np.zeros((2, 10, 10, 3), np.float32))
    report = tfpconv.summary(model, print_fn=None)
    strided, same = report.layer("strided"), report.layer("same")
    assert strided.flops == 2 * 4 * 4 * strided.weights  # valid, stride 2: 4x4
    assert same.flops == 2 * 4 * 4 * same.weights
    assert "n/a" not in report.table()


def test_verbose_start_reports_the_convolutions_left_alone(capsys):
    model = build(sequential_model)
    x, y = data(n=16)
    callback = tfpconv.callbacks.PatternPruning(8, 0.5, layers=["c3"], verbose=1)
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[callback], verbose=0)
    out = capsys.readouterr().out
    assert "tfpconv: pruning 1 layers" in out
    assert "left alone (kernel 5x5, only 3x3 is pruned): c5x5" in out
    assert "left alone (not selected by the layers filter): c2" in out
    assert "left alone (the model's first convolution, first_layer='dense'): c1" in out


def test_naming_the_first_convolution_needs_first_layer_patterns():
    model = build(sequential_model)
    x, y = data(n=16)
    callback = tfpconv.callbacks.PatternPruning(8, 0.5, layers=["c1", "c3"], verbose=0)
    with pytest.raises(ValueError, match="'c1', the model's first convolution.*first_layer="):
        model.fit(x, y, batch_size=16, epochs=2, callbacks=[callback], verbose=0)
    with pytest.raises(ValueError, match="unknown first_layer 'none'"):
        tfpconv.callbacks.PatternPruning(8, 0.5, first_layer="none")
    callback = tfpconv.callbacks.PatternPruning(
        8, 0.5, layers=["c1", "c3"], first_layer="patterns", verbose=0
    )
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[callback], verbose=0)
    assert set(callback.codes) == {"c1", "c3"}
    assert (callback.codes["c1"] == patterns.PRUNED).sum() == 0  # patterns only


def counted_updates(callback) -> list[int]:
    """The steps at which ``callback`` updates (projects, or runs an ADMM round), filled by fit."""
    updates = []
    update = callback._update
    callback._update = lambda: (updates.append(callback._step), update())
    return updates


def test_updates_spread_over_the_pruning_phase_and_rho_reaches_its_maximum():
    model = build(sequential_model)
    x, y = data(n=128)
    callback = tfpconv.callbacks.PatternPruning(
        8, 0.5, method="admm", pruning_epochs=2, rho_max=40.0, verbose=0
    )
    updates = counted_updates(callback)
    history = model.fit(x, y, batch_size=4, epochs=3, callbacks=[callback], verbose=0)
    # 32 steps per epoch, 64 in the pruning phase: 256 rounds spread over it is one every step;
    # rho grows over the 48 rounds of the ramp.
    assert updates == list(range(1, 65))
    assert history.history["pconv_rho"] == [pytest.approx(40.0 ** (32 / 48)), 40.0]
    ramp = history.history["pconv_connectivity"]
    assert ramp[0] < 0.5 and ramp[1:] == [pytest.approx(0.5)] * 2


def test_magnitude_projections_are_eight_times_as_many_as_the_machinerys_updates():
    x, y = data(n=128)
    pruning = tfpconv.callbacks.PatternPruning(8, 0.5, pruning_epochs=2, verbose=0)
    machinery = SparsityTraining(
        [PatternConnectivity(8, 0.5, first_layer="patterns")], pruning_epochs=2, verbose=0
    )
    for callback, every in [(pruning, 1), (machinery, 8)]:
        updates = counted_updates(callback)
        model = build(sequential_model)
        model.fit(x, y, batch_size=1, epochs=3, callbacks=[callback], verbose=0)
        # 128 steps per epoch, 256 in the pruning phase: 256 projections, or 32 updates.
        assert updates == list(range(every, 257, every))
    assert PATTERN_PROJECTIONS_PER_PHASE == 8 * UPDATES_PER_PHASE == 256


def test_steps_per_execution_above_one_warns_and_still_ends_pattern_sparse():
    model = sequential_model()
    model.compile("adam", "sparse_categorical_crossentropy", steps_per_execution=2)
    x, y = data(n=64)
    callback = tfpconv.callbacks.PatternPruning(8, 0.5, verbose=0)
    with pytest.warns(UserWarning, match="steps_per_execution=2.*once per 2 steps"):
        model.fit(x, y, batch_size=16, epochs=2, callbacks=[callback], verbose=0)
    assert_pattern_sparse(model, 8, 0.5)


@pytest.mark.parametrize("layers", [[], lambda layer: False], ids=["empty-list", "predicate"])
def test_a_layer_filter_that_selects_nothing_says_so(layers):
    model = build(sequential_model)
    with pytest.raises(ValueError, match=r"layers filter .* selected none.*'c1', 'c2', 'c3'"):
        tfpconv.prune_patterns(model, layers=layers)


def test_fashion_mnist_is_the_real_data_set(tmp_path):
    (x_train, y_train), (x_test, y_test) = tfpconv.datasets.fashion_mnist()
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.float32 and x_train.min() >= 0.0 and x_train.max() <= 1.0
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        tfpconv.datasets.fashion_mnist(tmp_path)


@pytest.mark.parametrize("method", ["admm", "magnitude"])
def test_connectivity_per_layer_name(method):
    model = build(sequential_model)
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(
        8, {"c2": 0.75, "c3": 0.5}, method=method, update_every=2, verbose=0
    )
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[callback], verbose=0)
    removed = {
        name: int((callback.codes[name] == patterns.PRUNED).sum()) for name in callback.codes
    }
    # c2 has 8x12 kernels, c3 6x10; c1, the first convolution, is left dense.
    assert removed == {
        "c2": patterns.num_to_prune(96, 0.75),
        "c3": patterns.num_to_prune(60, 0.5),
    }


def test_connectivity_per_layer_refuses_unknown_layers():
    model = build(sequential_model)
    x, y = data()
    callback = tfpconv.callbacks.PatternPruning(8, {"c5x5": 0.5}, verbose=0)
    with pytest.raises(ValueError, match="c5x5"):
        model.fit(x, y, batch_size=16, epochs=2, callbacks=[callback], verbose=0)


def test_the_hard_phase_decays_a_plain_learning_rate_and_gives_it_back():
    model = build(sequential_model)  # Adam(1e-2)
    x, y = data(n=64)
    seen = []

    class RecordLearningRate(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(self.model.optimizer.learning_rate))

    callback = tfpconv.callbacks.PatternPruning(8, 0.5, pruning_epochs=1, verbose=0)
    model.fit(x, y, batch_size=8, epochs=3, callbacks=[callback, RecordLearningRate()], verbose=0)
    pruning, hard = seen[:8], seen[8:]
    assert pruning == [pytest.approx(1e-2)] * 8
    assert all(a > b for a, b in zip(hard, hard[1:], strict=False))
    assert hard[0] < 1e-2 and hard[-1] < 1e-3
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)  # given back

    seen.clear()
    model = build(sequential_model)
    callback = tfpconv.callbacks.PatternPruning(8, 0.5, hard_phase_lr=None, verbose=0)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[callback, RecordLearningRate()], verbose=0)
    assert seen == [pytest.approx(1e-2)] * 16

    seen.clear()
    model = build(sequential_model)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, 1, 0.9)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    callback = tfpconv.callbacks.PatternPruning(8, 0.5, verbose=0)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[callback, RecordLearningRate()], verbose=0)
    assert seen == [pytest.approx(1e-2 * 0.9**step) for step in range(1, 17)]
    assert_pattern_sparse(model, 8, 0.5)
