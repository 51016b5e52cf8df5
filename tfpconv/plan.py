"""The tfpconv plan as Python objects, and its FlatBuffer form (``converter/tfpconv_plan.fbs``).

A :class:`Plan` says, per planned CONV_2D of a .tflite model, which pattern every 3x3 kernel keeps
(or that it is pruned), in which order and groups the output channels run, and which weight bytes
the plan was computed from. :meth:`Plan.to_bytes` / :meth:`Plan.from_bytes` convert it to and from
the FlatBuffer that ``tfpconv.convert`` stores as the model's ``tfpconv`` metadata entry, using the
code flatc generates into ``tfpconv/fb`` (see ``converter/generate.py``). :func:`read_plan` gets it
back out of a model.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np

from . import patterns
from .fb import ChecksumKind as fb_checksum_kind
from .fb import ConvPlan as fb_conv
from .fb import Plan as fb_plan
from .fb import SkippedOp as fb_skipped
from .fb import TunedParam as fb_tuned
from .tflite_model import TFLiteModelError, error_summary, is_tflite, read_metadata

__all__ = [
    "CHECKSUM_CRC32",
    "METADATA_NAME",
    "PLAN_IDENTIFIER",
    "SCHEMA_VERSION",
    "ConvPlan",
    "Plan",
    "PlanError",
    "SkippedOp",
    "crc32",
    "read_plan",
]

#: Name of the ``Model.metadata`` entry that holds the plan.
METADATA_NAME = "tfpconv"
#: FlatBuffer file identifier of a plan (``file_identifier`` in the schema).
PLAN_IDENTIFIER = b"TFPC"
#: Schema major version this code writes and reads.
SCHEMA_VERSION = 1
#: ``ChecksumKind.CRC32``: zlib's CRC-32 of the weight tensor's raw bytes.
CHECKSUM_CRC32 = fb_checksum_kind.ChecksumKind.CRC32

_CENTRE_BIT = 1 << patterns.CENTRE
_BYTES_PER_WEIGHT = 4  # float32


class PlanError(ValueError):
    """A plan is missing, corrupt, of another schema version, or inconsistent."""


def crc32(data: bytes) -> int:
    """The plan's weight checksum: zlib's CRC-32 of ``data``, as an unsigned 32-bit integer."""
    return zlib.crc32(data) & 0xFFFFFFFF


def _is_pattern_mask(bits: int) -> bool:
    return (
        0 <= bits < (1 << patterns.TAPS) and bin(bits).count("1") == 4 and bool(bits & _CENTRE_BIT)
    )


@dataclass(eq=False)
class ConvPlan:
    """The plan of one CONV_2D operator.

    Attributes:
      subgraph_index: the operator's subgraph.
      operator_index: its index in the subgraph's operator list (= its TFLite node index).
      weight_tensor_index: the filter tensor, OHWI float32, constant.
      kernel_shape: ``(out, 3, 3, in)`` as stored in the model.
      library: the layer's pattern library as 9-bit masks (bit ``3 * row + col`` = kept tap).
      codes: int8 array of shape ``(out, in)``: per kernel, a position in ``library`` or
        :data:`tfpconv.patterns.PRUNED` (-1) for a kernel removed whole.
      filter_order: the order in which output channels run (a permutation of ``range(out)``).
      group_offsets: ``filter_order[group_offsets[g]:group_offsets[g + 1]]`` is group ``g``.
      weight_checksum: :func:`crc32` of the filter's raw bytes when the plan was made.
      weight_bytes: the length of those bytes.
      weight_checksum_kind: how the checksum is computed (only :data:`CHECKSUM_CRC32`).
      tuned: tuned kernel parameters (key -> integer), e.g. ``{"tile_oc": 16}``.
    """

    subgraph_index: int
    operator_index: int
    weight_tensor_index: int
    kernel_shape: tuple[int, int, int, int]
    library: tuple[int, ...]
    codes: np.ndarray
    filter_order: tuple[int, ...]
    group_offsets: tuple[int, ...]
    weight_checksum: int
    weight_bytes: int
    weight_checksum_kind: int = CHECKSUM_CRC32
    tuned: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kernel_shape = tuple(int(v) for v in self.kernel_shape)
        self.library = tuple(int(v) for v in self.library)
        self.filter_order = tuple(int(v) for v in self.filter_order)
        self.group_offsets = tuple(int(v) for v in self.group_offsets)
        codes = np.asarray(self.codes)
        if len(self.kernel_shape) == 4 and codes.size == self.out_channels * self.in_channels:
            codes = codes.reshape(self.out_channels, self.in_channels)
        self.codes = codes.astype(np.int8, copy=False)
        self.tuned = {str(k): int(v) for k, v in self.tuned.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConvPlan):
            return NotImplemented
        return (
            all(
                getattr(self, name) == getattr(other, name)
                for name in (
                    "subgraph_index",
                    "operator_index",
                    "weight_tensor_index",
                    "kernel_shape",
                    "library",
                    "filter_order",
                    "group_offsets",
                    "weight_checksum",
                    "weight_bytes",
                    "weight_checksum_kind",
                    "tuned",
                )
            )
            and np.array_equal(self.codes, other.codes)
            and self.codes.shape == other.codes.shape
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    # -- derived quantities ------------------------------------------------------------------

    @property
    def out_channels(self) -> int:
        return self.kernel_shape[0]

    @property
    def in_channels(self) -> int:
        return self.kernel_shape[3]

    @property
    def num_kernels(self) -> int:
        """All 3x3 kernels of the layer, ``out * in``."""
        return self.out_channels * self.in_channels

    @property
    def kept_kernels(self) -> int:
        """Kernels that are not pruned."""
        return int(np.count_nonzero(self.codes != patterns.PRUNED))

    @property
    def kept_weights(self) -> int:
        """Weights the pattern kernels keep (four per kept kernel)."""
        return self.kept_kernels * patterns.WEIGHTS_PER_PATTERN

    @property
    def dense_weights(self) -> int:
        return self.num_kernels * patterns.TAPS

    def pattern_histogram(self) -> dict[int, int]:
        """Kernels per library mask (9-bit), in library order; pruned kernels are not counted."""
        counts = np.bincount(
            self.codes[self.codes >= 0].astype(np.int64), minlength=len(self.library)
        )
        return {mask: int(counts[i]) for i, mask in enumerate(self.library)}

    def groups(self) -> list[tuple[int, ...]]:
        """The output channels of each filter group, in run order."""
        offsets = self.group_offsets
        return [self.filter_order[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]

    # -- checks ------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise :class:`PlanError` unless the plan is internally consistent."""
        where = f"plan of operator {self.operator_index} (subgraph {self.subgraph_index})"
        shape = self.kernel_shape
        if len(shape) != 4 or shape[1:3] != (3, 3) or min(shape) <= 0:
            raise PlanError(f"{where}: kernel shape {list(shape)} is not [out, 3, 3, in]")
        if self.weight_tensor_index < 0:
            raise PlanError(f"{where}: weight tensor index {self.weight_tensor_index} < 0")
        bad_masks = [m for m in self.library if not _is_pattern_mask(m)]
        if bad_masks:
            raise PlanError(
                f"{where}: library mask {bad_masks[0]:#05x} is not a 4-tap pattern with the centre"
            )
        if len(set(self.library)) != len(self.library):
            raise PlanError(f"{where}: library has repeated masks {list(self.library)}")
        if self.codes.shape != (self.out_channels, self.in_channels):
            raise PlanError(
                f"{where}: {self.codes.size} codes for {self.out_channels}x{self.in_channels} "
                "kernels"
            )
        if self.codes.size and (
            self.codes.min() < patterns.PRUNED or self.codes.max() >= len(self.library)
        ):
            raise PlanError(
                f"{where}: codes must be -1 or 0..{len(self.library) - 1}, found "
                f"{int(self.codes.min())}..{int(self.codes.max())}"
            )
        if sorted(self.filter_order) != list(range(self.out_channels)):
            raise PlanError(f"{where}: filter order is not a permutation of 0..{shape[0] - 1}")
        offsets = self.group_offsets
        if (
            len(offsets) < 2
            or offsets[0] != 0
            or offsets[-1] != self.out_channels
            or any(b <= a for a, b in zip(offsets[:-1], offsets[1:], strict=True))
        ):
            raise PlanError(
                f"{where}: group offsets {list(offsets)} must rise strictly from 0 to "
                f"{self.out_channels}"
            )
        expected_bytes = self.dense_weights * _BYTES_PER_WEIGHT
        if self.weight_bytes != expected_bytes:
            raise PlanError(
                f"{where}: weight_bytes {self.weight_bytes} != {expected_bytes} for float32 "
                f"{list(shape)}"
            )
        if self.weight_checksum_kind != CHECKSUM_CRC32:
            raise PlanError(f"{where}: unknown checksum kind {self.weight_checksum_kind}")
        if not 0 <= self.weight_checksum <= 0xFFFFFFFF:
            raise PlanError(f"{where}: checksum {self.weight_checksum} is not a uint32")

    def matches_weights(self, data: bytes) -> bool:
        """Whether ``data`` (the filter's raw bytes) are the bytes this plan was computed from."""
        return len(data) == self.weight_bytes and crc32(data) == self.weight_checksum

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (codes as nested lists)."""
        return {
            "subgraph_index": self.subgraph_index,
            "operator_index": self.operator_index,
            "weight_tensor_index": self.weight_tensor_index,
            "kernel_shape": list(self.kernel_shape),
            "library": list(self.library),
            "codes": self.codes.tolist(),
            "filter_order": list(self.filter_order),
            "group_offsets": list(self.group_offsets),
            "weight_checksum": self.weight_checksum,
            "weight_bytes": self.weight_bytes,
            "weight_checksum_kind": "CRC32",
            "tuned": dict(self.tuned),
        }


@dataclass(frozen=True)
class SkippedOp:
    """A CONV_2D the converter did not plan, and the reason in words."""

    subgraph_index: int
    operator_index: int
    op_name: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "subgraph_index": self.subgraph_index,
            "operator_index": self.operator_index,
            "op_name": self.op_name,
            "reason": self.reason,
        }


def _default_producer() -> str:
    from . import __version__

    return f"tfpconv {__version__}"


@dataclass
class Plan:
    """The whole plan of a model: planned and skipped CONV_2D operators."""

    convs: list[ConvPlan] = field(default_factory=list)
    skipped: list[SkippedOp] = field(default_factory=list)
    producer: str = field(default_factory=_default_producer)
    schema_version: int = SCHEMA_VERSION

    def find(self, subgraph_index: int, operator_index: int) -> ConvPlan | SkippedOp | None:
        """The plan or skip record of one operator, or None."""
        for entry in [*self.convs, *self.skipped]:
            if (entry.subgraph_index, entry.operator_index) == (subgraph_index, operator_index):
                return entry
        return None

    def validate(self) -> None:
        """Raise :class:`PlanError` unless every conv plan is consistent and ops are unique."""
        if self.schema_version != SCHEMA_VERSION:
            raise PlanError(
                f"plan schema version {self.schema_version}; this tfpconv reads version "
                f"{SCHEMA_VERSION} (convert the model again with this tfpconv)"
            )
        seen = set()
        for entry in [*self.convs, *self.skipped]:
            key = (entry.subgraph_index, entry.operator_index)
            if key in seen:
                raise PlanError(f"operator {key[1]} of subgraph {key[0]} appears twice in the plan")
            seen.add(key)
        for conv in self.convs:
            conv.validate()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "producer": self.producer,
            "convs": [c.to_dict() for c in self.convs],
            "skipped": [s.to_dict() for s in self.skipped],
        }

    # -- FlatBuffer --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialize to the plan FlatBuffer (identifier ``TFPC``); validates first."""
        self.validate()
        builder = flatbuffers.Builder(1024)
        # Write every scalar, defaults included: a later schema may change a default, and the
        # schema version in particular must be explicit in the bytes.
        builder.ForceDefaults(True)
        convs = [_pack_conv(builder, conv) for conv in self.convs]
        skipped = [_pack_skipped(builder, op) for op in self.skipped]
        producer = builder.CreateString(self.producer)
        convs_vec = _pack_offsets(builder, fb_plan.PlanStartConvsVector, convs)
        skipped_vec = _pack_offsets(builder, fb_plan.PlanStartSkippedVector, skipped)
        fb_plan.PlanStart(builder)
        fb_plan.PlanAddSchemaVersion(builder, self.schema_version)
        fb_plan.PlanAddProducer(builder, producer)
        fb_plan.PlanAddConvs(builder, convs_vec)
        fb_plan.PlanAddSkipped(builder, skipped_vec)
        builder.Finish(fb_plan.PlanEnd(builder), file_identifier=PLAN_IDENTIFIER)
        return bytes(builder.Output())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray, source: str = "plan") -> Plan:
        """Parse and validate a plan FlatBuffer; raises :class:`PlanError` on any problem."""
        data = bytes(data)
        if len(data) < 8 or data[4:8] != PLAN_IDENTIFIER:
            raise PlanError(
                f"{source}: not a tfpconv plan (no {PLAN_IDENTIFIER.decode()} identifier)"
            )
        try:
            root = fb_plan.Plan.GetRootAs(data, 0)
            version = root.SchemaVersion()
            if version != SCHEMA_VERSION:
                raise PlanError(
                    f"{source}: plan schema version {version}; this tfpconv reads version "
                    f"{SCHEMA_VERSION} (convert the model again with this tfpconv)"
                )
            plan = cls(
                convs=[_unpack_conv(root.Convs(i)) for i in range(root.ConvsLength())],
                skipped=[_unpack_skipped(root.Skipped(i)) for i in range(root.SkippedLength())],
                producer=_text(root.Producer()),
                schema_version=version,
            )
        except PlanError:
            raise
        except Exception as err:  # the generated readers raise whatever garbage leads them to
            raise PlanError(f"{source}: corrupt plan ({error_summary(err)})") from None
        try:
            plan.validate()
        except PlanError as err:
            raise PlanError(f"{source}: {err}") from None
        return plan


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


