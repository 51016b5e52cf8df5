"""One worker of a two-worker ``MultiWorkerMirroredStrategy`` run, for tests/test_multiworker.py.

Usage: ``TF_CONFIG=... python3 tests/multiworker_worker.py FLAVOUR METHOD OUTPUT.npz``

FLAVOUR is ``tf_keras`` or ``keras``; METHOD is ``admm``, ``magnitude`` or ``none`` (no callback).
The worker trains a small CNN for a few steps (3 epochs of 3 steps) with
``tfpconv.callbacks.PatternPruning`` and writes to OUTPUT.npz: its final weights (``weight_*``),
the callback's library and codes, and after every step a digest of the state the callback holds
(library, ADMM Z and U and pull targets, hard masks) and of the pruned kernels, so that the test can
compare the workers step by step.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)

EPOCHS, STEPS = 3, 3


def digest(arrays) -> str:
    hasher = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array))
        hasher.update(str((array.dtype, array.shape)).encode())
        hasher.update(array.tobytes())
    return hasher.hexdigest()


def main(flavour: str, method: str, output: str) -> None:
    if flavour == "tf_keras":
        import tf_keras as k
    else:
        import keras as k

        k.config.disable_traceback_filtering()  # show where inside Keras a failure happens
    import tfpconv
    import tfpconv.keras.distributed

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    with strategy.scope():
        model = k.Sequential(
            [
                k.Input((8, 8, 3)),
                k.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
                k.layers.Conv2D(12, 3, padding="same", activation="relu", name="c2"),
                k.layers.GlobalAveragePooling2D(),
                k.layers.Dense(3, activation="softmax", name="head"),
            ]
        )
        model.compile(k.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)  # the same data on both workers; tf.data shards it
    x = rng.normal(size=(64, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()

    pruning = None
    trace: list[str] = []

    class Recorder(k.callbacks.Callback):
        """After PatternPruning's own hook: a digest of its state and of the pruned kernels."""

        def on_train_batch_end(self, batch, logs=None):
            state = [pruning.library] if pruning.library is not None else []
            for admm in pruning._admm:
                state += [admm.z, admm.u]
            state += [t.numpy() for t in pruning._pull_targets]
            state += [m.numpy() for m in pruning.patterns._masks if m is not None]
            kernels = [model.get_layer(name).kernel.numpy() for name in ("c1", "c2")]
            trace.append(f"{pruning._phase} {digest(state)} {digest(kernels)}")

    callbacks = []
    if method != "none":
        pruning = tfpconv.callbacks.PatternPruning(
            4, 0.5, method=method, update_every=2, first_layer="patterns", verbose=0
        )
        callbacks = [pruning, Recorder()]
    model.fit(data, epochs=EPOCHS, steps_per_epoch=STEPS, callbacks=callbacks, verbose=0)
    result = {f"weight_{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    if pruning is not None:
        result["library"] = np.asarray(pruning.library)
        for name, codes in pruning.codes.items():
            result[f"codes_{name}"] = np.asarray(codes)
        result["trace"] = np.asarray(trace)
    # The broadcast itself: each worker offers different arrays, all must get worker 0's.
    offered = [np.full((2, 3), task["index"] + 0.5, np.float32), np.arange(4) * (task["index"] + 1)]
    sync = tfpconv.keras.distributed.Synchronizer(strategy)
    result["broadcast_0"], result["broadcast_1"] = sync.from_first_worker(offered)
    np.savez(output, **result)
    print(f"WORKER {task['index']} OK", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
