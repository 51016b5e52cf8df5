"""The differences between Keras 3 (``import keras``) and Keras 2 (``tf_keras``), in one place.

tfpconv works on models of either flavour, always on the TensorFlow backend. Everything else in
the package goes through these helpers instead of asking which flavour it has.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


def tf_keras_module() -> Any | None:
    """The ``tf_keras`` module if it is installed, else None (it is an optional extra)."""
    try:
        import tf_keras
    except ImportError:
        return None
    return tf_keras


def is_tf_keras_object(obj: Any) -> bool:
    """True for a tf_keras (Keras 2) layer or model."""
    return type(obj).__module__.startswith("tf_keras") or any(
        cls.__module__.startswith("tf_keras") for cls in type(obj).__mro__
    )


def check_backend() -> None:
    """tfpconv targets TFLite, so Keras 3 must run on the TensorFlow backend."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"tfpconv needs Keras' TensorFlow backend, but KERAS_BACKEND is "
            f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow before importing keras"
        )


def flatten_layers(model: Any) -> list[Any]:
    """Every layer inside ``model`` (nested models and layers included), each once, in order."""
    # Both flavours track sub-layers of Sequential, functional and subclassed models and of custom
    # layers; `_flatten_layers` is the one walk they share.
    return list(model._flatten_layers(include_self=False, recursive=True))


def conv2d_classes() -> tuple[type, ...]:
    """The Conv2D layer classes of the installed flavours."""
    classes: list[type] = [keras.layers.Conv2D]
    tf_keras = tf_keras_module()
    if tf_keras is not None:
        classes.append(tf_keras.layers.Conv2D)
    return tuple(classes)


def batch_norm_classes() -> tuple[type, ...]:
    """The BatchNormalization layer classes of the installed flavours."""
    classes: list[type] = [keras.layers.BatchNormalization]
    tf_keras = tf_keras_module()
    if tf_keras is not None:
        classes.append(tf_keras.layers.BatchNormalization)
    return tuple(classes)


def dense_classes() -> tuple[type, ...]:
    """The Dense layer classes of the installed flavours."""
    classes: list[type] = [keras.layers.Dense]
    tf_keras = tf_keras_module()
    if tf_keras is not None:
        classes.append(tf_keras.layers.Dense)
    return tuple(classes)


def excluded_conv_classes() -> tuple[type, ...]:
    """Conv2D subclasses that are not plain convolutions (tf_keras derives these from Conv2D)."""
    classes: list[type] = [keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose]
    tf_keras = tf_keras_module()
    if tf_keras is not None:
        classes += [tf_keras.layers.DepthwiseConv2D, tf_keras.layers.Conv2DTranspose]
    return tuple(classes)


def tf_variable(variable: Any) -> tf.Variable:
    """The TensorFlow variable behind a Keras weight (Keras 3 wraps it; tf_keras does not)."""
    if isinstance(variable, tf.Variable):
        return variable
    return variable.value


def read(variable: Any) -> np.ndarray:
    """A weight's current value as a NumPy array."""
    return to_numpy(tf_variable(variable))


def assign(variable: Any, value: Any) -> None:
    """Set a weight (works in the cross-replica context of a distribution strategy too)."""
    tf_variable(variable).assign(tf.cast(value, tf_variable(variable).dtype))


def to_numpy(value: Any) -> np.ndarray:
    """A tensor's or variable's value as a NumPy array.

    Goes through ``.numpy()`` where there is one: a distributed variable (the optimizer's learning
    rate and step counter under ``tf.distribute`` strategies) is a ``tf.Variable`` whose
    ``__array__`` does not give an array, but whose ``.numpy()`` reads this replica's copy (the
    copies are equal: the strategy keeps them in sync).
    """
    numpy = getattr(value, "numpy", None)
    if callable(numpy):
        return np.asarray(numpy())
    return np.asarray(value)


def learning_rate(optimizer: Any) -> float:
    """The optimizer's current learning rate, schedules evaluated at its current step."""
    lr = optimizer.learning_rate
    if callable(lr) and not isinstance(lr, (tf.Variable, tf.Tensor)) and not hasattr(lr, "numpy"):
        lr = lr(optimizer.iterations)
    return float(to_numpy(lr))


def set_learning_rate(optimizer: Any, value: float) -> bool:
    """Set the optimizer's learning rate; False, changing nothing, when it follows a schedule."""
    try:
        optimizer.learning_rate = value
    except TypeError:  # Keras 3 and tf_keras refuse to overwrite a LearningRateSchedule
        return False
    return True


def layer_output_shape(layer: Any) -> tuple[int | None, ...] | None:
    """The layer's output shape: from the model graph (Sequential / functional), else computed from
    the input shape the layer was built with (subclassed models); None when neither is known."""
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        pass
    input_shape = built_input_shape(layer)
    if input_shape is None:
        return None
    try:
        return tuple(layer.compute_output_shape(input_shape))
    except (TypeError, ValueError, NotImplementedError):
        return None


def built_input_shape(layer: Any) -> tuple[int | None, ...] | None:
    """The input shape a single-input layer was built with, or None."""
    # Keras 3 records build()'s arguments by name; tf_keras keeps the one shape.
    shapes = getattr(layer, "_build_shapes_dict", None)
    if isinstance(shapes, dict) and len(shapes) == 1:
        shape = next(iter(shapes.values()))
    else:
        shape = getattr(layer, "_build_input_shape", None)
    if shape is None:
        return None
    try:
        return tuple(None if d is None else int(d) for d in tf.TensorShape(shape).as_list())
    except (TypeError, ValueError):
        return None


def steps_per_execution(model: Any) -> int | str:
    """Training steps per ``train_function`` call as compiled (``"auto"`` when tf_keras tunes it).

    Keras 3 keeps an int; tf_keras a variable, None before compile.
    """
    if getattr(model, "autotune_steps_per_execution", False):
        return "auto"
    value = getattr(model, "steps_per_execution", None)
    if value is None:
        return 1
    return int(value.numpy() if hasattr(value, "numpy") else value)


class TfKerasCallbackHooks:
    """The hook-discovery methods tf_keras' CallbackList asks every callback for.

    Mixed into a ``keras.callbacks.Callback`` subclass, it lets the one class run under both
    Keras 3's and tf_keras' ``fit``.
    """

    _supports_tf_logs = False

    def _implements_train_batch_hooks(self) -> bool:
        return True

    def _implements_test_batch_hooks(self) -> bool:
        return False

    def _implements_predict_batch_hooks(self) -> bool:
        return False
