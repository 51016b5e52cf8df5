// Every kernel variant of every instruction set this CPU runs, against ReferenceConv.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <vector>

#include "dispatch.h"
#include "packing.h"
#include "pattern_conv.h"
#include "tests/test_util.h"

namespace tfpconv {
namespace {

using testing::LayerOptions;
using testing::MakeRandomLayer;
using testing::MakeShape;
using testing::MaxRelError;
using testing::RandomLayer;

constexpr double kTolerance = 1e-4;

std::vector<float> Reference(const RandomLayer& l) {
  const ConvShape& s = l.shape;
  std::vector<float> out(size_t(s.batch) * s.out_h * s.out_w * s.out_c);
  ReferenceConv(s, l.weights.data(), l.bias.empty() ? nullptr : l.bias.data(), l.input.data(),
                out.data());
  return out;
}

std::vector<float> RunEngine(const RandomLayer& l, Isa isa, const PatternPlan& plan,
                             ThreadPool* pool) {
  std::string error;
  auto conv = PatternConv::Create(l.shape, l.weights.data(), l.bias.empty() ? nullptr : l.bias.data(),
                                  plan, isa, &error);
  EXPECT_NE(conv, nullptr) << error;
  const ConvShape& s = l.shape;
  std::vector<float> out(size_t(s.batch) * s.out_h * s.out_w * s.out_c, -12345.0f);
  if (conv) {
    EXPECT_EQ(conv->isa(), isa);
    conv->Run(l.input.data(), out.data(), pool);
  }
  return out;
}

std::string Describe(const ConvShape& s, const PatternPlan& plan) {
  std::string d = "batch " + std::to_string(s.batch) + " in " + std::to_string(s.in_h) + "x" +
                  std::to_string(s.in_w) + "x" + std::to_string(s.in_c) + " out " +
                  std::to_string(s.out_h) + "x" + std::to_string(s.out_w) + "x" +
                  std::to_string(s.out_c) + " stride " + std::to_string(s.stride_h) + "," +
                  std::to_string(s.stride_w) + " pad " + std::to_string(s.pad_top) + "," +
                  std::to_string(s.pad_left);
  for (const auto& [k, v] : plan.tuned) d += " " + k + "=" + std::to_string(v);
  return d;
}

struct VariantParam {
  Isa isa;
  int variant;
};

std::vector<VariantParam> AllVariants() {
  std::vector<VariantParam> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    const kernels::KernelSet* set = KernelSetFor(isa);
    if (set == nullptr) continue;
    for (int v = 0; v < set->num_variants; ++v) out.push_back({isa, v});
  }
  return out;
}

class VariantTest : public ::testing::TestWithParam<VariantParam> {
 protected:
  const kernels::KernelSet& Set() const { return *KernelSetFor(GetParam().isa); }
  const kernels::Variant& Variant() const { return Set().variants[GetParam().variant]; }
  bool Fits(const ConvShape& s) const {
    return !Variant().whole_rows || WholeRowsPerTile(s, Variant().vecs * Set().lanes) > 0;
  }

