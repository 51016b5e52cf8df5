"""Writing output files: checked paths and atomic writes (readers never see a partial file)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
