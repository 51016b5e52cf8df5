"""Inspection: what the plan of a converted model covers, per candidate operator (``tfpconv
inspect``).

Every CONV_2D and FULLY_CONNECTED of the model is a row: its shapes, whether the plan covers it
(and why not), what its plan keeps (weights, FLOPs), and its weight bytes -- dense, and as the
delegate keeps them. For the whole file the report has its size and its gzip size (level 9, what
an app download of it costs), measured from the bytes.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tfpconv.tflite.model_file import TFLiteModel, read_model_bytes
from tfpconv.tflite.plan import (
    METADATA_NAME,
    STATE_FREE,
    STATE_UNIFIED,
    DenseConvPlan,
    PatternConvPlan,
    Plan,
    PlanError,
    SkippedOp,
    UnifiedFcPlan,
    UnsupportedOp,
)
from tfpconv.tflite.planner import OpFacts, candidate_ops

_BYTES_PER_WEIGHT = 4  # float32


@dataclass
class LayerReport:
    """One CONV_2D or FULLY_CONNECTED of a converted model, as ``tfpconv inspect`` shows it.

    Byte figures: ``dense_bytes`` is the float32 weight tensor; ``kept_bytes`` what runs it keeps:
    for a planned pattern convolution its kept weights (4 bytes each; codes and library not
    counted), for a planned unified layer its packed size (free blocks 4 bytes per weight, unified
    blocks 4 bytes plus a sign bit per weight, 2 bits of state per block), and for a layer left to
    TFLite its dense bytes.
    """

    subgraph_index: int
    operator_index: int
    name: str
    input_shape: list[int]
    output_shape: list[int]
    kernel_shape: list[int]  # the weights as stored: OHWI, or [out, in] for FULLY_CONNECTED
    strides: list[int]
    planned: bool
    reason: str  # why not planned ("" when planned)
    pattern_histogram: dict[int, int] = field(default_factory=dict)  # 9-bit mask -> kernels
    kernels: int = 0
    kernels_kept: int = 0
    weights: int = 0
    weights_kept: int = 0
    flops: int = 0
    flops_kept: int = 0
    groups: int = 0
    op_name: str = "CONV_2D"  # or "FULLY_CONNECTED"
    kind: str = ""  # the plan kind when planned: "pattern_conv", "unified_fc" or "dense_conv"
    kernels_unified: int = 0  # pattern convolutions: kernels whose four weights share |w|
    block_size: int = 0  # unified_fc: inputs per block
    blocks: int = 0  # unified_fc: all blocks, out * ceil(in / block_size)
    blocks_unified: int = 0
    blocks_pruned: int = 0
    dense_bytes: int = 0
    kept_bytes: int = 0
    activation_masked: float = 0.0  # the zero fraction of its activation mask (FLOPs kept count it)

    @property
    def compression(self) -> float:
        """Dense weights / kept weights (inf when everything is pruned)."""
        return self.weights / self.weights_kept if self.weights_kept else float("inf")

    @property
    def bytes_ratio(self) -> float:
        """Kept bytes / dense bytes (0 when the layer has no weights)."""
        return self.kept_bytes / self.dense_bytes if self.dense_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compression"] = None if not self.weights_kept else round(self.compression, 4)
        data["bytes_ratio"] = round(self.bytes_ratio, 4)
        return data


@dataclass
class ModelReport:
    """Per-layer report of a converted model plus its plan, and the file's sizes."""

    source: str
    producer: str
    schema_version: int
    layers: list[LayerReport]
    metadata: list[str]
    file_bytes: int = 0  # the .tflite file
    gzip_bytes: int = 0  # gzip.compress(file, 9): what a download of it costs

    @property
    def planned(self) -> int:
        """Planned layers of every kind."""
        return sum(layer.planned for layer in self.layers)

    def totals(self) -> dict[str, Any]:
        """Sums over the layers.

        ``convs`` / ``planned`` count CONV_2D layers only (what ``tfpconv inspect``'s "N of M
        CONV_2D planned" says); ``layers`` / ``planned_layers`` count every kind, and
        ``fully_connected`` / ``planned_fully_connected`` the FULLY_CONNECTED ones. Byte sums:
        ``dense_bytes`` / ``kept_bytes`` over every layer (a layer left to TFLite keeps its dense
        bytes), ``planned_dense_bytes`` / ``planned_kept_bytes`` over the planned ones.
        """
        keys = (
            "kernels",
            "kernels_kept",
            "weights",
            "weights_kept",
            "flops",
            "flops_kept",
            "dense_bytes",
            "kept_bytes",
        )
        totals: dict[str, Any] = {k: sum(getattr(layer, k) for layer in self.layers) for k in keys}
        totals["compression"] = (
            round(totals["weights"] / totals["weights_kept"], 4) if totals["weights_kept"] else None
        )
        planned = [layer for layer in self.layers if layer.planned]
        totals["planned_dense_bytes"] = sum(layer.dense_bytes for layer in planned)
        totals["planned_kept_bytes"] = sum(layer.kept_bytes for layer in planned)
        convs = [layer for layer in self.layers if layer.op_name == "CONV_2D"]
        fcs = [layer for layer in self.layers if layer.op_name == "FULLY_CONNECTED"]
        totals["planned"] = sum(layer.planned for layer in convs)
        totals["convs"] = len(convs)
        totals["planned_fully_connected"] = sum(layer.planned for layer in fcs)
        totals["fully_connected"] = len(fcs)
        totals["planned_layers"] = len(planned)
        totals["layers"] = len(self.layers)
        totals["file_bytes"] = self.file_bytes
        totals["gzip_bytes"] = self.gzip_bytes
        return totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "producer": self.producer,
            "schema_version": self.schema_version,
            "metadata": self.metadata,
            "file_bytes": self.file_bytes,
            "gzip_bytes": self.gzip_bytes,
            "layers": [layer.to_dict() for layer in self.layers],
            "totals": self.totals(),
        }

    def size_table(self) -> str:
        """Plain-text table of the weight bytes per planned layer and in total, and the file's
        size and gzip size (for ``tfpconv inspect``)."""
        rows = [("op", "layer", "kind", "dense bytes", "kept bytes", "kept")]
        for layer in self.layers:
            if not layer.planned:
                continue
            op = (
                str(layer.operator_index)
                if layer.subgraph_index == 0
                else f"{layer.subgraph_index}:{layer.operator_index}"
            )
            rows.append(
                (
                    op,
                    _short_name(layer.name),
                    layer.kind,
                    f"{layer.dense_bytes:,}",
                    f"{layer.kept_bytes:,}",
                    f"{layer.bytes_ratio:.2f}x",
                )
            )
        totals = self.totals()
        dense, kept = totals["planned_dense_bytes"], totals["planned_kept_bytes"]
        rows.append(
            (
                "",
                f"planned total ({totals['planned_layers']} of {totals['layers']} layers)",
                "",
                f"{dense:,}",
                f"{kept:,}",
                f"{kept / dense:.2f}x" if dense else "-",
            )
        )
        rows.append(
            (
                "",
                "all layers",
                "",
                f"{totals['dense_bytes']:,}",
                f"{totals['kept_bytes']:,}",
                f"{totals['kept_bytes'] / totals['dense_bytes']:.2f}x"
                if totals["dense_bytes"]
                else "-",
            )
        )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        right = (False, False, False, True, True, True)
        lines = [
            "  ".join(
                cell.rjust(width) if align else cell.ljust(width)
                for cell, width, align in zip(row, widths, right, strict=True)
            ).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        lines.insert(len(lines) - 2, "  ".join("-" * width for width in widths))
        lines.append(
            f"file: {self.file_bytes:,} bytes, gzip -9: {self.gzip_bytes:,} bytes"
            + (f" ({self.gzip_bytes / self.file_bytes:.2f}x)" if self.file_bytes else "")
        )
        return "\n".join(lines)


def _short_name(name: str) -> str:
    """``model/layer/Op`` tensor names -> ``layer`` (the full name is in ``to_dict``)."""
    parts = [part for part in name.split("/") if part]
    return parts[-2] if len(parts) >= 2 else name


def inspect_model(model: str | os.PathLike[str] | bytes | bytearray) -> ModelReport:
    """Report every CONV_2D and FULLY_CONNECTED of a converted .tflite model and what its plan
    covers, with the file's size and gzip size.

    Checks the plan against the model: a planned layer whose weights no longer match the plan's
    checksum is reported as not planned ("stale plan").

    Raises:
      FileNotFoundError, TFLiteModelError, PlanError (no or corrupt plan).
    """
    data, source = read_model_bytes(model)
    tmodel = TFLiteModel.from_bytes(data, source)
    payload = tmodel.metadata(METADATA_NAME)
    if payload is None:
        raise PlanError(
            f"{source}: no {METADATA_NAME!r} metadata; convert the model with `tfpconv convert` "
            "first"
        )
    plan = Plan.from_bytes(payload, f"{source}: {METADATA_NAME} metadata")
    layers = [
        _layer_report(tmodel, facts, plan.find(facts.subgraph_index, facts.operator_index))
        for facts in candidate_ops(tmodel)
    ]
    return ModelReport(
        source,
        plan.producer,
        plan.schema_version,
        layers,
        tmodel.metadata_names(),
        file_bytes=len(data),
        gzip_bytes=len(gzip.compress(data, compresslevel=9)),
    )


def _positions(facts: OpFacts) -> int:
    """Output positions one weight is used at: H x W for a convolution, the rows between batch
    and features for a FULLY_CONNECTED (1 for [batch, out])."""
    out = facts.output_shape
    if facts.op_name == "FULLY_CONNECTED":
        return int(np.prod([max(d, 1) for d in out[1:-1]])) if len(out) >= 3 else 1
    return (max(out[1], 1) * max(out[2], 1)) if len(out) == 4 else 1


def _stale_reason(model: TFLiteModel, facts: OpFacts, entry: Any, shape: list[int]) -> str:
    """Why a plan entry does not describe the operator's live weights ("" when it does)."""
    # Compare first: a corrupt plan may name a tensor the model does not have.
    data = None
    if entry.weight_tensor_index == facts.weight_tensor_index:
        data = model.tensor_data(facts.subgraph_index, facts.weight_tensor_index)
    if data is None:
        what = "filter" if facts.op_name == "CONV_2D" else "weight"
        return f"stale plan (it names another {what} tensor)"
    if not entry.matches_weights(data):
        return "stale plan (weights changed since conversion: checksum mismatch)"
    planned_shape = entry.weight_shape if isinstance(entry, UnifiedFcPlan) else entry.kernel_shape
    if list(planned_shape) != shape:
        return "stale plan (kernel shape differs)"
    return ""


def _layer_report(model: TFLiteModel, facts: OpFacts, entry: Any) -> LayerReport:
    shape = list(facts.kernel_shape)
    positions = _positions(facts)
    kernels = shape[0] * shape[3] if len(shape) == 4 else 0
    weights = int(np.prod(shape)) if shape else 0
    dense_bytes = weights * _BYTES_PER_WEIGHT
    report = LayerReport(
        subgraph_index=facts.subgraph_index,
        operator_index=facts.operator_index,
        name=facts.name,
        input_shape=list(facts.input_shape),
        output_shape=list(facts.output_shape),
        kernel_shape=shape,
        strides=list(facts.strides),
        planned=False,
        reason="",
        kernels=kernels,
        kernels_kept=kernels,
        weights=weights,
        weights_kept=weights,
        flops=2 * positions * weights,
        flops_kept=2 * positions * weights,
        op_name=facts.op_name,
        dense_bytes=dense_bytes,
        kept_bytes=dense_bytes,
    )
    if isinstance(entry, (PatternConvPlan, UnifiedFcPlan, DenseConvPlan)):
        report.reason = _stale_reason(model, facts, entry, shape)
        if not report.reason:
            report.planned = True
            report.kind = entry.kind
            if isinstance(entry, PatternConvPlan):
                _pattern_figures(report, entry, positions)
            elif isinstance(entry, UnifiedFcPlan):
                _unified_figures(report, entry, positions)
        mask = getattr(entry, "activation_mask", None)
        if report.planned and mask is not None:
            report.activation_masked = mask.masked_fraction
            report.flops_kept = round(report.flops_kept * (1.0 - mask.masked_fraction))
    elif isinstance(entry, UnsupportedOp):
        report.reason = (
            f"needs plan feature {entry.missing.name!r} (tfpconv {entry.missing.since} or newer)"
        )
    elif isinstance(entry, SkippedOp):
        report.reason = entry.reason
    else:
        report.reason = "not in the plan"
    return report


def _pattern_figures(report: LayerReport, conv: PatternConvPlan, positions: int) -> None:
    report.kernels_kept = conv.kernels_kept
    report.weights_kept = conv.weights_kept
    report.flops_kept = 2 * positions * conv.weights_kept
    report.groups = len(conv.group_offsets) - 1
    report.pattern_histogram = conv.pattern_histogram()
    report.kernels_unified = conv.kernels_unified
    report.kept_bytes = conv.weights_kept * _BYTES_PER_WEIGHT


def _unified_figures(report: LayerReport, op: UnifiedFcPlan, positions: int) -> None:
    """Figures of a unified layer: weights_kept counts the float values it stores (a unified
    block stores one); per position a free weight costs a multiply-add (2 FLOPs) and a unified
    block of n inputs n + 1 (adding the signed inputs, one multiply-add)."""
    lengths = np.broadcast_to(op.block_lengths(), op.states.shape)
    free = int(lengths[op.states == STATE_FREE].sum())
    unified = op.states == STATE_UNIFIED
    counts = op.state_counts()
    report.weights_kept = op.stored_values
    if report.kernels:  # a 1x1 convolution: one weight per kernel; pruned blocks remove them
        report.kernels_kept = op.weights_kept
    report.flops_kept = positions * (2 * free + int((lengths[unified] + 1).sum()))
    report.block_size = op.block_size
    report.blocks = int(op.states.size)
    report.blocks_unified = counts["unified"]
    report.blocks_pruned = counts["pruned"]
    report.kept_bytes = op.packed_bytes