  // Checks one layer with this variant and the given tiling against the reference. A whole-row
  // variant narrower than the layer must be refused with a reason.
  void Check(const RandomLayer& l, int tile_oc, int tile_ic) {
    PatternPlan plan = l.plan;
    plan.tuned = {{"variant", GetParam().variant}, {"tile_oc", tile_oc}, {"tile_ic", tile_ic}};
    if (!Fits(l.shape)) {
      std::string error;
      EXPECT_EQ(PatternConv::Create(l.shape, l.weights.data(), nullptr, plan, GetParam().isa,
                                    &error),
                nullptr);
      EXPECT_NE(error.find("narrower"), std::string::npos) << error;
      return;
    }
    ++checked_;
    const auto got = RunEngine(l, GetParam().isa, plan, nullptr);
    EXPECT_LE(MaxRelError(got, Reference(l)), kTolerance) << Describe(l.shape, plan);
  }
  int checked_ = 0;
};

TEST_P(VariantTest, RandomShapes) {
  std::mt19937 rng(1234 + GetParam().variant);
  const auto pick = [&](int lo, int hi) { return lo + int(rng() % uint32_t(hi - lo + 1)); };
  for (int iter = 0; iter < 24; ++iter) {
    const int stride = pick(1, 2);
    const bool same = pick(0, 3) != 0;
    ConvShape s = MakeShape(pick(1, 2), pick(3, 13), pick(3, 13), pick(1, 24), pick(1, 24),
                            stride, same);
    if (pick(0, 2) == 0) {
      s.act_min = 0.0f;
      s.act_max = pick(0, 1) ? 6.0f : 3.4e38f;
    }
    LayerOptions opt;
    const double keeps[] = {0.0, 0.1, 0.28, 0.6, 1.0};
    opt.keep = keeps[pick(0, 4)];
    opt.library_size = pick(1, 8);
    opt.groups = pick(1, 4);
    opt.bias = pick(0, 1) != 0;
    opt.shuffle_order = pick(0, 3) != 0;
    const RandomLayer l = MakeRandomLayer(s, opt, rng());
    Check(l, pick(1, 40), pick(1, s.in_c));
  }
}

// Mixed and large strides and unusual padding take the generic path.
TEST_P(VariantTest, OtherStridesAndPadding) {
  std::mt19937 rng(99);
  const int strides[][2] = {{1, 2}, {2, 1}, {3, 3}, {1, 3}, {4, 2}};
  for (const auto& st : strides) {
    ConvShape s;
    s.batch = 1;
    s.in_h = 11;
    s.in_w = 10;
    s.in_c = 5;
    s.out_c = 7;
    s.stride_h = st[0];
    s.stride_w = st[1];
    s.pad_top = 1;
    s.pad_left = 2;
    s.out_h = (s.in_h + 2 - 3) / s.stride_h + 1;
    s.out_w = (s.in_w + 3 - 3) / s.stride_w + 1;
    Check(MakeRandomLayer(s, LayerOptions{}, rng()), 4, 3);
  }
}

TEST_P(VariantTest, WiderLayer) {
  LayerOptions opt;
  opt.library_size = 8;
  const RandomLayer l = MakeRandomLayer(MakeShape(1, 20, 35, 48, 40, 1, true), opt, 7);
  Check(l, 32, 48);
  Check(l, 16, 20);
  const RandomLayer l2 = MakeRandomLayer(MakeShape(1, 21, 18, 33, 20, 2, true), opt, 8);
  Check(l2, 32, 33);
}

// The small late layers of VGG / ResNet (2x2 .. 14x14 outputs), where whole-row tiles cover
// several rows per vector; stride 2 and VALID too.
TEST_P(VariantTest, NarrowLayers) {
  LayerOptions opt;
  opt.library_size = 8;
  opt.bias = true;
  const int sizes[][3] = {{2, 1, 1}, {4, 1, 1}, {7, 1, 1}, {14, 1, 1}, {3, 1, 0},
                          {4, 2, 1}, {14, 2, 1}, {9, 2, 0}, {5, 1, 1}};
  int seed = 40;
  for (const auto& [hw, stride, same] : sizes) {
    const RandomLayer l = MakeRandomLayer(MakeShape(2, hw, hw, 37, 21, stride, same != 0), opt, ++seed);
    Check(l, 8, 37);
    Check(l, 32, 11);
  }
  // Every whole-row variant of every ISA runs at least the 2x2 layer.
  EXPECT_GT(checked_, 0);
}

TEST_P(VariantTest, FullyPrunedLayerGivesClampedBias) {
  ConvShape s = MakeShape(2, 5, 6, 3, 9, 1, true);
  s.act_min = -0.25f;
  s.act_max = 0.5f;
  LayerOptions opt;
  opt.keep = 0.0;
  const RandomLayer l = MakeRandomLayer(s, opt, 3);
  Check(l, 4, 3);
  if (!Fits(s)) return;
  PatternPlan plan = l.plan;
  plan.tuned = {{"variant", GetParam().variant}};
  const auto got = RunEngine(l, GetParam().isa, plan, nullptr);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i], std::min(std::max(l.bias[i % s.out_c], -0.25f), 0.5f));
}

std::string ParamName(const ::testing::TestParamInfo<VariantParam>& info) {
  std::string name = std::string(IsaName(info.param.isa)) + "_" +
                     KernelSetFor(info.param.isa)->variants[info.param.variant].name;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(Kernels, VariantTest, ::testing::ValuesIn(AllVariants()), ParamName);

TEST(PatternConv, DefaultsOnEveryIsa) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (!IsaSupported(isa)) continue;
    for (int stride = 1; stride <= 2; ++stride) {
      const RandomLayer l = MakeRandomLayer(MakeShape(2, 15, 17, 19, 21, stride, true), {}, stride);
      EXPECT_LE(MaxRelError(RunEngine(l, isa, l.plan, nullptr), Reference(l)), kTolerance)
          << IsaName(isa) << " stride " << stride;
    }
  }
}

TEST(PatternConv, ThreadsGiveIdenticalResults) {
  const RandomLayer l = MakeRandomLayer(MakeShape(2, 16, 16, 24, 40, 1, true), {}, 11);
  const auto single = RunEngine(l, BestIsa(), l.plan, nullptr);
  EXPECT_LE(MaxRelError(single, Reference(l)), kTolerance);
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    EXPECT_EQ(RunEngine(l, BestIsa(), l.plan, &pool), single) << threads << " threads";
  }
}

