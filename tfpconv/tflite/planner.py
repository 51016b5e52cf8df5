"""Planning: which operators of a .tflite model the delegate can run, and their plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tfpconv.sparsity import patterns
from tfpconv.tflite.errors import ConversionError
from tfpconv.tflite.filter_order import DEFAULT_FILTER_GROUP_SIZE, reorder_filters
from tfpconv.tflite.model_file import (
    TFLiteModel,
    schema,
    tensor_shape,
    tensor_type_name,
    unpack_float32,
)
from tfpconv.tflite.plan import (
    CHECKSUM_CRC32,
    METADATA_NAME,
    PatternConvPlan,
    Plan,
    SkippedOp,
    crc32,
)

_CONV_2D = schema.BuiltinOperator.CONV_2D
_FLOAT32 = schema.TensorType.FLOAT32


@dataclass
class ConvFacts:
    """What the planner and the report need to know about one CONV_2D."""

    subgraph_index: int
    operator_index: int
    name: str
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    kernel_shape: tuple[int, ...] = ()
    strides: tuple[int, int] = (1, 1)
    weights: np.ndarray | None = None  # OHWI float32
    weight_tensor_index: int = -1
    weight_data: bytes | None = None
    reason: str | None = None  # why it cannot be planned


_SIGNATURE_NAMES = ("StatefulPartitionedCall", "PartitionedCall", "serving_default")


def _op_label(model: TFLiteModel, subgraph_index: int, op: Any) -> str:
    """A readable name for a CONV_2D: from its output tensor's name, else its filter's."""
    names = []
    for tensors in (op.outputs, op.inputs[1:2] if op.inputs is not None else None):
        for index in [] if tensors is None else [int(t) for t in tensors]:
            if index >= 0:
                name = model.tensor(subgraph_index, index).name
                text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
                names.extend(part for part in text.split(";") if part)
    # A model output is named after the signature, which says nothing about the layer.
    for name in names:
        if not name.startswith(_SIGNATURE_NAMES):
            return name
    return names[0] if names else ""


def _conv_facts(model: TFLiteModel, subgraph_index: int, operator_index: int, op: Any) -> ConvFacts:
    facts = ConvFacts(subgraph_index, operator_index, _op_label(model, subgraph_index, op))
    inputs = [int(t) for t in (op.inputs if op.inputs is not None else [])]
    outputs = [int(t) for t in (op.outputs if op.outputs is not None else [])]
    if len(inputs) < 2 or inputs[0] < 0 or inputs[1] < 0 or not outputs:
        facts.reason = "malformed CONV_2D (missing input or filter)"
        return facts
    data_in = model.tensor(subgraph_index, inputs[0])
    filt = model.tensor(subgraph_index, inputs[1])
    data_out = model.tensor(subgraph_index, outputs[0])
    facts.input_shape = tensor_shape(data_in)
    facts.output_shape = tensor_shape(data_out)
    facts.kernel_shape = tensor_shape(filt)
    facts.weight_tensor_index = inputs[1]
    options = op.builtinOptions
    if isinstance(options, schema.Conv2DOptionsT):
        facts.strides = (options.strideH, options.strideW)
    facts.reason = _unplannable(model, subgraph_index, facts, data_in, filt, data_out, options)
    return facts


def _unplannable(
    model: TFLiteModel,
    subgraph_index: int,
    facts: ConvFacts,
    data_in: Any,
    filt: Any,
    data_out: Any,
    options: Any,
) -> str | None:
    """Why a CONV_2D cannot be planned, or None (then ``facts.weights`` is set)."""
    if filt.type != _FLOAT32:
        return f"{tensor_type_name(filt.type).lower()} weights"
    for role, tensor in (("input", data_in), ("output", data_out)):
        if tensor.type != _FLOAT32:
            return f"{tensor_type_name(tensor.type).lower()} {role}"
    shape = facts.kernel_shape
    if len(shape) != 4:
        return f"filter of rank {len(shape)}"
    if shape[1:3] != (patterns.KERNEL_SIZE, patterns.KERNEL_SIZE):
        return f"kernel {shape[1]}x{shape[2]}"
    if not isinstance(options, schema.Conv2DOptionsT):
        return "CONV_2D without options"
    dilation = (options.dilationHFactor, options.dilationWFactor)
    if dilation != (1, 1):
        return (
            f"dilation {dilation[0]}"
            if dilation[0] == dilation[1]
            else f"dilation {dilation[0]}x{dilation[1]}"
        )
    if filt.sparsity is not None:
        return "filter stored in TFLite's sparse format"
    data = model.tensor_data(subgraph_index, facts.weight_tensor_index)
    if data is None:
        producer = model.producer(subgraph_index, facts.weight_tensor_index)
        if producer is not None:
            return f"filter is computed at run time (by {producer.name})"
        return "filter is not a constant tensor"
    channels = facts.input_shape[-1] if facts.input_shape else shape[3]
    if channels != shape[3]:
        return f"grouped convolution ({channels // max(shape[3], 1)} groups)"
    expected = int(np.prod(shape)) * 4
    if len(data) != expected:
        return f"filter holds {len(data)} bytes, expected {expected} for float32 {list(shape)}"
    facts.weight_data = data
    facts.weights = unpack_float32(data).reshape(shape)
    return None


def _not_a_pattern_reason(weights: np.ndarray, classes: np.ndarray) -> str:
    """Name the first kernel that is not pattern-pruned, in words."""
    bad = np.argwhere(classes == patterns.NOT_A_PATTERN)  # (out, in) pairs
    out_ch, in_ch = (int(v) for v in bad[0])
    kernel = weights[out_ch, :, :, in_ch]
    nonzeros = int(np.count_nonzero(kernel))
    if nonzeros > patterns.WEIGHTS_PER_PATTERN:
        what = f"has {nonzeros} non-zeros"
    else:
        what = "has its non-zeros off the centre pattern (the centre tap is zero)"
    return (
        f"kernel (out {out_ch}, in {in_ch}) {what}: not pattern-pruned "
        f"({len(bad)} of {classes.size} kernels keep no 4-weight centre pattern)"
    )


def _plan_conv(facts: ConvFacts, filter_group_size: int) -> PatternConvPlan | str:
    """The plan of a plannable CONV_2D, or the reason why its weights are not pattern-pruned."""
    weights = facts.weights
    assert weights is not None and facts.weight_data is not None
    # classify_kernels works on Keras' HWIO layout: OHWI -> HWIO, result (in, out) -> (out, in).
    classes = patterns.classify_kernels(np.transpose(weights, (1, 2, 3, 0))).T
    if np.any(classes == patterns.NOT_A_PATTERN):
        return _not_a_pattern_reason(weights, classes)
    # Library: the masks this layer uses, most used first.
    library, codes = patterns.library_by_use(classes)
    order, offsets = reorder_filters(codes, filter_group_size)
    return PatternConvPlan(
        subgraph_index=facts.subgraph_index,
        operator_index=facts.operator_index,
        weight_tensor_index=facts.weight_tensor_index,
        kernel_shape=facts.kernel_shape,
        library=library.tolist(),
        codes=codes.astype(np.int8),
        filter_order=order,
        group_offsets=offsets,
        weight_checksum=crc32(facts.weight_data),
        weight_bytes=len(facts.weight_data),
        weight_checksum_kind=CHECKSUM_CRC32,
    )


def conv_ops(model: TFLiteModel) -> list[ConvFacts]:
    return [
        _conv_facts(model, ref.subgraph_index, ref.operator_index, ref.op)
        for ref in model.operators()
        if ref.opcode == _CONV_2D
    ]


def plan_model(model: TFLiteModel, filter_group_size: int = DEFAULT_FILTER_GROUP_SIZE) -> Plan:
    """Plan every CONV_2D of a TFLite model from its weights' zero structure.

    A CONV_2D is planned if it is float32 with a constant 3x3 filter, dilation 1, no channel
    groups, and every kernel keeps a 4-weight centre pattern or is all zero (a layer whose every
    kernel is pruned is planned too: the delegate still writes bias and activation). The others
    go to ``Plan.skipped`` with the reason.
    """
    plan = Plan()
    for facts in conv_ops(model):
        result = facts.reason or _plan_conv(facts, filter_group_size)
        if isinstance(result, PatternConvPlan):
            plan.ops.append(result)
        else:
            plan.skipped.append(
                SkippedOp(facts.subgraph_index, facts.operator_index, "CONV_2D", result)
            )
    return plan


def embed_plan(
    tflite: bytes | bytearray,
    *,
    filter_group_size: int = DEFAULT_FILTER_GROUP_SIZE,
    source: str = "model",
) -> tuple[bytes, Plan]:
    """Plan a .tflite model and store the plan as its ``tfpconv`` metadata.

    An existing ``tfpconv`` entry is replaced; every other metadata entry is kept as it is.

    Returns:
      ``(model_bytes, plan)``.

    Raises:
      TFLiteModelError: ``tflite`` is not a readable TFLite model.
      ConversionError: the model has no CONV_2D operator.
    """
    check_group_size(filter_group_size)
    model = TFLiteModel.from_bytes(tflite, source)
    plan = plan_model(model, filter_group_size)
    if not plan.ops and not plan.skipped:
        raise ConversionError(
            f"{source}: the model has no CONV_2D operator, so there is nothing for tfpconv to "
            "plan (convert models with 3x3 Conv2D layers)"
        )
    model.set_metadata(METADATA_NAME, plan.to_bytes())
    return model.to_bytes(), plan


def check_group_size(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConversionError(f"filter_group_size must be a positive integer, got {value!r}")
