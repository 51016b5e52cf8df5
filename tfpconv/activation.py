"""Semi-structured activation sparsity: spatial masks on convolution outputs, skipped by the
delegate.

Grimaldi et al., "Accelerating Deep Neural Networks via Semi-Structured Activation Sparsity"
(arXiv 2309.06626). :func:`sparsify` adds a :class:`~tfpconv.keras.activation_masks.SpatialMask`
after each selected convolution, in units the delegate's kernels compute together (the engine says
how large, per layer); :class:`tfpconv.callbacks.ActivationSparsity` trains the masks while ``fit``
runs; ``tfpconv.convert`` records each mask in the plan, and the delegate computes only the units
a mask keeps::

    model = tfpconv.activation.sparsify(model, sparsity=0.2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=4, callbacks=[tfpconv.callbacks.ActivationSparsity(sample=(x[:256],
                                                                                    y[:256]))])
    tfpconv.convert(model, "model.tflite")
"""

from __future__ import annotations

from typing import Any

from tfpconv.keras.activation_constraint import apply_random_masks
from tfpconv.keras.activation_masks import ConvFilter, insert_masks, mask_layers
from tfpconv.runtime.library import activation_unit

__all__ = ["activation_unit", "apply_random_masks", "mask_layers", "sparsify"]


def sparsify(
    model: Any,
    sparsity: float = 0.2,
    *,
    layers: ConvFilter = None,
    pointwise: bool = False,
) -> Any:
    """A copy of ``model`` with an activation mask after each selected convolution.

    Each mask multiplies its convolution's output (after the BatchNormalization and activation
    that directly follow it) by a 0/1 map that all channels share; it starts all ones, so the new
    model computes what the old one did until :class:`tfpconv.callbacks.ActivationSparsity` trains
    the masks towards ``sparsity``. Each mask's unit is the engine's for its layer
    (:func:`activation_unit`: blocks of up to 8 rows x 16 pixels that its kernels compute
    together, smaller on small maps).

    Args:
      model: a built Keras model (Sequential or functional; Keras 3 or ``tf_keras``) with a fixed
        input height and width.
      sparsity: the fraction of each masked layer's units to mask, in [0, 1).
      layers: None (every ``Conv2D`` larger than 1x1), a list of layer names, or a predicate.
      pointwise: also mask 1x1 convolutions when ``layers`` is None.

    Returns:
      The new model; the original's weights are copied, the original is left as it was.
    """
    return insert_masks(
        model, sparsity=sparsity, unit=activation_unit, layers=layers, pointwise=pointwise
    )