TEST(PatternConv, RunTwiceSameResult) {
  const RandomLayer l = MakeRandomLayer(MakeShape(1, 9, 9, 8, 8, 2, true), {}, 5);
  std::string error;
  auto conv = PatternConv::Create(l.shape, l.weights.data(), l.bias.data(), l.plan, BestIsa(), &error);
  ASSERT_NE(conv, nullptr) << error;
  std::vector<float> a(size_t(l.shape.out_h) * l.shape.out_w * 8), b(a.size());
  conv->Run(l.input.data(), a.data(), nullptr);
  conv->Run(l.input.data(), b.data(), nullptr);
  EXPECT_EQ(a, b);
  EXPECT_GT(conv->packed_weight_bytes(), 0u);
}

TEST(PatternConv, TuningCandidatesAllWork) {
  const RandomLayer l = MakeRandomLayer(MakeShape(1, 12, 14, 20, 24, 1, true), {}, 21);
  const auto want = Reference(l);
  const auto candidates = TuningCandidates(l.shape, BestIsa());
  ASSERT_FALSE(candidates.empty());
  for (const auto& tuned : candidates) {
    PatternPlan plan = l.plan;
    plan.tuned = tuned;
    EXPECT_LE(MaxRelError(RunEngine(l, BestIsa(), plan, nullptr), want), kTolerance)
        << DescribeTuning(tuned, BestIsa());
  }
}

TEST(PatternConv, RejectsInconsistentPlans) {
  const RandomLayer l = MakeRandomLayer(MakeShape(1, 6, 6, 4, 5, 1, true), {}, 4);
  std::string error;
  const auto create = [&](const PatternPlan& plan, const std::vector<float>& w) {
    error.clear();
    return PatternConv::Create(l.shape, w.data(), nullptr, plan, Isa::kScalar, &error);
  };
  EXPECT_NE(create(l.plan, l.weights), nullptr) << error;

  std::vector<float> w = l.weights;
  const size_t k = size_t(std::find_if(l.plan.codes.begin(), l.plan.codes.end(),
                                       [](int8_t c) { return c >= 0; }) -
                          l.plan.codes.begin());
  ASSERT_LT(k, l.plan.codes.size());
  const int o = int(k / 4), c = int(k % 4);
  const int mask = l.plan.library[l.plan.codes[k]];
  int outside = 0;
  while ((mask >> outside) & 1) ++outside;
  w[(size_t(o) * 9 + outside) * 4 + c] = 0.5f;
  EXPECT_EQ(create(l.plan, w), nullptr);
  EXPECT_NE(error.find("outside"), std::string::npos) << error;

  PatternPlan bad = l.plan;
  bad.codes.pop_back();
  EXPECT_EQ(create(bad, l.weights), nullptr);
  bad = l.plan;
  bad.library[0] = 0x1f;  // 5 taps
  EXPECT_EQ(create(bad, l.weights), nullptr);
  bad = l.plan;
  bad.library[0] = 0x7;   // no centre
  EXPECT_EQ(create(bad, l.weights), nullptr);
  bad = l.plan;
  bad.codes[0] = int8_t(bad.library.size());
  EXPECT_EQ(create(bad, l.weights), nullptr);
  bad = l.plan;
  bad.filter_order[0] = bad.filter_order[1];
  EXPECT_EQ(create(bad, l.weights), nullptr);
  bad = l.plan;
  bad.group_offsets.back() = 4;
  EXPECT_EQ(create(bad, l.weights), nullptr);
  bad = l.plan;
  bad.tuned["variant"] = 1000;
  EXPECT_EQ(create(bad, l.weights), nullptr);
  bad = l.plan;
  bad.tuned["unknown_key"] = 3;  // ignored
  EXPECT_NE(create(bad, l.weights), nullptr) << error;
}

TEST(PatternConv, EmptyOrderAndGroupsMeanIdentity) {
  RandomLayer l = MakeRandomLayer(MakeShape(1, 7, 8, 6, 10, 1, true), {}, 6);
  l.plan.filter_order.clear();
  l.plan.group_offsets.clear();
  EXPECT_LE(MaxRelError(RunEngine(l, BestIsa(), l.plan, nullptr), Reference(l)), kTolerance);
}

TEST(ThreadPool, EveryIndexOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    for (size_t n : {size_t(0), size_t(1), size_t(3), size_t(1000)}) {
      std::vector<std::atomic<int>> hits(n);
      for (auto& h : hits) h = 0;
      pool.ParallelFor(
          n, [](void* ctx, size_t i) { (*static_cast<std::vector<std::atomic<int>>*>(ctx))[i]++; },
          &hits);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
    }
  }
}

TEST(Isa, NamesRoundTrip) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    Isa parsed;
    ASSERT_TRUE(ParseIsa(IsaName(isa), &parsed));
    EXPECT_EQ(parsed, isa);
  }
  Isa parsed;
  EXPECT_FALSE(ParseIsa("sse9", &parsed));
  EXPECT_TRUE(IsaSupported(Isa::kScalar));
  EXPECT_TRUE(IsaSupported(BestIsa()));
  std::printf("best ISA here: %s\n", IsaName(BestIsa()));
}

}  // namespace
}  // namespace tfpconv
