"""Planning: which operators of a .tflite model the delegate can run, and their plans.

The candidates are CONV_2D and FULLY_CONNECTED operators with float32 constant weights. Their
plans come from the weights alone:

* a 3x3 CONV_2D whose every kernel keeps a 4-weight centre pattern (or is all zero) is a
  :class:`~tfpconv.tflite.plan.PatternConvPlan`; its kernels whose four weights share one
  magnitude are recorded as unified;
* a FULLY_CONNECTED, or a 1x1 CONV_2D, whose weight matrix packs by its unified and pruned blocks
  (:mod:`tfpconv.sparsity.unification`) to at most :data:`MAX_PACKED_FRACTION` of its dense bytes
  is a :class:`~tfpconv.tflite.plan.UnifiedFcPlan`, with the block size of
  :data:`UNIFIED_BLOCK_SIZES` that packs it smallest;
* a CONV_2D whose output feeds only a MUL by a constant 0/1 mask ``[1, H, W, 1]`` (an activation
  mask, :mod:`tfpconv.activation`) carries an
  :class:`~tfpconv.tflite.plan.ActivationMaskPlan`: a pattern convolution records it, and a
  dense 3x3 or 1x1 one that is neither pattern-pruned nor unified is a
  :class:`~tfpconv.tflite.plan.DenseConvPlan`.

Every other candidate goes to ``Plan.skipped`` with the reason in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tfpconv.sparsity import patterns, unification
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
    ActivationMaskPlan,
    DenseConvPlan,
    PatternConvPlan,
    Plan,
    SkippedOp,
    UnifiedFcPlan,
    crc32,
)

_CONV_2D = schema.BuiltinOperator.CONV_2D
_FULLY_CONNECTED = schema.BuiltinOperator.FULLY_CONNECTED
_MUL = schema.BuiltinOperator.MUL
_FLOAT32 = schema.TensorType.FLOAT32

#: Block sizes tried for a unified weight matrix, in order of preference on equal packed size
#: (the engine reads these best).
UNIFIED_BLOCK_SIZES = unification.ENGINE_BLOCK_SIZES
#: A unified matrix is planned only when it packs to at most this fraction of its dense bytes.
MAX_PACKED_FRACTION = 0.75


@dataclass
class OpFacts:
    """What the planner and the report need to know about one candidate operator."""

    subgraph_index: int
    operator_index: int
    name: str
    op_name: str = "CONV_2D"  # or "FULLY_CONNECTED"
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    kernel_shape: tuple[int, ...] = ()  # the weights as stored: OHWI, or [out, in]
    strides: tuple[int, int] = (1, 1)
    weights: np.ndarray | None = None  # float32, shaped like kernel_shape
    weight_tensor_index: int = -1
    weight_data: bytes | None = None
    reason: str | None = None  # why it cannot be planned
    activation_mask: ActivationMaskPlan | None = None  # the MUL by a 0/1 mask after it, if any


#: The name of :class:`OpFacts` before FULLY_CONNECTED operators were candidates.
ConvFacts = OpFacts


_SIGNATURE_NAMES = ("StatefulPartitionedCall", "PartitionedCall", "serving_default")


def _op_label(model: TFLiteModel, subgraph_index: int, op: Any) -> str:
    """A readable name for an operator: from its output tensor's name, else its weights'."""
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


def _op_facts(
    model: TFLiteModel, subgraph_index: int, operator_index: int, op: Any, op_name: str
) -> tuple[OpFacts, tuple[Any, Any, Any] | None]:
    """The facts every candidate shares, and its (input, weights, output) tensors (None, with
    ``facts.reason`` set, when the operator is malformed)."""
    facts = OpFacts(
        subgraph_index, operator_index, _op_label(model, subgraph_index, op), op_name=op_name
    )
    inputs = [int(t) for t in (op.inputs if op.inputs is not None else [])]
    outputs = [int(t) for t in (op.outputs if op.outputs is not None else [])]
    if len(inputs) < 2 or inputs[0] < 0 or inputs[1] < 0 or not outputs:
        what = "filter" if op_name == "CONV_2D" else "weights"
        facts.reason = f"malformed {op_name} (missing input or {what})"
        return facts, None
    tensors = tuple(model.tensor(subgraph_index, i) for i in (inputs[0], inputs[1], outputs[0]))
    facts.input_shape = tensor_shape(tensors[0])
    facts.kernel_shape = tensor_shape(tensors[1])
    facts.output_shape = tensor_shape(tensors[2])
    facts.weight_tensor_index = inputs[1]
    return facts, tensors


def _conv_facts(model: TFLiteModel, subgraph_index: int, operator_index: int, op: Any) -> OpFacts:
    facts, tensors = _op_facts(model, subgraph_index, operator_index, op, "CONV_2D")
    if tensors is None:
        return facts
    data_in, filt, data_out = tensors
    options = op.builtinOptions
    if isinstance(options, schema.Conv2DOptionsT):
        facts.strides = (options.strideH, options.strideW)
    facts.reason = _unplannable(model, subgraph_index, facts, data_in, filt, data_out, options)
    if facts.reason is None:
        facts.activation_mask = _activation_mask(model, subgraph_index, op)
    return facts


def _activation_mask(model: TFLiteModel, subgraph_index: int, op: Any) -> ActivationMaskPlan | None:
    """The activation mask after a CONV_2D: its output feeds only a MUL by a constant float32
    ``[1, H, W, 1]`` tensor of 0s and 1s (H x W = the output's size); None otherwise."""
    output = int(op.outputs[0])
    consumers = model.consumers(subgraph_index, output)
    if (
        len(consumers) != 1
        or consumers[0].opcode != _MUL
        or model.is_output(subgraph_index, output)
    ):
        return None
    mul = consumers[0]
    inputs = [int(t) for t in (mul.op.inputs if mul.op.inputs is not None else [])]
    if len(inputs) != 2 or inputs.count(output) != 1:
        return None
    mask_index = inputs[1] if inputs[0] == output else inputs[0]
    mask = model.tensor(subgraph_index, mask_index)
    out_shape = tensor_shape(model.tensor(subgraph_index, output))
    if mask.type != _FLOAT32 or len(out_shape) != 4:
        return None
    height, width = out_shape[1], out_shape[2]
    if tensor_shape(mask) != (1, height, width, 1):
        return None
    data = model.tensor_data(subgraph_index, mask_index)
    if data is None or len(data) != height * width * 4:
        return None
    values = unpack_float32(data)
    if not np.all((values == 0.0) | (values == 1.0)):
        return None
    return ActivationMaskPlan(
        operator_index=mul.operator_index,
        mask_tensor_index=mask_index,
        mask_checksum=crc32(data),
        height=height,
        width=width,
        masked_pixels=int(np.count_nonzero(values == 0.0)),
    )


def _unplannable(
    model: TFLiteModel,
    subgraph_index: int,
    facts: OpFacts,
    data_in: Any,
    filt: Any,
    data_out: Any,
    options: Any,
) -> str | None:
    """Why a CONV_2D cannot be planned, or None (then ``facts.weights`` is set).

    3x3 filters are candidates for pattern plans, 1x1 filters for unified plans.
    """
    if filt.type != _FLOAT32:
        return f"{tensor_type_name(filt.type).lower()} weights"
    for role, tensor in (("input", data_in), ("output", data_out)):
        if tensor.type != _FLOAT32:
            return f"{tensor_type_name(tensor.type).lower()} {role}"
    shape = facts.kernel_shape
    if len(shape) != 4:
        return f"filter of rank {len(shape)}"
    if shape[1:3] not in ((patterns.KERNEL_SIZE, patterns.KERNEL_SIZE), (1, 1)):
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
    reason = _constant_weights(model, subgraph_index, facts, "filter")
    if reason is not None:
        return reason
    channels = facts.input_shape[-1] if facts.input_shape else shape[3]
    if channels != shape[3]:
        facts.weights = facts.weight_data = None
        return f"grouped convolution ({channels // max(shape[3], 1)} groups)"
    return None


def _constant_weights(
    model: TFLiteModel, subgraph_index: int, facts: OpFacts, what: str
) -> str | None:
    """Read the constant float32 weights into ``facts``, or say why they cannot be read.

    ``what``: how the reasons name the tensor, "filter" (a CONV_2D's) or "weights".
    """
    plural = what.endswith("s")
    shape = facts.kernel_shape
    data = model.tensor_data(subgraph_index, facts.weight_tensor_index)
    if data is None:
        producer = model.producer(subgraph_index, facts.weight_tensor_index)
        if producer is not None:
            return f"{what} {'are' if plural else 'is'} computed at run time (by {producer.name})"
        return f"{what} {'are' if plural else 'is'} not a constant tensor"
    expected = int(np.prod(shape)) * 4
    if len(data) != expected:
        return (
            f"{what} {'hold' if plural else 'holds'} {len(data)} bytes, expected {expected} for "
            f"float32 {list(shape)}"
        )
    facts.weight_data = data
    facts.weights = unpack_float32(data).reshape(shape)
    return None


def _fc_facts(model: TFLiteModel, subgraph_index: int, operator_index: int, op: Any) -> OpFacts:
    facts, tensors = _op_facts(model, subgraph_index, operator_index, op, "FULLY_CONNECTED")
    if tensors is None:
        return facts
    data_in, weights, data_out = tensors
    facts.reason = _fc_unplannable(model, subgraph_index, facts, data_in, weights, data_out, op)
    return facts


def _fc_unplannable(
    model: TFLiteModel,
    subgraph_index: int,
    facts: OpFacts,
    data_in: Any,
    weights: Any,
    data_out: Any,
    op: Any,
) -> str | None:
    """Why a FULLY_CONNECTED cannot be planned, or None (then ``facts.weights`` is set)."""
    if weights.type != _FLOAT32:
        return f"{tensor_type_name(weights.type).lower()} weights"
    for role, tensor in (("input", data_in), ("output", data_out)):
        if tensor.type != _FLOAT32:
            return f"{tensor_type_name(tensor.type).lower()} {role}"
    shape = facts.kernel_shape
    if len(shape) != 2:
        return f"weights of rank {len(shape)}"
    if min(shape) <= 0:
        return f"weights of shape {list(shape)}"
    options = op.builtinOptions
    if not isinstance(options, schema.FullyConnectedOptionsT):
        return "FULLY_CONNECTED without options"
    if options.weightsFormat != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
        return "weights in a shuffled format"
    if weights.sparsity is not None:
        return "weights stored in TFLite's sparse format"
    return _constant_weights(model, subgraph_index, facts, "weights")


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


def _unified_kernels(
    weights: np.ndarray, codes: np.ndarray, library: np.ndarray
) -> np.ndarray | None:
    """Per (out, in) kernel, 1 when the four weights its pattern keeps share one magnitude (bit for
    bit, non-zero); None when no kernel is unified."""
    if not np.any(codes >= 0):
        return None
    keep = patterns.projection_mask(codes.T, library)  # HWIO, codes (in, out)
    states = unification.read_pattern_states(np.transpose(weights, (1, 2, 3, 0)), keep).T
    unified = (states == unification.UNIFIED).astype(np.uint8)
    return unified if unified.any() else None


def _plan_conv(facts: OpFacts, filter_group_size: int) -> PatternConvPlan | str:
    """The plan of a plannable 3x3 CONV_2D, or the reason why its weights are not
    pattern-pruned."""
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
        unified=_unified_kernels(weights, codes, library),
        activation_mask=facts.activation_mask,
    )


