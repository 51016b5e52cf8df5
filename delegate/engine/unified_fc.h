// Unified fully connected layers (weight unification, arXiv 2106.08301): the contract between the
// TFLite glue and the engine's FC kernels. Nothing here knows about TFLite or FlatBuffers.
//
// The weights W [out][in] (TFLite FULLY_CONNECTED layout; a 1x1 convolution's OHWI is the same) are
// split per output row into blocks of `block` consecutive inputs (the last block of a row is shorter
// when in % block != 0). Each (row, block) has a state:
//   kBlockFree     arbitrary weights;
//   kBlockUnified  all weights share one magnitude m >= 0 and keep their signs (w = +-m);
//   kBlockPruned   all weights zero.
// The packed form (kernels/unified_fc_kernels.h) keeps a FREE block's floats, a UNIFIED block's
// magnitude (one float) and sign bits (`block` bits), nothing of a PRUNED block, and 2 bits of
// bookkeeping per block: with 1/4 free, 1/2 unified, 1/4 pruned that is 19.25 bytes per block of
// 16 against 64 dense (3.3x fewer), 10.75 per 8 (3.0x), 6.5 per 4 (2.5x). A batch-1 layer is bound
// by reading its weights, so it runs up to that many times faster than dense.
#ifndef TFPCONV_ENGINE_UNIFIED_FC_H_
#define TFPCONV_ENGINE_UNIFIED_FC_H_

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "pattern_conv.h"  // Isa, ThreadPool, BestIsa, IsaSupported

namespace tfpconv {

struct FcShape {
  int rows = 1;   // input rows per Run (batch x pixels)
  int in = 0;     // input features
  int out = 0;    // output features
  int block = 8;  // 4, 8 or 16
  float act_min = -FLT_MAX, act_max = FLT_MAX;  // fused activation clamp
};

enum : uint8_t { kBlockFree = 0, kBlockUnified = 1, kBlockPruned = 2 };

// Blocks per output row: ceil(in / block).
inline int FcBlocksPerRow(const FcShape& shape) {
  return shape.block > 0 ? (shape.in + shape.block - 1) / shape.block : 0;
}

// A fully connected layer with its weights packed for execution. Created once per shape, immutable
// after, safe to Run from one thread at a time (Run itself uses the pool).
class UnifiedFc {
 public:
  virtual ~UnifiedFc() = default;
  // weights: [out][in]; states: [out][FcBlocksPerRow(shape)] (kBlock*); bias: out floats or nullptr.
  // Returns nullptr and sets *error (when not null) when the shape is bad (block not 4/8/16, a
  // non-positive size, act_min > act_max), when `isa` is not supported here, or when the states do
  // not fit the weights: a UNIFIED block whose |w| are not all bitwise equal, a PRUNED block with a
  // non-zero, an unknown state (the message names the row, block, input and value).
  static std::unique_ptr<UnifiedFc> Create(const FcShape& shape, const float* weights,
                                           const uint8_t* states, const float* bias, Isa isa,
                                           std::string* error);
  // input: [shape.rows][in]; output: [shape.rows][out]. pool may be nullptr (caller's thread).
  virtual void Run(const float* input, float* output, ThreadPool* pool) const = 0;
  // Everything the packed form keeps resident (weights, bookkeeping, offsets, bias).
  virtual size_t packed_weight_bytes() const = 0;
  virtual Isa isa() const = 0;
  virtual const FcShape& shape() const = 0;
};

// Dense fully connected layer with double accumulation, the reference the kernels are tested
// against: output[r][o] = clamp(bias[o] + sum_i input[r][i] * weights[o][i]).
void ReferenceFc(const FcShape& shape, const float* weights, const float* bias, const float* input,
                 float* output);

}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_UNIFIED_FC_H_
