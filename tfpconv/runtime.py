"""Running converted models: the delegate library, loading it, and an interpreter that uses it.

``Interpreter`` is LiteRT's (``ai_edge_litert``) interpreter with the tfpconv delegate applied: the
planned CONV_2D operators run on the delegate, everything else on TFLite's own kernels (XNNPACK).
The delegate is an ordinary TFLite external delegate, so ``tf.lite.Interpreter`` can use it too::

    delegate = tf.lite.experimental.load_delegate(tfpconv.delegate_path(), {"num_threads": 2})
    interpreter = tf.lite.Interpreter(model_path="model.tflite", experimental_delegates=[delegate])
"""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.metadata
import mmap
import os
import sys
from pathlib import Path
from typing import Any

from ai_edge_litert.interpreter import Interpreter as _LiteRtInterpreter
from ai_edge_litert.interpreter import load_delegate as _litert_load_delegate

__all__ = [
    "DELEGATE_LIBRARY",
    "Interpreter",
    "claimed_nodes",
    "delegate_path",
    "load_delegate",
    "packed_weight_bytes",
    "tuning_candidates",
]

#: File name of the delegate's shared library.
DELEGATE_LIBRARY = "libtfpconv_delegate.so"
#: Environment variable that overrides where the library is looked for.
PATH_ENV = "TFPCONV_DELEGATE_PATH"

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent

# Strings only a sanitizer build carries: the runtimes it links (GCC) or the runtime entry points
# it calls (clang links the runtime into executables only). Such a library loads only with its
# runtime preloaded, so a plain ``python`` must not pick it up.
_SANITIZER_MARKERS = (
    b"__asan_init",
    b"__ubsan_handle_",
    b"__tsan_init",
    b"libasan.so",
    b"libubsan.so",
)
# ELF e_machine values, for messages.
_MACHINE_NAMES = {3: "x86", 40: "arm", 62: "x86-64", 183: "aarch64", 243: "riscv"}


def _candidates() -> list[Path]:
    """Where the library may be, most preferred first (they need not exist)."""
    found = [_PACKAGE_DIR / DELEGATE_LIBRARY]
    # The installed distribution's own record: the wheel's copy, also for editable installs.
    try:
        for file in importlib.metadata.files("tfpconv") or []:
            if file.name == DELEGATE_LIBRARY:
                found.append(Path(file.locate()).resolve())
    except importlib.metadata.PackageNotFoundError:
        pass
    # A source checkout: scikit-build-core's build directory (build/py3-*) first, then other CMake
    # build trees (test, cross and sanitizer builds among them: _unusable_reason filters those).
    build_dir = _REPO_DIR / "build"
    patterns = [f"py3-*/delegate/{DELEGATE_LIBRARY}", f"*/delegate/{DELEGATE_LIBRARY}"]
    for pattern in patterns:
        found.extend(Path(p) for p in sorted(glob.glob(str(build_dir / pattern))))
    found.append(build_dir / "delegate" / DELEGATE_LIBRARY)
    return list(dict.fromkeys(found))


def _elf_machine(path: Path) -> int | None:
    """The ELF e_machine of a file, or None when it is not an ELF file."""
    with open(path, "rb") as file:
        header = file.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


@functools.lru_cache(maxsize=1)
def _host_machine() -> int | None:
    """The e_machine of this Python's own executable: what a library must be built for."""
    try:
        return _elf_machine(Path(sys.executable).resolve())
    except OSError:
        return None


def _machine_name(machine: int) -> str:
    return _MACHINE_NAMES.get(machine, f"machine {machine}")


@functools.lru_cache(maxsize=32)
def _has_sanitizer_markers(path: str, _mtime_ns: int, _size: int) -> bool:
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return any(data.find(marker) >= 0 for marker in _SANITIZER_MARKERS)


def _wrong_machine(path: Path) -> str | None:
    machine = _elf_machine(path)
    if machine is None:
        return "not an ELF shared library"
    host = _host_machine()
    if host is not None and machine != host:
        return f"built for {_machine_name(machine)}, this host is {_machine_name(host)}"
    return None


def _unusable_reason(path: Path) -> str | None:
    """Why this Python cannot load the library at ``path`` (or None when it can)."""
    try:
        reason = _wrong_machine(path)
        if reason is None:
            stat = path.stat()
            if _has_sanitizer_markers(str(path), stat.st_mtime_ns, stat.st_size):
                reason = "a sanitizer build (it needs the sanitizer runtime preloaded)"
    except (OSError, ValueError) as error:  # unreadable, or empty (mmap)
        reason = f"unreadable ({error})"
    return reason


def _first_usable(candidates: list[Path]) -> str:
    """The first existing candidate this Python can load; FileNotFoundError says what was seen."""
    rejected = []
    for candidate in candidates:
        if not candidate.is_file():
            continue
        reason = _unusable_reason(candidate)
        if reason is None:
            return str(candidate)
        rejected.append(f"{candidate}: {reason}")
    looked_in = sorted({str(c.parent) for c in candidates})
    skipped = f"; skipped {'; '.join(rejected)}" if rejected else ""
    raise FileNotFoundError(
        f"no usable tfpconv delegate library ({DELEGATE_LIBRARY}) in {looked_in}{skipped}; "
        f"install tfpconv with `pip install .` (it compiles the delegate) or set ${PATH_ENV}"
    )


