"""The plan: Python objects <-> FlatBuffer, validation, filter reorder, generated code freshness."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tfpconv._version import __version__
from tfpconv.sparsity import patterns
from tfpconv.tflite.filter_order import reorder_filters
from tfpconv.tflite.model_file import TFLiteModelError
from tfpconv.tflite.plan import (
    KNOWN_FEATURES,
    PLAN_IDENTIFIER,
    SCHEMA_VERSION,
    UNIFIED_FC,
    Feature,
    PatternConvPlan,
    Plan,
    PlanError,
    SkippedOp,
    Tuning,
    UnifiedFcPlan,
    UnsupportedOp,
    crc32,
    pack_plan,
    read_plan,
    unified_packed_bytes,
)

REPO = Path(__file__).resolve().parent.parent


def _library(k: int, seed: int = 0) -> tuple[int, ...]:
    rng = np.random.default_rng(seed)
    picks = rng.choice(patterns.NUM_CANDIDATES, size=k, replace=False)
    return tuple(int(patterns.CANDIDATE_MASKS[c]) for c in picks)


def _conv_plan(
    out: int = 24, inp: int = 5, k: int = 6, seed: int = 0, **overrides
) -> PatternConvPlan:
    rng = np.random.default_rng(seed)
    codes = rng.integers(-1, k, size=(out, inp)).astype(np.int8)
    order, offsets = reorder_filters(codes)
    weights = rng.standard_normal((out, 3, 3, inp)).astype(np.float32).tobytes()
    fields = dict(
        subgraph_index=0,
        operator_index=3,
        weight_tensor_index=7,
        kernel_shape=(out, 3, 3, inp),
        library=_library(k, seed),
        codes=codes,
        filter_order=order,
        group_offsets=offsets,
        weight_checksum=crc32(weights),
        weight_bytes=len(weights),
    )
    fields.update(overrides)
    return PatternConvPlan(**fields)


def _fc_plan(
    out: int = 5,
    inp: int = 19,
    block_size: int = 8,
    seed: int = 0,
    conv1x1: bool = False,
    **overrides,
) -> UnifiedFcPlan:
    rng = np.random.default_rng(seed)
    blocks = -(-inp // max(block_size, 1))
    weights = rng.standard_normal(out * inp).astype(np.float32).tobytes()
    fields = dict(
        subgraph_index=0,
        operator_index=11,
        weight_tensor_index=13,
        weight_shape=(out, 1, 1, inp) if conv1x1 else (out, inp),
        block_size=block_size,
        states=rng.integers(0, 3, size=(out, blocks)).astype(np.uint8),
        weight_checksum=crc32(weights),
        weight_bytes=len(weights),
    )
    fields.update(overrides)
    return UnifiedFcPlan(**fields)


def _unified_flags(codes: np.ndarray) -> np.ndarray:
    """Every other kernel that keeps a pattern flagged unified."""
    flags = np.zeros(codes.shape, np.uint8)
    flags.ravel()[np.flatnonzero(codes.ravel() >= 0)[::2]] = 1
    return flags


def _plan() -> Plan:
    first = _conv_plan()
    return Plan(
        ops=[
            _conv_plan(unified=_unified_flags(first.codes)),
            _conv_plan(
                out=3,
                inp=2,
                k=1,
                seed=1,
                operator_index=5,
                tunings=[Tuning("avx2", "test CPU", variant="flat8", params={"tile_oc": 16})],
            ),
            # A layer pruned away completely: empty library, every code -1.
            _conv_plan(
                out=8,
                inp=4,
                k=1,
                seed=2,
                operator_index=9,
                library=(),
                codes=np.full((8, 4), -1, np.int8),
            ),
            _conv_plan(
                subgraph_index=1,
                operator_index=0,
                tunings=[Tuning("avx512", claim=False), Tuning("neon", params={"tile_ow": -4})],
            ),
            _fc_plan(tunings=[Tuning("avx2", "test CPU", variant="fc16")]),
            _fc_plan(out=4, inp=32, block_size=16, seed=1, conv1x1=True, operator_index=12),
        ],
        skipped=[
            SkippedOp(0, 4, "CONV_2D", "kernel 5x5"),
            SkippedOp(0, 6, "CONV_2D", "dilation 2 — ünïcode kept"),
        ],
        producer="tfpconv test",
    )


def test_round_trip() -> None:
    plan = _plan()
    data = plan.to_bytes()
    assert data[4:8] == PLAN_IDENTIFIER
    back = Plan.from_bytes(data)
    assert back == plan
    assert back.convs[0].codes.dtype == np.int8
    assert back.convs[0].codes.shape == (24, 5)
    assert back.convs[1].tunings == [Tuning("avx2", "test CPU", True, "flat8", {"tile_oc": 16})]
    assert back.convs[3].tuning_for("avx512").claim is False
    assert back.convs[3].tuning_for("avx2") is None
    assert back.convs[2].library == () and back.convs[2].kernels_kept == 0
    assert back.skipped[1].reason.startswith("dilation 2 — ü")
    # Pattern convolutions' unified flags: written where recorded, None where not.
    assert np.array_equal(back.convs[0].unified, plan.convs[0].unified)
    assert back.convs[0].unified.dtype == np.uint8 and back.convs[0].unified.shape == (24, 5)
    assert all(conv.unified is None for conv in back.convs[1:])
    # Unified FULLY_CONNECTED / 1x1 CONV_2D plans.
    assert [op.kind for op in back.ops] == ["pattern_conv"] * 4 + ["unified_fc"] * 2
    fc, conv1x1 = back.unified_fcs
    assert fc.states.dtype == np.uint8 and fc.states.shape == (5, 3)
    assert fc.requires == (UNIFIED_FC,) and fc.tuning_for("avx2").variant == "fc16"
    assert not fc.conv1x1 and conv1x1.conv1x1 and conv1x1.weight_shape == (4, 1, 1, 32)
    # read_plan accepts a bare plan too, and to_dict is JSON-ready.
    assert read_plan(data) == plan
    json.dumps(back.to_dict())
    # Serialization is deterministic.
    assert plan.to_bytes() == data


def test_schema_version_is_written_explicitly() -> None:
    from tfpconv.tflite.fb import Plan as fb_plan

    data = Plan().to_bytes()
    root = fb_plan.Plan.GetRootAs(data, 0)
    # The field is present in the table (not just the schema default).
    assert root._tab.Offset(4) != 0
    assert root.SchemaVersion() == SCHEMA_VERSION


def test_other_schema_version_is_refused() -> None:
    data = bytearray(Plan(ops=[_conv_plan()]).to_bytes())
    from tfpconv.tflite.fb import Plan as fb_plan

    root = fb_plan.Plan.GetRootAs(bytes(data), 0)
    field_pos = root._tab.Pos + root._tab.Offset(4)
    data[field_pos : field_pos + 4] = (3).to_bytes(4, "little")
    with pytest.raises(PlanError, match="schema version 3.*reads versions 1, 2"):
        Plan.from_bytes(bytes(data))


def test_derived_quantities() -> None:
    conv = _conv_plan(
        out=2,
        inp=3,
        k=2,
        library=(0b000111010, 0b010110010),
        codes=np.array([[0, -1, 1], [-1, -1, 0]], np.int8),
        filter_order=(1, 0),
        group_offsets=(0, 2),
    )
    assert conv.kernels_kept == 3
    assert conv.weights_kept == 12
    assert conv.weights == 54
    assert conv.pattern_histogram() == {0b000111010: 2, 0b010110010: 1}
    assert conv.groups() == [(1, 0)]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kernel_shape": (24, 5, 5, 5)}, "is not \\[out, 3, 3, in\\]"),
        ({"library": (0b111111111,) + _library(5)}, "not a 4-tap pattern"),
        ({"library": (0b000001111,) + _library(5)}, "not a 4-tap pattern"),  # centre missing
        ({"library": _library(5) + _library(5)[:1]}, "repeated masks"),
        ({"codes": np.full((24, 5), 6, np.int8)}, "codes must be -1 or 0..5"),
        ({"codes": np.full((24, 5), -2, np.int8)}, "codes must be -1 or 0..5"),
        ({"codes": np.zeros((24, 4), np.int8)}, "96 codes for 24x5"),
        ({"filter_order": tuple(range(23)) + (22,)}, "not a permutation"),
        ({"group_offsets": (0, 8, 8, 24)}, "must rise strictly"),
        ({"group_offsets": (0, 16)}, "must rise strictly"),
        ({"weight_bytes": 100}, "weight_bytes 100"),
        ({"weight_checksum_kind": 3}, "checksum kind"),
    ],
)
def test_validation(overrides: dict, message: str) -> None:
    plan = Plan(ops=[_conv_plan(**overrides)])
    with pytest.raises(PlanError, match=message):
        plan.to_bytes()


def test_duplicate_operator_is_refused() -> None:
    with pytest.raises(PlanError, match="appears twice"):
        Plan(ops=[_conv_plan()], skipped=[SkippedOp(0, 3, "CONV_2D", "x")]).validate()


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[: len(d) // 2],
        lambda d: d[:12],
        lambda d: d[:4] + b"XXXX" + d[8:],
        lambda d: d[:4] + PLAN_IDENTIFIER + b"\xff" * (len(d) - 8),
        lambda d: b"\x00\x00\x01\x00" + PLAN_IDENTIFIER + d[8:],
    ],
)
def test_corrupt_plan_bytes_raise_plan_error(mangle) -> None:
    data = _plan().to_bytes()
    with pytest.raises(PlanError):
        Plan.from_bytes(mangle(data))


def test_huge_kernel_shape_is_an_error_without_overflow_warnings() -> None:
    plan = Plan(ops=[_conv_plan(out=3, inp=2, k=1, seed=1)], producer="test")
    data = plan.to_bytes()
    shape = struct.pack("<4i", 3, 3, 3, 2)
    assert data.count(shape) == 1
    huge = data.replace(shape, struct.pack("<4i", 2**30, 3, 3, 2))  # out * in needs 64 bits
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PlanError, match="codes for 1073741824x2 kernels"):
            Plan.from_bytes(huge)
    assert [str(w.message) for w in caught] == []


def test_read_plan_of_non_model(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a model at all")
    with pytest.raises(TFLiteModelError, match="not a TFLite model"):
        read_plan(text)
    with pytest.raises(FileNotFoundError):
        read_plan(tmp_path / "missing.tflite")
    with pytest.raises(TFLiteModelError, match="directory"):
        read_plan(tmp_path)


def test_checksum_detects_tampering() -> None:
    weights = np.arange(2 * 9 * 3, dtype=np.float32).tobytes()
    conv = _conv_plan(
        out=2,
        inp=3,
        k=1,
        weight_checksum=crc32(weights),
        weight_bytes=len(weights),
        codes=np.zeros((2, 3), np.int8),
        filter_order=(0, 1),
        group_offsets=(0, 2),
    )
    assert conv.matches_weights(weights)
    tampered = bytearray(weights)
    tampered[17] ^= 0x01
    assert not conv.matches_weights(bytes(tampered))
    assert not conv.matches_weights(weights + b"\0\0\0\0")


# -- unified weights (kind unified_fc, PatternConv.unified) -------------------------------------


def test_unified_fc_feature_and_version() -> None:
    assert UNIFIED_FC.name == "unified_fc" and UNIFIED_FC.since == "0.3.0"
    assert {"pattern_conv", "unified_fc", "dense_conv"} == KNOWN_FEATURES
    assert __version__ == "0.4.0"
    assert SCHEMA_VERSION == 2  # additions only


def test_unified_fc_derived_quantities() -> None:
    states = np.array(
        [
            [1, 1, 1],  # 4 + 1, 4 + 1, 4 + 1 (the last block has 2 inputs: one sign byte)
            [0, 2, 1],  # 16, 0, 4 + 1
            [2, 2, 2],  # nothing
        ],
        np.uint8,
    )
    weights = np.zeros(30, np.float32).tobytes()
    fc = UnifiedFcPlan(0, 1, 2, (3, 10), 4, states, crc32(weights), len(weights))
    fc.validate()
    assert (fc.out_features, fc.in_features, fc.blocks, fc.weights) == (3, 10, 3, 30)
    assert fc.block_lengths().tolist() == [4, 4, 2]
    assert fc.state_counts() == {"free": 1, "unified": 4, "pruned": 4}
    assert fc.stored_values == 4 + 4  # a free block of 4, four unified blocks of one value
    assert fc.weights_kept == 4 + 4 + 2 + 4 + 2
    assert fc.dense_bytes == 120
    assert fc.packed_bytes == 15 + 16 + 5 + 3  # 9 blocks of 2 bits: 3 bytes
    assert fc.packed_bytes == unified_packed_bytes(states.ravel(), 10, 4)
    data = fc.to_dict()
    assert (data["blocks_free"], data["blocks_unified"], data["blocks_pruned"]) == (1, 4, 4)
    assert data["stored_values"] == 8 and data["packed_bytes"] == 39 and data["dense_bytes"] == 120
    assert data["requires"] == ["unified_fc (since 0.3.0)"] and data["states"] == states.tolist()
    json.dumps(data)


@pytest.mark.parametrize(
    ("block_size", "in_features", "unified_bytes"),
    [(16, 16, 4 + 2), (8, 8, 4 + 1), (4, 4, 4 + 1), (1, 1, 4 + 1), (16, 17, (4 + 2) + (4 + 1))],
)
def test_packed_bytes_of_a_unified_row(block_size: int, in_features: int, unified_bytes) -> None:
    blocks = -(-in_features // block_size)
    state_bytes = -(-2 * blocks // 8)
    assert unified_packed_bytes(np.ones((1, blocks)), in_features, block_size) == (
        unified_bytes + state_bytes
    )
    assert unified_packed_bytes(np.zeros((1, blocks)), in_features, block_size) == (
        4 * in_features + state_bytes
    )
    assert unified_packed_bytes(np.full((1, blocks), 2), in_features, block_size) == state_bytes


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"weight_shape": (5, 1, 19)}, "is not \\[out, in\\] or \\[out, 1, 1, in\\]"),
        ({"weight_shape": (5, 3, 3, 19)}, "is not \\[out, in\\]"),
        ({"weight_shape": (0, 19)}, "is not \\[out, in\\]"),
        ({"weight_shape": (5,)}, "is not \\[out, in\\]"),
        ({"weight_tensor_index": -1}, "weight tensor index -1"),
        ({"block_size": 0}, "block size 0 is not in 1..64 .*4, 8 and 16"),
        ({"block_size": 65}, "block size 65 is not in 1..64"),
        ({"states": np.zeros(14, np.uint8)}, "14 block states for 5 rows of 3 blocks"),
        ({"states": np.full((5, 3), 3, np.uint8)}, "must be 0 \\(free\\), 1 .* found 3"),
        ({"weight_bytes": 5 * 19}, "weight_bytes 95 != 380"),
        ({"weight_checksum_kind": 2}, "checksum kind"),
        ({"tunings": [Tuning("")]}, "names no instruction set"),
    ],
)
def test_unified_fc_validation(overrides: dict, message: str) -> None:
    plan = Plan(ops=[_fc_plan(**overrides)])
    with pytest.raises(PlanError, match=message):
        plan.to_bytes()
    with pytest.raises(PlanError, match=message):  # what a reader makes of the same bytes
        Plan.from_bytes(pack_plan(plan))


@pytest.mark.parametrize(
    ("make_flags", "message"),
    [
        (lambda codes: np.ones((24, 4), np.uint8), "96 unified flags for 24x5"),
        (lambda codes: _unified_flags(codes) * 2, "must be 0 or 1, found 2"),
        (
            lambda codes: np.where(codes < 0, 1, 0).astype(np.uint8),
            "is removed \\(code -1\\) but flagged unified",
        ),
    ],
)
def test_pattern_unified_validation(make_flags, message: str) -> None:
    conv = _conv_plan()
    plan = Plan(ops=[_conv_plan(unified=make_flags(conv.codes))])
    with pytest.raises(PlanError, match=message):
        plan.to_bytes()
    with pytest.raises(PlanError, match=message):
        Plan.from_bytes(pack_plan(plan))


def test_pattern_unified_empty_means_none() -> None:
    assert _conv_plan(unified=np.zeros(0, np.uint8)).unified is None
    conv = _conv_plan()
    flags = _unified_flags(conv.codes)
    with_flags = _conv_plan(unified=flags.ravel())  # flat flags are shaped (out, in)
    assert with_flags.unified.shape == (24, 5) and with_flags.kernels_unified == flags.sum()
    assert with_flags != conv and _conv_plan(unified=flags) == with_flags
    assert conv.kernels_unified == 0 and conv.to_dict()["unified"] is None
    # A plan without flags writes no field: the bytes are what tfpconv 0.2 wrote.
    from tfpconv.tflite.fb import PatternConv as fb_pattern
    from tfpconv.tflite.fb import Plan as fb_plan

    kind = fb_plan.Plan.GetRootAs(Plan(ops=[conv]).to_bytes(), 0).Ops(0).Kind()
    table = fb_pattern.PatternConv()
    table.Init(kind.Bytes, kind.Pos)
    assert table.UnifiedIsNone()


def test_unified_fc_huge_shape_is_an_error_without_overflow_warnings() -> None:
    plan = Plan(ops=[_fc_plan(out=3, inp=5, block_size=4)])
    data = plan.to_bytes()
    shape = struct.pack("<2i", 3, 5)
    assert data.count(shape) == 1
    huge = data.replace(shape, struct.pack("<2i", 2**30, 2**31 - 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PlanError, match="6 block states for 1073741824 rows"):
            Plan.from_bytes(huge)
    assert [str(w.message) for w in caught] == []


def test_unified_fc_checksum_and_equality() -> None:
    weights = np.arange(5 * 19, dtype=np.float32).tobytes()
    fc = _fc_plan(weight_checksum=crc32(weights), weight_bytes=len(weights))
    assert fc.matches_weights(weights)
    assert not fc.matches_weights(weights[:-4] + b"\0\0\0\0")
    changed = _fc_plan(weight_checksum=crc32(weights), weight_bytes=len(weights))
    changed.states[0, 0] = (changed.states[0, 0] + 1) % 3
    assert (
        changed != fc
        and fc != _conv_plan()
        and fc == _fc_plan(weight_checksum=crc32(weights), weight_bytes=len(weights))
    )


def test_plan_of_an_older_reader_declines_unified_fc() -> None:
    """What tfpconv 0.2 made of a 0.3 plan: an unknown feature (here, unknown to this reader in
    the same way: a feature name it lacks) declines just that operator."""
    future = _fc_plan(requires=(UNIFIED_FC, Feature("fc_int4", "9.0.0")))
    back = Plan.from_bytes(pack_plan(Plan(ops=[_conv_plan(), future])))
    assert isinstance(back.ops[1], UnsupportedOp) and back.ops[1].missing.name == "fc_int4"
    assert back.unified_fcs == [] and len(back.convs) == 1


# -- filter kernel reorder ---------------------------------------------------------------------


def _work(codes: np.ndarray, order, offsets) -> list[int]:
    kept = np.count_nonzero(np.asarray(codes) >= 0, axis=1)[list(order)] * 4 + 1
    return [int(kept[a:b].sum()) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def test_reorder_basic_properties() -> None:
    rng = np.random.default_rng(3)
    codes = rng.integers(-1, 8, size=(40, 12))
    codes[rng.random((40, 12)) < 0.4] = -1
    order, offsets = reorder_filters(codes)
    assert sorted(order) == list(range(40))
    assert offsets[0] == 0 and offsets[-1] == 40
    assert len(offsets) - 1 == 3  # ceil(40 / 16)
    assert all(o % 8 == 0 for o in offsets[:-1])
    kept = np.count_nonzero(codes >= 0, axis=1)[order]
    assert np.all(np.diff(kept) <= 0), "filters run from most to fewest kept kernels"
    assert reorder_filters(codes) == (order, offsets), "deterministic"


def test_reorder_groups_identical_sequences() -> None:
    rng = np.random.default_rng(4)
    templates = rng.integers(0, 8, size=(4, 16))
    templates[:, :4] = -1  # same kept count for all four templates
    which = rng.integers(0, 4, size=48)
    codes = templates[which]
    order, _ = reorder_filters(codes)
    runs = [which[order[0]]]
    for channel in order[1:]:
        if which[channel] != runs[-1]:
            runs.append(which[channel])
    assert len(runs) == 4, f"each template's filters should be contiguous, got runs {runs}"


def test_reorder_balances_work() -> None:
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 8, size=(128, 32))
    kept_fraction = rng.uniform(0.05, 1.0, size=(128, 1))
    codes[rng.random((128, 32)) > kept_fraction] = -1
    order, offsets = reorder_filters(codes, group_size=16)
    assert len(offsets) - 1 == 8
    work = _work(codes, order, offsets)
    per_filter = np.count_nonzero(codes >= 0, axis=1) * 4 + 1
    unit = int(np.sort(per_filter)[-8:].sum())  # the heaviest possible 8-filter unit
    target = sum(work) / len(work)
    assert max(abs(w - target) for w in work) <= unit
    # Heavy filters come first, so the first group has no more filters than the last one.
    sizes = np.diff(offsets)
    assert sizes[0] <= sizes[-1]


@pytest.mark.parametrize(
    ("out", "group_size", "align", "expected"),
    [
        (5, 16, 8, [0, 5]),  # fewer channels than one SIMD unit: one group
        (20, 16, 8, [0, 8, 20]),  # pruned away: even split on multiples of 8
        (20, 1, 8, [0, 8, 16, 20]),  # at most one group per 8 filters
        (4, 1, 1, [0, 1, 2, 3, 4]),
    ],
)
def test_reorder_fully_pruned_layers(out: int, group_size: int, align: int, expected) -> None:
    order, offsets = reorder_filters(np.full((out, 3), -1), group_size, align)
    assert order == list(range(out))
    assert offsets == expected


def test_reorder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        reorder_filters(np.zeros((0, 3)))
    with pytest.raises(ValueError):
        reorder_filters(np.zeros((4, 3)), group_size=0)


# -- generated code ----------------------------------------------------------------------------


def _generate_module():
    path = REPO / "converter" / "generate.py"
    spec = importlib.util.spec_from_file_location("tfpconv_generate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("flatc") is None, reason="Debian's flatbuffers-compiler missing")
def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generate = _generate_module()
    subprocess.run(
        [sys.executable, str(REPO / "converter" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    problems = generate.stale_files(tmp_path, REPO)
    assert not problems, (
        "generated plan code is stale against converter/tfpconv_plan.fbs; run "
        f"`python3 converter/generate.py`: {problems}"
    )


_CPP_READER = r"""
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>
#include "tfpconv_plan_generated.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  std::ifstream file(argv[1], std::ios::binary);
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(file)),
                           std::istreambuf_iterator<char>());
  flatbuffers::Verifier verifier(buf.data(), buf.size());
  if (!tfpconv::fb::PlanBufferHasIdentifier(buf.data()) ||
      !tfpconv::fb::VerifyPlanBuffer(verifier)) {
    std::printf("invalid\n");
    return 3;
  }
  const tfpconv::fb::Plan* plan = tfpconv::fb::GetPlan(buf.data());
  std::printf("version %u producer %s\n", plan->schema_version(), plan->producer()->c_str());
  for (const tfpconv::fb::OpPlan* op : *plan->ops()) {
    std::printf("op %u %u %d %d %u %llu |", op->subgraph_index(), op->operator_index(),
                op->weight_tensor_index(), static_cast<int>(op->weight_checksum_kind()),
                op->weight_checksum(), static_cast<unsigned long long>(op->weight_bytes()));
    for (const tfpconv::fb::Feature* f : *op->requires_())
      std::printf(" %s@%s", f->name()->c_str(), f->since()->c_str());
    std::printf(" |");
    if (const tfpconv::fb::UnifiedFc* fc = op->kind_as_UnifiedFc()) {
      std::printf(" fc");
      for (int v : *fc->weight_shape()) std::printf(" %d", v);
      std::printf(" | %d |", fc->block_size());
      for (unsigned v : *fc->states()) std::printf(" %u", v);
      std::printf(" |");
    } else {
      const tfpconv::fb::PatternConv* c = op->kind_as_PatternConv();
      if (c == nullptr) return 4;
      for (int v : *c->kernel_shape()) std::printf(" %d", v);
      std::printf(" |");
      for (unsigned v : *c->library()) std::printf(" %u", v);
      std::printf(" |");
      for (int v : *c->codes()) std::printf(" %d", v);
      std::printf(" |");
      for (int v : *c->filter_order()) std::printf(" %d", v);
      std::printf(" |");
      for (int v : *c->group_offsets()) std::printf(" %d", v);
      std::printf(" |");
      if (c->unified() != nullptr)
        for (unsigned v : *c->unified()) std::printf(" %u", v);
      std::printf(" |");
    }
    for (const tfpconv::fb::Tuning* t : *op->tunings()) {
      std::printf(" %s/%s/%d/%s", t->isa()->c_str(), t->cpu()->c_str(), t->claim() ? 1 : 0,
                  t->variant()->c_str());
      for (const tfpconv::fb::TunedParam* p : *t->params())
        std::printf(" %s=%lld", p->key()->c_str(), static_cast<long long>(p->value()));
    }
    std::printf("\n");
  }
  for (const tfpconv::fb::SkippedOp* s : *plan->skipped())
    std::printf("skipped %u %u %s %s\n", s->subgraph_index(), s->operator_index(),
                s->op_name()->c_str(), s->reason()->c_str());
  return 0;
}
"""


def _expected_kind_output(c: PatternConvPlan | UnifiedFcPlan) -> list[str]:
    if isinstance(c, UnifiedFcPlan):
        return [
            " fc",
            *(f" {v}" for v in c.weight_shape),
            " |",
            f" {c.block_size}",
            " |",
            *(f" {v}" for v in c.states.ravel().tolist()),
            " |",
        ]
    unified = [] if c.unified is None else c.unified.ravel().tolist()
    return [
        *(f" {v}" for v in c.kernel_shape),
        " |",
        *(f" {v}" for v in c.library),
        " |",
        *(f" {v}" for v in c.codes.ravel().tolist()),
        " |",
        *(f" {v}" for v in c.filter_order),
        " |",
        *(f" {v}" for v in c.group_offsets),
        " |",
        *(f" {v}" for v in unified),
        " |",
    ]


def _expected_cpp_output(plan: Plan) -> str:
    lines = [f"version {plan.schema_version} producer {plan.producer}"]
    for c in plan.ops:
        parts = [
            f"op {c.subgraph_index} {c.operator_index} {c.weight_tensor_index} "
            f"{c.weight_checksum_kind} {c.weight_checksum} {c.weight_bytes} |",
            *(f" {f.name}@{f.since}" for f in c.requires),
            " |",
            *_expected_kind_output(c),
            *(
                f" {t.isa}/{t.cpu}/{int(t.claim)}/{t.variant}"
                + "".join(f" {k}={v}" for k, v in t.params.items())
                for t in c.tunings
            ),
        ]
        lines.append("".join(parts))
    lines += [
        f"skipped {s.subgraph_index} {s.operator_index} {s.op_name} {s.reason}"
        for s in plan.skipped
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.skipif(
    shutil.which("g++") is None or not Path("/usr/include/flatbuffers/flatbuffers.h").exists(),
    reason="needs g++ and libflatbuffers-dev",
)
def test_cpp_header_verifies_and_reads_python_plans(tmp_path: Path) -> None:
    """The delegate's view: the generated header + flatbuffers::Verifier read what Python wrote."""
    source = tmp_path / "reader.cc"
    source.write_text(_CPP_READER)
    binary = tmp_path / "reader"
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fno-exceptions",
            "-O0",
            f"-I{REPO / 'converter' / 'generated'}",
            str(source),
            "-o",
            str(binary),
        ],
        check=True,
        capture_output=True,
    )
    plan = _plan()
    data = plan.to_bytes()
    plan_file = tmp_path / "plan.tfpconv"
    plan_file.write_bytes(data)
    result = subprocess.run([str(binary), str(plan_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == _expected_cpp_output(plan)
    # The C++ verifier rejects a truncated plan and one whose vector length runs off the end.
    plan_file.write_bytes(data[: len(data) // 2])
    assert subprocess.run([str(binary), str(plan_file)], capture_output=True).returncode == 3
    from tfpconv.tflite.fb import PatternConv as fb_pattern
    from tfpconv.tflite.fb import Plan as fb_plan

    union = fb_plan.Plan.GetRootAs(data, 0).Ops(0).Kind()
    codes = fb_pattern.PatternConv()
    codes.Init(union.Bytes, union.Pos)
    vector_field = codes._tab.Offset(8)  # `codes` is field 2 -> vtable slot 4 + 2 * 2
    length_pos = codes._tab.Vector(vector_field) - 4
    broken = bytearray(data)
    broken[length_pos : length_pos + 4] = (10**6).to_bytes(4, "little")
    plan_file.write_bytes(bytes(broken))
    assert subprocess.run([str(binary), str(plan_file)], capture_output=True).returncode == 3
