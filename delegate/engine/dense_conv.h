// The engine's masked dense convolution: a plain (unpruned) NHWC float32 convolution whose output is
// multiplied by a 0/1 spatial mask shared by every channel, computing only the mask's active units
// (runs of kActivationUnitPixels output pixels along one row) and writing 0 to masked pixels. The GEMMs are
// libxsmm's JIT-generated batch-reduce kernels (x86-64 only: elsewhere, or in a build without
// libxsmm, Create says so and returns nullptr).
#ifndef TFPCONV_ENGINE_DENSE_CONV_H_
#define TFPCONV_ENGINE_DENSE_CONV_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pattern_conv.h"

namespace tfpconv {

// Geometry of one NHWC float32 convolution: a ConvShape with any kernel size.
struct DenseConvShape : ConvShape {
  DenseConvShape() = default;
  DenseConvShape(const ConvShape& shape, int kernel_h_, int kernel_w_)
      : ConvShape(shape), kernel_h(kernel_h_), kernel_w(kernel_w_) {}
  int kernel_h = 3, kernel_w = 3;
};

// A convolution with its weights packed and its kernels generated. Created once per shape,
// immutable after, safe to Run from one thread at a time (Run itself uses the pool).
class DenseConv {
 public:
  virtual ~DenseConv() = default;
  // weights: OHWI [out_c][kernel_h][kernel_w][in_c]; bias: out_c floats or nullptr. pixel_mask:
  // empty, or out_h * out_w flags of 0 or 1 (row-major, shared by every image and channel): a 0
  // pixel is written as 0 in every channel; units of kActivationUnitPixels along a row that are all
  // 0 are not computed. Kernels 1x1, 1x3, 3x1 and 3x3; isa kAvx2 or kAvx512 (DenseConvAvailable).
  // Returns nullptr and sets *error when unsupported (kernel size, no libxsmm, bad mask, ...).
  static std::unique_ptr<DenseConv> Create(const DenseConvShape& shape, const float* weights,
                                           const float* bias,
                                           const std::vector<uint8_t>& pixel_mask, Isa isa,
                                           std::string* error);
  // input: NHWC [batch][in_h][in_w][in_c]; output: NHWC [batch][out_h][out_w][out_c].
  virtual void Run(const float* input, float* output, ThreadPool* pool) const = 0;
  virtual size_t packed_weight_bytes() const = 0;
};

// Whether this build and this CPU can run the dense path with `isa` (x86-64 with libxsmm: kAvx2
// with AVX2 + FMA, kAvx512 with AVX-512 F, BW, DQ and VL).
bool DenseConvAvailable(Isa isa);

}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_DENSE_CONV_H_
