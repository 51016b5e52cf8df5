"""Dense baseline: TFLite's default CPU path (XNNPACK) on the same VGG-16 3x3 layer shapes as
engine_bench.cc. Run by hand: python3 delegate/engine/bench/xnnpack_baseline.py [--threads 1]."""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from xnnpack_resnet18_layers import time_layer  # noqa: E402

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
        wall, cpu = time_layer(hw, cin, cout, 3, 1, args.threads, args.min_s)
        gflop = 2 * 9 * cin * cout * hw * hw * 1e-9
        total += cpu * count
        print(f"{name:8} {wall:8.2f} {cpu:8.2f} {gflop / cpu * 1e3:9.1f}", flush=True)
    if not args.layer:
        print(f"VGG-16 3x3 layers conv1_2..conv5_3: {total:.1f} ms (cpu time)")


if __name__ == "__main__":
    main()
