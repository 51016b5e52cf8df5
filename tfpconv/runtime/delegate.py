"""The tfpconv delegate from Python: loading it, and what it reports (claimed nodes, tuning).

``Interpreter`` is LiteRT's (``ai_edge_litert``) interpreter with the tfpconv delegate applied: the
planned CONV_2D operators run on the delegate, everything else on TFLite's own kernels (XNNPACK).
The delegate is an ordinary TFLite external delegate, so ``tf.lite.Interpreter`` can use it too::

    delegate = tf.lite.experimental.load_delegate(tfpconv.delegate_path(), {"num_threads": 2})
    interpreter = tf.lite.Interpreter(model_path="model.tflite", experimental_delegates=[delegate])
"""

from __future__ import annotations

import ctypes
from typing import Any

from ai_edge_litert.interpreter import load_delegate as _litert_load_delegate

from tfpconv.runtime.library import delegate_path, native
from tfpconv.runtime.machine import cpu_model
from tfpconv.tflite.plan import Tuning


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_delegate(num_threads: int = 1, **options: Any) -> Any:
    """Load the tfpconv delegate as a TFLite external delegate.

    Args:
      num_threads: threads for the pattern convolutions (values below 1 mean 1).
      **options: further delegate options: ``log_level`` (``"error"``, ``"warning"``,
        ``"info"``, ``"verbose"`` or 0..3), ``isa`` (``"auto"``, ``"avx512"``, ``"avx2"``,
        ``"neon"``, ``"scalar"``) and ``claim``: ``"auto"`` (default) runs a planned convolution
        only where the delegate is expected to beat TFLite (as the plan's convert-time tuning
        measured, else all but layers with fewer than 4 input channels), ``"all"`` runs every
        planned convolution it can.

    Returns:
      An ``ai_edge_litert.interpreter.Delegate``, for ``experimental_delegates=[...]``. Keep it
      alive as long as any interpreter uses it.

    Raises:
      ValueError: an unknown option or a bad value (the delegate's message says which).
    """
    if not isinstance(num_threads, int) or isinstance(num_threads, bool):
        raise ValueError(f"num_threads must be an int, got {num_threads!r}")
    texts = {"num_threads": str(num_threads)}
    texts.update({str(key): _option_text(value) for key, value in options.items()})
    return _litert_load_delegate(delegate_path(), texts)


def claimed_nodes(delegate: Any) -> list[int]:
    """Indices of the CONV_2D nodes the delegate claimed when it was last applied to a model.

    ``delegate`` is what :func:`load_delegate` (or ``tf.lite.experimental.load_delegate`` with
    :func:`delegate_path`) returned.
    """
    pointer = delegate._get_native_delegate_pointer()  # noqa: SLF001 - LiteRT's public-ish accessor
    query = native().TfpconvDelegateClaimedNodes
    count = query(pointer, None, 0)
    if count <= 0:
        return []
    nodes = (ctypes.c_int * count)()
    query(pointer, nodes, count)
    return list(nodes)


_PADDING_CODES = {"same": 1, "valid": 2}


def tuning_candidates(
    input_shape: tuple[int, int, int],
    out_channels: int,
    strides: tuple[int, int] = (1, 1),
    padding: str = "same",
    isa: str | None = None,
) -> list[Tuning]:
    """The engine's kernel choices worth timing for one 3x3 convolution on this CPU.

    Each is a :class:`~tfpconv.tflite.plan.Tuning` for the instruction set that runs (its stable
    name), with the kernel variant by its stable name and the tile sizes as ``params``, and
    ``cpu`` set to this machine's CPU model. Stored in a plan, the delegate applies it only on
    that instruction set; elsewhere it runs its defaults.

    Args:
      input_shape: ``(height, width, channels)`` of the NHWC input.
      out_channels: number of filters.
      strides: ``(stride_h, stride_w)``, each 1 or 2.
      padding: ``"same"`` or ``"valid"``.
      isa: instruction set (None: the best this CPU supports).

    Raises:
      ValueError: the shape, strides, padding or instruction set cannot be tuned.
    """
    function = native().TfpconvDelegateTuningCandidates
    if padding.lower() not in _PADDING_CODES:
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    arguments = [*(int(d) for d in input_shape), int(out_channels), *(int(s) for s in strides)]
    arguments.append(_PADDING_CODES[padding.lower()])
    isa_bytes = isa.encode() if isa is not None else None
    length = function(*arguments, isa_bytes, None, 0)
    if length < 0:
        raise ValueError(
            f"cannot tune a 3x3 convolution of input {tuple(input_shape)}, {out_channels} filters, "
            f"strides {tuple(strides)}, padding {padding!r} on isa {isa or 'auto'!r}"
        )
    buffer = ctypes.create_string_buffer(length + 1)
    function(*arguments, isa_bytes, buffer, length + 1)
    cpu = cpu_model()
    tunings = []
    for line in buffer.value.decode().splitlines():
        fields = dict(item.split("=", 1) for item in line.split())
        isa, variant = fields.pop("isa"), fields.pop("variant", "")
        params = {key: int(value) for key, value in fields.items()}
        tunings.append(Tuning(isa=isa, cpu=cpu, variant=variant, params=params))
    return tunings


def packed_weight_bytes(delegate: Any) -> int:
    """Bytes of the packed weights of the convolutions the delegate claimed when last applied."""
    pointer = delegate._get_native_delegate_pointer()  # noqa: SLF001
    return int(native().TfpconvDelegatePackedWeightBytes(pointer))
