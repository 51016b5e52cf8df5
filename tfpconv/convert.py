"""Keras -> standard .tflite with the tfpconv plan embedded as ``Model.metadata["tfpconv"]``.

:func:`convert` runs TensorFlow's own TFLite converter (float32, no optimizations unless asked),
then reads the result with the TFLite schema's Python bindings (:mod:`tfpconv.tflite_model`),
derives a :class:`~tfpconv.plan.Plan` from the actual zero structure of every CONV_2D filter, and
stores it as metadata. Nothing else in the model changes, so plain TFLite runs the file exactly as
it runs TF's own conversion; the tfpconv delegate uses the plan to run the pattern convolutions.

:func:`inspect_model` reports per layer what the plan covers (used by ``tfpconv inspect``).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import patterns
from .plan import (
    CHECKSUM_CRC32,
    METADATA_NAME,
    ConvPlan,
    Plan,
    PlanError,
    SkippedOp,
    crc32,
)
from .tflite_model import (
    TFLiteModel,
    TFLiteModelError,
    is_tflite,
    schema,
    tensor_shape,
    tensor_type_name,
    unpack_float32,
)

__all__ = [
    "ConversionError",
    "LayerReport",
    "ModelReport",
    "check_output_path",
    "convert",
    "embed_plan",
    "inspect_model",
    "plan_model",
    "reorder_filters",
    "write_atomic",
]

#: Nominal number of filters per group of the filter kernel reorder.
DEFAULT_FILTER_GROUP_SIZE = 16
#: Group boundaries fall on multiples of this many filters (SIMD/thread granularity).
FILTER_ALIGN = 8

#: File name endings of the Keras model files :func:`convert` loads.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")

_CONV_2D = schema.BuiltinOperator.CONV_2D
_FLOAT32 = schema.TensorType.FLOAT32


class ConversionError(ValueError):
    """The model cannot be converted: says which file / layer / value and what to do."""


# -- filter kernel reorder ---------------------------------------------------------------------


def reorder_filters(
    codes: np.ndarray,
    group_size: int = DEFAULT_FILTER_GROUP_SIZE,
    align: int = FILTER_ALIGN,
) -> tuple[list[int], list[int]]:
    """Filter kernel reorder: the order in which output channels run, and its groups.

    Heuristic (deterministic):

    1. Filters are sorted by their number of kept (non-pruned) kernels, most first, so filters
       next to each other do about the same work.
    2. Within each run of equal count, filters are chained greedily by similarity of their code
       sequences: start from the lexicographically smallest sequence, then repeatedly append the
       remaining filter whose codes agree with the last one at the most input channels (ties: the
       lexicographically smaller sequence, then the lower channel). Neighbours thus tend to share
       patterns *and* pruned inputs, so they share input loads and branch the same way.
    3. The order is cut into ``ceil(out / group_size)`` groups (at most one per ``align``
       filters) of about equal work, each cut on a multiple of ``align`` filters (the last group
       takes the remainder). Work of a filter = 4 x kept kernels + 1, the 1 standing for its bias,
       activation and store, so a fully pruned layer is still split evenly.

    Args:
      codes: ``(out, in)`` integer codes (library position, or -1 for pruned).
      group_size: nominal filters per group (>= 1).
      align: group boundaries fall on multiples of this many filters (>= 1).

    Returns:
      ``(filter_order, group_offsets)`` with ``group_offsets`` rising from 0 to ``out``.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ValueError(f"codes must have shape (out, in) with out >= 1, got {codes.shape}")
    if group_size < 1 or align < 1:
        raise ValueError(f"group_size and align must be >= 1, got {group_size}, {align}")
    out_channels = codes.shape[0]
    kept = np.count_nonzero(codes != patterns.PRUNED, axis=1)

    # Rank of every filter's code sequence in lexicographic order (then channel).
    lex_rank = np.empty(out_channels, dtype=np.int64)
    lex_rank[np.lexsort((np.arange(out_channels), *codes.T[::-1]))] = np.arange(out_channels)

    order: list[int] = []
    for count in sorted(set(kept.tolist()), reverse=True):
        members = np.flatnonzero(kept == count)
        order.extend(_chain_by_similarity(codes[members], lex_rank[members], members))

    work = kept[order] * patterns.WEIGHTS_PER_PATTERN + 1
    return order, _balanced_cuts(work, group_size, align)


