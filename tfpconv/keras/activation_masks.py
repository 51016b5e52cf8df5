"""Semi-structured activation sparsity in Keras: the ``SpatialMask`` layer and the model surgery.

A :class:`SpatialMask` multiplies a convolution's output ``(N, H, W, C)`` by a fixed 0/1 mask of
shape ``(1, H, W, 1)`` that all channels share (a non-trainable weight named ``mask``). The mask's
*unit* ``(rows, pixels)`` is a block of output pixels masked as a whole; the mask values come from
:mod:`tfpconv.sparsity.activation`.

:func:`insert_masks` returns a copy of a model with a mask after every selected ``Conv2D``, placed
at the end of the convolution's element-wise chain: past a ``BatchNormalization``, ``Activation``
or ``ReLU`` that is the only consumer of the tensor. Masked outputs are then exactly 0, BatchNorm
still folds into the convolution, and TFLite's converter produces ``CONV_2D`` (with its fused
activation) followed by a ``MUL`` with a constant ``[1, H, W, 1]`` tensor, which plain TFLite runs
as it is.

Works on functional and Sequential models of Keras 3 and ``tf_keras``; the layer class of each
flavour (:class:`SpatialMask`, :data:`TfKerasSpatialMask`) is registered for saving, so saved
models reload with their masks after ``import tfpconv.keras.activation_masks``.

Example::

    masked = insert_masks(model, sparsity=0.3, unit=(8, 16))
    # One score map at the input's height and width; each layer masks 30% of its units.
    scores = activation.random_score_map(np.random.default_rng(0), 32, 32)
    set_masks(masked, scores)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfpconv.keras import compat, graph
from tfpconv.keras.graph import Call
from tfpconv.sparsity import activation

__all__ = [
    "DEFAULT_UNIT",
    "SpatialMask",
    "SpatialMaskBase",
    "TfKerasSpatialMask",
    "insert_masks",
    "mask_layers",
    "masked_conv_of",
    "set_masks",
]

#: A unit when none is given: runs of 16 pixels along a row. ``tfpconv.activation.sparsify`` passes
#: the engine's units instead (``tfpconv.activation.activation_unit``), which depend on the layer.
DEFAULT_UNIT = (1, 16)

#: A unit, or a function of a masked layer's output height and width that gives its unit.
UnitRule = int | Sequence[int] | Callable[[int, int], Any]

#: Selects convolutions: None for the default, a list of layer names, or a predicate on layers.
ConvFilter = Sequence[str] | Callable[[Any], bool] | None


class SpatialMaskBase:
    """The logic of the ``SpatialMask`` layer, shared by its Keras 3 and tf_keras classes.

    Mixed in before the flavour's ``Layer`` class. ``unit`` (``(rows, pixels)``; an int ``n`` is
    ``(1, n)``, runs along a row) and
    ``sparsity`` (the target fraction of masked units, used by :func:`set_masks` and the training
    callback) are its config; the mask itself is the weight ``mask``, initialised to ones.
    """

    def __init__(
        self, unit: int | Sequence[int] = DEFAULT_UNIT, sparsity: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.unit = activation.check_unit(unit)
        self.sparsity = activation.check_sparsity(sparsity)
        self._mask_variable: Any = None

    def build(self, input_shape: Any) -> None:
        """Create the ``(1, H, W, 1)`` mask weight; H and W must be static."""
        shape = tuple(None if d is None else int(d) for d in tf.TensorShape(input_shape))
        if len(shape) != 4:
            raise ValueError(
                f"SpatialMask layer {self.name!r} expects (batch, height, width, channels) "
                f"inputs, got shape {shape}"
            )
        if shape[1] is None or shape[2] is None:
            raise ValueError(
                f"SpatialMask layer {self.name!r} needs a static height and width, got input "
                f"shape {shape}; build the model on an Input with a fixed image size"
            )
        self._mask_variable = self.add_weight(
            name="mask",
            shape=(1, shape[1], shape[2], 1),
            initializer="ones",
            trainable=False,
            dtype="float32",
        )
        super().build(input_shape)

    def call(self, inputs: Any, training: Any = None) -> Any:
        """``inputs * mask``, the mask broadcast over batch and channels.

        Outside training the product is taken with height and width swapped (the same numbers,
        exactly): that form keeps TF's converter from rewriting ``(conv + bias) * mask`` into
        ``conv * mask + bias * mask`` (see :func:`_export_multiply`).
        """
        mask = tf.cast(self._mask_variable, inputs.dtype)
        if training is True:
            return tf.multiply(inputs, mask)
        return _export_multiply(inputs, mask)

    def compute_output_shape(self, input_shape: Any) -> Any:
        """The input shape: masking changes no shape."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The layer's config: the base layer's, ``unit`` and ``sparsity``."""
        return {**super().get_config(), "unit": list(self.unit), "sparsity": self.sparsity}

    # -- the mask ------------------------------------------------------------------------------

    def _check_built(self) -> None:
        if self._mask_variable is None:
            raise ValueError(
                f"SpatialMask layer {self.name!r} is not built yet: call it on an input first"
            )

    @property
    def mask_variable(self) -> Any:
        """The ``mask`` weight, shape ``(1, H, W, 1)``."""
        self._check_built()
        return self._mask_variable

    @property
    def mask_shape(self) -> tuple[int, int]:
        """The mask's ``(H, W)``."""
        self._check_built()
        return tuple(int(d) for d in self._mask_variable.shape[1:3])

    @property
    def mask(self) -> np.ndarray:
        """The current mask as a float32 ``(H, W)`` array of 0/1."""
        self._check_built()
        return np.array(compat.read(self._mask_variable)[0, :, :, 0], dtype=np.float32)

    def set_mask(self, mask: Any) -> None:
        """Set the mask: an ``(H, W)`` array of 0/1 in which every unit is all 0 or all 1.

        Raises:
          ValueError: the layer is not built, or the mask has another shape, values other than
            0 and 1, or a partly masked unit (the message names the layer).
        """
        self._check_built()
        values = np.asarray(mask)
        activation.check_mask(
            values, self.mask_shape, self.unit, what=f"SpatialMask layer {self.name!r}"
        )
        compat.assign(self._mask_variable, values.astype(np.float32)[None, :, :, None])

    @property
    def masked_fraction(self) -> float:
        """The fraction of this layer's units that are currently masked."""
        return activation.masked_unit_fraction(self.mask, self.unit)


