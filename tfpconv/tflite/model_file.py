"""Read and edit .tflite files through the TFLite schema's own Python bindings (object API).

No part of the TFLite format is parsed by hand: a model is unpacked into the generated ``ModelT``
object tree, edited there (a metadata entry and its buffer), and packed again with the generated
``Pack`` methods. Re-packing keeps every table, index and byte of tensor data; only the layout of
the file changes.

The bindings come from ``ai_edge_litert.schema_py_generated`` (the runtime's copy, the newest
schema we have and cheap to import), else from TensorFlow's
``tensorflow.lite.python.schema_py_generated``. The newest schema matters: the object API drops
any field its schema does not know, so an older schema could silently lose data on re-packing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError:  # pragma: no cover - ai-edge-litert is a dependency; TF ships the same module
    from tensorflow.lite.python import schema_py_generated as schema

__all__ = [
    "TFLITE_IDENTIFIER",
    "TFLiteModel",
    "TFLiteModelError",
    "OperatorRef",
    "builtin_name",
    "error_summary",
    "is_tflite",
    "read_metadata",
    "read_model_bytes",
    "schema",
    "tensor_shape",
    "tensor_type_name",
    "unpack_float32",
]

#: The file identifier of a TFLite flatbuffer (bytes 4..8).
TFLITE_IDENTIFIER = b"TFL3"
#: Alignment of every buffer's data in files we write (TFLite's own converter uses 16 as well).
BUFFER_ALIGNMENT = 16
#: Above this size a flatbuffer cannot address its contents (TFLite then stores buffers after it).
_FLATBUFFER_LIMIT = 2**31 - 1

_BUILTIN_NAMES = {
    value: name
    for name, value in vars(schema.BuiltinOperator).items()
    if not name.startswith("_") and isinstance(value, int)
}
_TENSOR_TYPE_NAMES = {
    value: name
    for name, value in vars(schema.TensorType).items()
    if not name.startswith("_") and isinstance(value, int)
}


class TFLiteModelError(ValueError):
    """A file or byte string is not a readable TFLite model (wrong format, truncated, corrupt)."""


def builtin_name(code: int) -> str:
    """The ``BuiltinOperator`` name of an operator code, e.g. ``3 -> "CONV_2D"``."""
    return _BUILTIN_NAMES.get(code, f"BUILTIN_{code}")


def tensor_type_name(tensor_type: int) -> str:
    """The ``TensorType`` name of a tensor type, e.g. ``0 -> "FLOAT32"``."""
    return _TENSOR_TYPE_NAMES.get(tensor_type, f"TYPE_{tensor_type}")


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _check_identifier(data: bytes, source: str) -> None:
    if len(data) < 8:
        raise TFLiteModelError(f"{source}: not a TFLite model ({len(data)} bytes is too short)")
    if data[4:8] != TFLITE_IDENTIFIER:
        raise TFLiteModelError(
            f"{source}: not a TFLite model (no {TFLITE_IDENTIFIER.decode()} file identifier)"
        )


def is_tflite(data: bytes) -> bool:
    """Whether ``data`` starts like a TFLite flatbuffer (identifier ``TFL3``)."""
    return len(data) >= 8 and bytes(data[4:8]) == TFLITE_IDENTIFIER


def read_model_bytes(model: str | os.PathLike[str] | bytes | bytearray) -> tuple[bytes, str]:
    """A model's bytes from a path or bytes, and how to name it in messages.

    Raises:
      FileNotFoundError: no such file.
      TFLiteModelError: the path is a directory.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "model"
    path = Path(model)
    if path.is_dir():
        raise TFLiteModelError(f"{path}: is a directory, not a .tflite file")
    return path.read_bytes(), str(path)