def delegate_path() -> str:
    """Absolute path of the delegate's shared library (``libtfpconv_delegate.so``).

    Looks at ``$TFPCONV_DELEGATE_PATH``, then inside the installed package, then in the source
    checkout's build directories (scikit-build-core's ``build/py3-*`` first). A library built for
    another CPU architecture or with sanitizers (which loads only with their runtime preloaded) is
    never picked up from those; ``$TFPCONV_DELEGATE_PATH`` may name a sanitizer build on purpose.

    Raises:
      FileNotFoundError: no usable library (``pip install .`` builds it), or
        ``$TFPCONV_DELEGATE_PATH`` names a missing file or one built for another architecture.
    """
    override = os.environ.get(PATH_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"${PATH_ENV} is {override!r}, which is not a file")
        wrong = _wrong_machine(path)
        if wrong is not None:
            raise FileNotFoundError(f"${PATH_ENV} is {override!r}, which is {wrong}")
        return str(path.resolve())
    return _first_usable(_candidates())


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


_library: ctypes.CDLL | None = None


def _native() -> ctypes.CDLL:
    """The delegate library's C API through ctypes (loaded once)."""
    global _library
    if _library is None:
        library = ctypes.CDLL(delegate_path())
        library.TfpconvDelegateClaimedNodes.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_int,
        ]
        library.TfpconvDelegateClaimedNodes.restype = ctypes.c_int
        library.TfpconvDelegatePackedWeightBytes.argtypes = [ctypes.c_void_p]
        library.TfpconvDelegatePackedWeightBytes.restype = ctypes.c_size_t
        library.TfpconvDelegateTuningCandidates.argtypes = [ctypes.c_int] * 7 + [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        library.TfpconvDelegateTuningCandidates.restype = ctypes.c_int
        _library = library
    return _library


def claimed_nodes(delegate: Any) -> list[int]:
    """Indices of the CONV_2D nodes the delegate claimed when it was last applied to a model.

    ``delegate`` is what :func:`load_delegate` (or ``tf.lite.experimental.load_delegate`` with
    :func:`delegate_path`) returned.
    """
    pointer = delegate._get_native_delegate_pointer()  # noqa: SLF001 - LiteRT's public-ish accessor
    query = _native().TfpconvDelegateClaimedNodes
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
) -> list[dict[str, int]]:
    """The engine's tuned-parameter sets worth timing for one 3x3 convolution on this CPU.

    Each set has the keys ``isa`` (the instruction set's stable code: scalar 0, avx2 1, avx512 2,
    neon 3), ``variant`` (an index into that instruction set's kernel variants), ``tile_oc`` and
    ``tile_ic``. Stored as a plan's ``tuned`` parameters they are applied only on that instruction
    set; elsewhere the delegate runs its defaults.

    Args:
      input_shape: ``(height, width, channels)`` of the NHWC input.
      out_channels: number of filters.
      strides: ``(stride_h, stride_w)``, each 1 or 2.
      padding: ``"same"`` or ``"valid"``.
      isa: instruction set (None: the best this CPU supports).

    Raises:
      ValueError: the shape, strides, padding or instruction set cannot be tuned.
    """
    function = _native().TfpconvDelegateTuningCandidates
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
    return [
        {key: int(value) for key, value in (item.split("=") for item in line.split())}
        for line in buffer.value.decode().splitlines()
    ]


def packed_weight_bytes(delegate: Any) -> int:
    """Bytes of the packed weights of the convolutions the delegate claimed when last applied."""
    pointer = delegate._get_native_delegate_pointer()  # noqa: SLF001
    return int(_native().TfpconvDelegatePackedWeightBytes(pointer))


class Interpreter(_LiteRtInterpreter):
    """A LiteRT interpreter with the tfpconv delegate applied.

    Args:
      model_path / model_content: the .tflite model (one of them), e.g. from ``tfpconv.convert``.
      num_threads: threads for TFLite's kernels and for the delegate's pattern convolutions.
      use_delegate: False gives a plain LiteRT interpreter (for comparisons).
      **delegate_options: ``log_level``, ``isa``, ``claim`` (see :func:`load_delegate`).

    ``delegated_nodes()`` tells which CONV_2D nodes run on the delegate. The delegate is kept in
    ``self.delegate`` for the interpreter's lifetime.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        model_content: bytes | None = None,
        num_threads: int = 1,
        use_delegate: bool = True,
        **delegate_options: Any,
    ) -> None:
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
        self.delegate = (
            load_delegate(num_threads=num_threads, **delegate_options) if use_delegate else None
        )
        super().__init__(
            model_path=os.fspath(model_path) if model_path is not None else None,
            model_content=model_content,
            num_threads=num_threads,
            experimental_delegates=[self.delegate] if self.delegate is not None else None,
        )

    def delegated_nodes(self) -> list[int]:
        """Indices of the CONV_2D nodes that run on the tfpconv delegate ([] without it)."""
        return claimed_nodes(self.delegate) if self.delegate is not None else []

    def packed_weight_bytes(self) -> int:
        """Bytes of the delegate's packed weights (0 without it)."""
        return packed_weight_bytes(self.delegate) if self.delegate is not None else 0

    def delegated_ops(self) -> list[dict[str, Any]]:
        """The ``_get_ops_details()`` entries of the operators the delegate runs."""
        nodes = set(self.delegated_nodes())
        return [op for op in self._get_ops_details() if op["index"] in nodes]
