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


def test_corpus_covers_every_operator_kind() -> None:
    kinds: set[str] = set()
    flagged = masked = False
    for name, verdict in _index():
        if verdict != "valid":
            continue
        plan = Plan.from_bytes((CORPUS / name).read_bytes(), name)
        kinds |= {op.kind for op in plan.ops}
        flagged |= any(conv.unified is not None for conv in plan.convs)
        masked |= any(conv.activation_mask is not None for conv in plan.convs)
    assert kinds == {"pattern_conv", "unified_fc", "dense_conv"}
    assert flagged, "no valid pattern convolution with PatternConv.unified"
    assert masked, "no valid pattern convolution with an activation mask"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("invalid_unified_states_length", "17 block states for 6 rows of 3 blocks"),
        ("invalid_unified_state_3", "found 3"),
        ("invalid_unified_block_size_0", "block size 0 is not in 1..64"),
        ("invalid_unified_block_size_65", "block size 65 is not in 1..64"),
        ("invalid_unified_shape_rank_3", r"weight shape \[6, 1, 20\] is not"),
        ("invalid_unified_shape_3x3", r"weight shape \[6, 3, 3, 20\] is not"),
        ("invalid_unified_shape_zero", r"weight shape \[0, 20\] is not"),
        ("invalid_unified_weight_bytes", "weight_bytes 120 != 480"),
        ("invalid_unified_weight_tensor", "weight tensor index -1"),
        ("invalid_unified_same_operator_as_pattern_conv", "operator 2 of subgraph 0 appears twice"),
        ("invalid_pattern_unified_length", "32 unified flags for 16x3 kernels"),
        ("invalid_pattern_unified_flag_2", "must be 0 or 1, found 2"),
        ("invalid_pattern_unified_removed_kernel", r"removed \(code -1\) but flagged unified"),
    ],
)
def test_unified_corpus_entries_break_the_rule_they_are_named_for(name: str, message: str) -> None:
    """Each invalid entry breaks exactly the rule it is named for (so the C++ reader, which gives
    the same verdict, is tested on that rule)."""
    assert dict(_index())[f"{name}.tfpconv"] == "invalid"
    with pytest.raises(PlanError, match=message):
        Plan.from_bytes((CORPUS / f"{name}.tfpconv").read_bytes(), name)