def read_metadata(data: bytes, name: str, source: str = "model") -> bytes | None:
    """The bytes of the ``Model.metadata`` entry ``name``, or None; without unpacking the model."""
    _check_identifier(data, source)
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _text(entry.Name()) != name:
                continue
            index = entry.Buffer()
            if not 0 <= index < model.BuffersLength():
                raise TFLiteModelError(
                    f"{source}: corrupt flatbuffer (metadata {name!r} points at buffer {index} "
                    f"of {model.BuffersLength()})"
                )
            buffer = model.Buffers(index)
            if buffer.Offset() > 1:
                start, size = buffer.Offset(), buffer.Size()
                if start + size > len(data):
                    raise TFLiteModelError(f"{source}: truncated (buffer {index} past the end)")
                return bytes(data[start : start + size])
            return b"" if buffer.DataIsNone() else buffer.DataAsNumpy().tobytes()
    except TFLiteModelError:
        raise
    except Exception as err:  # the generated readers raise whatever garbage leads them to
        raise TFLiteModelError(f"{source}: corrupt flatbuffer ({error_summary(err)})") from None
    return None


@dataclass(frozen=True)
class OperatorRef:
    """One operator of a model: where it is and what it is."""

    subgraph_index: int
    operator_index: int
    opcode: int
    op: Any  # schema.OperatorT

    @property
    def name(self) -> str:
        return builtin_name(self.opcode)


class _AlignedBufferT(schema.BufferT):
    """A ``BufferT`` whose data vector starts on a :data:`BUFFER_ALIGNMENT` boundary when packed."""

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 - generated API's name
        data_offset = None
        if self.data is not None:
            payload = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            data_offset = builder.EndVector()
        schema.BufferStart(builder)
        if data_offset is not None:
            schema.BufferAddData(builder, data_offset)
        schema.BufferAddOffset(builder, self.offset)
        schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