def _pack_offsets(builder: flatbuffers.Builder, start: Any, offsets: list[int]) -> int:
    start(builder, len(offsets))
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _pack_conv(builder: flatbuffers.Builder, conv: ConvPlan) -> int:
    tuned = []
    for key, value in conv.tuned.items():
        key_offset = builder.CreateString(key)
        fb_tuned.TunedParamStart(builder)
        fb_tuned.TunedParamAddKey(builder, key_offset)
        fb_tuned.TunedParamAddValue(builder, value)
        tuned.append(fb_tuned.TunedParamEnd(builder))
    tuned_vec = _pack_offsets(builder, fb_conv.ConvPlanStartTunedVector, tuned)
    shape = builder.CreateNumpyVector(np.asarray(conv.kernel_shape, dtype="<i4"))
    library = builder.CreateNumpyVector(np.asarray(conv.library, dtype="<u2"))
    codes = builder.CreateNumpyVector(conv.codes.astype(np.int8).ravel())
    order = builder.CreateNumpyVector(np.asarray(conv.filter_order, dtype="<i4"))
    offsets = builder.CreateNumpyVector(np.asarray(conv.group_offsets, dtype="<i4"))
    fb_conv.ConvPlanStart(builder)
    fb_conv.ConvPlanAddSubgraphIndex(builder, conv.subgraph_index)
    fb_conv.ConvPlanAddOperatorIndex(builder, conv.operator_index)
    fb_conv.ConvPlanAddWeightTensorIndex(builder, conv.weight_tensor_index)
    fb_conv.ConvPlanAddWeightChecksumKind(builder, conv.weight_checksum_kind)
    fb_conv.ConvPlanAddWeightChecksum(builder, conv.weight_checksum)
    fb_conv.ConvPlanAddWeightBytes(builder, conv.weight_bytes)
    fb_conv.ConvPlanAddKernelShape(builder, shape)
    fb_conv.ConvPlanAddLibrary(builder, library)
    fb_conv.ConvPlanAddCodes(builder, codes)
    fb_conv.ConvPlanAddFilterOrder(builder, order)
    fb_conv.ConvPlanAddGroupOffsets(builder, offsets)
    fb_conv.ConvPlanAddTuned(builder, tuned_vec)
    return fb_conv.ConvPlanEnd(builder)


