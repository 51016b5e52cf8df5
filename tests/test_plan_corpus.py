"""The shared plan corpus: the Python reader gives every file its recorded verdict.

``converter/make_plan_corpus.py`` writes the corpus; the delegate's reader is checked against the
same files by ``delegate/tests/plan_corpus_test.cc`` (run by tests/test_cpp.py).
"""

from __future__ import annotations

import filecmp
import importlib.util
from pathlib import Path

import pytest

from tfpconv.tflite.plan import Plan, PlanError, UnsupportedOp

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "converter" / "plan_corpus"


def _make_corpus_module():
    spec = importlib.util.spec_from_file_location(
        "make_plan_corpus", REPO / "converter" / "make_plan_corpus.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _index() -> list[tuple[str, str]]:
    lines = (CORPUS / "index.txt").read_text().splitlines()
    entries = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#")]
    return [(name, verdict) for name, verdict in entries]


def test_committed_corpus_is_what_the_script_writes(tmp_path: Path) -> None:
    written = _make_corpus_module().write_corpus(tmp_path)
    names = {path.name for path in written}
    assert names == {path.name for path in CORPUS.iterdir()}, (
        "converter/plan_corpus is stale: run `python3 converter/make_plan_corpus.py`"
    )
    stale = [p.name for p in written if not filecmp.cmp(p, CORPUS / p.name, shallow=False)]
    assert not stale, f"stale corpus files {stale}: run `python3 converter/make_plan_corpus.py`"


def test_corpus_covers_every_verdict() -> None:
    verdicts = {verdict.split(":")[0] for _, verdict in _index()}
    assert verdicts == {"valid", "invalid", "declined"}


@pytest.mark.parametrize(("name", "verdict"), _index())
def test_python_reader_agrees_with_the_corpus(name: str, verdict: str) -> None:
    data = (CORPUS / name).read_bytes()
    if verdict == "invalid":
        with pytest.raises(PlanError):
            Plan.from_bytes(data, name)
        return
    plan = Plan.from_bytes(data, name)
    missing = [op.missing.name for op in plan.ops if isinstance(op, UnsupportedOp)]
    if verdict == "valid":
        assert missing == []
    else:
        assert verdict.startswith("declined:") and verdict.split(":", 1)[1] in missing