def _chain_by_similarity(codes: np.ndarray, lex_rank: np.ndarray, members: np.ndarray) -> list[int]:
    """Greedy nearest-neighbour chain of filters by the number of equal codes."""
    n = len(members)
    if n <= 2:
        return members[np.argsort(lex_rank)].tolist()
    similarity = np.zeros((n, n), dtype=np.float64)
    for value in np.unique(codes):
        hits = (codes == value).astype(np.float32)
        similarity += hits @ hits.T
    # Tie-break: prefer the lexicographically smaller sequence (rank is unique).
    score = similarity * (n + 1) - (np.argsort(np.argsort(lex_rank)))[np.newaxis, :]
    remaining = np.ones(n, dtype=bool)
    current = int(np.argmin(lex_rank))
    chain = [current]
    remaining[current] = False
    for _ in range(n - 1):
        candidates = np.where(remaining, score[current], -np.inf)
        current = int(np.argmax(candidates))
        chain.append(current)
        remaining[current] = False
    return members[chain].tolist()


def _balanced_cuts(work: np.ndarray, group_size: int, align: int) -> list[int]:
    """Group offsets over units of ``align`` filters with about equal total work per group."""
    out_channels = len(work)
    unit_starts = list(range(0, out_channels, align))
    unit_work = np.add.reduceat(work.astype(np.float64), unit_starts)
    num_units = len(unit_starts)
    num_groups = min(num_units, max(1, -(-out_channels // group_size)))
    cumulative = np.concatenate([[0.0], np.cumsum(unit_work)])  # before unit k
    total = cumulative[-1]
    cuts = [0]
    for g in range(1, num_groups):
        lowest = cuts[-1] + 1
        highest = num_units - (num_groups - g)
        target = total * g / num_groups
        choices = np.arange(lowest, highest + 1)
        best = choices[np.argmin(np.abs(cumulative[choices] - target))]
        cuts.append(int(best))
    offsets = [unit_starts[k] for k in cuts] + [out_channels]
    return offsets


# -- planning ----------------------------------------------------------------------------------


@dataclass
class _ConvFacts:
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


def _conv_facts(
    model: TFLiteModel, subgraph_index: int, operator_index: int, op: Any
) -> _ConvFacts:
    facts = _ConvFacts(subgraph_index, operator_index, _op_label(model, subgraph_index, op))
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
    facts: _ConvFacts,
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


def _plan_conv(facts: _ConvFacts, filter_group_size: int) -> ConvPlan | str:
    """The plan of a plannable CONV_2D, or the reason why its weights are not pattern-pruned."""
    weights = facts.weights
    assert weights is not None and facts.weight_data is not None
    # classify_kernels works on Keras' HWIO layout: OHWI -> HWIO, result (in, out) -> (out, in).
    classes = patterns.classify_kernels(np.transpose(weights, (1, 2, 3, 0))).T
    if np.any(classes == patterns.NOT_A_PATTERN):
        return _not_a_pattern_reason(weights, classes)
    used = classes[classes >= 0]
    counts = np.bincount(used, minlength=patterns.NUM_CANDIDATES)
    # Library: the candidates this layer uses, most used first (then candidate index).
    ranked = np.lexsort((np.arange(len(counts)), -counts))
    library_candidates = [int(c) for c in ranked if counts[c]]
    position = np.full(patterns.NUM_CANDIDATES, patterns.PRUNED, dtype=np.int64)
    position[library_candidates] = np.arange(len(library_candidates))
    codes = np.where(classes >= 0, position[np.maximum(classes, 0)], patterns.PRUNED)
    order, offsets = reorder_filters(codes, filter_group_size)
    return ConvPlan(
        subgraph_index=facts.subgraph_index,
        operator_index=facts.operator_index,
        weight_tensor_index=facts.weight_tensor_index,
        kernel_shape=facts.kernel_shape,
        library=[patterns.mask_to_bits(patterns.CANDIDATE_MASKS[c]) for c in library_candidates],
        codes=codes.astype(np.int8),
        filter_order=order,
        group_offsets=offsets,
        weight_checksum=crc32(facts.weight_data),
        weight_bytes=len(facts.weight_data),
        weight_checksum_kind=CHECKSUM_CRC32,
    )


def _conv_ops(model: TFLiteModel) -> list[_ConvFacts]:
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
    for facts in _conv_ops(model):
        result = facts.reason or _plan_conv(facts, filter_group_size)
        if isinstance(result, ConvPlan):
            plan.convs.append(result)
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
    _check_group_size(filter_group_size)
    model = TFLiteModel.from_bytes(tflite, source)
    plan = plan_model(model, filter_group_size)
    if not plan.convs and not plan.skipped:
        raise ConversionError(
            f"{source}: the model has no CONV_2D operator, so there is nothing for tfpconv to "
            "plan (convert models with 3x3 Conv2D layers)"
        )
    model.set_metadata(METADATA_NAME, plan.to_bytes())
    return model.to_bytes(), plan


def _check_group_size(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConversionError(f"filter_group_size must be a positive integer, got {value!r}")


# -- Keras / SavedModel -> TFLite --------------------------------------------------------------


def _describe(model: Any) -> str:
    name = getattr(model, "name", None)
    return f"Keras model {name!r}" if name else type(model).__name__


def _is_keras3_model(model: Any) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover - keras is a dependency
        return False
    return isinstance(model, keras.Model)


def _is_tf_keras_model(model: Any) -> bool:
    try:
        import tf_keras
    except ImportError:
        return False
    return isinstance(model, tf_keras.Model)


def _load_keras_file(path: Path, custom_objects: Mapping[str, Any] | None) -> Any:
    """Load a .keras / .h5 file with Keras 3, else with tf_keras (Keras 2)."""
    errors = []
    try:
        import keras

        return keras.saving.load_model(path, custom_objects=custom_objects, compile=False)
    except Exception as err:
        errors.append(f"Keras 3: {_first_line(err)}")
    try:
        import tf_keras

        return tf_keras.models.load_model(path, custom_objects=custom_objects, compile=False)
    except ImportError:
        pass
    except Exception as err:
        errors.append(f"tf_keras: {_first_line(err)}")
    raise ConversionError(f"{path}: cannot load the Keras model ({'; '.join(errors)})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _configure(converter: Any, options: Mapping[str, Any]) -> None:
    """Set TF converter attributes from options; ``target_spec`` may be given as a dict."""
    for key, value in options.items():
        if key.startswith("_") or not hasattr(converter, key):
            raise ConversionError(
                f"unknown option {key!r}: expected filter_group_size, custom_objects or an "
                "attribute of tf.lite.TFLiteConverter (e.g. optimizations, target_spec)"
            )
        if key == "target_spec" and isinstance(value, Mapping):
            for spec_key, spec_value in value.items():
                if not hasattr(converter.target_spec, spec_key):
                    raise ConversionError(f"unknown target_spec option {spec_key!r}")
                setattr(converter.target_spec, spec_key, spec_value)
        else:
            setattr(converter, key, value)


def _run_tf_converter(make_converter: Any, options: Mapping[str, Any], what: str) -> bytes:
    # Keras 3's export prints "Saved artifact at ..." to stdout; keep the caller's stdout clean.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            converter = make_converter()
        except ConversionError:
            raise
        except Exception as err:
            raise ConversionError(
                f"{what}: cannot load for conversion: {_first_line(err)}"
            ) from err
        _configure(converter, options)
        try:
            return bytes(converter.convert())
        except Exception as err:
            raise ConversionError(
                f"{what}: TensorFlow's TFLite converter failed: {_first_line(err)}"
            ) from err


def _to_tflite(model: Any, options: dict[str, Any]) -> tuple[bytes, str]:
    """Convert a Keras model / model path with TF's converter; returns (tflite bytes, label)."""
    custom_objects = options.pop("custom_objects", None)
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not is_tflite(data):
            raise ConversionError(
                "bytes given, but they are not a TFLite model (pass a Keras model or a path)"
            )
        _no_tf_options(options, "a .tflite model")
        return data, "model"
    if isinstance(model, (str, os.PathLike)):
        return _path_to_tflite(Path(model), options, custom_objects)
    if _is_keras3_model(model) or _is_tf_keras_model(model):
        import tensorflow as tf

        return (
            _run_tf_converter(
                lambda: tf.lite.TFLiteConverter.from_keras_model(model), options, _describe(model)
            ),
            _describe(model),
        )
    raise ConversionError(
        f"cannot convert a {type(model).__module__}.{type(model).__qualname__}: expected a Keras 3 "
        "or tf_keras model, a .keras/.h5 file, a SavedModel directory or a .tflite file"
    )


def _no_tf_options(options: Mapping[str, Any], what: str) -> None:
    if options:
        raise ConversionError(
            f"options {sorted(options)} configure TF's converter, which {what} does not go through"
        )


def _path_to_tflite(
    path: Path, options: dict[str, Any], custom_objects: Mapping[str, Any] | None
) -> tuple[bytes, str]:
    if not path.exists():
        raise FileNotFoundError(2, "no such model file or directory", str(path))
    if path.is_dir():
        if not (path / "saved_model.pb").exists() and not (path / "saved_model.pbtxt").exists():
            raise ConversionError(
                f"{path}: a directory but not a SavedModel (no saved_model.pb); pass a .keras "
                "file, a SavedModel directory or a .tflite file"
            )
        import tensorflow as tf

        return (
            _run_tf_converter(
                lambda: tf.lite.TFLiteConverter.from_saved_model(str(path)), options, str(path)
            ),
            str(path),
        )
    with path.open("rb") as handle:
        head = handle.read(8)
    if not head:
        raise ConversionError(
            f"{path}: the file is empty, so it is not a Keras model, SavedModel or .tflite file"
        )
    if is_tflite(head):
        _no_tf_options(options, "a .tflite model")
        return path.read_bytes(), str(path)
    if path.suffix.lower() in KERAS_SUFFIXES:
        keras_model = _load_keras_file(path, custom_objects)
        import tensorflow as tf

        return (
            _run_tf_converter(
                lambda: tf.lite.TFLiteConverter.from_keras_model(keras_model), options, str(path)
            ),
            str(path),
        )
    raise ConversionError(
        f"{path}: not a model tfpconv can read; expected a .keras or .h5 file, a SavedModel "
        "directory or a .tflite file"
    )


# -- output ------------------------------------------------------------------------------------


def check_output_path(path: str | os.PathLike[str]) -> None:
    """Check that a file can be written at ``path``: its directory exists, it is not a directory.

    Raises:
      FileNotFoundError: the parent directory does not exist.
      NotADirectoryError: the parent is a file.
      IsADirectoryError: ``path`` itself is a directory.
    """
    path = Path(path)
    directory = path.parent
    if not directory.exists():
        raise FileNotFoundError(2, "output directory does not exist", str(directory))
    if not directory.is_dir():
        raise NotADirectoryError(
            20, "not a directory, so it cannot hold the output", str(directory)
        )
    if path.is_dir():
        raise IsADirectoryError(21, "output path is a directory; name a file in it", str(path))


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    Readers see the old file or the complete new one, never a partial write; on failure the
    temporary file is removed and an existing file at ``path`` is left untouched.

    Raises:
      OSError: as :func:`check_output_path`, or the write fails.
    """
    path = Path(path)
    check_output_path(path)
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def convert(
    model: Any,
    output_path: str | os.PathLike[str] | None = None,
    *,
    tune: bool = False,
    tune_threads: int = 1,
    **options: Any,
) -> bytes:
    """Convert a model to a standard .tflite file carrying the tfpconv plan.

    TensorFlow's TFLite converter does the conversion (float32, default optimizations off); the
    result is the same model with one more ``Model.metadata`` entry, ``tfpconv``, holding the
    plan of every CONV_2D (see :func:`plan_model`). Plain TFLite runs it with outputs identical to
    TF's own conversion.

    Args:
      model: a Keras 3 or tf_keras model, a path to a ``.keras`` / ``.h5`` file or a SavedModel
        directory, or a ``.tflite`` file (path or bytes) to plan as it is (an existing plan is
        replaced).
      output_path: if given, the result is also written there atomically.
      tune: time the delegate's kernel variants for every planned convolution on this machine
        (and TFLite's own kernel) and record the fastest in the plan; layers where TFLite wins
        are marked to stay with TFLite. Takes a few seconds per layer; progress goes to stderr.
      tune_threads: the thread count to tune for (the delegate's ``num_threads`` at run time).
      **options: ``filter_group_size`` (nominal filters per group of the filter kernel reorder,
        default 16); ``custom_objects`` (for loading a Keras file); anything else is set as an
        attribute of ``tf.lite.TFLiteConverter``, e.g. ``optimizations=[tf.lite.Optimize.DEFAULT]``
        or ``target_spec={"supported_types": [tf.float16]}``.

    Returns:
      The .tflite model bytes.

    Raises:
      FileNotFoundError: ``model`` names a missing path (or the output directory is missing).
      NotADirectoryError, IsADirectoryError: ``output_path`` cannot be a file (see
        :func:`check_output_path`); checked before anything is converted.
      ConversionError: the model cannot be loaded or converted, or it has no CONV_2D, or
        ``tune_threads`` is not an int >= 1.
      TFLiteModelError: a given .tflite model is corrupt.
    """
    options = dict(options)
    filter_group_size = options.pop("filter_group_size", DEFAULT_FILTER_GROUP_SIZE)
    _check_group_size(filter_group_size)
    # Everything cheap to check is checked before TF's conversion, which can take a while.
    if not isinstance(tune_threads, int) or isinstance(tune_threads, bool) or tune_threads < 1:
        raise ConversionError(f"tune_threads must be an int >= 1, got {tune_threads!r}")
    if output_path is not None:
        check_output_path(output_path)
    tflite, label = _to_tflite(model, options)
    data, _ = embed_plan(tflite, filter_group_size=filter_group_size, source=label)
    if tune:
        from tfpconv.tuning import tune_model

        data, _ = tune_model(
            data, threads=tune_threads, progress=lambda line: print(line, file=sys.stderr)
        )
    if output_path is not None:
        write_atomic(output_path, data)
    return data


# -- inspection --------------------------------------------------------------------------------


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
    pattern_histogram: dict[str, int] = field(default_factory=dict)  # drawn mask -> kernels
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
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, source = bytes(model), "model"
    else:
        path = Path(model)
        if path.is_dir():
            raise TFLiteModelError(f"{path}: is a directory, not a .tflite file")
        data, source = path.read_bytes(), str(path)
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
        for facts in _conv_ops(tmodel)
    ]
    return ModelReport(source, plan.producer, plan.schema_version, layers, tmodel.metadata_names())


def _layer_report(model: TFLiteModel, facts: _ConvFacts, entry: Any) -> LayerReport:
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
    if isinstance(entry, ConvPlan):
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
            report.kernels_kept = entry.kept_kernels
            report.weights_kept = entry.kept_weights
            report.flops_kept = 2 * positions * entry.kept_weights
            report.groups = len(entry.group_offsets) - 1
            report.pattern_histogram = {
                patterns.format_mask(mask): count
                for mask, count in entry.pattern_histogram().items()
            }
    elif isinstance(entry, SkippedOp):
        report.reason = entry.reason
    else:
        report.reason = "not in the plan"
    return report