def _pack_skipped(builder: flatbuffers.Builder, op: SkippedOp) -> int:
    name = builder.CreateString(op.op_name)
    reason = builder.CreateString(op.reason)
    fb_skipped.SkippedOpStart(builder)
    fb_skipped.SkippedOpAddSubgraphIndex(builder, op.subgraph_index)
    fb_skipped.SkippedOpAddOperatorIndex(builder, op.operator_index)
    fb_skipped.SkippedOpAddOpName(builder, name)
    fb_skipped.SkippedOpAddReason(builder, reason)
    return fb_skipped.SkippedOpEnd(builder)


def _vector(table: Any, name: str) -> np.ndarray:
    if getattr(table, f"{name}IsNone")():
        raise PlanError(f"required field {name} is missing")
    return np.asarray(getattr(table, f"{name}AsNumpy")())


def _unpack_conv(table: Any) -> ConvPlan:
    tuned = {}
    for i in range(table.TunedLength()):
        param = table.Tuned(i)
        tuned[_text(param.Key())] = param.Value()
    # Python ints: a corrupt shape must not overflow (and warn) in int32 arithmetic.
    shape = tuple(_vector(table, "KernelShape").tolist())
    codes = _vector(table, "Codes").astype(np.int8)
    if len(shape) == 4 and codes.size == shape[0] * shape[3]:
        codes = codes.reshape(shape[0], shape[3])
    return ConvPlan(
        subgraph_index=table.SubgraphIndex(),
        operator_index=table.OperatorIndex(),
        weight_tensor_index=table.WeightTensorIndex(),
        kernel_shape=shape,
        library=tuple(_vector(table, "Library").tolist()),
        codes=codes,
        filter_order=tuple(_vector(table, "FilterOrder").tolist()),
        group_offsets=tuple(_vector(table, "GroupOffsets").tolist()),
        weight_checksum=table.WeightChecksum(),
        weight_bytes=table.WeightBytes(),
        weight_checksum_kind=table.WeightChecksumKind(),
        tuned=tuned,
    )


