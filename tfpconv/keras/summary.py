"""Per-layer sparsity statistics of a Keras model: ``tfpconv.summary``."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from tfpconv.keras import compat as _compat
from tfpconv.keras.layer_selection import find_conv_layers
from tfpconv.sparsity import patterns


@dataclass
class LayerStats:
    """Sparsity of one 3x3 convolution, read off its weights' zero structure."""

    name: str
    kernel_shape: tuple[int, ...]
    kernels: int
    kernels_kept: int
    weights: int
    weights_kept: int
    #: Kernels per pattern (9-bit mask, bit 3 * row + col), most used first.
    pattern_histogram: dict[int, int]
    #: Kernels that are neither pruned nor one 4-entry centre pattern (0 once pattern-pruned).
    kernels_not_pattern: int
    #: Multiply-adds x 2 per image, when the output size is known (from the model graph, or the
    #: shape the layer was built with in a subclassed model).
    flops: int | None = None
    flops_kept: int | None = None

    @property
    def pattern_conforming(self) -> bool:
        return self.kernels_not_pattern == 0

    @property
    def weight_density(self) -> float:
        return self.weights_kept / self.weights


@dataclass
class PruningSummary:
    """The result of :func:`summary` and :func:`tfpconv.prune_patterns`."""

    layers: list[LayerStats]
    #: Convolutions left alone, with the reason.
    skipped: dict[str, str] = field(default_factory=dict)
    #: The pattern library used, as 9-bit masks (when the caller knows it).
    library: list[int] | None = None

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def weights_kept(self) -> int:
        return sum(layer.weights_kept for layer in self.layers)

    @property
    def compression(self) -> float:
        """Dense 3x3 weights / kept 3x3 weights over the pruned layers."""
        return self.weights / max(self.weights_kept, 1)

    def layer(self, name: str) -> LayerStats:
        for stats in self.layers:
            if stats.name == name:
                return stats
        raise KeyError(f"no 3x3 convolution named {name!r} in this summary")

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [asdict(layer) for layer in self.layers],
            "skipped": dict(self.skipped),
            "library": self.library,
            "weights": self.weights,
            "weights_kept": self.weights_kept,
            "compression": self.compression,
        }

    def table(self) -> str:
        """The summary as a text table."""
        table = Table(title="tfpconv pattern sparsity", title_justify="left")
        for column in (
            "layer",
            "kernel",
            "kernels kept",
            "weights kept",
            "FLOPs kept",
            "top patterns",
        ):
            table.add_column(
                column, justify="left" if column in ("layer", "top patterns") else "right"
            )
        for s in self.layers:
            flops = "n/a" if s.flops is None else f"{s.flops_kept / s.flops:.1%}"
            top = ", ".join(
                f"{patterns.format_mask(bits)}:{count}"
                for bits, count in list(s.pattern_histogram.items())[:3]
            )
            if s.kernels_not_pattern:
                top = f"{s.kernels_not_pattern} kernels not pattern-sparse" + (
                    f"; {top}" if top else ""
                )
            table.add_row(
                s.name,
                "x".join(str(d) for d in s.kernel_shape),
                f"{s.kernels_kept}/{s.kernels}",
                f"{s.weights_kept}/{s.weights} ({s.weight_density:.1%})",
                flops,
                top,
            )
        for name, reason in self.skipped.items():
            table.add_row(name, "-", "-", "-", "-", f"skipped: {reason}")
        buffer = io.StringIO()
        Console(file=buffer, width=140, no_color=True).print(table)
        total = (
            f"3x3 weights kept: {self.weights_kept}/{self.weights} ({self.compression:.2f}x fewer)"
        )
        return buffer.getvalue() + total

    def __str__(self) -> str:
        return self.table()


def kernel_stats(
    name: str, kernel: np.ndarray, output_shape: Sequence[int | None] | None = None
) -> LayerStats:
    """Statistics of one HWIO 3x3 kernel; ``output_shape`` (N, H, W, C) gives the FLOPs."""
    kernel = patterns.check_kernel(kernel, name)
    codes = patterns.classify_kernels(kernel)
    masks, counts = np.unique(codes[codes >= 0], return_counts=True)
    order = np.lexsort((masks, -counts))  # most used first
    histogram = {int(masks[i]): int(counts[i]) for i in order}
    weights_kept = int(np.count_nonzero(kernel))
    stats = LayerStats(
        name=name,
        kernel_shape=tuple(int(d) for d in kernel.shape),
        kernels=int(codes.size),
        kernels_kept=int(np.count_nonzero(codes != patterns.PRUNED)),
        weights=int(kernel.size),
        weights_kept=weights_kept,
        pattern_histogram=histogram,
        kernels_not_pattern=int(np.count_nonzero(codes == patterns.NOT_A_PATTERN)),
    )
    if output_shape is not None and None not in tuple(output_shape)[1:3]:
        pixels = int(output_shape[1]) * int(output_shape[2])
        stats.flops = 2 * pixels * stats.weights
        stats.flops_kept = 2 * pixels * weights_kept
    return stats


def summary(
    model: Any,
    print_fn: Callable[[str], None] | None = print,
    library: Sequence[int] | None = None,
) -> PruningSummary:
    """Per 3x3 convolution: kernels kept, pattern histogram, weights and FLOPs kept.

    Works on any Keras 3 or tf_keras model, pruned or not (a dense layer shows every kernel as not
    pattern-sparse). Prints a table with ``print_fn`` (pass None to stay quiet) and returns it.

    Example::

        report = tfpconv.summary(model)
        print(report.compression, report.layer("conv2").pattern_histogram)
    """
    prunable, skipped = find_conv_layers(model)
    result = PruningSummary(
        layers=[
            kernel_stats(layer.name, _compat.read(layer.kernel), _compat.layer_output_shape(layer))
            for layer in prunable
        ],
        skipped={s.name: s.reason for s in skipped},
        library=None
        if library is None
        else [int(mask) for mask in patterns.check_library(library)],
    )
    if print_fn is not None:
        print_fn(result.table())
    return result