_SWAP_HW = (0, 2, 1, 3)


def _export_multiply(inputs: Any, mask: Any) -> Any:
    """``inputs * mask`` computed as ``T(T(inputs) * T(mask))``, T swapping height and width.

    TF's converter (its TF-dialect pattern ``PassthroughMulAndBiasAdd`` / ``...AndAddV2``) moves
    a multiplication by a constant in front of a preceding convolution's bias add, hoping to fold
    it into the kernel; a spatial mask cannot fold, so the plain product would convert to
    ``CONV_2D (no bias) -> MUL -> ADD`` with a ``[1, H, W, C]`` constant holding ``bias * mask``
    whenever no activation separates the convolution from the mask. Behind a transpose the
    pattern does not match, TFLite's optimizer then cancels the two transposes (moving the
    first through the MUL and transposing the constant), and the file holds
    ``CONV_2D (bias, fused activation) -> MUL`` by the ``[1, H, W, 1]`` mask.
    """
    swapped = tf.multiply(tf.transpose(inputs, _SWAP_HW), tf.transpose(mask, _SWAP_HW))
    return tf.transpose(swapped, _SWAP_HW)


@keras.saving.register_keras_serializable(package="tfpconv")
class SpatialMask(SpatialMaskBase, keras.layers.Layer):
    """Keras 3 layer: multiplies ``(N, H, W, C)`` inputs by a shared ``(1, H, W, 1)`` 0/1 mask.

    Args:
      unit: ``(rows, pixels)`` of a unit (the mask's granularity), default ``(1, 16)``; an int
        ``n`` means ``(1, n)``.
      sparsity: the target fraction of masked units in [0, 1) (the mask starts all ones).
      **kwargs: the base layer's (``name``, ``dtype``, ...).
    """


