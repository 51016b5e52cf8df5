// The masked dense convolution (dense_conv.h) against a direct reference, on every instruction set
// the dense path runs here.
#include "dense_conv.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace tfpconv {
namespace {

constexpr float kNoClamp = std::numeric_limits<float>::max();

// TFLite's SAME (out = ceil(in / stride), the odd pixel of padding at the bottom/right) or VALID.
DenseConvShape MakeDenseShape(int batch, int h, int w, int in_c, int out_c, int kh, int kw,
                              int stride, bool same) {
  DenseConvShape s;
  s.batch = batch;
  s.in_h = h;
  s.in_w = w;
  s.in_c = in_c;
  s.out_c = out_c;
  s.kernel_h = kh;
  s.kernel_w = kw;
  s.stride_h = s.stride_w = stride;
  if (same) {
    s.out_h = (h + stride - 1) / stride;
    s.out_w = (w + stride - 1) / stride;
    s.pad_top = std::max((s.out_h - 1) * stride + kh - h, 0) / 2;
    s.pad_left = std::max((s.out_w - 1) * stride + kw - w, 0) / 2;
  } else {
    s.out_h = (h - kh) / stride + 1;
    s.out_w = (w - kw) / stride + 1;
  }
  return s;
}

// Direct convolution in double, clamp, masked pixels 0; *scale gets, per output value, the sum of
// the absolute products (the size float rounding is measured against).
void Reference(const DenseConvShape& s, const std::vector<float>& w, const std::vector<float>& bias,
               const std::vector<uint8_t>& mask, const std::vector<float>& in,
               std::vector<float>* out, std::vector<double>* scale) {
  out->assign(size_t(s.batch) * s.out_h * s.out_w * s.out_c, 0.0f);
  scale->assign(out->size(), 1.0);
  for (int b = 0; b < s.batch; ++b)
    for (int y = 0; y < s.out_h; ++y)
      for (int x = 0; x < s.out_w; ++x) {
        const size_t pixel = (size_t(b) * s.out_h + y) * s.out_w + x;
        if (!mask.empty() && mask[size_t(y) * s.out_w + x] == 0) continue;
        for (int o = 0; o < s.out_c; ++o) {
          double acc = bias.empty() ? 0.0 : bias[o], abs_sum = std::abs(acc);
          for (int dy = 0; dy < s.kernel_h; ++dy)
            for (int dx = 0; dx < s.kernel_w; ++dx) {
              const int iy = y * s.stride_h - s.pad_top + dy, ix = x * s.stride_w - s.pad_left + dx;
              if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) continue;
              const float* xi = in.data() + ((size_t(b) * s.in_h + iy) * s.in_w + ix) * s.in_c;
              const float* wi = w.data() + ((size_t(o) * s.kernel_h + dy) * s.kernel_w + dx) * s.in_c;
              for (int c = 0; c < s.in_c; ++c) {
                acc += double(wi[c]) * xi[c];
                abs_sum += std::abs(double(wi[c]) * xi[c]);
              }
            }
          const float v = std::min(std::max(float(acc), s.act_min), s.act_max);
          (*out)[pixel * s.out_c + o] = v;
          (*scale)[pixel * s.out_c + o] = 1.0 + abs_sum;
        }
      }
}

enum class MaskKind { kNone, kAllOnes, kAllZeros, kRandomUnits, kPartialUnits };

// Whole units masked with probability `drop`, or (kPartialUnits) single pixels with probability 0.5.
std::vector<uint8_t> MakeMask(const DenseConvShape& s, MaskKind kind, std::mt19937* rng) {
  if (kind == MaskKind::kNone) return {};
  std::vector<uint8_t> mask(size_t(s.out_h) * s.out_w, kind == MaskKind::kAllZeros ? 0 : 1);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  if (kind == MaskKind::kRandomUnits) {
    for (int y = 0; y < s.out_h; ++y)
      for (int x0 = 0; x0 < s.out_w; x0 += kActivationUnitPixels)
        if (coin(*rng) < 0.2)
          for (int x = x0; x < std::min(s.out_w, x0 + kActivationUnitPixels); ++x)
            mask[size_t(y) * s.out_w + x] = 0;
  } else if (kind == MaskKind::kPartialUnits) {
    for (uint8_t& f : mask) f = coin(*rng) < 0.5 ? 0 : 1;
  }
  return mask;
}

struct Case {
  int batch, h, w, in_c, out_c, kh, kw, stride;
  bool same, bias;
  float act_min, act_max;
  MaskKind mask;
  int threads;
};

std::vector<Isa> DenseIsas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512})
    if (DenseConvAvailable(isa)) isas.push_back(isa);
  return isas;
}

