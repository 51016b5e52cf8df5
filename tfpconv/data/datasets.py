"""Real data sets that tfpconv's demo, benchmarks and tests use, read from local packages."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
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
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian dims, then unsigned bytes), gzip'ed."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=header)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated ({array.size} bytes of data for shape {shape})")
    return array.reshape(shape)


def fashion_mnist(
    directory: str | os.PathLike | None = None, normalize: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The real Fashion-MNIST (60,000 train / 10,000 test 28x28 images, 10 classes).

    Read from Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``) or
    from ``directory`` holding the four original ``*-idx?-ubyte.gz`` files.

    Returns:
      ``(x_train, y_train), (x_test, y_test)``: images of shape ``(n, 28, 28, 1)`` (float32 in
      [0, 1] when ``normalize``, else uint8) and integer labels of shape ``(n,)``.
    """
    root = Path(directory) if directory is not None else FASHION_MNIST_DIR
    missing = [name for pair in _FILES.values() for name in pair if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}). Install it with "
            f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass directory= a folder "
            f"with the four original .gz files."
        )
    splits = []
    for images_name, labels_name in (_FILES["train"], _FILES["test"]):
        images = _read_idx(root / images_name)
        labels = _read_idx(root / labels_name).astype(np.int64)
        if len(images) != len(labels):
            raise ValueError(f"{root}: {len(images)} images but {len(labels)} labels")
        images = images[..., np.newaxis]
        splits.append((images.astype(np.float32) / 255.0 if normalize else images, labels))
    return splits[0], splits[1]