_tf_keras = compat.tf_keras_module()
if _tf_keras is not None:

    @_tf_keras.utils.register_keras_serializable(package="tfpconv", name="SpatialMask")
    class TfKerasSpatialMask(SpatialMaskBase, _tf_keras.layers.Layer):
        """The tf_keras (Keras 2) ``SpatialMask``: the same layer for ``tf_keras`` models."""

else:  # pragma: no cover - tf_keras is an optional extra
    TfKerasSpatialMask = None  # type: ignore[assignment,misc]


# -- the model graph -----------------------------------------------------------------------------


def _flavour(model: Any) -> Any:
    """The Keras module ``model`` belongs to: ``keras`` or ``tf_keras``."""
    return compat.tf_keras_module() if compat.is_tf_keras_object(model) else keras


def _model_classes() -> tuple[type, ...]:
    tf_keras = compat.tf_keras_module()
    return (keras.Model,) if tf_keras is None else (keras.Model, tf_keras.Model)


def _chain_classes() -> tuple[type, ...]:
    """The element-wise layers a mask moves past: BatchNormalization, Activation, ReLU."""
    classes: list[type] = list(compat.batch_norm_classes())
    for module in (keras, compat.tf_keras_module()):
        if module is not None:
            classes += [module.layers.Activation, module.layers.ReLU]
    return tuple(classes)


def _is_plain_conv2d(layer: Any) -> bool:
    return isinstance(layer, compat.conv2d_classes()) and not isinstance(
        layer, compat.excluded_conv_classes()
    )


def _model_calls(model: Any) -> list[Call]:
    """The model's layer calls in topological order (input layers left out)."""
    calls = graph.layer_calls(model)
    if calls is None:
        raise ValueError(
            f"activation masks need a functional or Sequential model built on an Input; "
            f"{type(model).__name__} {getattr(model, 'name', '')!r} has no layer graph "
            "(subclassed or unbuilt models cannot be followed)"
        )
    seen = set()
    for call in calls:
        if id(call.layer) in seen:
            raise ValueError(
                f"layer {call.layer.name!r} is called more than once in model {model.name!r}; "
                "activation masks cannot follow shared layers"
            )
        seen.add(id(call.layer))
    return calls


def _chain_end(call: Call, consumers: dict[int, list[Call]], output_uses: dict[int, int]) -> Any:
    """The tensor a mask after ``call``'s layer goes on: past BN / Activation / ReLU layers that
    are the only consumer of the current tensor (a model output counts as a consumer)."""
    tensor = call.outputs[0]
    while True:
        users = consumers.get(id(tensor), [])
        if len(users) != 1 or output_uses.get(id(tensor), 0):
            return tensor
        user = users[0]
        if not isinstance(user.layer, _chain_classes()) or len(user.inputs) != 1:
            return tensor
        tensor = user.outputs[0]


# -- selection -----------------------------------------------------------------------------------


def _default_selected(layer: Any, pointwise: bool) -> bool:
    kernel = tuple(layer.kernel_size)
    return pointwise or kernel[0] * kernel[1] > 1