class DenseConvTest : public ::testing::TestWithParam<Isa> {
 protected:
  void Check(const Case& c, uint32_t seed) {
    SCOPED_TRACE(::testing::Message()
                 << "batch " << c.batch << " in " << c.h << "x" << c.w << "x" << c.in_c << " out_c "
                 << c.out_c << " kernel " << c.kh << "x" << c.kw << " stride " << c.stride
                 << (c.same ? " SAME" : " VALID") << " bias " << c.bias << " clamp ["
                 << c.act_min << ", " << c.act_max << "] mask " << int(c.mask) << " threads "
                 << c.threads);
    DenseConvShape s = MakeDenseShape(c.batch, c.h, c.w, c.in_c, c.out_c, c.kh, c.kw, c.stride,
                                      c.same);
    s.act_min = c.act_min;
    s.act_max = c.act_max;
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    std::vector<float> w(size_t(s.out_c) * s.kernel_h * s.kernel_w * s.in_c), bias, in;
    for (float& v : w) v = uni(rng);
    if (c.bias) {
      bias.resize(size_t(s.out_c));
      for (float& v : bias) v = uni(rng);
    }
    in.resize(size_t(s.batch) * s.in_h * s.in_w * s.in_c);
    for (float& v : in) v = uni(rng);
    const std::vector<uint8_t> mask = MakeMask(s, c.mask, &rng);

    std::string error;
    auto conv = DenseConv::Create(s, w.data(), c.bias ? bias.data() : nullptr, mask, GetParam(),
                                  &error);
    ASSERT_NE(conv, nullptr) << error;
    EXPECT_GE(conv->packed_weight_bytes(), w.size() * sizeof(float));

    std::vector<float> expected;
    std::vector<double> scale;
    Reference(s, w, bias, mask, in, &expected, &scale);
    // NaN first: every output value must be written.
    std::vector<float> out(expected.size(), std::numeric_limits<float>::quiet_NaN());
    ThreadPool pool(c.threads);
    conv->Run(in.data(), out.data(), &pool);
    double worst = 0;
    size_t worst_at = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      const double err = std::isnan(out[i]) ? INFINITY : std::abs(out[i] - expected[i]) / scale[i];
      if (err > worst) {
        worst = err;
        worst_at = i;
      }
    }
    EXPECT_LE(worst, 1e-5) << "at " << worst_at << ": " << out[worst_at] << " vs "
                           << expected[worst_at];
    // Masked pixels are exactly 0.
    for (size_t i = 0; i < out.size() && !mask.empty(); ++i) {
      if (mask[(i / s.out_c) % mask.size()] == 0) {
        ASSERT_EQ(out[i], 0.0f) << "at " << i;
      }
    }
  }
};

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(DenseConvTest);

TEST_P(DenseConvTest, ThreeByThree) {
  uint32_t seed = 1;
  for (int stride : {1, 2})
    for (bool same : {true, false})
      for (MaskKind mask : {MaskKind::kNone, MaskKind::kAllOnes, MaskKind::kRandomUnits,
                            MaskKind::kPartialUnits})
        Check({1, 9, 21, 19, 40, 3, 3, stride, same, true, -kNoClamp, kNoClamp, mask, 1}, seed++);
}

TEST_P(DenseConvTest, OneByOne) {
  uint32_t seed = 100;
  for (int stride : {1, 2})
    for (MaskKind mask : {MaskKind::kNone, MaskKind::kRandomUnits, MaskKind::kPartialUnits})
      Check({1, 7, 37, 24, 33, 1, 1, stride, true, true, -kNoClamp, kNoClamp, mask, 1}, seed++);
}

TEST_P(DenseConvTest, OddSizesAndEvenInputsAtStrideTwo) {
  uint32_t seed = 200;
  // Even inputs at stride 2 pad only the bottom/right; odd inputs pad both sides.
  for (int hw : {8, 10, 11, 34, 35})
    Check({1, hw, hw, 5, 7, 3, 3, 2, true, true, -kNoClamp, kNoClamp, MaskKind::kRandomUnits, 1},
          seed++);
  // Rows of exactly one unit, several units, a last unit of one pixel.
  for (int w : {16, 32, 33, 1, 2})
    Check({1, 4, w, 3, 16, 3, 3, 1, true, false, -kNoClamp, kNoClamp, MaskKind::kPartialUnits, 1},
          seed++);
}

TEST_P(DenseConvTest, MixedKernelShapes) {
  uint32_t seed = 300;
  for (bool same : {true, false}) {
    Check({1, 6, 19, 8, 9, 1, 3, 1, same, true, -kNoClamp, kNoClamp, MaskKind::kRandomUnits, 1},
          seed++);
    Check({1, 6, 19, 8, 9, 3, 1, 2, same, true, -kNoClamp, kNoClamp, MaskKind::kRandomUnits, 1},
          seed++);
  }
}