def _plan_unified(facts: OpFacts) -> UnifiedFcPlan | str:
    """The plan of a plannable FULLY_CONNECTED or 1x1 CONV_2D, or the reason why its weights do
    not pack small enough by unified and pruned blocks."""
    weights = facts.weights
    assert weights is not None and facts.weight_data is not None
    out_features, in_features = weights.shape[0], weights.shape[-1]
    # unification's dense layout is Keras' (in, out); the weights are [out, in] / [out, 1, 1, in].
    kernel = weights.reshape(out_features, in_features).T
    block_size, states, packed = unification.best_dense_states(kernel, UNIFIED_BLOCK_SIZES)
    dense = len(facts.weight_data)
    if packed > MAX_PACKED_FRACTION * dense:
        return f"weights not unified or pruned (packed {packed / dense:.2f}x of dense)"
    return UnifiedFcPlan(
        subgraph_index=facts.subgraph_index,
        operator_index=facts.operator_index,
        weight_tensor_index=facts.weight_tensor_index,
        weight_shape=facts.kernel_shape,
        block_size=block_size,
        states=states,
        weight_checksum=crc32(facts.weight_data),
        weight_bytes=dense,
        weight_checksum_kind=CHECKSUM_CRC32,
    )


def _plan_dense(facts: OpFacts) -> DenseConvPlan:
    """The plan of a masked CONV_2D with dense weights."""
    assert facts.weight_data is not None and facts.activation_mask is not None
    return DenseConvPlan(
        subgraph_index=facts.subgraph_index,
        operator_index=facts.operator_index,
        weight_tensor_index=facts.weight_tensor_index,
        kernel_shape=facts.kernel_shape,
        weight_checksum=crc32(facts.weight_data),
        weight_bytes=len(facts.weight_data),
        weight_checksum_kind=CHECKSUM_CRC32,
        activation_mask=facts.activation_mask,
    )