def _select_convs(model: Any, calls: list[Call], layers: ConvFilter, pointwise: bool) -> list:
    """The Conv2D layers that get a mask, in model order."""
    convs = [call.layer for call in calls if _is_plain_conv2d(call.layer)]
    names = [conv.name for conv in convs]
    if layers is None:
        chosen = [conv for conv in convs if _default_selected(conv, pointwise)]
    elif callable(layers):
        chosen = [conv for conv in convs if layers(conv)]
    else:
        if isinstance(layers, str):
            raise TypeError(f"layers must be a list of layer names, got the string {layers!r}")
        wanted = list(layers)
        unknown = [name for name in wanted if name not in names]
        if unknown:
            raise ValueError(
                f"no Conv2D layer named {', '.join(map(repr, unknown))} in model {model.name!r}; "
                f"its Conv2D layers: {names or 'none'}"
            )
        chosen = [conv for conv in convs if conv.name in wanted]
    for conv in chosen:
        if getattr(conv, "data_format", "channels_last") != "channels_last":
            raise ValueError(
                f"Conv2D layer {conv.name!r} is channels_first; activation masks need "
                "channels_last outputs (batch, height, width, channels)"
            )
    if not chosen:
        raise ValueError(
            f"no Conv2D layer of model {model.name!r} is selected for activation masks "
            f"(Conv2D layers: {names or 'none'}; by default those with kernels larger than 1x1, "
            "pointwise=True adds 1x1)"
        )
    return chosen


def _check_no_masks(model: Any) -> None:
    existing = [layer.name for layer in mask_layers(model)]
    if existing:
        raise ValueError(
            f"model {model.name!r} already has SpatialMask layers ({existing}); insert_masks "
            "works on a model without activation masks"
        )


def _check_nested(calls: list[Call]) -> None:
    for call in calls:
        if isinstance(call.layer, _model_classes()):
            inner = [
                layer.name for layer in compat.flatten_layers(call.layer) if _is_plain_conv2d(layer)
            ]
            if inner:
                raise ValueError(
                    f"layer {call.layer.name!r} is a nested model with Conv2D layers ({inner}); "
                    "insert_masks does not go into nested models: flatten the model first"
                )


# -- surgery -------------------------------------------------------------------------------------

_REUSED_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}


def _clone_layer(layer: Any, flavour: Any) -> Any:
    """A fresh copy of a layer from its config (weights are copied once the model is built)."""
    if isinstance(layer, _model_classes()):  # a nested model without convolutions
        return flavour.models.clone_model(layer)
    if not isinstance(layer, flavour.layers.Layer):
        return layer  # a Keras 3 operation (keras.ops.*) in the graph: stateless
    if type(layer).__name__ in _REUSED_LAYERS and not layer.weights:
        # Keras 3 refuses to rebuild a Python lambda from its config; a layer without weights
        # can serve both models.
        return layer
    return type(layer).from_config(layer.get_config())


def _mask_class(flavour: Any) -> type:
    return SpatialMask if flavour is keras else TfKerasSpatialMask


_FLOAT_POLICIES = {"float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16"}


def _float_policy(layer: Any) -> str | None:
    """The name of the layer's dtype policy if it is a float one (a mask follows its layer's
    mixed precision), else None for the default."""
    name = getattr(getattr(layer, "dtype_policy", None), "name", None)
    return name if name in _FLOAT_POLICIES else None


def _call_arguments(node: Any) -> tuple[tuple, dict]:
    """The positional and keyword arguments a node called its layer with."""
    arguments = getattr(node, "arguments", None)  # Keras 3
    if arguments is not None:
        return tuple(arguments.args), dict(arguments.kwargs)
    return tuple(node.call_args), dict(node.call_kwargs)  # tf_keras


def _new_input(flavour: Any, tensor: Any) -> Any:
    shape = tuple(tensor.shape)
    return flavour.Input(
        shape=shape[1:],
        batch_size=shape[0],
        dtype=tensor.dtype,
        name=tensor._keras_history[0].name,
    )


def _structure(model: Any, which: str) -> Any:
    """A functional model's inputs or outputs as it was built (a tensor, list or dict)."""
    for attribute in (f"_{which}_struct", f"_nested_{which}"):  # Keras 3, tf_keras
        value = getattr(model, attribute, None)
        if value is not None:
            return value
    return getattr(model, which)


