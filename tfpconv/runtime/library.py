"""The delegate's shared library: where it is, whether it fits this machine, and its C API."""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.metadata
import mmap
import os
import sys
from pathlib import Path

#: File name of the delegate's shared library.
DELEGATE_LIBRARY = "libtfpconv_delegate.so"
#: Environment variable that overrides where the library is looked for.
PATH_ENV = "TFPCONV_DELEGATE_PATH"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
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


_library: ctypes.CDLL | None = None


def native() -> ctypes.CDLL:
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
        library.TfpconvDelegateActivationUnitRows.argtypes = [ctypes.c_int]
        library.TfpconvDelegateActivationUnitRows.restype = ctypes.c_int
        library.TfpconvDelegateActivationUnitPixels.argtypes = []
        library.TfpconvDelegateActivationUnitPixels.restype = ctypes.c_int
        _library = library
    return _library


def activation_unit(height: int, width: int) -> tuple[int, int]:
    """The unit of activation masks on a layer whose output is ``height`` x ``width``, from the
    engine: ``(rows, pixels)``, a block of output pixels that the delegate's kernels compute
    together, so a masked unit is work they skip (8 x 16 on maps of 56 rows or more, 4 x 16 from
    14 rows, 1 x 16 below).

    Raises:
      ValueError: a height or width below 1.
    """
    if height < 1 or width < 1:
        raise ValueError(f"a layer's output size must be positive, got {height}x{width}")
    library = native()
    return (
        int(library.TfpconvDelegateActivationUnitRows(int(height))),
        int(library.TfpconvDelegateActivationUnitPixels()),
    )
