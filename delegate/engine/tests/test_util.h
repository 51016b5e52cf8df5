// Random pattern-pruned layers for the engine's tests and benchmark.
#ifndef TFPCONV_ENGINE_TESTS_TEST_UTIL_H_
#define TFPCONV_ENGINE_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <vector>

#include "pattern_conv.h"

namespace tfpconv {
namespace testing {

// TFLite's SAME (pad so out = ceil(in / stride)) or VALID padding for a 3x3 kernel.
ConvShape MakeShape(int batch, int h, int w, int in_c, int out_c, int stride, bool same);

struct RandomLayer {
  ConvShape shape;
  PatternPlan plan;
  std::vector<float> weights;  // OHWI, zero outside each kernel's pattern
  std::vector<float> bias;     // empty: no bias
  std::vector<float> input;
  size_t kept_kernels = 0;
};

struct LayerOptions {
  double keep = 0.28;     // fraction of (out, in) kernels kept (connectivity)
  int library_size = 8;   // distinct patterns
  int groups = 2;         // plan groups
  bool bias = true;
  bool shuffle_order = true;
  // Output channels in runs of this many (the last run may be shorter) with equal kernel codes
  // (PatternPruning's filter_group); their weights differ.
  int filter_group = 1;
};

// A shape with its own strides and padding: 1 row on top, 2 columns on the left, and on the
// bottom / right what leaves out = (in + 2 - 3) / stride_h + 1 rows and (in + 3 - 3) / stride_w + 1
// columns (the generic path: no TFLite padding rule makes it).
ConvShape MakeOddlyPaddedShape(int batch, int in_h, int in_w, int in_c, int out_c, int stride_h,
                               int stride_w);

RandomLayer MakeRandomLayer(const ConvShape& shape, const LayerOptions& options, uint32_t seed);

// A pixel mask (PatternPlan::pixel_mask) of whole units of unit_rows rows x kActivationUnitPixels
// pixels (on a grid from pixel (0, 0); 1 row: runs along a row, ActivationUnitRows(out_h): the
// units of trained masks): round(masked x units) units chosen at random are 0, the others 1.
std::vector<uint8_t> RandomUnitMask(const ConvShape& shape, double masked, uint32_t seed,
                                    int unit_rows = 1);

// The output times the mask (out_h * out_w flags, every image and channel): 0.0f where it is 0.
void ApplyPixelMask(const ConvShape& shape, const std::vector<uint8_t>& mask,
                    std::vector<float>* output);

// Largest |a - b| / (1 + |b|) over the two arrays.
double MaxRelError(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace testing
}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_TESTS_TEST_UTIL_H_
