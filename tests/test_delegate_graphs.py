"""Every graph that plain TFLite runs also runs with the tfpconv delegate, with the same outputs.

Real architectures (``keras.applications`` with random weights, small inputs), the repository's own
models, and graphs with dynamic-sized tensors: ``Flatten`` under a dynamic batch (SHAPE /
STRIDED_SLICE / PACK / RESHAPE), EfficientNet, input resizes, convolutions whose input shape is
only known at run time. Each model is pattern-pruned (``prune_patterns``), converted with
``tfpconv.convert`` and run on plain TFLite and with the delegate claiming every planned
convolution it can (``claim="all"``); outputs must agree within 1e-4 relative and the delegate must
really have run the planned convolutions. Loading must never fail because of the delegate.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from ai_edge_litert.interpreter import Interpreter as PlainInterpreter  # noqa: E402

import tfpconv  # noqa: E402
from tfpconv.runtime.delegate import claimed_nodes  # noqa: E402
from tfpconv.tflite.model_file import TFLiteModel  # noqa: E402

RTOL = 1e-4
RUNTIMES = ["litert", "tf.lite"]
layers = keras.layers


def silent(*_args, **_kwargs):
    pass


def pruned_and_converted(model):
    tfpconv.prune_patterns(model, num_patterns=8, connectivity=0.5, print_fn=silent)
    return tfpconv.convert(model)


def planned_nodes(model_bytes):
    return sorted(conv.operator_index for conv in tfpconv.read_plan(model_bytes).convs)


def random_inputs(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def interpreters(model_bytes, runtime):
    """(plain interpreter, delegated interpreter, function giving the delegate's claimed nodes)."""
    if runtime == "litert":
        delegated = tfpconv.Interpreter(model_content=model_bytes, claim="all")
        return PlainInterpreter(model_content=model_bytes), delegated, delegated.delegated_nodes
    tf = pytest.importorskip("tensorflow")
    delegate = tf.lite.experimental.load_delegate(tfpconv.delegate_path(), {"claim": "all"})
    delegated = tf.lite.Interpreter(model_content=model_bytes, experimental_delegates=[delegate])
    return (
        tf.lite.Interpreter(model_content=model_bytes),
        delegated,
        lambda: claimed_nodes(delegate),
    )


def run(interpreter, inputs):
    """All outputs for `inputs`, resizing the input first when its shape differs."""
    details = interpreter.get_input_details()[0]
    if list(details["shape"]) != list(inputs.shape):
        interpreter.resize_tensor_input(details["index"], list(inputs.shape))
    interpreter.allocate_tensors()  # a no-op when nothing changed
    interpreter.set_tensor(details["index"], inputs)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def assert_close(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        assert scale > 0.0 or want.size == 0, "reference output is all zeros: nothing compared"
        error = float(np.max(np.abs(got - want))) / scale if want.size else 0.0
        assert error <= RTOL, f"relative error {error:.3g} > {RTOL}"


def compare(model_bytes, shapes, runtime="litert", seed=0):
    """Runs the inputs of `shapes` in turn on both interpreters; returns the claimed nodes."""
    plain, delegated, claimed = interpreters(model_bytes, runtime)
    for i, shape in enumerate(shapes):
        inputs = random_inputs(shape, seed + i)
        assert_close(run(delegated, inputs), run(plain, inputs))
    return claimed()


# -- keras.applications, random weights, small inputs ----------------------------------------------

APPLICATIONS = {
    # name: (constructor, input size, extra arguments)
    "MobileNetV2": ("MobileNetV2", 32, {"alpha": 0.35}),
    "ResNet50": ("ResNet50", 32, {}),
    "EfficientNetB0": ("EfficientNetB0", 32, {}),
    "DenseNet121": ("DenseNet121", 32, {}),
    "InceptionV3": ("InceptionV3", 75, {}),
    "VGG16": ("VGG16", 32, {}),  # its top is Flatten + Dense: a dynamic-batch graph
}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_keras_applications_match_tflite(name):
    constructor, size, extra = APPLICATIONS[name]
    keras.utils.set_random_seed(1)
    model = getattr(keras.applications, constructor)(
        weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None, **extra
    )
    data = pruned_and_converted(model)
    planned = planned_nodes(data)
    assert planned, f"{name}: no 3x3 convolution was planned"
    # Batch 1, then the input resized to batch 2 on the same interpreters.
    for runtime in RUNTIMES:
        claimed = compare(data, [(1, size, size, 3), (2, size, size, 3)], runtime)
        assert claimed == planned, f"{name} on {runtime}: claimed {claimed}, planned {planned}"


# -- dynamic batch, Flatten, resizing --------------------------------------------------------------


def flatten_model(seed=2):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((12, 12, 6)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.Conv2D(16, 3, strides=2, padding="valid"),
            layers.Flatten(),
            layers.Dense(7),
        ]
    )


@pytest.fixture(scope="module")
def flatten_bytes():
    return pruned_and_converted(flatten_model())


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_flatten_dense_with_dynamic_batch_loads_and_matches(flatten_bytes, runtime):
    claimed = compare(flatten_bytes, [(1, 12, 12, 6)], runtime)
    assert claimed == planned_nodes(flatten_bytes) == [0, 1]


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_resize_to_batch_4_then_allocate_tensors(flatten_bytes, runtime):
    # Resized before the first allocate_tensors, then again to batch 4, 1 and 3.
    plain, delegated, claimed = interpreters(flatten_bytes, runtime)
    for batch in (4, 1, 3):
        inputs = random_inputs((batch, 12, 12, 6), batch)
        for interpreter in (plain, delegated):
            interpreter.resize_tensor_input(
                interpreter.get_input_details()[0]["index"], inputs.shape
            )
            interpreter.allocate_tensors()
        outputs = run(delegated, inputs)
        assert outputs[0].shape == (batch, 7)
        assert_close(outputs, run(plain, inputs))
    assert claimed() == [0, 1]


def test_conv_after_a_computed_reshape():
    # Reshape under a dynamic batch: the first convolution's input is a dynamic-sized tensor whose
    # shape TFLite knows only while running the graph; the delegate kernel is prepared then.
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((400,)),
            layers.Reshape((10, 10, 4)),
            layers.Conv2D(12, 3, padding="same"),
            layers.Conv2D(8, 3, padding="same", activation="relu"),
            layers.Flatten(),
            layers.Dense(3),
        ]
    )
    data = pruned_and_converted(model)
    claimed = compare(data, [(1, 400), (4, 400), (2, 400)])
    assert claimed == planned_nodes(data) and len(claimed) == 2