def _plan_op(
    facts: OpFacts, filter_group_size: int
) -> PatternConvPlan | UnifiedFcPlan | DenseConvPlan | str:
    """The plan of a candidate operator, or the reason why it is not planned."""
    if facts.reason is not None:
        return facts.reason
    if facts.op_name == "CONV_2D" and facts.kernel_shape[1:3] != (1, 1):
        result: PatternConvPlan | UnifiedFcPlan | str = _plan_conv(facts, filter_group_size)
    else:
        result = _plan_unified(facts)
    if isinstance(result, str) and facts.activation_mask is not None:
        return _plan_dense(facts)
    return result


def conv_ops(model: TFLiteModel) -> list[OpFacts]:
    """Facts of every CONV_2D of the model, in execution order."""
    return [
        _conv_facts(model, ref.subgraph_index, ref.operator_index, ref.op)
        for ref in model.operators()
        if ref.opcode == _CONV_2D
    ]


def candidate_ops(model: TFLiteModel) -> list[OpFacts]:
    """Facts of every CONV_2D and FULLY_CONNECTED of the model, in execution order."""
    readers = {_CONV_2D: _conv_facts, _FULLY_CONNECTED: _fc_facts}
    return [
        readers[ref.opcode](model, ref.subgraph_index, ref.operator_index, ref.op)
        for ref in model.operators()
        if ref.opcode in readers
    ]


