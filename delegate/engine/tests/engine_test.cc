// Every kernel variant of every instruction set this CPU runs, against ReferenceConv.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
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

std::unique_ptr<PatternConv> CreateConv(const RandomLayer& l, Isa isa, const PatternPlan& plan,
                                        std::string* note = nullptr) {
  std::string error;
  auto conv = PatternConv::Create(l.shape, l.weights.data(), l.bias.empty() ? nullptr : l.bias.data(),
                                  plan, isa, &error, note);
  EXPECT_NE(conv, nullptr) << error;
  return conv;
}

std::vector<float> RunEngine(const RandomLayer& l, Isa isa, const PatternPlan& plan,
                             ThreadPool* pool) {
  auto conv = CreateConv(l, isa, plan);
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
  if (!plan.tuning.variant.empty()) d += " variant=" + plan.tuning.variant;
  for (const auto& [k, v] : plan.tuning.params) d += " " + k + "=" + std::to_string(v);
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
  // variant narrower than the layer is not used: the engine's defaults run, with a note.
  void Check(const RandomLayer& l, int tile_oc, int tile_ic) {
    PatternPlan plan = l.plan;
    plan.tuning = KernelTuning{std::nullopt, Variant().name, {{"tile_oc", tile_oc}, {"tile_ic", tile_ic}}};
    std::string note;
    auto conv = CreateConv(l, GetParam().isa, plan, &note);
    ASSERT_NE(conv, nullptr);
    if (!Fits(l.shape)) {
      EXPECT_NE(note.find("narrower"), std::string::npos) << note;
      EXPECT_NE(conv->kernel_params().variant, Variant().name);
    } else {
      ++checked_;
      EXPECT_EQ(note, "");
      EXPECT_EQ(conv->kernel_params(), plan.tuning);
    }
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

// Filters with equal kernel codes run from shared kernels (groups of 4, then 2, per chunk): runs of
// 2, 3, 4 and 5 equal filters, in shuffled plan order, with chunks that cut through them.
TEST_P(VariantTest, EqualFiltersShareTheirKernels) {
  std::mt19937 rng(77 + GetParam().variant);
  for (int filter_group : {2, 3, 4, 5}) {
    LayerOptions opt;
    opt.filter_group = filter_group;
    opt.shuffle_order = filter_group != 4;
    const RandomLayer l = MakeRandomLayer(MakeShape(1, 9, 11, 13, 22, 1, true), opt, rng());
    Check(l, filter_group == 4 ? 32 : 6, filter_group == 3 ? 5 : 13);
    const RandomLayer strided = MakeRandomLayer(MakeShape(2, 12, 7, 9, 12, 2, false), opt, rng());
    Check(strided, 12, 9);
  }
}

TEST(PatternConv, FlatPackingGroupsEqualFilters) {
  const kernels::KernelSet& set = *KernelSetFor(Isa::kScalar);
  int flat = 0;
  while (set.variants[flat].specialised) ++flat;
  const ConvShape s = MakeShape(1, 8, 8, 16, 23, 1, true);
  for (int filter_group : {1, 2, 3, 4}) {
    LayerOptions opt;
    opt.filter_group = filter_group;
    opt.groups = 1;
    const RandomLayer l = MakeRandomLayer(s, opt, 5);
    const Geometry geo = MakeGeometry(s, set.variants[flat], set.lanes);
    for (bool by_pattern : {false, true}) {
      PackedWeights packed;
      std::string error;
      ASSERT_TRUE(PackWeights(s, geo, l.weights.data(), nullptr, l.plan, 64, 16, by_pattern,
                              &packed, &error))
          << error;
      EXPECT_EQ(packed.nonzero_kernels, l.kept_kernels);
      // 23 filters: groups of 4 give 5 x 4 + 2 + 1, of 3 give 7 x (2 + 1) + 2, of 2 11 x 2 + 1.
      const size_t in_fours = by_pattern || filter_group != 4 ? 0 : 20;
      const size_t in_twos = by_pattern || filter_group == 1 ? 0 : (filter_group == 3 ? 16 : 2);
      size_t fours = 0, twos = 0;
      for (const kernels::OcTask& task : packed.tasks) {
        fours += task.filters == 4 ? 4 : 0;
        twos += task.filters == 2 ? 2 : 0;
      }
      EXPECT_EQ(fours, filter_group == 2 ? 0 : in_fours) << filter_group;
      EXPECT_EQ(twos, filter_group == 2 && !by_pattern ? 22 : in_twos) << filter_group;
      EXPECT_EQ(packed.kernels4.empty(), fours == 0);
      EXPECT_EQ(packed.kernels2.empty(), twos == 0);
    }
  }
}

// Mixed and large strides and unusual padding take the generic path.
TEST_P(VariantTest, OtherStridesAndPadding) {
  std::mt19937 rng(99);
  const int strides[][2] = {{1, 2}, {2, 1}, {3, 3}, {1, 3}, {4, 2}};
  for (const auto& st : strides) {
    const ConvShape s = testing::MakeOddlyPaddedShape(1, 11, 10, 5, 7, st[0], st[1]);
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

// Where the engine must give NaN: the outputs a kept tap reads a NaN input from, or whose bias is
// NaN. (ReferenceConv multiplies the pruned zeros too, and 0 * NaN is NaN: it has NaN wherever the
// 3x3 window covers one, kept tap or not.) Computed by ReferenceConv itself over indicators.
std::vector<bool> NanReach(const RandomLayer& l) {
  ConvShape s = l.shape;
  s.act_min = std::numeric_limits<float>::lowest();
  s.act_max = std::numeric_limits<float>::max();
  std::vector<float> kept(l.weights.size(), 0.0f), nan_in(l.input.size()), nan_bias(s.out_c, 0.0f);
  for (int o = 0; o < s.out_c; ++o) {
    for (int c = 0; c < s.in_c; ++c) {
      const int code = l.plan.codes[size_t(o) * s.in_c + c];
      for (int tap = 0; tap < 9 && code >= 0; ++tap)
        if ((l.plan.library[code] >> tap) & 1) kept[(size_t(o) * 9 + tap) * s.in_c + c] = 1.0f;
    }
    if (!l.bias.empty() && std::isnan(l.bias[o])) nan_bias[o] = 1.0f;
  }
  for (size_t i = 0; i < l.input.size(); ++i) nan_in[i] = std::isnan(l.input[i]) ? 1.0f : 0.0f;
  std::vector<float> reach(size_t(s.batch) * s.out_h * s.out_w * s.out_c);
  ReferenceConv(s, kept.data(), nan_bias.data(), nan_in.data(), reach.data());
  std::vector<bool> out(reach.size());
  for (size_t i = 0; i < reach.size(); ++i) out[i] = reach[i] > 0.0f;
  return out;
}

// NaN exactly where `nan_at` says; elsewhere within tolerance of `want`.
void ExpectNanPlacement(const std::vector<float>& got, const std::vector<bool>& nan_at,
                        const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), nan_at.size());
  ASSERT_EQ(got.size(), want.size());
  size_t nans = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (nan_at[i]) {
      ++nans;
      ASSERT_TRUE(std::isnan(got[i])) << what << ": element " << i << " is " << got[i] << ", not NaN";
    } else {
      ASSERT_FALSE(std::isnan(got[i])) << what << ": element " << i << " is NaN";
      ASSERT_LE(std::fabs(double(got[i]) - want[i]) / (1.0 + std::fabs(double(want[i]))), kTolerance)
          << what << ": element " << i;
    }
  }
  EXPECT_GT(nans, 0u) << what;  // the case did exercise NaN
}

// NaN in the input or the bias stays NaN through the activation clamp, like TFLite's
// min(max(x, lo), hi). One chunk of all output channels (groups 1, tile_oc >= out_c) so the store
// takes the vector path; widths from 8 to 19 so whole-row variants have layers too.
TEST_P(VariantTest, NanPropagatesThroughTheActivationClamp) {
  const int layers[][3] = {{9, 8, 1}, {10, 16, 1}, {16, 19, 1}, {11, 16, 2}};  // h, w, stride
  int seed = 70, ran = 0;
  for (const auto& [h, w, stride] : layers) {
    ConvShape s = MakeShape(1, h, w, 6, 24, stride, true);
    if (!Fits(s)) continue;
    ++ran;
    s.act_min = (seed % 2) ? 0.0f : std::numeric_limits<float>::lowest();
    s.act_max = (seed % 2) ? 6.0f : std::numeric_limits<float>::max();
    LayerOptions opt;
    opt.keep = 0.6;
    opt.groups = 1;
    RandomLayer l = MakeRandomLayer(s, opt, ++seed);
    PatternPlan plan = l.plan;
    plan.tuning = KernelTuning{std::nullopt, Variant().name, {{"tile_oc", 64}, {"tile_ic", s.in_c}}};
    const RandomLayer clean = l;

    // NaN inputs: NaN outputs where a kept tap reads them, the reference's values elsewhere.
    std::mt19937 rng(seed);
    for (int k = 0; k < 3; ++k) l.input[rng() % l.input.size()] = std::nanf("");
    RandomLayer zeroed = l;
    for (float& v : zeroed.input) v = std::isnan(v) ? 0.0f : v;
    ExpectNanPlacement(RunEngine(l, GetParam().isa, plan, nullptr), NanReach(l), Reference(zeroed),
                       "NaN input, " + Describe(s, plan));

    // A NaN bias: NaN exactly where ReferenceConv has it (the whole channel).
    l = clean;
    l.bias[3] = std::nanf("");
    l.bias[17] = std::nanf("");
    const std::vector<float> want = Reference(l);
    std::vector<bool> reference_nan(want.size());
    for (size_t i = 0; i < want.size(); ++i) reference_nan[i] = std::isnan(want[i]);
    ExpectNanPlacement(RunEngine(l, GetParam().isa, plan, nullptr), reference_nan, want,
                       "NaN bias, " + Describe(s, plan));
  }
  EXPECT_GT(ran, 0);
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
  plan.tuning.variant = Variant().name;
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

// The instruction sets compiled into this build that this CPU cannot run: their variants are not
// tested here, and each says so as a skipped test (the pytest driver reports it).
std::vector<Isa> CompiledButUnsupported() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon})
    if (CompiledKernelSetFor(isa) != nullptr && !IsaSupported(isa)) out.push_back(isa);
  return out;
}

