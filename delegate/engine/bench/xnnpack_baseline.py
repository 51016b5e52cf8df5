"""Dense baseline: TFLite's default CPU path (XNNPACK) on the same VGG-16 3x3 layer shapes as
engine_bench.cc. Run by hand: python3 delegate/engine/bench/xnnpack_baseline.py [--threads 1]."""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

LAYERS = [
    ("conv1_2", 224, 64, 64, 1),
    ("conv2_1", 112, 64, 128, 1),
    ("conv2_2", 112, 128, 128, 1),
    ("conv3_1", 56, 128, 256, 1),
    ("conv3_2", 56, 256, 256, 2),
    ("conv4_1", 28, 256, 512, 1),
    ("conv4_2", 28, 512, 512, 2),
    ("conv5_1", 14, 512, 512, 3),
]


def time_layer(hw, cin, cout, threads, min_s):
    inp = tf.keras.Input((hw, hw, cin), batch_size=1)
    out = tf.keras.layers.Conv2D(cout, 3, padding="same", activation="relu")(inp)
    model = tf.keras.Model(inp, out)
    flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(flat)
        f.flush()
        interp = tf.lite.Interpreter(model_path=f.name, num_threads=threads)
        interp.allocate_tensors()
        idx = interp.get_input_details()[0]["index"]
        interp.set_tensor(idx, np.random.rand(1, hw, hw, cin).astype(np.float32))
        interp.invoke()
        times, cpu = [], time.process_time()
        while len(times) < 3 or (sum(times) < min_s and len(times) < 50):
            t = time.perf_counter()
            interp.invoke()
            times.append(time.perf_counter() - t)
        cpu = (time.process_time() - cpu) / len(times) / threads
    return sorted(times)[len(times) // 2] * 1e3, cpu * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min_s", type=float, default=0.3)
    ap.add_argument("--layer")
    args = ap.parse_args()
    total = 0.0
    print(f"{'layer':8} {'wall ms':>8} {'cpu ms':>8} {'GF/s cpu':>9}")
    for name, hw, cin, cout, count in LAYERS:
        if args.layer and name != args.layer:
            continue
        wall, cpu = time_layer(hw, cin, cout, args.threads, args.min_s)
        gflop = 2 * 9 * cin * cout * hw * hw * 1e-9
        total += cpu * count
        print(f"{name:8} {wall:8.2f} {cpu:8.2f} {gflop / cpu * 1e3:9.1f}", flush=True)
    if not args.layer:
        print(f"VGG-16 3x3 layers conv1_2..conv5_3: {total:.1f} ms (cpu time)")


if __name__ == "__main__":
    main()