def _rebuild_functional(model: Any, calls: list[Call], masks: dict[int, Any], flavour: Any) -> Any:
    """The model's graph called again on fresh layers, a mask applied where ``masks`` says."""
    new: dict[int, Any] = {}

    def make_input(tensor: Any) -> Any:
        new[id(tensor)] = _new_input(flavour, tensor)
        return new[id(tensor)]

    def replace(value: Any) -> Any:
        return new[id(value)] if hasattr(value, "_keras_history") else value

    new_inputs = tf.nest.map_structure(make_input, _structure(model, "inputs"))
    for call in calls:
        args, kwargs = tf.nest.map_structure(replace, _call_arguments(call.node))
        outputs = tf.nest.flatten(_clone_layer(call.layer, flavour)(*args, **kwargs))
        for old, out in zip(call.outputs, outputs, strict=True):
            new[id(old)] = masks[id(old)](out) if id(old) in masks else out
    new_outputs = tf.nest.map_structure(lambda t: new[id(t)], _structure(model, "outputs"))
    return flavour.Model(new_inputs, new_outputs, name=model.name)


def _rebuild_sequential(model: Any, calls: list[Call], masks: dict[int, Any], flavour: Any) -> Any:
    """A Sequential model of fresh layers with the masks inserted after their chains."""
    if len(model.inputs) != 1:
        raise ValueError(f"Sequential model {model.name!r} has {len(model.inputs)} inputs")
    layers: list[Any] = [_new_input(flavour, model.inputs[0])]
    for call in calls:
        layers.append(_clone_layer(call.layer, flavour))
        if id(call.outputs[0]) in masks:
            layers.append(masks[id(call.outputs[0])])
    return flavour.Sequential(layers, name=model.name)


def insert_masks(
    model: Any,
    sparsity: float = 0.2,
    unit: UnitRule = DEFAULT_UNIT,
    layers: ConvFilter = None,
    pointwise: bool = False,
) -> Any:
    """A copy of ``model`` with a :class:`SpatialMask` after each selected ``Conv2D``.

    The mask of a convolution goes at the end of its element-wise chain: starting at the
    convolution's output, while the current tensor has exactly one consumer (a model output
    counts as one) and that consumer is a ``BatchNormalization``, ``Activation`` or ``ReLU``
    layer, the mask moves past it. Every consumer of the chain's last tensor (and the model
    output, if it is one) then reads the masked tensor. Masks start all ones, so the new model
    computes what the old one does.

    Args:
      model: a functional or Sequential model (Keras 3 or tf_keras) built on an Input with a
        fixed height and width; nested models are copied as they are, but must not contain
        Conv2D layers.
      sparsity: the masks' target fraction of masked units, in [0, 1) (stored in each layer's
        config; :func:`set_masks` and the training callback use it).
      unit: ``(rows, pixels)`` of every mask's unit (default ``(1, 16)``; an int ``n`` means
        ``(1, n)``), or a function ``(height, width) -> unit`` of each masked layer's output size
        (``tfpconv.activation.activation_unit``, the engine's).
      layers: which convolutions: None for every ``Conv2D`` with a kernel larger than 1x1
        (``DepthwiseConv2D``, ``SeparableConv2D`` and ``Conv2DTranspose`` are not Conv2D
        layers here), a list of Conv2D layer names, or a predicate ``layer -> bool`` over the
        model's Conv2D layers.
      pointwise: with ``layers=None``, also mask 1x1 convolutions.

    Returns:
      A new, uncompiled model of the same flavour and kind (Sequential stays Sequential) with the
      same layer names and weights, plus mask layers named ``f"{conv.name}_mask"``.

    Raises:
      ValueError: an invalid sparsity or unit, unknown layer names (the message lists the
        model's Conv2D layers), nothing selected, a model that already has SpatialMask layers,
        a nested model with Conv2D layers, a shared layer, a model without a layer graph, or a
        masked tensor without a static height and width.
    """
    sparsity = activation.check_sparsity(sparsity)
    unit_of = _unit_rule(unit)
    _check_no_masks(model)
    calls = _model_calls(model)
    _check_nested(calls)
    chosen = _select_convs(model, calls, layers, pointwise)
    flavour = _flavour(model)
    names = {call.layer.name for call in calls} | {t._keras_history[0].name for t in model.inputs}
    consumers, output_uses = graph.consumers(calls), graph.output_uses(model)
    conv_calls = {id(call.layer): call for call in calls}
    is_sequential = isinstance(model, flavour.Sequential)
    masks: dict[int, Any] = {}  # id(tensor) -> the mask layer that goes on it
    for conv in chosen:
        name = f"{conv.name}_mask"
        if name in names:
            raise ValueError(f"model {model.name!r} already has a layer named {name!r}")
        end = _chain_end(conv_calls[id(conv)], consumers, output_uses)
        masks[id(end)] = _mask_class(flavour)(
            unit=unit_of(conv, end),
            sparsity=sparsity,
            name=name,
            dtype=_float_policy(end._keras_history[0]),
        )
    rebuild = _rebuild_sequential if is_sequential else _rebuild_functional
    masked = rebuild(model, calls, masks, flavour)
    for call in calls:
        if getattr(call.layer, "weights", None):  # Keras 3 operations have none
            masked.get_layer(call.layer.name).set_weights(call.layer.get_weights())
    return masked


