"""Unpack Debian 12's arm64 pthreadpool (library and headers) into a directory, for the aarch64
cross build: ``python3 scripts/fetch_arm64_pthreadpool.py build/aarch64-deps``.

The packages come from the Debian archive apt is configured with (deb.debian.org otherwise) and are
checked against the SHA-256 sums below before anything is unpacked; the directory is replaced
whole, so an interrupted run leaves either the old contents or none. Does nothing when the library
is already there.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

VERSION = "0.0~git20210507.1787867-1"
PACKAGES = {
    "libpthreadpool0": "bd6fd52b358466c04597952accee6bfd43a39cdd80ee464387c587edfc0fe143",
    "libpthreadpool-dev": "b3265050dca46e6bd43ccac99201f99f245f29ad806bc5531fd9ddb475e9243c",
}
LIBRARY = Path("usr/lib/aarch64-linux-gnu/libpthreadpool.so.0")
DEFAULT_ARCHIVE = "http://deb.debian.org/debian"


def archive_url() -> str:
    """The first Debian archive in apt's sources (deb822 or one-line format)."""
    sources = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        match = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.M
        )
        if match and "security" not in match.group(1):
            return match.group(1).rstrip("/")
    return DEFAULT_ARCHIVE


def fetch(name: str, sha256: str, into: Path, archive: str) -> Path:
    file_name = f"{name}_{VERSION}_arm64.deb"
    url = f"{archive}/pool/main/p/pthreadpool/{file_name}"
    path = into / file_name
    with urllib.request.urlopen(url, timeout=120) as response:
        path.write_bytes(response.read())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{url}: SHA-256 {digest}, expected {sha256}; not unpacking it")
    return path


def main(target: Path) -> None:
    if (target / LIBRARY).exists():
        return
    archive = archive_url()
    with tempfile.TemporaryDirectory(dir=target.parent if target.parent.exists() else None) as tmp:
        work = Path(tmp)
        unpacked = work / "unpacked"
        unpacked.mkdir()
        for name, sha256 in PACKAGES.items():
            deb = fetch(name, sha256, work, archive)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        if not (unpacked / LIBRARY).exists():
            raise SystemExit(f"the arm64 packages did not contain {LIBRARY}")
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    print(f"setup: Debian's arm64 pthreadpool {VERSION} unpacked into {target}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    destination = Path(sys.argv[1])
    destination.parent.mkdir(parents=True, exist_ok=True)
    main(destination)
