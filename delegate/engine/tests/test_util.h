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
};

RandomLayer MakeRandomLayer(const ConvShape& shape, const LayerOptions& options, uint32_t seed);

// Largest |a - b| / (1 + |b|) over the two arrays.
double MaxRelError(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace testing
}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_TESTS_TEST_UTIL_H_
