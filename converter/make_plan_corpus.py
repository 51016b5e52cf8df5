#!/usr/bin/env python3
"""Write the shared corpus of valid and invalid plans that both plan readers are tested against.

The validity rules of a plan live once per language: ``tfpconv/tflite/plan.py`` for Python and
``delegate/src/plan_reader.cc`` for the delegate. This script writes bare plan FlatBuffers into
``converter/plan_corpus/`` and an index, ``index.txt``, with one line per file::

    <file name> <verdict>

where the verdict is ``valid`` (every operator plan is usable), ``invalid`` (the plan or one of
its operator plans breaks a rule) or ``declined:<feature>`` (well formed, but an operator needs a
feature this tfpconv does not have). ``tests/test_plan_corpus.py`` checks the Python reader and
that the committed corpus is what this script writes; ``delegate/tests/plan_corpus_test.cc``
checks the C++ reader against the same files.

Usage::

    python3 converter/make_plan_corpus.py              # rewrite converter/plan_corpus/
    python3 converter/make_plan_corpus.py --out DIR    # write the corpus into DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import flatbuffers
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tfpconv.tflite import plan as plan_codec  # noqa: E402
from tfpconv.tflite.fb import ConvPlan as fb_v1_conv  # noqa: E402
from tfpconv.tflite.fb import Plan as fb_plan  # noqa: E402
from tfpconv.tflite.filter_order import reorder_filters  # noqa: E402
from tfpconv.tflite.plan import (  # noqa: E402
    ActivationMaskPlan,
    DenseConvPlan,
    Feature,
    PatternConvPlan,
    Plan,
    SkippedOp,
    Tuning,
    UnifiedFcPlan,
    crc32,
    pack_plan,
)

CORPUS_DIR = REPO / "converter" / "plan_corpus"
INDEX = "index.txt"
PRODUCER = "tfpconv corpus"
#: Four distinct 4-tap masks with the centre (bit 4).
LIBRARY = (0b000011011, 0b000110110, 0b011010010, 0b010110010)


def _conv(out: int = 16, inp: int = 3, **changes: object) -> PatternConvPlan:
    rng = np.random.default_rng(out * 100 + inp)
    codes = rng.integers(-1, len(LIBRARY), size=(out, inp)).astype(np.int8)
    order, offsets = reorder_filters(codes, group_size=8)
    weights = rng.standard_normal(out * 9 * inp).astype(np.float32).tobytes()
    conv = PatternConvPlan(
        subgraph_index=0,
        operator_index=2,
        weight_tensor_index=5,
        kernel_shape=(out, 3, 3, inp),
        library=LIBRARY,
        codes=codes,
        filter_order=order,
        group_offsets=offsets,
        weight_checksum=crc32(weights),
        weight_bytes=len(weights),
    )
    return dataclasses.replace(conv, **changes)


def _fc(
    out: int = 6, inp: int = 20, block_size: int = 8, conv1x1: bool = False, **changes: object
) -> UnifiedFcPlan:
    """A unified FULLY_CONNECTED (or 1x1 CONV_2D) plan; ``in`` is not a multiple of the block."""
    rng = np.random.default_rng(out * 1000 + inp)
    blocks = -(-inp // block_size)
    states = rng.integers(0, 3, size=(out, blocks)).astype(np.uint8)
    weights = rng.standard_normal(out * inp).astype(np.float32).tobytes()
    fc = UnifiedFcPlan(
        subgraph_index=0,
        operator_index=4,
        weight_tensor_index=8,
        weight_shape=(out, 1, 1, inp) if conv1x1 else (out, inp),
        block_size=block_size,
        states=states,
        weight_checksum=crc32(weights),
        weight_bytes=len(weights),
    )
    return dataclasses.replace(fc, **changes)


def _mask(**changes: object) -> ActivationMaskPlan:
    """The activation mask after operator 2 (_conv) or 6 (_dense): a MUL, 8x8 positions."""
    values = np.ones(64, np.float32)
    values[:16] = 0.0
    mask = ActivationMaskPlan(
        operator_index=3,
        mask_tensor_index=11,
        mask_checksum=crc32(values.tobytes()),
        height=8,
        width=8,
        masked_pixels=16,
    )
    return dataclasses.replace(mask, **changes)


def _dense(out: int = 8, inp: int = 5, kernel: int = 3, **changes: object) -> DenseConvPlan:
    """A masked dense CONV_2D plan."""
    weights = np.arange(out * kernel * kernel * inp, dtype=np.float32).tobytes()
    conv = DenseConvPlan(
        subgraph_index=0,
        operator_index=6,
        weight_tensor_index=9,
        kernel_shape=(out, kernel, kernel, inp),
        weight_checksum=crc32(weights),
        weight_bytes=len(weights),
        activation_mask=_mask(operator_index=7),
    )
    return dataclasses.replace(conv, **changes)


def _unified_flags(conv: PatternConvPlan) -> np.ndarray:
    """Every other kernel that keeps a pattern flagged unified."""
    flags = np.zeros(conv.codes.shape, np.uint8)
    kept = np.flatnonzero(conv.codes.ravel() >= 0)
    flags.ravel()[kept[::2]] = 1
    return flags


def _removed_kernel_flagged(conv: PatternConvPlan) -> np.ndarray:
    flags = _unified_flags(conv)
    flags.ravel()[np.flatnonzero(conv.codes.ravel() < 0)[0]] = 1
    return flags


def _plan(*ops: PatternConvPlan | UnifiedFcPlan | DenseConvPlan, **changes: object) -> bytes:
    return pack_plan(Plan(ops=list(ops), producer=PRODUCER, **changes))


def _v1_plan(conv: PatternConvPlan, tuned: dict[str, int]) -> bytes:
    """A plan as tfpconv 0.1 wrote it: schema version 1, ``Plan.convs``, integer tuned keys."""
    builder = flatbuffers.Builder(1024)
    builder.ForceDefaults(True)
    params = plan_codec.pack_params(builder, tuned)
    tuned_vec = plan_codec.pack_offsets(builder, fb_v1_conv.ConvPlanStartTunedVector, params)
    shape, library, codes, order, offsets = plan_codec.pattern_vectors(builder, conv)
    fb_v1_conv.ConvPlanStart(builder)
    fb_v1_conv.ConvPlanAddSubgraphIndex(builder, conv.subgraph_index)
    fb_v1_conv.ConvPlanAddOperatorIndex(builder, conv.operator_index)
    fb_v1_conv.ConvPlanAddWeightTensorIndex(builder, conv.weight_tensor_index)
    fb_v1_conv.ConvPlanAddWeightChecksumKind(builder, conv.weight_checksum_kind)
    fb_v1_conv.ConvPlanAddWeightChecksum(builder, conv.weight_checksum)
    fb_v1_conv.ConvPlanAddWeightBytes(builder, conv.weight_bytes)
    fb_v1_conv.ConvPlanAddKernelShape(builder, shape)
    fb_v1_conv.ConvPlanAddLibrary(builder, library)
    fb_v1_conv.ConvPlanAddCodes(builder, codes)
    fb_v1_conv.ConvPlanAddFilterOrder(builder, order)
    fb_v1_conv.ConvPlanAddGroupOffsets(builder, offsets)
    fb_v1_conv.ConvPlanAddTuned(builder, tuned_vec)
    conv_offset = fb_v1_conv.ConvPlanEnd(builder)
    fb_plan.PlanStartConvsVector(builder, 1)
    builder.PrependUOffsetTRelative(conv_offset)
    convs = builder.EndVector()
    producer = builder.CreateString("tfpconv 0.1.0")
    fb_plan.PlanStart(builder)
    fb_plan.PlanAddSchemaVersion(builder, 1)
    fb_plan.PlanAddProducer(builder, producer)
    fb_plan.PlanAddConvs(builder, convs)
    builder.Finish(fb_plan.PlanEnd(builder), file_identifier=plan_codec.PLAN_IDENTIFIER)
    return bytes(builder.Output())


def _shuffled_order(conv: PatternConvPlan) -> tuple[int, ...]:
    order = list(conv.filter_order)
    order[-1] = order[0]  # a repeated channel: not a permutation
    return tuple(order)


def _cases() -> list[tuple[str, str, Callable[[], bytes]]]:
    base = _conv()
    wide = _conv(out=32, inp=8)
    future = Feature("unified_weights", "0.3.0")
    return [
        # -- valid -------------------------------------------------------------------------
        ("valid_pattern_conv", "valid", lambda: _plan(base)),
        ("valid_two_ops", "valid", lambda: _plan(base, _conv(operator_index=7))),
        ("valid_no_ops", "valid", lambda: _plan()),
        (
            "valid_with_skipped",
            "valid",
            lambda: pack_plan(
                Plan(
                    ops=[base],
                    skipped=[SkippedOp(0, 3, "CONV_2D", "kernel 5x5")],
                    producer=PRODUCER,
                )
            ),
        ),
        (
            "valid_fully_pruned",
            "valid",
            lambda: _plan(_conv(library=(), codes=np.full((16, 3), -1, np.int8))),
        ),
        (
            "valid_tunings_per_isa",
            "valid",
            lambda: _plan(
                dataclasses.replace(
                    wide,
                    tunings=[
                        Tuning("avx512", "a CPU", True, "some_variant", {"tile_oc": 16}),
                        Tuning("neon", "a phone", False),
                        Tuning("riscv_v", "a future CPU"),  # an unknown instruction set is ignored
                    ],
                )
            ),
        ),
        ("valid_v1_plan", "valid", lambda: _v1_plan(wide, {"isa": 1, "claim": 1, "tile_oc": 8})),
        ("valid_single_group", "valid", lambda: _plan(_conv(group_offsets=(0, 16)))),
        # -- valid: unified weights (tfpconv 0.3) ---------------------------------------------
        ("valid_unified_fc", "valid", lambda: _plan(_fc())),
        ("valid_unified_conv1x1", "valid", lambda: _plan(_fc(block_size=16, conv1x1=True))),
        ("valid_unified_fc_block_1", "valid", lambda: _plan(_fc(out=3, inp=5, block_size=1))),
        (
            "valid_unified_fc_tuned_with_pattern_conv",
            "valid",
            lambda: _plan(base, _fc(block_size=4, tunings=[Tuning("avx2", "a CPU", True)])),
        ),
        (
            "valid_pattern_conv_unified",
            "valid",
            lambda: _plan(_conv(unified=_unified_flags(base))),
        ),
        # -- invalid: the plan as a whole ----------------------------------------------------
        ("invalid_schema_version_3", "invalid", lambda: _plan(base, schema_version=3)),
        ("invalid_truncated", "invalid", lambda: _plan(base)[:60]),
        ("invalid_identifier", "invalid", lambda: b"\x08\x00\x00\x00NOPE" + _plan(base)[8:]),
        ("invalid_duplicate_operator", "invalid", lambda: _plan(base, _conv())),
        (
            "invalid_op_also_skipped",
            "invalid",
            lambda: pack_plan(
                Plan(ops=[base], skipped=[SkippedOp(0, 2, "CONV_2D", "x")], producer=PRODUCER)
            ),
        ),
        # -- invalid: one pattern convolution ------------------------------------------------
        (
            "invalid_group_offsets_equal",
            "invalid",
            lambda: _plan(_conv(group_offsets=(0, 8, 8, 16))),
        ),
        ("invalid_group_offsets_end", "invalid", lambda: _plan(_conv(group_offsets=(0, 8)))),
        ("invalid_group_offsets_start", "invalid", lambda: _plan(_conv(group_offsets=(4, 16)))),
        (
            "invalid_library_repeated",
            "invalid",
            lambda: _plan(_conv(library=LIBRARY + LIBRARY[:1])),
        ),
        (
            "invalid_library_no_centre",
            "invalid",
            lambda: _plan(_conv(library=(0b000001111,) + LIBRARY[1:])),
        ),
        (
            "invalid_library_five_taps",
            "invalid",
            lambda: _plan(_conv(library=(0b000111011,) + LIBRARY[1:])),
        ),
        (
            "invalid_code_too_large",
            "invalid",
            lambda: _plan(_conv(codes=np.full((16, 3), 4, np.int8))),
        ),
        (
            "invalid_code_below_pruned",
            "invalid",
            lambda: _plan(_conv(codes=np.full((16, 3), -2, np.int8))),
        ),
        ("invalid_codes_length", "invalid", lambda: _plan(_conv(codes=np.zeros((16, 2), np.int8)))),
        (
            "invalid_filter_order",
            "invalid",
            lambda: _plan(_conv(filter_order=_shuffled_order(base))),
        ),
        ("invalid_weight_bytes", "invalid", lambda: _plan(_conv(weight_bytes=100))),
        ("invalid_weight_tensor", "invalid", lambda: _plan(_conv(weight_tensor_index=-1))),
        ("invalid_kernel_5x5", "invalid", lambda: _plan(_conv(kernel_shape=(16, 5, 5, 3)))),
        ("invalid_checksum_kind", "invalid", lambda: _plan(_conv(weight_checksum_kind=3))),
        ("invalid_tuning_without_isa", "invalid", lambda: _plan(_conv(tunings=[Tuning("")]))),
        (
            "invalid_pattern_unified_length",
            "invalid",
            lambda: _plan(_conv(unified=np.ones((16, 2), np.uint8))),
        ),
        (
            "invalid_pattern_unified_flag_2",
            "invalid",
            lambda: _plan(_conv(unified=_unified_flags(base) * 2)),
        ),
        (
            "invalid_pattern_unified_removed_kernel",
            "invalid",
            lambda: _plan(_conv(unified=_removed_kernel_flagged(base))),
        ),
        # -- invalid: one unified FULLY_CONNECTED / 1x1 CONV_2D ------------------------------
        (
            "invalid_unified_states_length",
            "invalid",
            lambda: _plan(_fc(states=np.zeros(6 * 3 - 1, np.uint8))),
        ),
        (
            "invalid_unified_state_3",
            "invalid",
            lambda: _plan(_fc(states=np.full((6, 3), 3, np.uint8))),
        ),
        (
            "invalid_unified_block_size_0",
            "invalid",
            lambda: _plan(dataclasses.replace(_fc(), block_size=0)),
        ),
        (
            "invalid_unified_block_size_65",
            "invalid",
            lambda: _plan(
                dataclasses.replace(
                    _fc(inp=130, block_size=64), block_size=65, states=np.zeros((6, 2), np.uint8)
                )
            ),
        ),
        ("invalid_unified_shape_rank_3", "invalid", lambda: _plan(_fc(weight_shape=(6, 1, 20)))),
        (
            "invalid_unified_shape_3x3",
            "invalid",
            lambda: _plan(_fc(weight_shape=(6, 3, 3, 20))),
        ),
        ("invalid_unified_shape_zero", "invalid", lambda: _plan(_fc(weight_shape=(0, 20)))),
        ("invalid_unified_weight_bytes", "invalid", lambda: _plan(_fc(weight_bytes=6 * 20))),
        ("invalid_unified_weight_tensor", "invalid", lambda: _plan(_fc(weight_tensor_index=-1))),
        (
            "invalid_unified_same_operator_as_pattern_conv",
            "invalid",
            lambda: _plan(base, _fc(operator_index=base.operator_index)),
        ),
        (
            "invalid_v1_group_offsets_equal",
            "invalid",
            lambda: _v1_plan(_conv(group_offsets=(0, 8, 8, 16)), {}),
        ),
        # -- activation masks (tfpconv 0.4) ---------------------------------------------------
        ("valid_pattern_conv_masked", "valid", lambda: _plan(_conv(activation_mask=_mask()))),
        ("valid_dense_conv_masked", "valid", lambda: _plan(_dense())),
        ("valid_dense_conv1x1_masked", "valid", lambda: _plan(_dense(kernel=1), base)),
        ("invalid_dense_conv_no_mask", "invalid", lambda: _plan(_dense(activation_mask=None))),
        ("invalid_dense_conv_5x5", "invalid", lambda: _plan(_dense(kernel=5))),
        (
            "invalid_dense_conv_weight_bytes",
            "invalid",
            lambda: _plan(_dense(weight_bytes=4)),
        ),
        (
            "invalid_mask_names_its_operator",
            "invalid",
            lambda: _plan(_conv(activation_mask=_mask(operator_index=2))),
        ),
        (
            "invalid_mask_tensor_index",
            "invalid",
            lambda: _plan(_conv(activation_mask=_mask(mask_tensor_index=-1))),
        ),
        (
            "invalid_mask_masked_pixels",
            "invalid",
            lambda: _plan(_conv(activation_mask=_mask(masked_pixels=65))),
        ),
        (
            "invalid_mask_size_zero",
            "invalid",
            lambda: _plan(_dense(activation_mask=_mask(operator_index=7, width=0))),
        ),
        (
            "invalid_mask_checksum_kind",
            "invalid",
            lambda: _plan(_conv(activation_mask=_mask(mask_checksum_kind=1))),
        ),
        # -- declined: a feature of a newer tfpconv ------------------------------------------
        (
            "declined_future_feature",
            f"declined:{future.name}",
            lambda: _plan(
                base, _conv(operator_index=9, requires=(plan_codec.PATTERN_CONV, future))
            ),
        ),
    ]


def write_corpus(out_dir: Path) -> list[Path]:
    """Write every case and the index into ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    lines = [
        "# <file> <verdict>: valid | invalid | declined:<feature>  (converter/make_plan_corpus.py)"
    ]
    for name, verdict, make in _cases():
        path = out_dir / f"{name}.tfpconv"
        path.write_bytes(make())
        written.append(path)
        lines.append(f"{path.name} {verdict}")
    index = out_dir / INDEX
    index.write_text("\n".join(lines) + "\n")
    return [*written, index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CORPUS_DIR, help="directory to write")
    args = parser.parse_args(argv)
    for path in write_corpus(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
