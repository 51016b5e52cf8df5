"""The activation-mask constraint set: trains the spatial masks of :class:`SpatialMask` layers.

Semi-structured activation sparsity (Grimaldi et al., arXiv 2309.06626): every mask comes from one
random score map at the model's input resolution, average-pooled to its layer's size (so the masks
of all layers stay aligned), with the lowest-scoring units masked. Over the ramp the masked
fraction rises to each layer's target; at every update, when a sample batch is given, several
candidate score maps are tried and the one with the least loss on the sample is kept. The masks
freeze when the hard phase begins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfpconv.keras import compat as _compat
from tfpconv.keras.activation_masks import mask_layers
from tfpconv.keras.constraint import Constraint, SchedulePoint
from tfpconv.sparsity import activation

#: Candidate score maps tried at each update when a sample batch is given.
DEFAULT_CANDIDATES = 4


def _input_size(model: Any) -> tuple[int, int]:
    shape = model.inputs[0].shape
    height, width = shape[1], shape[2]
    if height is None or width is None:
        raise ValueError(
            f"model {model.name!r} leaves its input height or width open ({tuple(shape)}): "
            "activation masks need a fixed input size"
        )
    return int(height), int(width)


class ActivationMasks(Constraint):
    """Masks of the model's :class:`SpatialMask` layers, each ramped to its layer's target.

    Args:
      candidates: score maps tried at each update when ``sample`` is given (1: no search).
      sample: ``(x, y)``, a batch the candidates' loss is measured on (a few hundred training
        examples); None: one random score map, no search.
      seed: seed of the random score maps.
    """

    name = "activation masks"
    methods = ("magnitude",)

    def __init__(
        self,
        candidates: int = DEFAULT_CANDIDATES,
        sample: tuple[Any, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be a positive integer, got {candidates!r}")
        if sample is not None and (not isinstance(sample, (tuple, list)) or len(sample) != 2):
            raise ValueError("sample must be a pair (x, y) of a batch of training examples")
        self.candidates = candidates if sample is not None else 1
        self.sample = sample
        self._rng = np.random.default_rng(seed)
        self._layers: list[Any] = []
        self._input_size = (0, 0)
        self._score_map: np.ndarray | None = None
        self._fixed: list[np.ndarray] = []

    # -- selection -----------------------------------------------------------------------------

    def select(self, model: Any) -> list[Any]:
        self._layers = mask_layers(model)
        if not self._layers:
            raise ValueError(
                f"model {model.name!r} has no activation masks: add them first with "
                "tfpconv.activation.sparsify(model, sparsity=...)"
            )
        self._input_size = _input_size(model)
        return list(self._layers)

    def variable_of(self, layer: Any) -> Any:
        return layer.mask_variable

    def begin(self, kernels: Sequence[np.ndarray], share: Any) -> list[str]:
        self._score_map = share([self._new_map()])[0]
        self._fixed = []
        targets = sorted({float(layer.sparsity) for layer in self._layers})
        return [
            f"tfpconv: activation masks on {len(self._layers)} layers, target sparsity "
            f"{', '.join(f'{t:g}' for t in targets)}, units of "
            f"{', '.join(sorted({activation.describe_unit(layer.unit) for layer in self._layers}))}"
        ]

    def _new_map(self) -> np.ndarray:
        return activation.random_score_map(self._rng, *self._input_size)

    # -- the masks -----------------------------------------------------------------------------

    def _mask(self, index: int, score_map: np.ndarray, fraction: float) -> np.ndarray:
        layer = self._layers[index]
        height, width = layer.mask.shape
        scores = activation.layer_scores(score_map, height, width)
        mask = activation.unit_mask(scores, float(layer.sparsity) * fraction, layer.unit)
        return mask.reshape(1, height, width, 1).astype(np.float32)

    def prepare(self, model: Any, at: SchedulePoint) -> None:
        """Keep the candidate score map (the current one among them) with the least loss on the
        sample when its masks are set at the ramp's current fraction."""
        if self.candidates == 1 or at.ramp <= 0 or self._score_map is None:
            return
        maps = [self._score_map, *[self._new_map() for _ in range(self.candidates - 1)]]
        kept = [_compat.read(layer.mask_variable) for layer in self._layers]
        losses = []
        for score_map in maps:
            for index, layer in enumerate(self._layers):
                _compat.assign(layer.mask_variable, self._mask(index, score_map, at.ramp))
            losses.append(self._sample_loss(model))
        for layer, mask in zip(self._layers, kept, strict=True):
            _compat.assign(layer.mask_variable, mask)
        self._score_map = maps[int(np.argmin(losses))]

    def _sample_loss(self, model: Any) -> float:
        x, y = self.sample  # type: ignore[misc]
        prediction = model(x, training=False)
        loss = model.compute_loss(x=x, y=y, y_pred=prediction)
        return float(tf.reduce_mean(loss))

    def project(self, index: int, weights: np.ndarray, at: SchedulePoint) -> np.ndarray:
        assert self._score_map is not None
        return self._mask(index, self._score_map, at.ramp)

    def fix(self, index: int, weights: np.ndarray, at: SchedulePoint) -> list[np.ndarray]:
        assert self._score_map is not None
        mask = self._mask(index, self._score_map, 1.0)
        return [mask, mask]

    def adopt(self, index: int, structure: list[np.ndarray]) -> None:
        if index == 0:
            self._fixed = []
        self._fixed.append(structure[0])

    def enforce(self, index: int, weights: tf.Tensor) -> tf.Tensor:
        return tf.constant(self._fixed[index])

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """Per mask layer name, the mask fixed in the hard phase, ``(height, width)`` of 0/1."""
        return {
            layer.name: mask[0, :, :, 0]
            for layer, mask in zip(self._layers, self._fixed, strict=False)
        }

    def hard_phase_messages(self, at: SchedulePoint) -> list[str]:
        fractions = [1.0 - float(np.mean(mask)) for mask in self._fixed]
        return [
            f"tfpconv: activation masks frozen, {np.mean(fractions):.1%} of the masked layers' "
            "outputs are zero"
        ]

    def metrics(self, at: SchedulePoint, hard: bool) -> dict[str, float]:
        masks = [layer.mask for layer in self._layers]
        zero = sum(int(m.size - np.count_nonzero(m)) for m in masks)
        return {"masked": zero / max(sum(m.size for m in masks), 1)}


def apply_random_masks(model: Any, seed: int = 0) -> dict[str, float]:
    """Set every activation mask of ``model`` at its layer's target sparsity from one random score
    map, without training: what :class:`tfpconv.callbacks.ActivationSparsity` freezes when it
    tries a single map (for speed measurements, or as a start). Returns the zero fraction of each
    mask layer's output, by layer name."""
    masks = ActivationMasks(seed=seed)
    layers = masks.select(model)
    masks.begin([], lambda arrays: arrays)
    full = SchedulePoint(step=0, ramp=1.0, final_step=0)
    fractions = {}
    for index, layer in enumerate(layers):
        mask = masks.fix(index, _compat.read(layer.mask_variable), full)[0]
        _compat.assign(layer.mask_variable, mask)
        fractions[layer.name] = 1.0 - float(np.mean(mask))
    return fractions
