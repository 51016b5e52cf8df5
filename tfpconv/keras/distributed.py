"""tf.distribute under the pruning callbacks: which strategies work, and keeping workers equal.

The callbacks run in Python in every process of a ``fit``, in the strategy's cross-replica context.
Their per-step work (re-applying masks, the ADMM proximal step) is element-wise arithmetic on the
mirrored weights with the same constants everywhere, so every replica and every worker computes
the same result. Their decisions (the pattern library, each kernel's pattern and whether it is
removed, the ADMM variables Z and U, magnitude projections) come out of sorts and sums in NumPy
whose ties could fall differently on machines with different CPUs; under
``MultiWorkerMirroredStrategy`` every worker computes them and then takes worker 0's result
(:meth:`Synchronizer.from_first_worker`), so all workers always hold the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

#: The strategies the callbacks support, as the names users know them by.
SUPPORTED = (
    "no strategy (the default)",
    "tf.distribute.OneDeviceStrategy",
    "tf.distribute.MirroredStrategy",
    "tf.distribute.MultiWorkerMirroredStrategy",
)


def model_strategy(model: Any) -> tf.distribute.Strategy:
    """The strategy ``model`` trains under (its own, else the one in scope, else the default)."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy if strategy is not None else tf.distribute.get_strategy()


def _is_default(strategy: tf.distribute.Strategy) -> bool:
    # The default strategy has no public class; it is what get_strategy() gives outside any scope.
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def public_name(strategy: tf.distribute.Strategy) -> str:
    """The strategy's name as users spell it (``tf.distribute...``), else its class name."""
    if _is_default(strategy):
        return "the default strategy"
    known = {
        tf.distribute.experimental.ParameterServerStrategy: "ParameterServerStrategy",
        tf.distribute.experimental.CentralStorageStrategy: "CentralStorageStrategy",
        tf.distribute.TPUStrategy: "TPUStrategy",
        tf.distribute.MultiWorkerMirroredStrategy: "MultiWorkerMirroredStrategy",
        tf.distribute.MirroredStrategy: "MirroredStrategy",
        tf.distribute.OneDeviceStrategy: "OneDeviceStrategy",
    }
    for cls, name in known.items():
        if isinstance(strategy, cls):
            path = "tf.distribute." + ("" if hasattr(tf.distribute, name) else "experimental.")
            return path + name
    return type(strategy).__name__


def check_strategy(strategy: tf.distribute.Strategy, who: str = "tfpconv") -> None:
    """Raise ValueError, naming the strategy, unless the callbacks support it.

    The callbacks assign weights between steps from the Python process that runs ``fit``: that
    needs every replica's copy of a weight where that process can write it (mirrored variables,
    one copy per device). ``ParameterServerStrategy`` (weights on parameter servers, steps run by
    remote workers that run no callbacks), ``CentralStorageStrategy`` (one copy, on the CPU, of
    variables aggregated across devices) and ``TPUStrategy`` are not supported.
    """
    supported = (
        tf.distribute.OneDeviceStrategy,
        tf.distribute.MirroredStrategy,
        tf.distribute.MultiWorkerMirroredStrategy,
    )
    if _is_default(strategy) or isinstance(strategy, supported):
        return
    raise ValueError(
        f"{who} does not support training under {public_name(strategy)} "
        f"(class {type(strategy).__name__}); supported: {', '.join(SUPPORTED)} "
        f"(MultiWorkerMirroredStrategy with tf_keras models; Keras 3 itself cannot train across "
        f"several workers)"
    )


class Synchronizer:
    """Makes the callbacks' decisions identical on every worker of a strategy.

    With one process (no strategy, OneDevice, Mirrored) the one Python computation serves every
    replica and :meth:`from_first_worker` returns its arguments. Under
    ``MultiWorkerMirroredStrategy`` it broadcasts worker 0's arrays with a collective all-reduce
    (worker 0's replica 0 contributes its arrays, every other replica zeros; adding zeros is exact).
    Every worker must call it at the same point of training with arrays of the same shapes, as
    the callbacks do: their control flow depends only on step and epoch counts.
    """

    def __init__(self, strategy: tf.distribute.Strategy | None) -> None:
        self.strategy = strategy
        self.active = is_multi_worker(strategy)
        self._broadcast = None

    def from_first_worker(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The given arrays as worker 0 has them (same shapes and dtypes)."""
        arrays = [np.asarray(a) for a in arrays]
        if not self.active or not arrays:
            return arrays
        if self._broadcast is None:
            self._broadcast = self._make_broadcast()
        # float64 carries every value the callbacks exchange exactly (float32 weights, codes,
        # 9-bit masks).
        with self.strategy.scope():
            results = self._broadcast([tf.constant(a.astype(np.float64)) for a in arrays])
        return [
            np.asarray(self.strategy.experimental_local_results(r)[0].numpy()).astype(a.dtype)
            for r, a in zip(results, arrays, strict=True)
        ]

    def _make_broadcast(self) -> Any:
        strategy = self.strategy

        def replica_fn(tensors: list[tf.Tensor]) -> list[tf.Tensor]:
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group, 0)
            contributions = [tf.where(first, t, tf.zeros_like(t)) for t in tensors]
            return context.all_reduce(tf.distribute.ReduceOp.SUM, contributions)

        @tf.function
        def broadcast(tensors: list[tf.Tensor]) -> list[Any]:
            return strategy.run(replica_fn, args=(tensors,))

        return broadcast
