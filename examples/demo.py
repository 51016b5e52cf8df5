"""tfpconv end to end on the real Fashion-MNIST, at a small scale (a few minutes on 2 cores).

1. trains a small VGG-style CNN with ``tfpconv.callbacks.PatternPruning`` (8 patterns, 72% of the
   3x3 kernels removed: about 8x fewer convolution weights) and prints ``tfpconv.summary``;
2. converts it with ``tfpconv.convert(..., tune=True)`` to a standard .tflite carrying the pattern
   plan, the delegate's kernel variants timed per layer on this machine;
3. runs it with plain TFLite and with the tfpconv delegate, image by image and interleaved,
   printing agreement and both latencies.

The network (widths 32/64/128 on 28x28 images) is large enough for the delegate to pay: on a
2-core Intel Xeon with AVX-512 (2026-12-03, the callback's defaults leaving the first convolution
dense, so to TFLite; the engine with aligned tap-column planes) the tuner measured the whole model
2.16x faster with the plan, and the demo printed 2.19x per image (0.571 -> 0.261 ms), 90.5%
accuracy on the first 200 test images, in 1.5 minutes. At widths 16/32/64 the layers are too
small: the delegate measured 0.9x there, and tuning leaves to TFLite what does not pay.

    python3 examples/demo.py [--train-size 12000] [--epochs 4] [--out runs/demo]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfpconv  # noqa: E402


def train(args: argparse.Namespace) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    (x_train, y_train), (x_test, y_test) = tfpconv.datasets.fashion_mnist()
    x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    keras.utils.set_random_seed(0)
    model = tfpconv.models.small_vgg(widths=(32, 64, 128))
    model.compile(
        keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    pruning = tfpconv.callbacks.PatternPruning(num_patterns=8, connectivity=0.72)
    model.fit(
        x_train,
        y_train,
        batch_size=128,
        epochs=args.epochs,
        callbacks=[pruning],
        validation_data=(x_test[:2000], y_test[:2000]),
        verbose=2,
    )
    _, accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    print(f"\ntest accuracy of the pattern-pruned model: {accuracy:.2%}\n")
    tfpconv.summary(model)
    return model, x_test, y_test


def paired_latency_ms(interpreters, images: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Runs images one at a time on every interpreter, interleaved image by image (so drifting
    machine load hits all alike); returns per interpreter its outputs and median ms."""
    outputs = [[] for _ in interpreters]
    times = [[] for _ in interpreters]
    for image in images:
        for i, interpreter in enumerate(interpreters):
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[np.newaxis])
            start = time.perf_counter()
            interpreter.invoke()
            times[i].append(time.perf_counter() - start)
            output_index = interpreter.get_output_details()[0]["index"]
            outputs[i].append(interpreter.get_tensor(output_index)[0].copy())
    return [(np.stack(o), 1000 * float(np.median(t))) for o, t in zip(outputs, times, strict=True)]


def convert_and_run(model: keras.Model, x_test: np.ndarray, y_test: np.ndarray, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fashion_pconv.tflite"
    print("\nconverting, with the delegate's kernels tuned per layer on this machine:")
    tfpconv.convert(model, output_path=path, tune=True)
    plan = tfpconv.read_plan(path)
    skipped = [op for op in plan.skipped if op.op_name == "CONV_2D"]
    print(
        f"converted to {path} ({path.stat().st_size / 1024:.0f} KiB): "
        f"{len(plan.convs)} convolutions planned, {len(skipped)} skipped"
    )

    images = x_test[:200]
    plain = tfpconv.Interpreter(model_path=str(path), use_delegate=False)
    plain.allocate_tensors()
    delegated = tfpconv.Interpreter(model_path=str(path), use_delegate=True)
    delegated.allocate_tensors()
    (plain_out, plain_ms), (fast_out, fast_ms) = paired_latency_ms([plain, delegated], images)
    agree = np.mean(plain_out.argmax(1) == fast_out.argmax(1))
    max_diff = float(np.max(np.abs(plain_out - fast_out)))
    accuracy = np.mean(fast_out.argmax(1) == y_test[: len(images)])
    on_delegate = len(delegated.delegated_nodes())
    left = "" if on_delegate == len(plan.convs) else ", the others measured faster on TFLite"
    print(f"plain TFLite (XNNPACK):  {plain_ms:.3f} ms / image")
    print(
        f"tfpconv delegate:        {fast_ms:.3f} ms / image   ({plain_ms / fast_ms:.2f}x; "
        f"{on_delegate} of {len(plan.convs)} convolutions on the delegate{left})"
    )
    print(
        f"predictions agree on {agree:.1%} of {len(images)} images "
        f"(max |difference| {max_diff:.2e}); delegate accuracy {accuracy:.1%}"
    )


def main() -> None:
    # Show tfpconv's own progress (tuning: per layer, then the whole model) on stderr.
    logging.basicConfig(format="  %(message)s")
    logging.getLogger("tfpconv").setLevel(logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    args = parser.parse_args()
    model, x_test, y_test = train(args)
    convert_and_run(model, x_test, y_test, args.out)


if __name__ == "__main__":
    main()
