// MaxPool against a naive reference of TFLite's pooling (padding resolved here independently,
// padded positions skipped), bit for bit, on odd sizes, SAME and VALID, the fused clamps, and
// several thread counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "max_pool.h"

namespace tfpconv {
namespace {

struct PoolCase {
  int batch, h, w, c;
  int filter_h, filter_w, stride_h, stride_w;
  bool same;
  float act_min, act_max;
};

constexpr float kLowest = std::numeric_limits<float>::lowest();
constexpr float kMax = std::numeric_limits<float>::max();

// TFLite's ComputeOutSize and ComputePaddingWithOffset for one dimension.
void Resolve(bool same, int in, int filter, int stride, int* out, int* pad) {
  *out = same ? (in + stride - 1) / stride : (in + stride - filter) / stride;
  *pad = std::max((*out - 1) * stride + filter - in, 0) / 2;
}

PoolShape ShapeOf(const PoolCase& p) {
  PoolShape s;
  s.batch = p.batch;
  s.in_h = p.h;
  s.in_w = p.w;
  s.in_c = s.out_c = p.c;
  s.stride_h = p.stride_h;
  s.stride_w = p.stride_w;
  s.filter_h = p.filter_h;
  s.filter_w = p.filter_w;
  Resolve(p.same, p.h, p.filter_h, p.stride_h, &s.out_h, &s.pad_top);
  Resolve(p.same, p.w, p.filter_w, p.stride_w, &s.out_w, &s.pad_left);
  s.act_min = p.act_min;
  s.act_max = p.act_max;
  return s;
}

std::vector<float> Reference(const PoolShape& s, const std::vector<float>& input) {
  std::vector<float> out(size_t(s.batch) * s.out_h * s.out_w * s.in_c);
  for (int b = 0; b < s.batch; ++b)
    for (int oy = 0; oy < s.out_h; ++oy)
      for (int ox = 0; ox < s.out_w; ++ox)
        for (int c = 0; c < s.in_c; ++c) {
          float m = kLowest;
          for (int fy = 0; fy < s.filter_h; ++fy)
            for (int fx = 0; fx < s.filter_w; ++fx) {
              const int y = oy * s.stride_h - s.pad_top + fy, x = ox * s.stride_w - s.pad_left + fx;
              if (y < 0 || y >= s.in_h || x < 0 || x >= s.in_w) continue;
              m = std::max(m, input[((size_t(b) * s.in_h + y) * s.in_w + x) * s.in_c + c]);
            }
          out[((size_t(b) * s.out_h + oy) * s.out_w + ox) * s.in_c + c] =
              std::min(std::max(m, s.act_min), s.act_max);
        }
  return out;
}

std::string Describe(const PoolCase& p) {
  return std::to_string(p.batch) + "x" + std::to_string(p.h) + "x" + std::to_string(p.w) + "x" +
         std::to_string(p.c) + " window " + std::to_string(p.filter_h) + "x" +
         std::to_string(p.filter_w) + " stride " + std::to_string(p.stride_h) + "x" +
         std::to_string(p.stride_w) + (p.same ? " SAME" : " VALID") + " clamp [" +
         std::to_string(p.act_min) + ", " + std::to_string(p.act_max) + "]";
}

TEST(MaxPool, MatchesTheReferenceBitForBit) {
  const std::vector<PoolCase> cases = {
      {1, 8, 8, 4, 2, 2, 2, 2, false, kLowest, kMax},   // VGG's 2x2/2 VALID
      {2, 7, 9, 5, 2, 2, 2, 2, true, kLowest, kMax},    // SAME on odd sizes: a padded last row/column
      {1, 7, 9, 5, 2, 2, 2, 2, false, kLowest, kMax},   // VALID on odd sizes: the last one dropped
      {1, 11, 13, 17, 3, 3, 2, 2, true, 0.0f, kMax},    // ResNet stem's 3x3/2, RELU
      {1, 11, 13, 17, 3, 3, 2, 2, false, 0.0f, 6.0f},   // RELU6
      {3, 5, 6, 1, 3, 3, 1, 1, true, -0.25f, 0.25f},    // stride 1, one channel, a tight clamp
      {1, 6, 10, 3, 2, 3, 1, 2, true, kLowest, kMax},   // non-square window and strides
      {1, 9, 4, 8, 1, 1, 3, 3, true, kLowest, kMax},    // stride larger than the window
      {1, 4, 4, 6, 4, 4, 4, 4, false, kLowest, kMax},   // one window over the whole image
      {1, 3, 3, 2, 5, 5, 2, 2, true, kLowest, kMax},    // window larger than the image (SAME)
      {2, 30, 23, 64, 2, 2, 2, 2, false, 0.0f, kMax},   // many rows over the threads
  };
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> value(-2.0f, 2.0f);
  for (const PoolCase& p : cases) {
    const PoolShape shape = ShapeOf(p);
    ASSERT_GT(shape.out_h, 0) << Describe(p);
    ASSERT_GT(shape.out_w, 0) << Describe(p);
    std::vector<float> input(size_t(p.batch) * p.h * p.w * p.c);
    for (float& x : input) x = value(rng);
    const std::vector<float> want = Reference(shape, input);
    for (int threads : {0, 1, 2, 3, 5}) {  // 0: no pool
      ThreadPool pool(std::max(threads, 1));
      std::vector<float> got(want.size(), 12345.0f);
      MaxPool(shape, input.data(), got.data(), threads == 0 ? nullptr : &pool);
      ASSERT_EQ(got, want) << Describe(p) << ", " << threads << " thread(s)";
    }
  }
}

// Every window of a SAME pool over all-negative inputs has at least one real input: nothing of the
// initial lowest value, nor a padding 0, reaches the output.
TEST(MaxPool, PaddingIsSkippedNotZero) {
  const PoolCase p = {1, 5, 5, 3, 3, 3, 2, 2, true, kLowest, kMax};
  const PoolShape shape = ShapeOf(p);
  std::vector<float> input(size_t(p.h) * p.w * p.c);
  for (size_t i = 0; i < input.size(); ++i) input[i] = -1.0f - float(i);
  std::vector<float> got(size_t(shape.out_h) * shape.out_w * p.c);
  MaxPool(shape, input.data(), got.data(), nullptr);
  EXPECT_EQ(got, Reference(shape, input));
  for (float v : got) EXPECT_LE(v, -1.0f);
}

TEST(MaxPool, EmptyBatchWritesNothing) {
  PoolShape shape = ShapeOf({1, 4, 4, 2, 2, 2, 2, 2, false, kLowest, kMax});
  shape.batch = 0;
  ThreadPool pool(2);
  MaxPool(shape, nullptr, nullptr, &pool);
}

}  // namespace
}  // namespace tfpconv