class UnsupportedIsaTest : public ::testing::TestWithParam<Isa> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(UnsupportedIsaTest);

TEST_P(UnsupportedIsaTest, VariantsNotRun) {
  GTEST_SKIP() << IsaName(GetParam()) << ": " << CompiledKernelSetFor(GetParam())->num_variants
               << " variants not run: CPU lacks it";
}

INSTANTIATE_TEST_SUITE_P(Kernels, UnsupportedIsaTest, ::testing::ValuesIn(CompiledButUnsupported()),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(IsaName(info.param));
                         });

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

// A small layer with several output-channel chunks: with threads, each tile's chunks are split
// over several items that share the tile's accumulators, and the last one stores the tile.
TEST(PatternConv, SplitTilesGiveIdenticalResults) {
  RandomLayer l = MakeRandomLayer(MakeShape(2, 6, 6, 24, 72, 1, true), {}, 12);
  l.plan.tuning.params["tile_oc"] = 16;
  const auto single = RunEngine(l, BestIsa(), l.plan, nullptr);
  EXPECT_LE(MaxRelError(single, Reference(l)), kTolerance);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    auto conv = CreateConv(l, BestIsa(), l.plan);
    ASSERT_NE(conv, nullptr);
    for (int run = 0; run < 2; ++run) {  // batch 2: the split bookkeeping resets per image too
      std::vector<float> out(single.size(), -1.0f);
      conv->Run(l.input.data(), out.data(), &pool);
      EXPECT_EQ(out, single) << threads << " threads, run " << run;
    }
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
    plan.tuning = tuned;
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
  bad.tuning.params["unknown_key"] = 3;  // ignored
  EXPECT_NE(create(bad, l.weights), nullptr) << error;
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon})
    if (IsaSupported(isa)) out.push_back(isa);
  return out;
}

