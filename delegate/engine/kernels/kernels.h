// Internal interface between the engine's driver (pattern_conv.cc) and the per-ISA kernel units.
// Plain data only: this header is included by units compiled with different -m flags, so it must
// not define any function that the linker could merge across them.
#ifndef TFPCONV_ENGINE_KERNELS_KERNELS_H_
#define TFPCONV_ENGINE_KERNELS_KERNELS_H_

#include <cstddef>
#include <cstdint>

namespace tfpconv {
namespace kernels {

// Every 4-tap 3x3 mask that contains the centre (bit 4): C(8,3) = 56 shapes, ascending. A kernel
// unit instantiates its templated loops for each, indexed by position in this table ("mask id").
constexpr int kNumMasks = 56;

constexpr int MaskAt(int id) {
  int seen = 0;
  for (int m = 0; m < 512; ++m) {
    int bits = 0;
    for (int b = 0; b < 9; ++b) bits += (m >> b) & 1;
    if (bits == 4 && (m & 16)) {
      if (seen == id) return m;
      ++seen;
    }
  }
  return -1;
}

// The t-th set bit (tap) of a mask, taps ordered by bit index (row-major 3x3 position).
constexpr int TapOf(int mask, int t) {
  for (int b = 0; b < 9; ++b) {
    if ((mask >> b) & 1) {
      if (t == 0) return b;
      --t;
    }
  }
  return -1;
}

struct MaskTable {
  uint16_t mask[kNumMasks];
};
constexpr MaskTable BuildMaskTable() {
  MaskTable t{};
  for (int i = 0; i < kNumMasks; ++i) t.mask[i] = static_cast<uint16_t>(MaskAt(i));
  return t;
}
inline constexpr MaskTable kMasks = BuildMaskTable();

// One non-pruned 3x3 kernel in execution order and its 4 weights in tap order. Flat packing:
// off[t] is tap t's input offset within the tile (channel and tap folded in). Pattern packing
// (the specialised kernels, which know the taps): off[0] is the channel's offset, the rest unused.
struct PackedKernel {
  int32_t off[4];
  float w[4];
};

// The kernels of `G` filters (output channels) on one input channel that share a pattern (flat
// packing): one set of tap offsets, each tap's G weights side by side, so an input vector is
// loaded once for G FMAs. PatternPruning(filter_group=G) trains such groups; the packing finds
// them by equal kernel codes.
template <int G>
struct SharedKernel {
  int32_t off[4];
  float w[4][G];
};

// Consecutive kernels of one output channel sharing a pattern (pattern packing only).
struct Run {
  uint16_t mask_id;
  uint16_t reserved;
  uint32_t count;
};

// One output channel's work within one input-channel block. With shared kernels (flat packing), a
// task of `filters` 2 or 4 updates the accumulators of its own execution position and the next
// filters - 1 ones, whose tasks have `filters` 0 (nothing to do), from kernels2 or kernels4.
struct OcTask {
  uint32_t run_begin, run_end;        // into the runs array (pattern packing)
  uint32_t kernel_begin, kernel_end;  // into the kernels array of `filters`
  uint32_t filters;                   // 1: kernels; 2: kernels2; 4: kernels4; 0: see above
};

// Everything a kernel needs for one (spatial tile, output-channel chunk, input-channel block).
struct ChunkArgs {
  const float* x;          // the tile's transformed input (see packing.h)
  ptrdiff_t wq;            // row pitch of the tile's phase planes, in floats
  const int32_t* tap_off;  // [9] offset of tap (dy, dx) relative to the output pixel
  const OcTask* tasks;
  size_t num_tasks;
  const Run* runs;
  const PackedKernel* kernels;
  const SharedKernel<2>* kernels2;
  const SharedKernel<4>* kernels4;
  float* acc;  // [num_tasks][rows][vecs * lanes] accumulators, updated in place
};

using ChunkFn = void (*)(const ChunkArgs& args);

// A register-blocking variant: a tile of `rows` output rows x `vecs` vectors of output columns.
// pattern11 (specialised variants only, stride 1, pattern packing) has each pattern's taps at
// compile time and loads an input vector once for every (tap, row) that needs it. `flat` takes
// each kernel's tap offsets from the packed data, in input-channel order, one loop per output
// channel, any stride (the row pitch is the tile width, known at compile time).
//
// whole_rows variants (rows == 1, flat only) are for narrow layers: their tile is a run of `vecs`
// vectors over the row-major planes of whole output rows, so one vector may cover several short
// output rows (a 4x4 output fills a 16-lane vector). With fewer than 8 accumulators they sum the
// 4 taps of a kernel into separate accumulators, so FMA latency does not bound them.
struct Variant {
  const char* name;
  int rows, vecs;
  bool specialised;
  bool whole_rows;
  ChunkFn pattern11, flat;
};

// The layout transforms around the kernels, per element of every input and output (they cost as
// much as the kernels on wide, shallow layers, so each ISA has its own vectorised copy).
//
// Transform: writes one tile's input as phase planes (see packing.h): plane (a, b) row i column j
// of channel c, at x[c * channel_stride + (a * pw + b) * plane + i * wq + j], is NHWC input pixel
// (row0 + a + stride_h * i, col0 + b + stride_w * j), or 0 outside the image; then `tail` zeros.
struct TransformArgs {
  const float* image;  // one NHWC image
  int in_h, in_w, channels;
  int row0, col0;  // input position of plane (0, 0) element (0, 0); may be negative (padding)
  int stride_h, stride_w;
  int ph, pw, hq, wq;
  ptrdiff_t plane, channel_stride, tail;
  float* x;
  bool prefetch_next = false;  // ask for the input columns of the tile to the right
};

// Store: writes a tile's output channels to NHWC with the activation clamp. Execution position
// j's accumulators start at acc + j * acc_floats, pixel (r, c) at r * acc_pitch + c; output
// channel o of pixel (r, c), at out + r * out_row + c * out_c + o, is execution position
// position[o]. The store may read the accumulators of a row up to the next multiple of the vector
// width past `cols` (lanes that fall outside the output, at most lanes - 1 floats past the last
// position's). The store asks for the output lines of the `next_cols` pixels that follow the tile
// in its rows (the tile to the right's; 0: none) while it writes its own.
struct StoreArgs {
  const float* acc;
  ptrdiff_t acc_floats;
  int acc_pitch;
  int rows, cols;
  const int32_t* position;
  float* out;
  ptrdiff_t out_row;
  int out_c;
  float lo, hi;
  int next_cols = 0;
};

using TransformFn = void (*)(const TransformArgs& args);
using StoreFn = void (*)(const StoreArgs& args);

struct KernelSet {
  int lanes;
  int num_variants;
  const Variant* variants;
  TransformFn transform;
  StoreFn store;
  // The variant (by name) of gathered tiles, for layers with masked activations (packing.h): a
  // flat, non-whole-row one whose vecs * lanes is one unit of kActivationUnitPixels (16) pixels.
  const char* gathered;
};

// Defined by the kernel units that are compiled in (see CMakeLists.txt).
const KernelSet* ScalarKernels();
const KernelSet* Avx2Kernels();
const KernelSet* Avx512Kernels();
const KernelSet* NeonKernels();

}  // namespace kernels
}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_KERNELS_KERNELS_H_
