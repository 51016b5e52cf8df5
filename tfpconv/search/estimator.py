"""A candidate's accuracy, honestly and cheaply: inherited weights, short fine-tune, held-out split.

For a candidate the trained model is channel-pruned (surgery) and pattern-projected in one shot,
BatchNorm's statistics are recomputed on training images (surgery and projection shift them), the
model is fine-tuned for a few steps on a training subset with the pattern masks fixed, and its
accuracy is measured on a validation split carved from the training data (never the test set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tfpconv.keras import channels, compat
from tfpconv.keras.callbacks import PatternPruning
from tfpconv.keras.candidates import build_candidate
from tfpconv.search.space import Candidate

__all__ = ["AccuracyEstimator", "Evaluation", "materialize", "pattern_callbacks"]


@dataclass
class Evaluation:
    """What the estimator learned of a candidate."""

    accuracy: float
    flops: int
    weights: int


def pattern_callbacks(candidate: Candidate, num_patterns: int = 8, **pruning: Any) -> list[Any]:
    """The :class:`~tfpconv.callbacks.PatternPruning` callback that trains the candidate's
    pattern convolutions to their connectivities (its dense ones left alone); none when the
    candidate has no pattern convolution. The first convolution gets patterns when the candidate
    gives it some and every filter chooses its own patterns, as the latency table timed them.
    ``pruning`` goes to the callback."""
    patterned = candidate.pattern_connectivity
    if not patterned:
        return []
    pruning.setdefault("first_layer", "patterns")
    pruning.setdefault("filter_group", 1)
    return [PatternPruning(num_patterns, patterned, layers=list(patterned), **pruning)]


def materialize(
    model: Any, candidate: Candidate, num_patterns: int = 8, **pruning: Any
) -> tuple[Any, list[Any]]:
    """The candidate ready for a full fine-tune: the channel-pruned model (weights inherited) and
    the callbacks that prune its pattern convolutions to the candidate's connectivities while
    ``fit`` trains, its dense ones left alone (``pruning`` goes to
    :class:`~tfpconv.callbacks.PatternPruning`; no callback when every convolution stays
    dense)."""
    return channels.prune(model, candidate.widths), pattern_callbacks(
        candidate, num_patterns, **pruning
    )


def _count(model: Any) -> tuple[int, int]:
    """Non-zero weights of Conv2D / Dense kernels, and the multiply-adds x2 they cost per image."""
    flops = weights = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "Dense"):
            continue
        nonzero = int(np.count_nonzero(compat.read(layer.kernel)))
        weights += nonzero
        positions = int(np.prod(layer.output.shape[1:-1])) if kind == "Conv2D" else 1
        flops += 2 * nonzero * positions
    return flops, weights


class AccuracyEstimator:
    """Scores candidates of one trained model on a fixed split of its training data.

    Args:
      model: the trained, compiled-or-not Keras model (left unchanged).
      x, y: training images and integer labels.
      validation_fraction: share of ``(x, y)`` held out for the accuracy (the rest fine-tunes).
      finetune_steps: optimizer steps of fine-tuning per candidate (0: none).
      batch_size, learning_rate: of the fine-tuning (Adam).
      calibration_batches: training batches that recompute BatchNorm's statistics.
      num_patterns: the pattern library size.
      seed: the split and the fine-tuning's image order.
    """

    def __init__(
        self,
        model: Any,
        x: np.ndarray,
        y: np.ndarray,
        validation_fraction: float = 0.2,
        finetune_steps: int = 100,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        calibration_batches: int = 10,
        num_patterns: int = 8,
        seed: int = 0,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if not 0 < validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        order = np.random.default_rng(seed).permutation(len(x))
        held_out = max(1, int(round(validation_fraction * len(x))))
        self.x_val, self.y_val = x[order[:held_out]], y[order[:held_out]]
        self.x_train, self.y_train = x[order[held_out:]], y[order[held_out:]]
        if len(self.x_train) < batch_size:
            raise ValueError(
                f"{len(self.x_train)} training images after the validation split, fewer than "
                f"one batch of {batch_size}; pass more data or a smaller batch_size"
            )
        self.model = model
        self.finetune_steps = finetune_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.calibration_batches = calibration_batches
        self.num_patterns = num_patterns
        self.seed = seed

    def build(self, candidate: Candidate) -> Any:
        """The candidate as a model: surgery + one-shot projection, BatchNorm recalibrated."""
        smaller = build_candidate(
            self.model, candidate.widths, candidate.connectivity, self.num_patterns
        )
        self._recalibrate_batchnorm(smaller)
        return smaller

    def _recalibrate_batchnorm(self, model: Any) -> None:
        layers = [la for la in model.layers if type(la).__name__ == "BatchNormalization"]
        if not layers:
            return
        saved = [la.momentum for la in layers]
        for i in range(self.calibration_batches):
            start = (i * self.batch_size) % max(len(self.x_train) - self.batch_size, 1)
            # momentum 1 - 1/(i+1): the moving statistics become the mean over the batches seen.
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / (i + 1)
            model(self.x_train[start : start + self.batch_size], training=True)
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum

    def _compiled(self, model: Any, learning_rate: float) -> Any:
        flavour = compat.tf_keras_module() if compat.is_tf_keras_object(model) else keras
        model.compile(
            optimizer=flavour.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def _validation_accuracy(self, model: Any) -> float:
        probabilities = model.predict(self.x_val, batch_size=256, verbose=0)
        return float(np.mean(np.argmax(probabilities, axis=-1) == self.y_val))

    def evaluate(self, candidate: Candidate) -> Evaluation:
        """Build, fine-tune and score one candidate."""
        model = self.build(candidate)
        if self.finetune_steps > 0:
            self._compiled(model, self.learning_rate)
            rng = np.random.default_rng(self.seed)
            count = self.finetune_steps * self.batch_size
            picks = rng.choice(len(self.x_train), size=count, replace=count > len(self.x_train))
            model.fit(
                self.x_train[picks],
                self.y_train[picks],
                batch_size=self.batch_size,
                epochs=1,
                callbacks=pattern_callbacks(
                    candidate, self.num_patterns, pruning_epochs=0, verbose=0
                ),
                verbose=0,
            )
        accuracy = self._validation_accuracy(model)
        flops, weights = _count(model)
        return Evaluation(accuracy, flops, weights)

    def finetuned_accuracy(
        self, candidate: Candidate, epochs: int, batch_size: int = 128, learning_rate: float = 5e-4
    ) -> float:
        """Validation accuracy after the fine-tune a user runs (:func:`materialize`: channel
        surgery, then ``epochs`` epochs on the training split with the pattern callbacks pruning
        gradually): the costly, faithful score that ranks a budget's finalists."""
        model, callbacks = materialize(self.model, candidate, self.num_patterns, verbose=0)
        self._compiled(model, learning_rate)
        model.fit(
            self.x_train,
            self.y_train,
            batch_size=batch_size,
            epochs=epochs,
            callbacks=callbacks,
            verbose=0,
        )
        return self._validation_accuracy(model)