def _unit_rule(unit: UnitRule) -> Callable[[Any, Any], activation.Unit]:
    """``(conv, masked tensor) -> unit`` for ``insert_masks``' ``unit`` argument (checked now
    when it is a unit, per layer when it is a function)."""
    if not callable(unit):
        fixed = activation.check_unit(unit)
        return lambda conv, tensor: fixed

    def unit_of(conv: Any, tensor: Any) -> activation.Unit:
        height, width = tuple(tensor.shape)[1:3]
        if height is None or width is None:
            raise ValueError(
                f"the output of Conv2D layer {conv.name!r} needs a static height and width for a "
                f"mask, got shape {tuple(tensor.shape)}"
            )
        return activation.check_unit(unit(int(height), int(width)))

    return unit_of


# -- queries -------------------------------------------------------------------------------------


def mask_layers(model: Any) -> list[SpatialMaskBase]:
    """The model's SpatialMask layers (either flavour), in model order."""
    return [layer for layer in compat.flatten_layers(model) if isinstance(layer, SpatialMaskBase)]


def masked_conv_of(model: Any) -> dict[str, str]:
    """For each SpatialMask layer, the Conv2D layer it follows (through BN / Activation / ReLU).

    Masks that do not follow a Conv2D (placed by hand elsewhere) are left out.
    """
    calls = _model_calls(model)
    producer = {id(tensor): call for call in calls for tensor in call.outputs}
    result = {}
    for call in calls:
        if not isinstance(call.layer, SpatialMaskBase):
            continue
        source = producer.get(id(call.inputs[0]))
        while (
            source is not None
            and isinstance(source.layer, _chain_classes())
            and len(source.inputs) == 1
        ):
            source = producer.get(id(source.inputs[0]))
        if source is not None and _is_plain_conv2d(source.layer):
            result[call.layer.name] = source.layer.name
    return result


def set_masks(
    model: Any, score_map: np.ndarray, sparsity: float | None = None
) -> dict[str, np.ndarray]:
    """Set every SpatialMask of ``model`` from one score map at the model's input resolution.

    Each layer gets :func:`tfpconv.sparsity.activation.layer_mask` of the map at its own size
    and unit: ``sparsity`` if given (e.g. a ramp's current value), else the layer's target.

    Returns:
      The masks set, by layer name.
    """
    masks = {}
    for layer in mask_layers(model):
        height, width = layer.mask_shape
        target = layer.sparsity if sparsity is None else sparsity
        masks[layer.name] = activation.layer_mask(score_map, height, width, target, layer.unit)
        layer.set_mask(masks[layer.name])
    return masks