def test_height_and_width_known_only_at_run_time():
    # Input (None, None, 6): the file holds a placeholder shape; the delegate packs the
    # convolutions for the real sizes (also the VALID one the placeholder would leave empty).
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((None, None, 6)),
            layers.Conv2D(12, 3, padding="same", activation="relu"),
            layers.Conv2D(8, 3, strides=2, padding="valid"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(3),
        ]
    )
    data = pruned_and_converted(model)
    claimed = compare(data, [(1, 20, 20, 6), (3, 9, 13, 6), (1, 20, 20, 6)])
    assert claimed == planned_nodes(data) == [0, 1]


def test_efficientnet_b0_with_default_claim_policy_loads():
    # The default policy (no claim="all"): EfficientNet's only 3x3 CONV_2D has 3 input channels
    # and stays with TFLite; the model must still load and match.
    keras.utils.set_random_seed(5)
    model = keras.applications.EfficientNetB0(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    data = pruned_and_converted(model)
    inputs = random_inputs((1, 32, 32, 3), 5)
    delegated = tfpconv.Interpreter(model_content=data)
    delegated.allocate_tensors()
    plain = PlainInterpreter(model_content=data)
    plain.allocate_tensors()
    assert_close(run(delegated, inputs), run(plain, inputs))
    assert delegated.delegated_nodes() == []


# -- max pools between claimed convolutions --------------------------------------------------------


def pooled_model(seed=7):
    """Pools where VGG and ResNet have them, on odd sizes: 17x13 -> 9x7 -> 5x4 -> 2x2 -> 1x1."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((17, 13, 6)),
            layers.MaxPooling2D(2, padding="same"),  # reads the model input: TFLite's
            layers.Conv2D(12, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2, padding="same"),  # SAME on 9x7
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),  # VGG's 2x2/2 VALID, on 5x4
            layers.Conv2D(8, 3, padding="same"),
            layers.MaxPooling2D(3, strides=2, padding="same"),  # a ResNet stem's 3x3/2
            layers.GlobalAveragePooling2D(),
            layers.Dense(3),
        ]
    )


def operators_named(model_bytes, name):
    return [op for op in TFLiteModel.from_bytes(model_bytes).operators() if op.name == name]


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_max_pools_after_claimed_convs_join_the_delegates_partition(capfd):
    data = pruned_and_converted(pooled_model())
    pool_ops = operators_named(data, "MAX_POOL_2D")
    pools = [op.operator_index for op in pool_ops]
    convs = [op.operator_index for op in operators_named(data, "CONV_2D")]
    assert len(pools) == 4 and len(convs) == 3 and convs == planned_nodes(data)
    capfd.readouterr()
    delegated = tfpconv.Interpreter(
        model_content=data, claim="all", log_level="info", num_threads=2
    )
    plain = PlainInterpreter(model_content=data)
    for i, shape in enumerate([(1, 17, 13, 6), (2, 17, 13, 6), (1, 10, 21, 6)]):
        inputs = random_inputs(shape, 10 + i)
        assert_close(run(delegated, inputs), run(plain, inputs))
    err = capfd.readouterr().err
    # The record lists the convolutions; the log names the pools the delegate took.
    assert delegated.delegated_nodes() == convs
    assert [int(n) for n in re.findall(r"claimed MAX_POOL_2D node (\d+)", err)] == pools[1:], err
    declined = f"declined MAX_POOL_2D node {pools[0]}: its input is not produced by a node the"
    assert declined in err, err
    # One partition from the first pool's output to the last pool's (LiteRT's XNNPACK takes
    # what is left in delegate nodes of its own).
    first_pool_output, last_pool_output = pool_ops[0].op.outputs[0], pool_ops[-1].op.outputs[0]
    partitions = [
        op
        for op in delegated._get_ops_details()
        if op["op_name"] == "DELEGATE" and last_pool_output in op["outputs"]
    ]
    assert len(partitions) == 1 and list(partitions[0]["outputs"]) == [last_pool_output]
    assert first_pool_output in partitions[0]["inputs"]
    # tf.lite with the external delegate: same numbers.
    assert compare(data, [(1, 17, 13, 6)], "tf.lite") == convs


# -- the repository's own models -------------------------------------------------------------------

OWN_MODELS = {
    "small_vgg": ("small_vgg", (28, 28, 1)),
    "vgg16": ("vgg16", (32, 32, 3)),
    "resnet18": ("resnet18", (32, 32, 3)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OWN_MODELS))
def test_repository_models_match_tflite(name):
    constructor, input_shape = OWN_MODELS[name]
    keras.utils.set_random_seed(6)
    model = getattr(tfpconv.models, constructor)(input_shape=input_shape, num_classes=10)
    data = pruned_and_converted(model)
    planned = planned_nodes(data)
    assert planned
    claimed = compare(data, [(1, *input_shape), (4, *input_shape)])
    assert claimed == planned
