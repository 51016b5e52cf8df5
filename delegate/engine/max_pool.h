// The engine's MAX_POOL_2D: NHWC float32, any window and stride, TFLite's padding semantics (a
// padded position belongs to no window: it is skipped, not read as 0) and fused activation clamp.
#ifndef TFPCONV_ENGINE_MAX_POOL_H_
#define TFPCONV_ENGINE_MAX_POOL_H_

#include "pattern_conv.h"

namespace tfpconv {

// Geometry of one max pool: a ConvShape (in_c == out_c, pad_top/pad_left as TFLite resolves them
// for the window) with the window size.
struct PoolShape : ConvShape {
  PoolShape() = default;
  PoolShape(const ConvShape& shape, int filter_h_, int filter_w_)
      : ConvShape(shape), filter_h(filter_h_), filter_w(filter_w_) {}
  int filter_h = 2, filter_w = 2;
};

// input: NHWC [batch][in_h][in_w][in_c]; output: NHWC [batch][out_h][out_w][in_c]. Each output is
// the largest input of its window (std::max order, as TFLite's kernels), then clamped to
// [act_min, act_max]. Output rows are spread over `pool` (nullptr: the caller alone).
void MaxPool(const PoolShape& shape, const float* input, float* output, ThreadPool* pool);

}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_MAX_POOL_H_
