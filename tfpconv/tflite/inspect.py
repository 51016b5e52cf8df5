"""Inspection: what the plan of a converted model covers, per CONV_2D (``tfpconv inspect``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tfpconv.tflite.model_file import TFLiteModel, read_model_bytes
from tfpconv.tflite.plan import (
    METADATA_NAME,
    PatternConvPlan,
    Plan,
    PlanError,
    SkippedOp,
    UnsupportedOp,
)
from tfpconv.tflite.planner import ConvFacts, conv_ops


@dataclass
class LayerReport:
    """One CONV_2D of a converted model, as ``tfpconv inspect`` shows it."""

    subgraph_index: int
    operator_index: int
    name: str
    input_shape: list[int]
    output_shape: list[int]
    kernel_shape: list[int]  # OHWI
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

    @property
    def compression(self) -> float:
        """Dense weights / kept weights (inf when everything is pruned)."""
        return self.weights / self.weights_kept if self.weights_kept else float("inf")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compression"] = None if not self.weights_kept else round(self.compression, 4)
        return data


@dataclass
class ModelReport:
    """Per-layer report of a converted model plus its plan."""

    source: str
    producer: str
    schema_version: int
    layers: list[LayerReport]
    metadata: list[str]

    @property
    def planned(self) -> int:
        return sum(layer.planned for layer in self.layers)

    def totals(self) -> dict[str, Any]:
        keys = ("kernels", "kernels_kept", "weights", "weights_kept", "flops", "flops_kept")
        totals: dict[str, Any] = {k: sum(getattr(layer, k) for layer in self.layers) for k in keys}
        totals["compression"] = (
            round(totals["weights"] / totals["weights_kept"], 4) if totals["weights_kept"] else None
        )
        totals["planned"] = self.planned
        totals["convs"] = len(self.layers)
        return totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "producer": self.producer,
            "schema_version": self.schema_version,
            "metadata": self.metadata,
            "layers": [layer.to_dict() for layer in self.layers],
            "totals": self.totals(),
        }


def inspect_model(model: str | os.PathLike[str] | bytes | bytearray) -> ModelReport:
    """Report every CONV_2D of a converted .tflite model and what its plan covers.

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
        for facts in conv_ops(tmodel)
    ]
    return ModelReport(source, plan.producer, plan.schema_version, layers, tmodel.metadata_names())


def _layer_report(model: TFLiteModel, facts: ConvFacts, entry: Any) -> LayerReport:
    shape = list(facts.kernel_shape)
    out_h, out_w = (
        (facts.output_shape[1], facts.output_shape[2]) if len(facts.output_shape) == 4 else (1, 1)
    )
    positions = max(out_h, 1) * max(out_w, 1)
    kernels = shape[0] * shape[3] if len(shape) == 4 else 0
    weights = int(np.prod(shape)) if shape else 0
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
    )
    if isinstance(entry, PatternConvPlan):
        # Compare first: a corrupt plan may name a tensor the model does not have.
        data = None
        if entry.weight_tensor_index == facts.weight_tensor_index:
            data = model.tensor_data(facts.subgraph_index, facts.weight_tensor_index)
        if data is None:
            report.reason = "stale plan (it names another filter tensor)"
        elif not entry.matches_weights(data):
            report.reason = "stale plan (weights changed since conversion: checksum mismatch)"
        elif list(entry.kernel_shape) != shape:
            report.reason = "stale plan (kernel shape differs)"
        else:
            report.planned = True
            report.kernels_kept = entry.kernels_kept
            report.weights_kept = entry.weights_kept
            report.flops_kept = 2 * positions * entry.weights_kept
            report.groups = len(entry.group_offsets) - 1
            report.pattern_histogram = entry.pattern_histogram()
    elif isinstance(entry, UnsupportedOp):
        report.reason = (
            f"needs plan feature {entry.missing.name!r} (tfpconv {entry.missing.since} or newer)"
        )
    elif isinstance(entry, SkippedOp):
        report.reason = entry.reason
    else:
        report.reason = "not in the plan"
    return report