// Variants are named: a name this instruction set's table lacks (one of another set's variants, or
// none at all) runs the defaults with a note, never fails; "claim" is not the engine's business.
TEST(PatternConv, VariantNamesOfAnotherIsaRunTheDefaults) {
  const RandomLayer l = MakeRandomLayer(MakeShape(1, 12, 14, 20, 24, 1, true), {}, 23);
  const auto want = Reference(l);
  for (Isa isa : SupportedIsas()) {
    const auto defaults = CreateConv(l, isa, l.plan)->kernel_params();
    const std::vector<std::string> own = VariantNames(isa);
    for (const std::string& name : {std::string("r3v4"), std::string("r4v4"),
                                    std::string("r99v9"), std::string("R8V1")}) {
      if (std::find(own.begin(), own.end(), name) != own.end()) continue;
      PatternPlan plan = l.plan;
      plan.tuning = KernelTuning{true, name, {{"tile_oc", 3}, {"tile_ic", 2}}};
      std::string note;
      auto conv = CreateConv(l, isa, plan, &note);
      ASSERT_NE(conv, nullptr);
      EXPECT_EQ(conv->kernel_params(), defaults) << DescribeTuning(plan.tuning, isa);
      EXPECT_NE(note.find("tuned variant '" + name + "' is not one of this build's " +
                          IsaName(isa) + " variants"),
                std::string::npos)
          << note;
      std::vector<float> got(want.size());
      conv->Run(l.input.data(), got.data(), nullptr);
      EXPECT_LE(MaxRelError(got, want), kTolerance) << DescribeTuning(plan.tuning, isa);
    }
    // One of its own: applied as it is.
    PatternPlan plan = l.plan;
    plan.tuning = KernelTuning{std::nullopt, own.at(1), {{"tile_oc", 3}, {"tile_ic", 2}}};
    std::string note = "unset";
    auto conv = CreateConv(l, isa, plan, &note);
    ASSERT_NE(conv, nullptr);
    EXPECT_EQ(note, "");
    EXPECT_EQ(conv->kernel_params(), plan.tuning);
  }
}

