#!/usr/bin/env python3
"""Writes the Android demo's assets: the converted model and a handful of real test images.

    python3 android_demo/make_assets.py --model runs/demo/fashion_pconv.tflite
    python3 android_demo/make_assets.py --model my_pruned_model.keras --per-class 2

into ``android_demo/app/src/main/assets/`` (``--out`` to change):

* ``model.tflite``: ``--model`` converted with ``tfpconv.convert`` (a Keras model file or SavedModel
  is converted, a .tflite is re-planned; either way the result carries the "tfpconv" plan). With
  ``--no-plan`` a .tflite is copied as it is (the app then shows that the delegate claimed nothing).
* ``images/NN_<class>.png``: the first ``--per-class`` images of every class of the real
  Fashion-MNIST test set (Debian's ``dataset-fashion-mnist``, idx format), 28x28 8-bit grayscale
  PNGs, and ``images/manifest.csv``: ``file,label,name,host_prediction``, where host_prediction is
  what plain TFLite predicts for the image on this machine (-1 when it could not run), so the app
  can show that the phone computes the same.

``--images-only`` skips the model. Everything is deterministic; the images take a few kB.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "app" / "src" / "main" / "assets"
DEFAULT_DATASET = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_MODEL = REPO_ROOT / "runs" / "demo" / "fashion_pconv.tflite"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MANIFEST_HEADER = "file,label,name,host_prediction"
SIZE_WARNING_BYTES = 1 << 20
IMAGE_SIDE = 28


# -- data ----------------------------------------------------------------------------------------


def read_idx(path: Path) -> tuple[tuple[int, ...], bytes]:
    """Shape and raw bytes of a gzip'ed unsigned-byte IDX file (the MNIST format)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = 1
    for dim in shape:
        count *= dim
    if len(data) - header != count:
        raise ValueError(f"{path}: {len(data) - header} bytes of data for shape {shape}")
    return shape, data[header:]


def select_test_images(dataset_dir: Path, per_class: int) -> list[tuple[int, int, bytes]]:
    """(test-set index, label, 784 pixel bytes) of the first ``per_class`` images of each class,
    ordered by class, then by index."""
    images_path = dataset_dir / "t10k-images-idx3-ubyte.gz"
    labels_path = dataset_dir / "t10k-labels-idx1-ubyte.gz"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: install Debian's dataset-fashion-mnist "
                f"(apt-get install dataset-fashion-mnist) or pass --dataset-dir"
            )
    shape, pixels = read_idx(images_path)
    (count,), labels = read_idx(labels_path)
    if len(shape) != 3 or shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or shape[0] != count:
        raise ValueError(f"{dataset_dir}: unexpected shapes {shape} and ({count},)")
    size = IMAGE_SIDE * IMAGE_SIDE
    chosen: list[tuple[int, int, bytes]] = []
    for label in range(len(CLASS_NAMES)):
        indices = [i for i in range(count) if labels[i] == label][:per_class]
        if len(indices) < per_class:
            raise ValueError(f"{dataset_dir}: only {len(indices)} test images of class {label}")
        chosen.extend((i, label, pixels[i * size : (i + 1) * size]) for i in indices)
    return chosen


