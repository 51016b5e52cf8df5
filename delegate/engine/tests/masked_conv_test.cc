// Semi-structured activation sparsity (PatternPlan::pixel_mask): the output must be ReferenceConv's
// times the mask, on the gathered path (only the active units computed) and on the normal path
// (the tiles with a kept pixel computed, their masked pixels zeroed), on every instruction set this
// CPU runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "pattern_conv.h"
#include "tests/test_util.h"

namespace tfpconv {
namespace {

using testing::ApplyPixelMask;
using testing::LayerOptions;
using testing::MakeRandomLayer;
using testing::MakeShape;
using testing::MaxRelError;
using testing::RandomLayer;
using testing::RandomUnitMask;

constexpr double kTolerance = 1e-4;

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon})
    if (IsaSupported(isa)) out.push_back(isa);
  return out;
}

std::vector<float> Reference(const RandomLayer& l) {
  const ConvShape& s = l.shape;
  std::vector<float> out(size_t(s.batch) * s.out_h * s.out_w * s.out_c);
  ReferenceConv(s, l.weights.data(), l.bias.empty() ? nullptr : l.bias.data(), l.input.data(),
                out.data());
  return out;
}

std::unique_ptr<PatternConv> Create(const RandomLayer& l, const PatternPlan& plan, Isa isa,
                                    std::string* error, std::string* note = nullptr) {
  return PatternConv::Create(l.shape, l.weights.data(), l.bias.empty() ? nullptr : l.bias.data(),
                             plan, isa, error, note);
}

// Runs into an output of NaN, so any pixel the engine leaves unwritten fails the comparison.
std::vector<float> RunConv(const PatternConv& conv, const RandomLayer& l, ThreadPool* pool) {
  const ConvShape& s = l.shape;
  std::vector<float> out(size_t(s.batch) * s.out_h * s.out_w * s.out_c,
                         std::numeric_limits<float>::quiet_NaN());
  conv.Run(l.input.data(), out.data(), pool);
  return out;
}

// 0.0f in every channel of every masked pixel, the reference elsewhere.
void ExpectMaskedOutput(const RandomLayer& l, const std::vector<uint8_t>& mask,
                        const std::vector<float>& reference, const std::vector<float>& got) {
  const ConvShape& s = l.shape;
  std::vector<float> want = reference;
  ApplyPixelMask(s, mask, &want);
  EXPECT_LE(MaxRelError(got, want), kTolerance);
  const size_t pixels = size_t(s.out_h) * s.out_w;
  for (size_t p = 0; p < size_t(s.batch) * pixels; ++p) {
    if (mask[p % pixels] != 0) continue;
    for (int o = 0; o < s.out_c; ++o)
      ASSERT_EQ(got[p * s.out_c + o], 0.0f) << "masked pixel " << p << " channel " << o;
  }
}

// gather: -1 the engine decides, 0 / 1 forced through the tuning (KernelTuning "gather").
void CheckMasked(const RandomLayer& l, const std::vector<float>& reference,
                 const std::vector<uint8_t>& mask, Isa isa, int gather, ThreadPool* pool2) {
  PatternPlan plan = l.plan;
  plan.pixel_mask = mask;
  if (gather >= 0) plan.tuning.params["gather"] = gather;
  std::string error, note;
  auto conv = Create(l, plan, isa, &error, &note);
  ASSERT_NE(conv, nullptr) << error;
  EXPECT_EQ(note, "");
  if (gather >= 0) {
    EXPECT_EQ(conv->gathers_units(), gather == 1);
  }
  EXPECT_EQ(conv->kernel_params().params.at("gather"), conv->gathers_units() ? 1 : 0);
  SCOPED_TRACE(DescribeTuning(conv->kernel_params(), isa));
  const std::vector<float> one = RunConv(*conv, l, nullptr);
  ExpectMaskedOutput(l, mask, reference, one);
  // Two threads (split tiles when there are few) compute the same sums; a second Run reuses the
  // buffers of the first.
  EXPECT_TRUE(RunConv(*conv, l, pool2) == one);
  EXPECT_TRUE(RunConv(*conv, l, nullptr) == one);
}

