"""Reference CNNs used by the demo and the benchmarks (Keras 3, functional)."""

from __future__ import annotations

from collections.abc import Sequence

import keras


def small_vgg(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    convs_per_stage: int = 2,
    dropout: float = 0.3,
    bn_momentum: float = 0.9,
    name: str = "small_vgg",
    batch_norm: bool = True,
    head_widths: Sequence[int] = (),
) -> keras.Model:
    """A VGG-style CNN: stages of 3x3 conv + BN + ReLU, 2x2 max-pool, then a small classifier.

    Six 3x3 convolutions to prune. ``bn_momentum`` 0.9 lets BatchNorm's inference statistics
    follow within a few dozen steps (short runs, and the jump when pruning masks are fixed).
    With ``batch_norm=False`` the convolutions carry a bias instead. ``head_widths`` adds ReLU
    ``Dense`` layers (``fc1``, ``fc2``, ...) between the pooling and the classifier.
    """
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    for stage, width in enumerate(widths):
        for i in range(convs_per_stage):
            x = keras.layers.Conv2D(
                width, 3, padding="same", use_bias=not batch_norm, name=f"conv{stage + 1}_{i + 1}"
            )(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(
                    momentum=bn_momentum, name=f"bn{stage + 1}_{i + 1}"
                )(x)
            x = keras.layers.ReLU(name=f"relu{stage + 1}_{i + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{stage + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    for index, width in enumerate(head_widths):
        x = keras.layers.Dense(width, activation="relu", name=f"fc{index + 1}")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def vgg16(input_shape: Sequence[int] = (224, 224, 3), num_classes: int = 1000) -> keras.Model:
    """VGG-16's 13 convolutions (random weights, nothing downloaded) with a pooled classifier."""
    backbone = keras.applications.VGG16(
        weights=None, include_top=False, input_shape=tuple(input_shape), pooling="avg"
    )
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(
        backbone.output
    )
    return keras.Model(backbone.input, outputs, name=f"vgg16_{input_shape[0]}")


def resnet50(input_shape: Sequence[int] = (224, 224, 3), num_classes: int = 1000) -> keras.Model:
    """Keras' ResNet-50 with random weights (its 3x3 convolutions are the prunable ones)."""
    return keras.applications.ResNet50(
        weights=None, input_shape=tuple(input_shape), classes=num_classes
    )


def _basic_block(x: keras.KerasTensor, filters: int, stride: int, name: str) -> keras.KerasTensor:
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_down"
        )(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_down_bn")(shortcut)
    x = keras.layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn1")(x)
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn2")(x)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def resnet18(input_shape: Sequence[int] = (224, 224, 3), num_classes: int = 1000) -> keras.Model:
    """ResNet-18 (He et al. 2016): a 7x7 stem, then 4 stages of two 3x3 basic blocks."""
    inputs = keras.Input(tuple(input_shape), name="image")
    x = keras.layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, filters in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, name=f"s{stage + 1}b{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="resnet18")