class TFLiteModel:
    """A TFLite model unpacked into the schema's object tree (``schema.ModelT``), editable.

    Build one with :meth:`from_bytes` or :meth:`from_file`; :meth:`to_bytes` packs it again.
    """

    def __init__(self, model: Any, source: str = "model") -> None:
        self.model = model
        self.source = source

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes | bytearray, source: str = "model") -> TFLiteModel:
        """Unpack a .tflite flatbuffer; raises :class:`TFLiteModelError` if it is not one."""
        data = bytes(data)
        _check_identifier(data, source)
        if sys.byteorder != "little":  # pragma: no cover - every TFLite target is little-endian
            raise TFLiteModelError("tfpconv edits .tflite files on little-endian hosts only")
        try:
            model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
        except Exception as err:  # the generated readers raise whatever garbage leads them to
            raise TFLiteModelError(f"{source}: corrupt flatbuffer ({error_summary(err)})") from None
        self = cls(model, source)
        self._inline_external_buffers(data)
        self._check_structure()
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TFLiteModel:
        """Read and unpack a .tflite file."""
        return cls.from_bytes(Path(path).read_bytes(), source=str(path))

    def _inline_external_buffers(self, data: bytes) -> None:
        """Models over 2 GB keep buffer data after the flatbuffer (offset/size): pull it in."""
        for index, buffer in enumerate(self.model.buffers or []):
            if buffer is not None and buffer.offset > 1:
                end = buffer.offset + buffer.size
                if end > len(data):
                    raise TFLiteModelError(
                        f"{self.source}: truncated (buffer {index} ends at byte {end} of "
                        f"{len(data)})"
                    )
                buffer.data = np.frombuffer(data, np.uint8, buffer.size, buffer.offset)
                buffer.offset = buffer.size = 0

    def _check_structure(self) -> None:
        """Cheap consistency checks, so that a corrupt file fails here and not half-way later."""
        model = self.model
        where = f"{self.source}: corrupt flatbuffer"
        if not model.subgraphs:
            raise TFLiteModelError(f"{where} (no subgraphs)")
        num_buffers = len(model.buffers or [])
        num_codes = len(model.operatorCodes or [])
        if any(b is None for b in model.buffers or []):
            raise TFLiteModelError(f"{where} (null buffer)")
        for entry in model.metadata or []:
            if entry is None or not 0 <= entry.buffer < num_buffers:
                raise TFLiteModelError(f"{where} (metadata points past the buffers)")
        for s, subgraph in enumerate(model.subgraphs):
            tensors = subgraph.tensors or []
            for t, tensor in enumerate(tensors):
                if not 0 <= tensor.buffer < max(num_buffers, 1):
                    raise TFLiteModelError(f"{where} (tensor {t} of subgraph {s}: bad buffer)")
            for o, op in enumerate(subgraph.operators or []):
                if not 0 <= op.opcodeIndex < num_codes:
                    raise TFLiteModelError(f"{where} (operator {o} of subgraph {s}: bad opcode)")
                for index in [*_ints(op.inputs), *_ints(op.outputs)]:
                    if not -1 <= index < len(tensors):
                        raise TFLiteModelError(
                            f"{where} (operator {o} of subgraph {s}: tensor {index} out of range)"
                        )

    # -- queries -----------------------------------------------------------------------------

    def operators(self) -> Iterator[OperatorRef]:
        """Every operator of every subgraph, in execution order."""
        for s, subgraph in enumerate(self.model.subgraphs):
            for o, op in enumerate(subgraph.operators or []):
                code = self.model.operatorCodes[op.opcodeIndex]
                # Codes past 127 live in `builtinCode`; `deprecatedBuiltinCode` saturates at 127.
                opcode = max(code.builtinCode, code.deprecatedBuiltinCode)
                yield OperatorRef(s, o, opcode, op)

    def tensor(self, subgraph_index: int, tensor_index: int) -> Any:
        """The ``TensorT`` ``tensor_index`` of a subgraph.

        Raises:
          TFLiteModelError: there is no such subgraph or tensor (e.g. a corrupt plan names it).
        """
        subgraphs = self.model.subgraphs
        if not 0 <= subgraph_index < len(subgraphs):
            raise TFLiteModelError(
                f"{self.source}: subgraph {subgraph_index} out of range (the model has "
                f"{len(subgraphs)} subgraph{'s' if len(subgraphs) != 1 else ''})"
            )
        tensors = subgraphs[subgraph_index].tensors or []
        if not 0 <= tensor_index < len(tensors):
            raise TFLiteModelError(
                f"{self.source}: tensor {tensor_index} out of range (subgraph {subgraph_index} "
                f"has {len(tensors)} tensors)"
            )
        return tensors[tensor_index]

    def tensor_data(self, subgraph_index: int, tensor_index: int) -> bytes | None:
        """The raw bytes of a constant tensor, or None if it has no data (computed at run time)."""
        tensor = self.tensor(subgraph_index, tensor_index)
        if tensor.buffer <= 0:
            return None
        data = self.model.buffers[tensor.buffer].data
        if data is None or len(data) == 0:
            return None
        return np.asarray(data, dtype=np.uint8).tobytes()

    def producer(self, subgraph_index: int, tensor_index: int) -> OperatorRef | None:
        """The operator that writes a tensor, if any."""
        for ref in self.operators():
            if ref.subgraph_index == subgraph_index and tensor_index in _ints(ref.op.outputs):
                return ref
        return None

    def consumers(self, subgraph_index: int, tensor_index: int) -> list[OperatorRef]:
        """The operators that read a tensor, in execution order."""
        return [
            ref
            for ref in self.operators()
            if ref.subgraph_index == subgraph_index and tensor_index in _ints(ref.op.inputs)
        ]

    def is_output(self, subgraph_index: int, tensor_index: int) -> bool:
        """Whether a tensor is one of its subgraph's outputs."""
        return tensor_index in _ints(self.model.subgraphs[subgraph_index].outputs)

    def metadata_names(self) -> list[str]:
        """Names of the ``Model.metadata`` entries, in order."""
        return [_text(entry.name) for entry in self.model.metadata or []]

    def metadata(self, name: str) -> bytes | None:
        """The data of the metadata entry ``name``, or None."""
        for entry in self.model.metadata or []:
            if _text(entry.name) == name:
                data = self.model.buffers[entry.buffer].data
                return b"" if data is None else np.asarray(data, dtype=np.uint8).tobytes()
        return None

    # -- editing -----------------------------------------------------------------------------

    def set_metadata(self, name: str, data: bytes) -> None:
        """Add the metadata entry ``name`` with ``data``, or replace the data of an existing one.

        Other entries and their buffers are left exactly as they are.
        """
        payload = np.frombuffer(bytes(data), dtype=np.uint8)
        if self.model.buffers is None:
            self.model.buffers = [schema.BufferT()]  # buffer 0 is the empty sentinel
        if self.model.metadata is None:
            self.model.metadata = []
        for entry in self.model.metadata:
            if _text(entry.name) == name:
                shared = [
                    e for e in self.model.metadata if e is not entry and e.buffer == entry.buffer
                ]
                used_by_tensor = any(
                    t.buffer == entry.buffer
                    for sg in self.model.subgraphs
                    for t in sg.tensors or []
                )
                if entry.buffer > 0 and not shared and not used_by_tensor:
                    self.model.buffers[entry.buffer] = schema.BufferT(data=payload)
                    return
                entry.buffer = self._append_buffer(payload)
                return
        entry = schema.MetadataT()
        entry.name = name.encode("utf-8")
        entry.buffer = self._append_buffer(payload)
        self.model.metadata.append(entry)

    def set_tensor_data(self, subgraph_index: int, tensor_index: int, data: bytes) -> None:
        """Replace the bytes of a constant tensor with as many new ones (e.g. pruned weights).

        Raises:
          TFLiteModelError: the tensor has no constant data, or ``data`` has another length.
        """
        old = self.tensor_data(subgraph_index, tensor_index)
        if old is None or len(old) != len(data):
            raise TFLiteModelError(
                f"{self.source}: tensor {tensor_index} of subgraph {subgraph_index} holds "
                f"{0 if old is None else len(old)} constant bytes, not {len(data)}"
            )
        tensor = self.tensor(subgraph_index, tensor_index)
        payload = np.frombuffer(bytes(data), dtype=np.uint8)
        users = sum(t.buffer == tensor.buffer for sg in self.model.subgraphs for t in sg.tensors)
        if users == 1:
            self.model.buffers[tensor.buffer] = schema.BufferT(data=payload)
        else:
            tensor.buffer = self._append_buffer(payload)

    def _append_buffer(self, payload: np.ndarray) -> int:
        self.model.buffers.append(schema.BufferT(data=payload))
        return len(self.model.buffers) - 1

    def to_bytes(self) -> bytes:
        """Pack the model into a .tflite flatbuffer (buffer data aligned to 16 bytes)."""
        original = self.model.buffers
        if original is not None:
            aligned = []
            for buffer in original:
                copy = _AlignedBufferT()
                copy.data, copy.offset, copy.size = buffer.data, buffer.offset, buffer.size
                aligned.append(copy)
            self.model.buffers = aligned
        try:
            size = sum(len(b.data) for b in original or [] if b.data is not None)
            builder = flatbuffers.Builder(size + 4096)
            builder.Finish(self.model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
            data = bytes(builder.Output())
        finally:
            self.model.buffers = original
        if len(data) > _FLATBUFFER_LIMIT:  # pragma: no cover - needs a >2 GB model
            raise TFLiteModelError(
                f"{self.source}: the model is larger than 2 GB, which tfpconv cannot write"
            )
        return data


def error_summary(err: BaseException, limit: int = 100) -> str:
    """``Type: message`` of an exception, cut to ``limit`` characters."""
    text = f"{type(err).__name__}: {err}".splitlines()[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ints(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def tensor_shape(tensor: Any) -> tuple[int, ...]:
    """A ``TensorT``'s static shape (batch dimension as stored, usually 1)."""
    return tuple(_ints(tensor.shape))


def unpack_float32(data: bytes) -> np.ndarray:
    """Raw little-endian float32 bytes as a flat array (no copy)."""
    return np.frombuffer(data, dtype="<f4")