def plan_model(model: TFLiteModel, filter_group_size: int = DEFAULT_FILTER_GROUP_SIZE) -> Plan:
    """Plan every CONV_2D and FULLY_CONNECTED of a TFLite model from its weights.

    Every candidate must be float32 with constant weights in TFLite's plain (dense, unshuffled)
    layout; a CONV_2D also needs dilation 1 and no channel groups. Then:

    * a 3x3 CONV_2D is planned (kind ``pattern_conv``) if every kernel keeps a 4-weight centre
      pattern or is all zero (a layer whose every kernel is pruned is planned too: the delegate
      still writes bias and activation); kernels whose four weights share one magnitude are
      marked unified;
    * a FULLY_CONNECTED or 1x1 CONV_2D is planned (kind ``unified_fc``) if its weight blocks,
      read at each of :data:`UNIFIED_BLOCK_SIZES`, pack to at most :data:`MAX_PACKED_FRACTION`
      of the dense bytes at the best of them.

    The others go to ``Plan.skipped`` with the reason.
    """
    plan = Plan()
    for facts in candidate_ops(model):
        result = _plan_op(facts, filter_group_size)
        if isinstance(result, str):
            plan.skipped.append(
                SkippedOp(facts.subgraph_index, facts.operator_index, facts.op_name, result)
            )
        else:
            plan.ops.append(result)
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
      ConversionError: the model has no CONV_2D operator and no FULLY_CONNECTED with unified
        weights.
    """
    check_group_size(filter_group_size)
    model = TFLiteModel.from_bytes(tflite, source)
    plan = plan_model(model, filter_group_size)
    if not plan.ops and not any(op.op_name == "CONV_2D" for op in plan.skipped):
        raise ConversionError(
            f"{source}: the model has no CONV_2D operator and no FULLY_CONNECTED with unified "
            "weights, so there is nothing for tfpconv to plan (convert models with 3x3 Conv2D "
            "layers, or Dense layers trained with weight unification)"
        )
    model.set_metadata(METADATA_NAME, plan.to_bytes())
    return model.to_bytes(), plan


def check_group_size(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConversionError(f"filter_group_size must be a positive integer, got {value!r}")
