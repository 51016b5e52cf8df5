"""The weight-unification constraint set (arXiv 2106.08301) for the training machinery.

A *block* of weights is unified when its weights share one magnitude and keep their signs, pruned
when it is all zero. Blocks are, per layer kind (see :mod:`tfpconv.sparsity.unification`):

- ``Dense`` and 1x1 ``Conv2D``: runs of ``block_size`` consecutive input weights of one output;
- 3x3 ``Conv2D``: a whole kernel's non-zero taps (the four of a pattern kernel once pattern
  pruning has run before it in the same callback).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfpconv.keras import compat as _compat
from tfpconv.keras.constraint import Constraint, SchedulePoint
from tfpconv.keras.layer_selection import LayerFilter, unification_candidates
from tfpconv.sparsity import unification


class _DenseLayout:
    """Blocks of ``block_size`` consecutive inputs of one output in an ``(in, out)`` kernel (or a
    1x1 convolution's ``(1, 1, in, out)``)."""

    def __init__(self, shape: tuple[int, ...], block_size: int) -> None:
        self.shape = shape
        self.inputs, self.outputs = shape[-2], shape[-1]
        self.block_size = block_size
        self.blocks = math.ceil(self.inputs / block_size)

    def project(self, weights: np.ndarray, unify: float, prune: float) -> list[np.ndarray]:
        projected, states = unification.project_dense(
            weights.reshape(self.inputs, self.outputs), unify, prune, self.block_size
        )
        return [projected.reshape(self.shape), states]

    def per_weight(self, states: np.ndarray) -> np.ndarray:
        """``(out, blocks)`` block values spread to every weight of the kernel."""
        spread = np.repeat(np.asarray(states).T, self.block_size, axis=0)[: self.inputs]
        return spread.reshape(self.shape)

    def block_sum(self, values: tf.Tensor) -> tf.Tensor:
        flat = tf.reshape(values, (self.inputs, self.outputs))
        padded = tf.pad(flat, [[0, self.blocks * self.block_size - self.inputs], [0, 0]])
        return tf.reduce_sum(tf.reshape(padded, (self.blocks, self.block_size, -1)), axis=1)

    def spread(self, per_block: tf.Tensor) -> tf.Tensor:
        spread = tf.repeat(per_block, self.block_size, axis=0)[: self.inputs]
        return tf.reshape(spread, self.shape)


class _KernelLayout:
    """One block per 3x3 kernel of an HWIO ``(3, 3, in, out)`` weight: its non-zero taps."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.keep: np.ndarray | None = None

    def project(self, weights: np.ndarray, unify: float, prune: float) -> list[np.ndarray]:
        keep = weights != 0
        projected, states = unification.project_pattern(weights, keep, unify, prune)
        return [projected, states, keep]

    def per_weight(self, states: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(states)[np.newaxis, np.newaxis], self.shape)

    def block_sum(self, values: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(values, axis=(0, 1))

    def spread(self, per_block: tf.Tensor) -> tf.Tensor:
        return tf.broadcast_to(per_block[tf.newaxis, tf.newaxis], self.shape)


class _Fixed:
    """A layer's fixed unification, as constants for the per-step re-projection."""

    def __init__(self, layout: Any, states: np.ndarray, keep: np.ndarray | None) -> None:
        member = layout.per_weight(states == unification.UNIFIED)
        zero = layout.per_weight(states == unification.PRUNED)
        if keep is not None:  # taps outside a unified or pruned kernel's block stay zero
            member = member & keep
            zero = zero | ~keep
        counts = np.maximum(layout.block_sum(tf.constant(member.astype(np.float32))).numpy(), 1.0)
        self.layout = layout
        self.member = tf.constant(member.astype(np.float32))
        self.keep = tf.constant((~zero).astype(np.float32))
        self.inverse_count = tf.constant(1.0 / counts)


class Unification(Constraint):
    """Unify a fraction of each selected layer's weight blocks and prune another.

    The arguments are :class:`tfpconv.callbacks.WeightUnification`'s (see there).
    ``follow``: unify the layers another constraint set of the same callback selected (how
    ``PatternPruning(unify=...)`` unifies its pattern kernels).
    """

    name = "unification"

    def __init__(
        self,
        unify: float = 0.5,
        prune: float = 0.0,
        *,
        block_size: int = unification.DEFAULT_BLOCK_SIZE,
        layers: LayerFilter = None,
        follow: Constraint | None = None,
    ) -> None:
        unification.check_fractions(unify, prune)
        unification.check_block_size(block_size)
        self.unify, self.prune = float(unify), float(prune)
        self.block_size = int(block_size)
        self.layers = layers
        self.follow = follow
        #: Per layer name, the block states fixed in the hard phase (``unification.FREE``,
        #: ``UNIFIED``, ``PRUNED``): ``(out, blocks)`` for Dense / 1x1, ``(in, out)`` for 3x3.
        self.states: dict[str, np.ndarray] = {}
        self._layers: list[Any] = []
        self._layouts: list[Any] = []
        self._fixed: list[_Fixed | None] = []
        self._left: dict[str, str] = {}

    def select(self, model: Any) -> list[Any]:
        if self.follow is not None:
            self._layers = self.follow.selected_layers()
        else:
            self._layers, self._left = self._select(model)
        self._layouts = [self._layout(layer) for layer in self._layers]
        self._fixed = [None] * len(self._layers)
        self.states = {}
        return list(self._layers)

    def _select(self, model: Any) -> tuple[list[Any], dict[str, str]]:
        candidates, reasons = unification_candidates(model)
        outputs = _output_layer_names(model)
        by_name = {layer.name: layer for layer in candidates}
        if self.layers is None:
            chosen = [layer for layer in candidates if layer.name not in outputs]
            for name in outputs & set(by_name):
                reasons[name] = "the model's output layer, left dense (name it in layers=)"
        elif callable(self.layers):
            predicate: Callable[[Any], bool] = self.layers
            chosen = [layer for layer in candidates if predicate(layer)]
        else:
            chosen = []
            for name in self.layers:
                if name not in by_name:
                    why = reasons.get(name, "not a Dense or 1x1 Conv2D layer")
                    raise ValueError(
                        f"tfpconv: layer {name!r} of {model.name!r} "
                        f"cannot be unified ({why}); unifiable layers: {sorted(by_name) or 'none'}"
                    )
                chosen.append(by_name[name])
        if not chosen:
            raise ValueError(
                f"tfpconv: no layer of {model.name!r} to unify "
                f"(it unifies Dense and 1x1 Conv2D layers; candidates: "
                f"{sorted(by_name) or 'none'}); pass layers=[...] to choose them"
            )
        for layer in candidates:
            if layer not in chosen and layer.name not in reasons:
                reasons[layer.name] = "not selected by the layers filter"
        return chosen, reasons

    def _layout(self, layer: Any) -> Any:
        shape = tuple(int(d) for d in layer.kernel.shape)
        if len(shape) == 4 and shape[:2] == (3, 3):
            return _KernelLayout(shape)
        return _DenseLayout(shape, self.block_size)

    def left_alone(self, model: Any) -> dict[str, str]:
        return dict(self._left)

    def begin(self, kernels: Sequence[np.ndarray], share: Any) -> list[str]:
        if self.follow is not None:
            return [f"tfpconv: unifying {self.unify:g} of the kept 3x3 kernels"]
        names = ", ".join(layer.name for layer in self._layers)
        return [
            f"tfpconv: unifying {len(self._layers)} layers (blocks of {self.block_size}, "
            f"unify {self.unify:g}, prune {self.prune:g}): {names}"
        ]

    def project(self, index: int, weights: np.ndarray, at: SchedulePoint) -> np.ndarray:
        layout = self._layouts[index]
        return layout.project(weights, self.unify * at.ramp, self.prune * at.ramp)[0]

    def fix(self, index: int, weights: np.ndarray, at: SchedulePoint) -> list[np.ndarray]:
        return self._layouts[index].project(weights, self.unify, self.prune)

    def adopt(self, index: int, structure: list[np.ndarray]) -> None:
        states = np.asarray(structure[0]).astype(np.uint8)
        keep = np.asarray(structure[1]).astype(bool) if len(structure) > 1 else None
        self.states[self._layers[index].name] = states
        self._fixed[index] = _Fixed(self._layouts[index], states, keep)

    def enforce(self, index: int, weights: tf.Tensor) -> tf.Tensor:
        fixed = self._fixed[index]
        dtype = weights.dtype
        member = tf.cast(fixed.member, dtype)
        magnitude = fixed.layout.block_sum(tf.abs(weights) * member) * tf.cast(
            fixed.inverse_count, dtype
        )
        magnitude = fixed.layout.spread(magnitude)
        unified = tf.where(weights < 0, -magnitude, magnitude)
        return tf.where(member > 0, unified, weights) * tf.cast(fixed.keep, dtype)

    def hard_phase_messages(self, at: SchedulePoint) -> list[str]:
        states = np.concatenate([s.ravel() for s in self.states.values()] or [np.zeros(0)])
        unified = int(np.sum(states == unification.UNIFIED))
        if self.follow is not None:  # removed kernels are PRUNED blocks, but not unification's
            kept = int(np.sum(states != unification.PRUNED))
            return [f"tfpconv: {unified} of {kept} kept 3x3 kernels unified"]
        pruned = int(np.sum(states == unification.PRUNED))
        return [
            f"tfpconv: blocks fixed: {unified} unified, {pruned} pruned, "
            f"{states.size - unified - pruned} free"
        ]

    def metrics(self, at: SchedulePoint, hard: bool) -> dict[str, float]:
        return {"unified": self.unify if hard else self.unify * at.ramp}


def _output_layer_names(model: Any) -> set[str]:
    """The layers whose outputs are the model's outputs (Sequential and functional models)."""
    names = set()
    for tensor in getattr(model, "outputs", None) or []:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            names.add(history[0].name)
    if not names:  # a subclassed model: its last layer with a kernel
        kernels = [layer for layer in _compat.flatten_layers(model) if hasattr(layer, "kernel")]
        if kernels:
            names.add(kernels[-1].name)
    return names