def _unpack_skipped(table: Any) -> SkippedOp:
    return SkippedOp(
        subgraph_index=table.SubgraphIndex(),
        operator_index=table.OperatorIndex(),
        op_name=_text(table.OpName()),
        reason=_text(table.Reason()),
    )


def read_plan(model: str | os.PathLike[str] | bytes | bytearray) -> Plan:
    """The tfpconv plan of a converted model.

    Args:
      model: a .tflite file path or its bytes (a bare plan FlatBuffer is accepted too).

    Raises:
      FileNotFoundError: no such file.
      tfpconv.TFLiteModelError: not a TFLite model, or a corrupt one.
      tfpconv.PlanError: the model has no ``tfpconv`` metadata, or it is corrupt or inconsistent.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, source = bytes(model), "model"
    else:
        path = Path(model)
        if path.is_dir():
            raise TFLiteModelError(f"{path}: is a directory, not a .tflite file")
        data, source = path.read_bytes(), str(path)
    if len(data) >= 8 and data[4:8] == PLAN_IDENTIFIER:
        return Plan.from_bytes(data, source)
    if not is_tflite(data):
        raise TFLiteModelError(f"{source}: not a TFLite model (no TFL3 file identifier)")
    payload = read_metadata(data, METADATA_NAME, source)
    if payload is None:
        raise PlanError(
            f"{source}: no {METADATA_NAME!r} metadata; convert the model with tfpconv.convert "
            "(or `tfpconv convert`) first"
        )
    return Plan.from_bytes(payload, f"{source}: {METADATA_NAME} metadata")
