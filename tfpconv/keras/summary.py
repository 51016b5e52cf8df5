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
from tfpconv.keras.layer_selection import find_conv_layers, unification_candidates
from tfpconv.sparsity import patterns, unification


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
    #: Kept kernels whose non-zero weights share one magnitude (weight unification).
    kernels_unified: int = 0

    @property
    def stored_values(self) -> int:
        """Float values a compressed form keeps: a unified kernel stores one, not four."""
        return self.weights_kept - self.kernels_unified * (patterns.WEIGHTS_PER_PATTERN - 1)

    @property
    def pattern_conforming(self) -> bool:
        return self.kernels_not_pattern == 0

    @property
    def weight_density(self) -> float:
        return self.weights_kept / self.weights


@dataclass
class UnifiedLayerStats:
    """Weight unification of one ``Dense`` or 1x1 ``Conv2D`` layer, read off its weights with the
    block size that packs it smallest (see :func:`tfpconv.sparsity.unification.best_dense_states`).
    """

    name: str
    kernel_shape: tuple[int, ...]
    block_size: int
    blocks: int
    blocks_unified: int
    blocks_pruned: int
    weights: int
    #: Float values the compressed form stores (free weights, one per unified block).
    stored_values: int
    dense_bytes: int
    #: Bytes of the compressed form the delegate reads (values, sign bits, 2 bits per block).
    packed_bytes: int

    @property
    def blocks_free(self) -> int:
        return self.blocks - self.blocks_unified - self.blocks_pruned


@dataclass
class PruningSummary:
    """The result of :func:`summary` and :func:`tfpconv.prune_patterns`."""

    layers: list[LayerStats]
    #: Convolutions left alone, with the reason.
    skipped: dict[str, str] = field(default_factory=dict)
    #: The pattern library used, as 9-bit masks (when the caller knows it).
    library: list[int] | None = None
    #: Dense and 1x1 layers with unified or pruned weight blocks.
    unified: list[UnifiedLayerStats] = field(default_factory=list)

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
            "unified": [asdict(layer) for layer in self.unified],
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
        console = Console(file=buffer, width=140, no_color=True)
        console.print(table)
        total = (
            f"3x3 weights kept: {self.weights_kept}/{self.weights} ({self.compression:.2f}x fewer)"
        )
        unified_kernels = sum(s.kernels_unified for s in self.layers)
        if unified_kernels:
            total += f"; {unified_kernels} kernels unified"
        if self.unified:
            console.print(self._unified_table())
            dense = sum(s.dense_bytes for s in self.unified)
            packed = sum(s.packed_bytes for s in self.unified)
            total += (
                f"\nunified layers: {packed} bytes packed for {dense} dense "
                f"({dense / max(packed, 1):.2f}x fewer)"
            )
        return buffer.getvalue() + total

    def _unified_table(self) -> Table:
        table = Table(title="tfpconv weight unification", title_justify="left")
        for column in ("layer", "kernel", "block", "unified", "pruned", "free", "stored", "bytes"):
            table.add_column(column, justify="left" if column == "layer" else "right")
        for s in self.unified:
            table.add_row(
                s.name,
                "x".join(str(d) for d in s.kernel_shape),
                str(s.block_size),
                f"{s.blocks_unified}/{s.blocks}",
                f"{s.blocks_pruned}/{s.blocks}",
                f"{s.blocks_free}/{s.blocks}",
                f"{s.stored_values}/{s.weights}",
                f"{s.packed_bytes}/{s.dense_bytes} ({s.packed_bytes / s.dense_bytes:.1%})",
            )
        return table

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
        kernels_unified=int(
            np.count_nonzero(unification.read_pattern_states(kernel) == unification.UNIFIED)
        ),
    )
    if output_shape is not None and None not in tuple(output_shape)[1:3]:
        pixels = int(output_shape[1]) * int(output_shape[2])
        stats.flops = 2 * pixels * stats.weights
        stats.flops_kept = 2 * pixels * weights_kept
    return stats


def unified_stats(name: str, kernel: np.ndarray) -> UnifiedLayerStats:
    """Weight-unification statistics of one ``(in, out)`` or ``(1, 1, in, out)`` kernel."""
    kernel = np.asarray(kernel)
    block_size, states, packed = unification.best_dense_states(kernel)
    in_features, out_features = kernel.shape[-2], kernel.shape[-1]
    lengths = unification.block_lengths_dense(in_features, out_features, block_size)
    return UnifiedLayerStats(
        name=name,
        kernel_shape=tuple(int(d) for d in kernel.shape),
        block_size=block_size,
        blocks=int(states.size),
        blocks_unified=int(np.count_nonzero(states == unification.UNIFIED)),
        blocks_pruned=int(np.count_nonzero(states == unification.PRUNED)),
        weights=int(kernel.size),
        stored_values=unification.stored_values(states, lengths),
        dense_bytes=int(kernel.size) * 4,
        packed_bytes=packed,
    )


def summary(
    model: Any,
    print_fn: Callable[[str], None] | None = print,
    library: Sequence[int] | None = None,
) -> PruningSummary:
    """Per 3x3 convolution: kernels kept, pattern histogram, weights and FLOPs kept; per
    ``Dense`` and 1x1 layer with unified or pruned weight blocks: blocks unified / pruned / free,
    stored values and bytes.

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
    candidates, _ = unification_candidates(model)
    for layer in candidates:
        stats = unified_stats(layer.name, _compat.read(layer.kernel))
        if stats.blocks_unified or stats.blocks_pruned:
            result.unified.append(stats)
    if print_fn is not None:
        print_fn(result.table())
    return result
