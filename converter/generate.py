#!/usr/bin/env python3
"""Generate the plan schema's code with Debian's flatc 2.0.8 (the generated files are committed).

From ``converter/tfpconv_plan.fbs`` it writes:

* ``tfpconv/tflite/fb/*.py`` -- the Python reader/builder functions that ``tfpconv.tflite.plan``
  uses (flatc's absolute imports rewritten to that package);
* ``converter/generated/tfpconv_plan_generated.h`` -- the C++ header the delegate includes. It is
  generated with ``--cpp-std c++17 --scoped-enums`` and without the object API: the delegate
  reads the plan in place (``tfpconv::fb::GetPlan``) after ``tfpconv::fb::VerifyPlanBuffer`` has
  checked it with a ``flatbuffers::Verifier``.

Usage::

    python3 converter/generate.py              # regenerate into the repository
    python3 converter/generate.py --out DIR    # generate the same tree under DIR (stale check)
    python3 converter/generate.py --check      # exit 1 if the committed files are stale

Generated output depends on the flatc version, so anything but 2.0.8 is refused.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "converter" / "tfpconv_plan.fbs"
FLATC_VERSION = "2.0.8"
#: Generated paths, relative to the output root.
PYTHON_DIR = Path("tfpconv") / "tflite" / "fb"
#: Where flatc writes the Python package (the schema's namespace), and the import prefix it uses.
FLATC_PYTHON_DIR = Path("tfpconv") / "fb"
CPP_HEADER = Path("converter") / "generated" / "tfpconv_plan_generated.h"
CPP_OPTIONS = ["--cpp", "--cpp-std", "c++17", "--scoped-enums"]


def flatc_version(flatc: str = "flatc") -> str:
    """The version flatc reports, e.g. ``"2.0.8"``."""
    try:
        out = subprocess.run([flatc, "--version"], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(
            f"generate: cannot run {flatc!r} ({err}); install Debian's flatbuffers-compiler "
            f"{FLATC_VERSION} (scripts/setup.sh does)"
        ) from None
    match = re.search(r"(\d+\.\d+\.\d+)", out.stdout)
    return match.group(1) if match else out.stdout.strip()


def _rewrite_imports(python_dir: Path) -> None:
    """Point flatc's absolute imports (``tfpconv.fb.X``) at where the package lives."""
    old = "from " + ".".join(FLATC_PYTHON_DIR.parts) + "."
    new = "from " + ".".join(PYTHON_DIR.parts) + "."
    for module in python_dir.glob("*.py"):
        text = module.read_text()
        if old in text:
            module.write_text(text.replace(old, new))


def generate(out_root: Path, flatc: str = "flatc") -> list[Path]:
    """Generate the Python package and the C++ header under ``out_root``; returns the files."""
    version = flatc_version(flatc)
    if version != FLATC_VERSION:
        raise SystemExit(
            f"generate: flatc {version} found, but the committed code is generated with "
            f"{FLATC_VERSION} (Debian bookworm's flatbuffers-compiler)"
        )
    out_root = Path(out_root)
    python_dir = out_root / PYTHON_DIR
    header = out_root / CPP_HEADER
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        subprocess.run([flatc, "--python", "-o", str(scratch_path / "py"), str(SCHEMA)], check=True)
        subprocess.run(
            [flatc, *CPP_OPTIONS, "-o", str(scratch_path / "cpp"), str(SCHEMA)], check=True
        )
        # flatc writes one module per type under the namespace's directories (tfpconv/fb/); only
        # that leaf package is ours to replace (flatc's tfpconv/__init__.py is dropped).
        if python_dir.exists():
            shutil.rmtree(python_dir)
        shutil.copytree(scratch_path / "py" / FLATC_PYTHON_DIR, python_dir)
        _rewrite_imports(python_dir)
        header.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scratch_path / "cpp" / "tfpconv_plan_generated.h", header)
    return sorted(p for p in python_dir.rglob("*.py")) + [header]


def stale_files(generated_root: Path, committed_root: Path = REPO) -> list[str]:
    """Generated files that are missing, extra or different under ``committed_root``."""
    problems = []
    new = {p.relative_to(generated_root) for p in (generated_root / PYTHON_DIR).rglob("*.py")}
    old = {p.relative_to(committed_root) for p in (committed_root / PYTHON_DIR).rglob("*.py")}
    new.add(CPP_HEADER)
    if (committed_root / CPP_HEADER).exists():
        old.add(CPP_HEADER)
    for rel in sorted(new | old):
        if rel not in old:
            problems.append(f"{rel}: missing")
        elif rel not in new:
            problems.append(f"{rel}: no longer generated")
        elif not filecmp.cmp(generated_root / rel, committed_root / rel, shallow=False):
            problems.append(f"{rel}: differs from the schema")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--out", type=Path, help="generate under this root instead of the repo")
    group.add_argument("--check", action="store_true", help="fail if committed files are stale")
    parser.add_argument("--flatc", default="flatc", help="flatc executable (default: flatc)")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp), args.flatc)
            problems = stale_files(Path(tmp))
        for problem in problems:
            print(f"generate: stale: {problem}", file=sys.stderr)
        if problems:
            print("generate: run `python3 converter/generate.py` and commit", file=sys.stderr)
        return 1 if problems else 0
    for path in generate(args.out or REPO, args.flatc):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