TEST_P(DenseConvTest, BatchThreadsClampAndBias) {
  uint32_t seed = 400;
  for (int threads : {1, 2})
    for (bool bias : {true, false}) {
      Check({2, 12, 23, 16, 64, 3, 3, 1, true, bias, 0.0f, 6.0f, MaskKind::kRandomUnits, threads},
            seed++);
      Check({2, 12, 23, 16, 64, 3, 3, 2, true, bias, -0.5f, 0.5f, MaskKind::kPartialUnits,
             threads},
            seed++);
      Check({2, 9, 9, 32, 48, 1, 1, 2, false, bias, 0.0f, kNoClamp, MaskKind::kAllOnes, threads},
            seed++);
    }
}

TEST_P(DenseConvTest, AllMaskedWritesZeros) {
  Check({2, 8, 20, 8, 40, 3, 3, 1, true, true, 1.0f, 2.0f, MaskKind::kAllZeros, 2}, 500);
}

TEST_P(DenseConvTest, WideChannels) {
  // Several channel blocks and more input channels than a vector holds many times over.
  Check({1, 5, 18, 130, 96, 3, 3, 1, true, true, -kNoClamp, kNoClamp, MaskKind::kRandomUnits, 2},
        600);
}

TEST_P(DenseConvTest, RunTwiceSameResult) {
  const DenseConvShape s = MakeDenseShape(1, 6, 20, 8, 20, 3, 3, 1, true);
  std::vector<float> w(size_t(s.out_c) * 9 * s.in_c, 0.25f), in(size_t(6) * 20 * 8, 0.5f);
  std::string error;
  auto conv = DenseConv::Create(s, w.data(), nullptr, {}, GetParam(), &error);
  ASSERT_NE(conv, nullptr) << error;
  std::vector<float> a(size_t(s.out_h) * s.out_w * s.out_c), b(a.size());
  conv->Run(in.data(), a.data(), nullptr);
  conv->Run(in.data(), b.data(), nullptr);
  EXPECT_EQ(a, b);
}

INSTANTIATE_TEST_SUITE_P(Dense, DenseConvTest, ::testing::ValuesIn(DenseIsas()),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(IsaName(info.param));
                         });

TEST(DenseConv, RejectsWhatItCannotRun) {
  const Isa isa = DenseConvAvailable(Isa::kAvx512) ? Isa::kAvx512 : Isa::kAvx2;
  if (!DenseConvAvailable(isa)) {
    std::string error;
    const DenseConvShape s = MakeDenseShape(1, 4, 4, 2, 2, 3, 3, 1, true);
    std::vector<float> w(size_t(2) * 9 * 2);
    EXPECT_EQ(DenseConv::Create(s, w.data(), nullptr, {}, isa, &error), nullptr);
    EXPECT_FALSE(error.empty());
    return;  // without the dense path every layer is rejected: that is what there is to check
  }
  std::vector<float> w(size_t(4) * 25 * 4, 1.0f);
  std::string error;
  DenseConvShape s = MakeDenseShape(1, 8, 8, 4, 4, 5, 5, 1, true);
  EXPECT_EQ(DenseConv::Create(s, w.data(), nullptr, {}, isa, &error), nullptr);
  EXPECT_NE(error.find("kernel"), std::string::npos) << error;

  s = MakeDenseShape(1, 8, 8, 4, 4, 3, 3, 1, true);
  error.clear();
  EXPECT_EQ(DenseConv::Create(s, w.data(), nullptr, std::vector<uint8_t>(10, 1), isa, &error),
            nullptr);
  EXPECT_NE(error.find("mask"), std::string::npos) << error;
  std::vector<uint8_t> mask(64, 1);
  mask[5] = 2;
  error.clear();
  EXPECT_EQ(DenseConv::Create(s, w.data(), nullptr, mask, isa, &error), nullptr);
  EXPECT_NE(error.find("mask"), std::string::npos) << error;
  error.clear();
  EXPECT_EQ(DenseConv::Create(s, w.data(), nullptr, {}, Isa::kScalar, &error), nullptr);
  EXPECT_FALSE(error.empty());
  s.in_c = 0;
  error.clear();
  EXPECT_EQ(DenseConv::Create(s, w.data(), nullptr, {}, isa, &error), nullptr);
  EXPECT_FALSE(error.empty());
}

TEST(DenseConv, AvailabilityFollowsTheBuild) {
  EXPECT_FALSE(DenseConvAvailable(Isa::kScalar));
  EXPECT_FALSE(DenseConvAvailable(Isa::kNeon));
#if !defined(__x86_64__)
  EXPECT_FALSE(DenseConvAvailable(Isa::kAvx2));
  std::string error;
  const DenseConvShape s = MakeDenseShape(1, 4, 4, 2, 2, 3, 3, 1, true);
  std::vector<float> w(size_t(2) * 9 * 2);
  EXPECT_EQ(DenseConv::Create(s, w.data(), nullptr, {}, Isa::kAvx2, &error), nullptr);
  EXPECT_NE(error.find("libxsmm"), std::string::npos) << error;
#endif
}

}  // namespace
}  // namespace tfpconv