// A tuned variant that does not fit the layer (a whole-row variant after the input grew) or a tile
// out of range falls back to the defaults for the new shape instead of failing.
TEST(PatternConv, TunedVariantThatNoLongerFitsFallsBackToTheDefaults) {
  const RandomLayer small = MakeRandomLayer(MakeShape(1, 4, 4, 12, 10, 1, true), {}, 31);
  const RandomLayer wide = MakeRandomLayer(MakeShape(1, 20, 70, 12, 10, 1, true), {}, 32);
  for (Isa isa : SupportedIsas()) {
    const kernels::KernelSet& set = *KernelSetFor(isa);
    int whole_row = -1;  // a whole-row variant: fits 4 wide, not 70 wide
    for (int v = 0; v < set.num_variants && whole_row < 0; ++v)
      if (set.variants[v].whole_rows) whole_row = v;
    ASSERT_GE(whole_row, 0) << IsaName(isa);
    const std::string name = set.variants[whole_row].name;
    for (int64_t tile_oc : {int64_t{8}, int64_t{0}}) {
      PatternPlan plan = wide.plan;
      plan.tuning = KernelTuning{std::nullopt, tile_oc > 0 ? name : "", {{"tile_oc", tile_oc}}};
      std::string note;
      if (tile_oc > 0) {
        PatternPlan small_plan = small.plan;
        small_plan.tuning = plan.tuning;
        EXPECT_EQ(CreateConv(small, isa, small_plan, &note)->kernel_params().variant, name);
        EXPECT_EQ(note, "");
      }
      auto conv = CreateConv(wide, isa, plan, &note);
      ASSERT_NE(conv, nullptr);
      EXPECT_EQ(conv->kernel_params(), CreateConv(wide, isa, wide.plan)->kernel_params());
      EXPECT_NE(note.find(tile_oc > 0 ? "narrower" : "out of range"), std::string::npos) << note;
      std::vector<float> got(Reference(wide).size());
      conv->Run(wide.input.data(), got.data(), nullptr);
      EXPECT_LE(MaxRelError(got, Reference(wide)), kTolerance) << IsaName(isa);
    }
  }
}

// The engine's default input-channel block takes a share of this core's L1 data cache that shrinks
// from all of it (no kernel kept) to two thirds (every kernel kept).
TEST(PatternConv, DefaultInputBlocksShareTheL1DataCacheByDensity) {
  const size_t l1 = L1DataCacheBytes();
  EXPECT_GE(l1, size_t{4} << 10);
  EXPECT_LE(l1, size_t{4} << 20);
  for (double keep : {0.28, 1.0}) {
    LayerOptions options;
    options.keep = keep;
    const RandomLayer l = MakeRandomLayer(MakeShape(1, 28, 28, 512, 32, 1, true), options, 3);
    const double density = double(std::count_if(l.plan.codes.begin(), l.plan.codes.end(),
                                                [](int8_t code) { return code >= 0; })) /
                           double(l.plan.codes.size());
    for (Isa isa : SupportedIsas()) {
      const KernelTuning used = CreateConv(l, isa, l.plan)->kernel_params();
      const kernels::KernelSet* set = KernelSetFor(isa);
      const kernels::Variant* variant = nullptr;
      for (int v = 0; v < set->num_variants; ++v)
        if (used.variant == set->variants[v].name) variant = &set->variants[v];
      ASSERT_NE(variant, nullptr) << used.variant;
      const ptrdiff_t block_floats = MakeGeometry(l.shape, *variant, set->lanes).channel_stride;
      const double share = 1.0 - density / 3.0;
      const int64_t expected =
          std::max<int64_t>(1, int64_t(size_t(share * double(l1) / sizeof(float)) / block_floats));
      EXPECT_EQ(used.params.at("tile_ic"), expected)
          << IsaName(isa) << " " << used.variant << " keep " << keep;
      if (keep == 1.0) {
        EXPECT_NEAR(density, 1.0, 1e-12);
        EXPECT_LT(expected * block_floats * sizeof(float), 0.7 * double(l1));
      }
    }
  }
}

