"""One-layer models: a planned convolution re-built alone, for per-layer timing and tuning."""

from __future__ import annotations

from tfpconv.tflite.conversion import convert_model
from tfpconv.tflite.model_file import TFLiteModel, schema, tensor_shape, unpack_float32
from tfpconv.tflite.plan import PatternConvPlan

_ACTIVATIONS = {
    schema.ActivationFunctionType.NONE: None,
    schema.ActivationFunctionType.RELU: "relu",
    schema.ActivationFunctionType.RELU6: "relu6",
}


def single_conv_model(model: TFLiteModel, conv: PatternConvPlan) -> bytes:
    """The planned CONV_2D re-built alone (same input shape, weights, bias, options), converted."""
    import keras  # only here: timing and tuning need Keras to re-build a layer

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
    layer = keras.layers.Conv2D(
        conv.out_channels,
        3,
        strides=(options.strideH, options.strideW),
        padding="same" if options.padding == schema.Padding.SAME else "valid",
        activation=_ACTIVATIONS.get(options.fusedActivationFunction),
        use_bias=bias_data is not None,
    )
    keras_model = keras.Sequential([keras.Input(tuple(input_shape[1:]), batch_size=1), layer])
    layer.set_weights([weights] + ([unpack_float32(bias_data)] if bias_data is not None else []))
    return convert_model(keras_model)
