"""Dense baseline for the masked dense path: TFLite's default CPU path (XNNPACK) on ResNet-18 224's
convolutions (every 3x3 and the 1x1 downsamples; not the 7x7 stem), each as a one-layer model,
the same shapes and TFLite SAME padding as dense_conv_bench.cc. Run by hand:
  python3 delegate/engine/bench/xnnpack_resnet18_layers.py [--threads 1] [--out xnn.txt]
--out writes "name cpu_ms" lines that `tfpconv_dense_conv_bench --xnnpack=xnn.txt` reads to print
the ratios."""

import argparse
import contextlib
import io
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

# name, input size, in channels, out channels, kernel, stride, occurrences in ResNet-18. Keep in
# step with kLayers in dense_conv_bench.cc.
LAYERS = [
    ("l1_3x3", 56, 64, 64, 3, 1, 4),
    ("l2_3x3s2", 56, 64, 128, 3, 2, 1),
    ("l2_3x3", 28, 128, 128, 3, 1, 3),
    ("l2_1x1s2", 56, 64, 128, 1, 2, 1),
    ("l3_3x3s2", 28, 128, 256, 3, 2, 1),
    ("l3_3x3", 14, 256, 256, 3, 1, 3),
    ("l3_1x1s2", 28, 128, 256, 1, 2, 1),
    ("l4_3x3s2", 14, 256, 512, 3, 2, 1),
    ("l4_3x3", 7, 512, 512, 3, 1, 3),
    ("l4_1x1s2", 14, 256, 512, 1, 2, 1),
]


def out_size(hw, stride):
    return (hw + stride - 1) // stride


def flops(hw, cin, cout, kernel, stride):
    return 2.0 * kernel * kernel * cin * cout * out_size(hw, stride) ** 2


def time_layer(hw, cin, cout, kernel, stride, threads, min_s):
    inp = tf.keras.Input((hw, hw, cin), batch_size=1)
    conv = tf.keras.layers.Conv2D(cout, kernel, strides=stride, padding="same", activation="relu")
    out = conv(inp)
    model = tf.keras.Model(inp, out)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints the exported graph
        flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(flat)
        f.flush()
        interp = Interpreter(model_path=f.name, num_threads=threads)
        interp.allocate_tensors()
        idx = interp.get_input_details()[0]["index"]
        interp.set_tensor(idx, np.random.rand(1, hw, hw, cin).astype(np.float32))
        interp.invoke()
        times, cpu = [], time.process_time()
        while len(times) < 5 or (sum(times) < min_s and len(times) < 100):
            t = time.perf_counter()
            interp.invoke()
            times.append(time.perf_counter() - t)
        cpu = (time.process_time() - cpu) / len(times) / threads
    return sorted(times)[len(times) // 2] * 1e3, cpu * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min_s", type=float, default=0.5)
    ap.add_argument("--layer")
    ap.add_argument("--out", help='write "name cpu_ms" lines for dense_conv_bench --xnnpack=')
    args = ap.parse_args()
    total = 0.0
    lines = []
    print(f"{'layer':9} {'wall ms':>8} {'cpu ms':>8} {'GF/s cpu':>9}")
    for name, hw, cin, cout, kernel, stride, count in LAYERS:
        if args.layer and name != args.layer:
            continue
        wall, cpu = time_layer(hw, cin, cout, kernel, stride, args.threads, args.min_s)
        total += cpu * count
        gflop = flops(hw, cin, cout, kernel, stride) * 1e-9
        print(f"{name:9} {wall:8.3f} {cpu:8.3f} {gflop / cpu * 1e3:9.1f}", flush=True)
        lines.append(f"{name} {cpu:.4f}\n")
    if not args.layer:
        print(f"ResNet-18 convolutions but the stem: {total:.1f} ms (cpu time)")
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(lines)


if __name__ == "__main__":
    main()
