"""One-layer models: a planned convolution re-built alone, for per-layer timing and tuning."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfpconv.tflite.conversion import convert_model
from tfpconv.tflite.model_file import TFLiteModel, schema, tensor_shape, unpack_float32
from tfpconv.tflite.plan import PatternConvPlan

_ACTIVATIONS = {
    schema.ActivationFunctionType.NONE: None,
    schema.ActivationFunctionType.RELU: "relu",
    schema.ActivationFunctionType.RELU6: "relu6",
}


def conv_model(
    input_shape: Sequence[int],
    kernel: np.ndarray,
    bias: np.ndarray | None,
    strides: int | tuple[int, int] = 1,
    padding: str = "same",
    activation: str | None = None,
) -> bytes:
    """A batch-1 model of one Conv2D (HWIO ``kernel``, ``input_shape`` (h, w, c)), converted."""
    import keras  # only here: timing, tuning and latency tables need Keras to build a layer

    layer = keras.layers.Conv2D(
        kernel.shape[-1],
        kernel.shape[:2],
        strides=strides,
        padding=padding,
        activation=activation,
        use_bias=bias is not None,
    )
    keras_model = keras.Sequential([keras.Input(tuple(input_shape), batch_size=1), layer])
    layer.set_weights([kernel] + ([bias] if bias is not None else []))
    return convert_model(keras_model)


def single_conv_model(model: TFLiteModel, conv: PatternConvPlan) -> bytes:
    """The planned CONV_2D re-built alone (same input shape, weights, bias, options), converted."""
    op = model.model.subgraphs[conv.subgraph_index].operators[conv.operator_index]
    options = op.builtinOptions
    inputs = [int(i) for i in op.inputs]
    input_shape = tensor_shape(model.tensor(conv.subgraph_index, inputs[0]))
    weights = unpack_float32(model.tensor_data(conv.subgraph_index, inputs[1]))
    weights = weights.reshape(conv.kernel_shape).transpose(1, 2, 3, 0)  # OHWI -> HWIO
    bias_data = (
        model.tensor_data(conv.subgraph_index, inputs[2])
        if len(inputs) > 2 and inputs[2] >= 0
        else None
    )
    return conv_model(
        input_shape[1:],
        weights,
        unpack_float32(bias_data) if bias_data is not None else None,
        strides=(options.strideH, options.strideW),
        padding="same" if options.padding == schema.Padding.SAME else "valid",
        activation=_ACTIVATIONS.get(options.fusedActivationFunction),
    )
