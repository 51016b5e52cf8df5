// Internal interface between unified_fc.cc (packing, dispatch) and the per-ISA unified FC kernel
// units (unified_fc_scalar.cc, unified_fc_avx2.cc, unified_fc_avx512.cc, unified_fc_neon.cc).
// Plain data only: the units are compiled with different -m flags, so nothing here may be a
// function the linker could merge across them.
//
// Packed format. Block column j covers inputs [j * block, j * block + bi), bi = min(block,
// in - j * block); nb = ceil(in / block) columns; output rows come in groups of kFcGroup = 16
// (rows past `out` in the last group are PRUNED). Two bits of bookkeeping per block:
//   unified[g * nb + j]  uint16: bit l set = block (16g + l, j) is UNIFIED (column-major: the
//                        kernels do the 16 rows of a column at once);
// and, by the kernel set's choice for the block size (FcKernelSet::column_major_free), either
//   free_bits[o * words + w]  uint64, words = ceil(nb / 64): bit j % 64 of word j / 64 set = block
//                             (o, j) is FREE (row-major: the kernels walk a row's free blocks), or
//   free_cols[g * nb + j]     uint16: bit l set = block (16g + l, j) is FREE (column-major).
// Neither bit: PRUNED. The payload, in three streams:
//   free   row-major: for g, for each word w of 64 columns, for each row o of the group, for each
//          FREE block (o, j) of the word in column order, its bi floats (a word's inputs stay in
//          L1 while the kernels walk its 16 rows: 1.5x the DRAM bandwidth of whole rows on Zen 4,
//          whose inputs come from L2); column-major: for g, for j, for each input i of the column, the weights of the
//          column's F free rows (ascending), bi * F floats;
//   mags   for g, for j: the magnitudes of the column's U unified rows (ascending), U floats;
//   signs  for g, for j: FcSignBytes(U, block) bytes; the sign word of the u-th unified row is,
//          for block 16, the little-endian uint16 at byte 2u; for 8, byte u; for 4, the nibble
//          (byte u/2) >> 4*(u&1). Bit i set: the weight of input j * block + i is negative.
// So a FREE block costs 4 * bi bytes, a UNIFIED one 4 bytes + block/8 (block 4: half a byte,
// rounded up per column of a group), a PRUNED one nothing. group_off[g] are group g's start
// offsets in the three streams (a thread may start at any group). Every stream starts 64-byte
// aligned and is followed by kFcPadBytes zero bytes, so the kernels may load whole vectors past
// the end.
#ifndef TFPCONV_ENGINE_KERNELS_UNIFIED_FC_KERNELS_H_
#define TFPCONV_ENGINE_KERNELS_UNIFIED_FC_KERNELS_H_

#include <cstddef>
#include <cstdint>

namespace tfpconv {
namespace kernels {

constexpr int kFcGroup = 16;
constexpr size_t kFcPadBytes = 128;

constexpr size_t FcSignBytes(int unified, int block) {
  return block == 4 ? size_t(unified + 1) / 2 : size_t(unified) * size_t(block / 8);
}

struct FcGroupOffsets {
  uint64_t free;   // floats
  uint64_t mags;   // floats
  uint64_t signs;  // bytes
};

struct FcPacked {
  int in, out, block;
  int nb;      // block columns: ceil(in / block)
  int words;   // uint64 words of free bits per row: ceil(nb / 64)
  int groups;  // ceil(out / 16)
  bool column_major_free;
  const uint64_t* free_bits;        // [out][words] (row-major free blocks)
  const uint16_t* free_cols;        // [groups][nb] (column-major free blocks)
  const uint16_t* unified;          // [groups][nb]
  const FcGroupOffsets* group_off;  // [groups]
  const float* free;
  const float* mags;
  const uint8_t* signs;
  const float* bias;  // [groups * 16], zero when the layer has none
};

// One call: output rows groups [group_begin, group_end) (16 features each) of all input rows.
struct FcArgs {
  const FcPacked* packed;
  const float* x;  // [rows][in]
  float* y;        // [rows][out]
  int rows;
  int group_begin, group_end;
  float lo, hi;    // activation clamp
  float* scratch;  // the kernel set's per-Run scratch (see FcKernelSet), 64-byte aligned
};

using FcFn = void (*)(const FcArgs& args);
using FcScratchFn = size_t (*)(const FcPacked& packed, int rows);

struct FcKernelSet {
  const char* name;
  FcFn run;
  // Optional (nullptr: none): scratch floats a Run of `rows` input rows needs, and a function that
  // fills args.scratch from args.x once per Run, before the (possibly parallel) run calls. The
  // engine calls run with at most kFcMaxRowsPerRun input rows (more are split into such passes).
  FcScratchFn scratch_floats;
  FcFn prepare;
  // Bit b set: blocks of b inputs are packed with column-major free blocks.
  uint32_t column_major_free;
};

constexpr int kFcMaxRowsPerRun = 16;

// Defined by the kernel units that are compiled in (see CMakeLists.txt).
const FcKernelSet* ScalarFcKernels();
const FcKernelSet* Avx2FcKernels();
const FcKernelSet* Avx512FcKernels();
const FcKernelSet* NeonFcKernels();

}  // namespace kernels
}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_KERNELS_UNIFIED_FC_KERNELS_H_