def png_grayscale(width: int, height: int, pixels: bytes) -> bytes:
    """An 8-bit grayscale PNG (no filtering, zlib level 9): deterministic bytes."""
    if len(pixels) != width * height:
        raise ValueError(f"{len(pixels)} pixels for {width}x{height}")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = b"".join(b"\x00" + pixels[y * width : (y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def image_file_name(position: int, label: int) -> str:
    slug = "".join(c if c.isalnum() else "_" for c in CLASS_NAMES[label].lower())
    return f"{position:02d}_{slug}.png"


# -- model ---------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_model(model: Path, plan: bool) -> bytes:
    """The .tflite bytes for the app: tfpconv.convert's output, or the .tflite as it is."""
    if not model.exists():
        hint = (
            " (train and convert one with `python3 examples/demo.py`)"
            if model == DEFAULT_MODEL
            else ""
        )
        raise FileNotFoundError(f"{model}: no such model{hint}")
    is_tflite = model.is_file() and model.read_bytes()[4:8] == b"TFL3"
    if not plan:
        if not is_tflite:
            raise ValueError(f"{model}: --no-plan needs a .tflite file")
        return model.read_bytes()
    try:
        sys.path.insert(0, str(REPO_ROOT))
        import tfpconv  # noqa: PLC0415 - heavy (TensorFlow); only when a model is made
    except ImportError as err:
        if is_tflite:
            print(
                f"warning: tfpconv is not importable ({err}); copying {model} unchanged",
                file=sys.stderr,
            )
            return model.read_bytes()
        raise
    return tfpconv.convert(str(model))


def describe_plan(data: bytes) -> str:
    try:
        import tfpconv  # noqa: PLC0415

        plan = tfpconv.read_plan(data)
    except Exception as err:  # noqa: BLE001 - a report line, never fatal
        return f"no usable tfpconv plan ({str(err).splitlines()[0]})"
    text = f"tfpconv plan: {len(plan.convs)} CONV_2D planned, {len(plan.skipped)} skipped"
    if not plan.convs:
        text += " (no pattern-pruned convolution: the delegate will claim nothing)"
    return text


def host_predictions(data: bytes, images: list[tuple[int, int, bytes]]) -> list[int] | None:
    """Plain TFLite's predictions on this machine (LiteRT or tf.lite), or None if neither runs."""
    try:
        import numpy as np  # noqa: PLC0415

        try:
            from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
        except ImportError:
            import tensorflow as tf  # noqa: PLC0415

            Interpreter = tf.lite.Interpreter  # noqa: N806
        interpreter = Interpreter(model_content=data)
        interpreter.allocate_tensors()
        input_detail = interpreter.get_input_details()[0]
        output_index = interpreter.get_output_details()[0]["index"]
        predictions = []
        for _, _, pixels in images:
            x = np.frombuffer(pixels, dtype=np.uint8).astype(np.float32) / 255.0
            interpreter.set_tensor(input_detail["index"], x.reshape(input_detail["shape"]))
            interpreter.invoke()
            predictions.append(int(np.argmax(interpreter.get_tensor(output_index))))
        return predictions
    except Exception as err:  # noqa: BLE001 - optional check
        print(
            f"warning: could not run the model on this machine ({err}); host_prediction = -1",
            file=sys.stderr,
        )
        return None


# -- main ----------------------------------------------------------------------------------------


def write_images(
    out: Path, images: list[tuple[int, int, bytes]], predictions: list[int] | None
) -> int:
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = [MANIFEST_HEADER]
    names = []
    total = 0
    for position, (_, label, pixels) in enumerate(images):
        name = image_file_name(position, label)
        png = png_grayscale(IMAGE_SIDE, IMAGE_SIDE, pixels)
        write_atomic(image_dir / name, png)
        total += len(png)
        names.append(name)
        host = predictions[position] if predictions is not None else -1
        lines.append(f"{name},{label},{CLASS_NAMES[label]},{host}")
    manifest = ("\n".join(lines) + "\n").encode()
    write_atomic(image_dir / "manifest.csv", manifest)
    # Images of an earlier run that this manifest no longer lists.
    for stale in image_dir.glob("[0-9][0-9]_*.png"):
        if stale.name not in names:
            stale.unlink()
    return total + len(manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help="Keras model (.keras/.h5/SavedModel) or .tflite "
        f"(default: {DEFAULT_MODEL.relative_to(REPO_ROOT)}, "
        "written by examples/demo.py)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="assets directory")
    parser.add_argument(
        "--per-class", type=int, default=1, help="test images per class (default 1: 10 images)"
    )
    parser.add_argument(
        "--dataset-dir",
        type=Path,
        default=DEFAULT_DATASET,
        help="folder with Fashion-MNIST's t10k-*.gz files",
    )
    parser.add_argument(
        "--no-plan",
        action="store_true",
        help="copy a .tflite unchanged instead of converting it with tfpconv",
    )
    parser.add_argument("--images-only", action="store_true", help="write only the images")
    args = parser.parse_args(argv)
    if not 1 <= args.per_class <= 20:
        parser.error("--per-class must be in 1..20")

    try:
        images = select_test_images(args.dataset_dir, args.per_class)
        predictions = None
        total = 0
        if not args.images_only:
            data = make_model(args.model, plan=not args.no_plan)
            write_atomic(args.out / "model.tflite", data)
            total += len(data)
            print(f"{args.out / 'model.tflite'}: {len(data) / 1024:.0f} KiB, {describe_plan(data)}")
            predictions = host_predictions(data, images)
        total += write_images(args.out, images, predictions)
    except (OSError, ValueError) as err:
        print(f"make_assets: {err}", file=sys.stderr)
        return 1

    print(f"{args.out / 'images'}: {len(images)} test images + manifest.csv")
    if predictions is not None:
        correct = sum(p == label for p, (_, label, _) in zip(predictions, images, strict=True))
        print(f"plain TFLite on this machine: {correct}/{len(images)} correct")
    print(f"assets: {total / 1024:.0f} KiB in all")
    if total > SIZE_WARNING_BYTES:
        print("warning: the assets exceed 1 MiB; keep them out of git", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