TEST(PatternConv, TuningCandidatesAreNamedAndDescribed) {
  const ConvShape s = MakeShape(1, 12, 14, 20, 24, 1, true);
  for (Isa isa : SupportedIsas()) {
    const auto candidates = TuningCandidates(s, isa);
    ASSERT_FALSE(candidates.empty());
    const std::vector<std::string> own = VariantNames(isa);
    for (const auto& tuned : candidates) {
      EXPECT_NE(std::find(own.begin(), own.end(), tuned.variant), own.end()) << tuned.variant;
      EXPECT_FALSE(tuned.claim.has_value());
      EXPECT_EQ(tuned.params.count("tile_oc"), 1u);
      EXPECT_EQ(tuned.params.count("tile_ic"), 1u);
    }
    const std::string text = DescribeTuning(candidates[0], isa);
    EXPECT_EQ(text.rfind(std::string(IsaName(isa)) + " variant=" + candidates[0].variant + " ", 0),
              0u)
        << text;
  }
  EXPECT_EQ(DescribeTuning(KernelTuning{false, "r8v2", {{"tile_ic", 4}, {"tile_oc", 16}}},
                           Isa::kScalar),
            "scalar claim=0 variant=r8v2 tile_ic=4 tile_oc=16");
  EXPECT_EQ(DescribeTuning(KernelTuning{}, Isa::kNeon), "neon");
}

TEST(Isa, VariantNamesAreStableAndUnique) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    const std::vector<std::string> names = VariantNames(isa);
    const kernels::KernelSet* set = CompiledKernelSetFor(isa);
    ASSERT_EQ(names.size(), set != nullptr ? size_t(set->num_variants) : 0u);
    for (size_t i = 0; i < names.size(); ++i) {
      EXPECT_EQ(names[i], set->variants[i].name);
      EXPECT_EQ(std::count(names.begin(), names.end(), names[i]), 1) << names[i];
    }
  }
  // Version 1 plans name variants by their index: the first ones must keep their places.
  const std::vector<std::string> avx2 = VariantNames(Isa::kAvx2);
  if (!avx2.empty()) {
    EXPECT_EQ(avx2.at(0), "r4v2-pattern");
    EXPECT_EQ(avx2.at(1), "r4v2");
  }
}

TEST(Isa, StableCodes) {
  // Stored in version 1 tuned plans: these numbers must never change.
  EXPECT_EQ(IsaCode(Isa::kScalar), 0);
  EXPECT_EQ(IsaCode(Isa::kAvx2), 1);
  EXPECT_EQ(IsaCode(Isa::kAvx512), 2);
  EXPECT_EQ(IsaCode(Isa::kNeon), 3);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    Isa back;
    ASSERT_TRUE(IsaFromCode(IsaCode(isa), &back));
    EXPECT_EQ(back, isa);
  }
  Isa unused;
  EXPECT_FALSE(IsaFromCode(4, &unused));
  EXPECT_FALSE(IsaFromCode(-1, &unused));
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
      pool.ReleaseWorkers();  // sleeping workers wake for the next job
    }
  }
}

// A pool of 2 runs a ParallelFor on 2 distinct threads: each item waits (bounded, so a broken pool
// fails instead of hanging) until both threads have arrived, which a single thread never does.
TEST(ThreadPool, TwoThreadsBothTakeWork) {
  struct Rendezvous {
    std::mutex mu;
    std::condition_variable arrived;
    std::set<std::thread::id> threads;
    bool gave_up = false;
  } r;
  ThreadPool pool(2);
  pool.ReleaseWorkers();
  pool.ParallelFor(
      2,
      [](void* ctx, size_t) {
        auto& r = *static_cast<Rendezvous*>(ctx);
        std::unique_lock<std::mutex> lock(r.mu);
        r.threads.insert(std::this_thread::get_id());
        r.arrived.notify_all();
        if (!r.arrived.wait_for(lock, std::chrono::seconds(60), [&] { return r.threads.size() >= 2; }))
          r.gave_up = true;
      },
      &r);
  EXPECT_FALSE(r.gave_up) << "only one thread ever ran an item";
  EXPECT_EQ(r.threads.size(), 2u);
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