struct MaskedLayer {
  int h, w, in_c, out_c, stride;
  bool same, bias, relu;
};

// Output widths 7, 14, 28, 33, 56 (none a multiple of 16 but 56's first units), strides 1 and 2,
// odd channel counts, with and without bias and a fused ReLU.
const MaskedLayer kLayers[] = {
    {9, 7, 19, 23, 1, true, true, false},    // 9x7: less than a unit per row
    {13, 28, 19, 37, 2, true, false, true},  // 7x14
    {6, 28, 21, 17, 1, true, true, true},    // 6x28: a unit and a short one
    {5, 33, 13, 21, 1, true, false, false},  // 5x33: two units and one pixel
    {10, 66, 17, 19, 2, true, true, true},   // 5x33
    {4, 56, 11, 35, 1, true, true, false},   // 4x56
    {9, 113, 15, 13, 2, false, false, true}, // VALID: 4x56
};

// All ones, all zeros, random units, units with a single 0 and a single 1, random pixels.
std::vector<std::pair<std::string, std::vector<uint8_t>>> Masks(const ConvShape& s, uint32_t seed) {
  const size_t pixels = size_t(s.out_h) * s.out_w;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> masks;
  masks.emplace_back("ones", std::vector<uint8_t>(pixels, 1));
  masks.emplace_back("zeros", std::vector<uint8_t>(pixels, 0));
  masks.emplace_back("units 0.3", RandomUnitMask(s, 0.3, seed));
  masks.emplace_back("tile units 0.3", RandomUnitMask(s, 0.3, seed, ActivationUnitRows(s.out_h)));
  std::vector<uint8_t> partial = RandomUnitMask(s, 0.3, seed + 1);
  size_t first = 0, last = pixels - 1;
  while (first < pixels && partial[first] == 0) ++first;
  while (last > first && partial[last] == 0) --last;
  if (first < pixels) {
    // One 0 inside the first active unit; the last active unit keeps only its last 1.
    partial[std::min(first + 5, size_t(first / s.out_w + 1) * s.out_w - 1)] = 0;
    const size_t unit_begin = last / s.out_w * s.out_w +
                              (last % s.out_w) / kActivationUnitPixels * kActivationUnitPixels;
    for (size_t p = unit_begin; p < last; ++p) partial[p] = 0;
    partial[last] = 1;
  }
  masks.emplace_back("partial units", partial);
  std::mt19937 rng(seed + 2);
  std::vector<uint8_t> pixel_mask(pixels);
  for (uint8_t& f : pixel_mask) f = uint8_t(rng() % 2);
  masks.emplace_back("random pixels", pixel_mask);
  return masks;
}

RandomLayer MakeLayer(const MaskedLayer& m, uint32_t seed) {
  ConvShape s = MakeShape(2, m.h, m.w, m.in_c, m.out_c, m.stride, m.same);
  if (m.relu) s.act_min = 0.0f;
  LayerOptions opt;
  opt.keep = 0.4;
  opt.bias = m.bias;
  opt.groups = 3;
  return MakeRandomLayer(s, opt, seed);
}

TEST(MaskedConv, ReferenceTimesMaskOnEveryPath) {
  ThreadPool pool2(2);
  uint32_t seed = 100;
  for (const MaskedLayer& m : kLayers) {
    const RandomLayer l = MakeLayer(m, ++seed);
    const std::vector<float> reference = Reference(l);
    const ConvShape& s = l.shape;
    for (const auto& [mask_name, mask] : Masks(s, seed)) {
      for (Isa isa : SupportedIsas()) {
        for (int gather : {-1, 0, 1}) {
          SCOPED_TRACE(std::string(IsaName(isa)) + " out " + std::to_string(s.out_h) + "x" +
                       std::to_string(s.out_w) + " stride " + std::to_string(s.stride_h) +
                       ", mask " + mask_name + ", gather " + std::to_string(gather));
          CheckMasked(l, reference, mask, isa, gather, &pool2);
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  }
}

// Mixed and large strides and unusual padding: a gathered unit's planes start at any input row
// and column.
TEST(MaskedConv, OtherStridesAndPadding) {
  ThreadPool pool2(2);
  const int strides[][2] = {{1, 2}, {2, 1}, {3, 3}};
  uint32_t seed = 300;
  for (const auto& st : strides) {
    const ConvShape s = testing::MakeOddlyPaddedShape(2, 13, 41, 7, 18, st[0], st[1]);
    const RandomLayer l = MakeRandomLayer(s, LayerOptions{}, ++seed);
    const std::vector<float> reference = Reference(l);
    for (Isa isa : SupportedIsas()) {
      for (int gather : {0, 1}) {
        SCOPED_TRACE(std::string(IsaName(isa)) + " stride " + std::to_string(st[0]) + "," +
                     std::to_string(st[1]) + ", gather " + std::to_string(gather));
        CheckMasked(l, reference, RandomUnitMask(s, 0.3, seed), isa, gather, &pool2);
      }
    }
  }
}

// Masks of whole trained units (ActivationUnitRows x kActivationUnitPixels) run the normal tiles,
// which skip every masked unit: each instruction set has a variant whose tiles divide the unit, on
// maps with units of 8 rows (64x64) and 4 rows (28x40, 14x14).
TEST(MaskedConv, SkipsWholeUnitsOnTheNormalTiles) {
  EXPECT_EQ(ActivationUnitRows(224), 8);
  EXPECT_EQ(ActivationUnitRows(56), 8);
  EXPECT_EQ(ActivationUnitRows(55), 4);
  EXPECT_EQ(ActivationUnitRows(14), 4);
  EXPECT_EQ(ActivationUnitRows(13), 1);
  EXPECT_EQ(ActivationUnitRows(1), 1);
  for (const auto& [h, w] : {std::pair{64, 64}, std::pair{28, 40}, std::pair{14, 14}}) {
    const RandomLayer l = MakeRandomLayer(MakeShape(1, h, w, 32, 48, 1, true), {}, 12);
    const std::vector<float> reference = Reference(l);
    for (Isa isa : SupportedIsas()) {
      for (double masked : {0.0, 0.3, 0.7, 1.0}) {
        SCOPED_TRACE(std::string(IsaName(isa)) + ", " + std::to_string(h) + "x" + std::to_string(w) +
                     ", masked " + std::to_string(masked));
        PatternPlan plan = l.plan;
        plan.pixel_mask = RandomUnitMask(l.shape, masked, 3, ActivationUnitRows(h));
        std::string error;
        auto conv = Create(l, plan, isa, &error);
        ASSERT_NE(conv, nullptr) << error;
        EXPECT_FALSE(conv->gathers_units());
        const double kept = double(std::count(plan.pixel_mask.begin(), plan.pixel_mask.end(), 1)) /
                            double(plan.pixel_mask.size());
        EXPECT_DOUBLE_EQ(conv->computed_fraction(), kept);
        ExpectMaskedOutput(l, plan.pixel_mask, reference, RunConv(*conv, l, nullptr));
      }
    }
  }
}

// An RGB input layer is left to TFLite, with its mask too, unless the tuner measured it faster here.
TEST(MaskedConv, LeavesAFewChannelLayerToTfliteUnlessTuned) {
  const RandomLayer l = MakeRandomLayer(MakeShape(1, 32, 32, 3, 16, 1, true), {}, 13);
  PatternPlan plan = l.plan;
  std::string reason;
  EXPECT_FALSE(WorthClaiming(l.shape, plan, &reason));
  EXPECT_NE(reason.find("3 input channel(s)"), std::string::npos) << reason;
  plan.pixel_mask = RandomUnitMask(l.shape, 0.3, 1, ActivationUnitRows(32));
  reason.clear();
  EXPECT_FALSE(WorthClaiming(l.shape, plan, &reason));
  EXPECT_NE(reason.find("tune=True"), std::string::npos) << reason;
  plan.tuning.claim = true;  // a tuned verdict decides
  reason.clear();
  EXPECT_TRUE(WorthClaiming(l.shape, plan, &reason)) << reason;
  EXPECT_TRUE(reason.empty()) << reason;
}

// Few gathered tiles and several output-channel chunks: with threads, items of one tile share its
// accumulators and the last one stores the units and zeros the masked pixels.
TEST(MaskedConv, SplitGatheredTiles) {
  LayerOptions opt;
  opt.groups = 5;
  const RandomLayer l = MakeRandomLayer(MakeShape(2, 6, 20, 9, 150, 1, true), opt, 77);
  const std::vector<float> reference = Reference(l);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    for (Isa isa : SupportedIsas()) {
      SCOPED_TRACE(std::string(IsaName(isa)) + ", " + std::to_string(threads) + " threads");
      PatternPlan plan = l.plan;
      plan.pixel_mask = RandomUnitMask(l.shape, 0.3, 5);
      plan.tuning.params["gather"] = 1;
      std::string error;
      auto conv = Create(l, plan, isa, &error);
      ASSERT_NE(conv, nullptr) << error;
      ASSERT_TRUE(conv->gathers_units());
      const std::vector<float> got = RunConv(*conv, l, &pool);
      ExpectMaskedOutput(l, plan.pixel_mask, reference, got);
      EXPECT_TRUE(RunConv(*conv, l, nullptr) == got);
    }
  }
}

// No kernel kept: the clamped bias on the active pixels, 0 on the masked ones.
TEST(MaskedConv, FullyPrunedLayer) {
  ConvShape s = MakeShape(2, 5, 40, 6, 20, 1, true);
  s.act_min = -0.25f;
  s.act_max = 0.5f;
  LayerOptions opt;
  opt.keep = 0.0;
  const RandomLayer l = MakeRandomLayer(s, opt, 8);
  const std::vector<float> reference = Reference(l);
  ThreadPool pool2(2);
  for (Isa isa : SupportedIsas())
    for (int gather : {0, 1}) CheckMasked(l, reference, RandomUnitMask(s, 0.3, 9), isa, gather, &pool2);
}

// The cost model gathers a wide layer's units when 30% are masked, and keeps the normal tiles
// when nothing is masked or a narrow layer's units would waste most of their lanes. (48 wide:
// whole units; at 56, 8-column AVX2 tiles waste no lanes where the last unit of a row wastes half,
// and the model finds gathering 30% even.)
TEST(MaskedConv, GathersWhereItPays) {
  const RandomLayer wide = MakeRandomLayer(MakeShape(1, 48, 48, 128, 128, 1, true), {}, 3);
  const RandomLayer narrow = MakeRandomLayer(MakeShape(1, 7, 7, 256, 256, 1, true), {}, 4);
  for (Isa isa : SupportedIsas()) {
    SCOPED_TRACE(IsaName(isa));
    std::string error;
    const auto skips = [&](const RandomLayer& l, std::vector<uint8_t> mask) {
      PatternPlan plan = l.plan;
      plan.pixel_mask = std::move(mask);
      auto conv = Create(l, plan, isa, &error);
      EXPECT_NE(conv, nullptr) << error;
      return conv != nullptr && conv->gathers_units();
    };
    const size_t pixels = size_t(48) * 48;
    EXPECT_TRUE(skips(wide, RandomUnitMask(wide.shape, 0.3, 1)));
    EXPECT_TRUE(skips(wide, RandomUnitMask(wide.shape, 0.6, 1)));
    EXPECT_FALSE(skips(wide, std::vector<uint8_t>(pixels, 1)));
    std::vector<uint8_t> pixel_zeros(pixels, 1);  // a 0 in every unit: nothing to skip
    for (size_t p = 0; p < pixels; p += 8) pixel_zeros[p] = 0;
    EXPECT_FALSE(skips(wide, pixel_zeros));
    EXPECT_FALSE(skips(narrow, RandomUnitMask(narrow.shape, 0.3, 2)));

    auto plain = Create(wide, wide.plan, isa, &error);
    ASSERT_NE(plain, nullptr) << error;
    EXPECT_FALSE(plain->gathers_units());
    EXPECT_EQ(plain->kernel_params().params.count("gather"), 0u);
  }
}

TEST(MaskedConv, RejectsInvalidMasks) {
  const RandomLayer l = MakeRandomLayer(MakeShape(1, 6, 9, 4, 5, 1, true), {}, 4);
  const size_t pixels = size_t(6) * 9;
  for (size_t size : {pixels - 1, pixels + 1, size_t(1)}) {
    PatternPlan plan = l.plan;
    plan.pixel_mask.assign(size, 1);
    std::string error;
    EXPECT_EQ(Create(l, plan, Isa::kScalar, &error), nullptr) << size;
    EXPECT_NE(error.find("pixel_mask has " + std::to_string(size) + " flags, expected out_h * out_w = " +
                         std::to_string(pixels)),
              std::string::npos)
        << error;
  }
  PatternPlan plan = l.plan;
  plan.pixel_mask.assign(pixels, 1);
  plan.pixel_mask[7] = 2;
  std::string error;
  EXPECT_EQ(Create(l, plan, Isa::kScalar, &error), nullptr);
  EXPECT_NE(error.find("pixel_mask flag 2 at pixel 7 is not 0 or 1"), std::string::npos) << error;
  plan.pixel_mask[7] = 0;
  EXPECT_NE(Create(l, plan, Isa::kScalar, &error), nullptr) << error;
}

// A tuned variant and tiles apply to the normal path; the gathered path picks its own. A tuned
// "gather" out of range runs the defaults with a note.
TEST(MaskedConv, TuningAppliesToTheNormalPath) {
  const RandomLayer l = MakeRandomLayer(MakeShape(1, 12, 40, 16, 24, 1, true), {}, 6);
  for (Isa isa : SupportedIsas()) {
    SCOPED_TRACE(IsaName(isa));
    const std::vector<std::string> names = VariantNames(isa);
    PatternPlan plan = l.plan;
    plan.pixel_mask = RandomUnitMask(l.shape, 0.3, 1);
    plan.tuning = KernelTuning{std::nullopt, names.at(1), {{"tile_oc", 8}, {"tile_ic", 5}}};
    std::string error, note;
    plan.tuning.params["gather"] = 0;
    auto normal = Create(l, plan, isa, &error, &note);
    ASSERT_NE(normal, nullptr) << error;
    EXPECT_EQ(note, "");
    EXPECT_EQ(normal->kernel_params().variant, names.at(1));
    EXPECT_EQ(normal->kernel_params().params.at("tile_oc"), 8);

    plan.tuning.params["gather"] = 1;
    auto gathered = Create(l, plan, isa, &error, &note);
    ASSERT_NE(gathered, nullptr) << error;
    EXPECT_EQ(note, "");
    EXPECT_TRUE(gathered->gathers_units());
    EXPECT_NE(gathered->kernel_params().params.at("tile_oc"), 8);

    plan.tuning.params["gather"] = 2;
    auto defaults = Create(l, plan, isa, &error, &note);
    ASSERT_NE(defaults, nullptr) << error;
    EXPECT_NE(note.find("tuned gather 2 is not 0 or 1"), std::string::npos) << note;

    // Without a mask a tuned gather changes nothing.
    plan.pixel_mask.clear();
    plan.tuning.params["gather"] = 1;
    auto unmasked = Create(l, plan, isa, &error, &note);
    ASSERT_NE(unmasked, nullptr) << error;
    EXPECT_FALSE(unmasked->gathers_units());
    EXPECT_EQ(unmasked->kernel_params().variant, names.at(1));
    EXPECT_EQ(unmasked->kernel_params().params.count("gather"), 0u);
    EXPECT_LE(MaxRelError(RunConv(*unmasked, l, nullptr), Reference(l)), kTolerance);
  }
}

}  // namespace
}  // namespace tfpconv
