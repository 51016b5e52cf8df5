#include "plan_fuzz_target.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "conv_geometry.h"
#include "pattern_conv.h"
#include "plan_reader.h"
#include "test_plans.h"
#include "weight_check.h"

namespace tfpconv {
namespace testing {
namespace {

// Bounds on the layers run per input, so every input stays cheap.
constexpr size_t kMaxKernels = 4096;         // out_c * in_c
constexpr double kMaxMultiplyAdds = 1.5e6;   // of the dense reference
constexpr double kTolerance = 1e-4;          // relative to the largest reference output

[[noreturn]] void Fail(const PlannedOp& conv, const ConvShape& s, Isa isa, const std::string& what) {
  std::fprintf(stderr,
               "plan fuzz: operator %u, kernel %dx3x3x%d, input %dx%d stride %dx%d on %s: %s\n",
               conv.operator_index, s.out_c, s.in_c, s.in_h, s.in_w, s.stride_h, s.stride_w,
               IsaName(isa), what.c_str());
  std::abort();
}

// A small layer of the entry's kernel shape; its geometry (1..9 square-ish input, stride, padding,
// activation) comes from the entry's bytes, so the fuzzer explores it too.
bool SmallLayer(const PlannedOp& conv, ConvShape* shape) {
  uint32_t pick = conv.weight_checksum ^ (conv.operator_index * 2654435761u);
  const auto take = [&](uint32_t n) {
    const uint32_t v = pick % n;
    pick /= n;
    return static_cast<int>(v);
  };
  int h = 1 + take(9), w = 1 + take(9);
  tfl::ConvParams params{};
  params.stride_height = params.stride_width = 1 + take(2);
  params.padding = take(2) == 0 || h < 3 || w < 3 ? tfl::kPaddingSame : tfl::kPaddingValid;
  const tfl::FusedActivation activations[] = {tfl::kActNone, tfl::kActRelu, tfl::kActRelu6};
  params.activation = activations[take(3)];
  params.dilation_height_factor = params.dilation_width_factor = 1;
  const double kernels = double(conv.out_channels) * conv.in_channels;
  if (kernels * 9 * h * w > kMaxMultiplyAdds) h = w = 3;
  std::string error;
  return ResolveConvShape(params, 1, h, w, conv.in_channels, conv.out_channels, shape, &error);
}

// OHWI weights that follow the entry's codes: a non-zero at every kept tap, zero elsewhere.
std::vector<float> WeightsFollowingPlan(const PlannedOp& conv, std::mt19937* rng) {
  const int out_c = conv.out_channels, in_c = conv.in_channels;
  std::uniform_real_distribution<float> value(0.25f, 1.0f);
  const float scale = 1.0f / std::sqrt(4.0f * float(in_c));
  std::vector<float> weights(size_t(out_c) * 9 * in_c, 0.0f);
  for (int o = 0; o < out_c; ++o) {
    for (int c = 0; c < in_c; ++c) {
      const int code = conv.pattern.codes[size_t(o) * in_c + c];
      if (code < 0) continue;
      for (int tap = 0; tap < 9; ++tap) {
        const float sign = ((*rng)() & 1) ? 1.0f : -1.0f;
        if ((conv.pattern.library[code] >> tap) & 1)
          weights[(size_t(o) * 9 + tap) * in_c + c] = sign * value(*rng) * scale;
      }
    }
  }
  return weights;
}

// Runs an entry the reader accepted on a small layer, on the scalar and the best instruction set,
// against ReferenceConv. A plan the reader accepts must be run exactly: anything else aborts.
void RunAgainstReference(const PlannedOp& conv) {
  ConvShape shape;
  if (size_t(conv.out_channels) * conv.in_channels > kMaxKernels || !SmallLayer(conv, &shape)) return;
  std::mt19937 rng(conv.weight_checksum);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  const std::vector<float> weights = WeightsFollowingPlan(conv, &rng);
  std::vector<float> bias(size_t(shape.out_c)), input(size_t(shape.in_h) * shape.in_w * shape.in_c);
  for (float& b : bias) b = value(rng);
  for (float& x : input) x = value(rng);
  const size_t outputs = size_t(shape.out_h) * shape.out_w * shape.out_c;
  std::vector<float> want(outputs), got(outputs);
  ReferenceConv(shape, weights.data(), bias.data(), input.data(), want.data());
  float scale = 1.0f;
  for (float v : want) scale = std::max(scale, std::fabs(v));

  for (Isa isa : {Isa::kScalar, BestIsa()}) {
    std::string error;
    PatternPlan pattern = conv.pattern;
    pattern.tuning = KernelTuningFor(conv, isa);  // as the delegate applies it
    auto engine = PatternConv::Create(shape, weights.data(), bias.data(), pattern, isa, &error);
    if (engine == nullptr)
      Fail(conv, shape, isa, "the engine rejected a plan the reader accepted: " + error);
    std::fill(got.begin(), got.end(), -12345.0f);
    engine->Run(input.data(), got.data(), nullptr);
    for (size_t i = 0; i < outputs; ++i) {
      if (!(std::fabs(got[i] - want[i]) <= kTolerance * scale)) {
        Fail(conv, shape, isa,
             "output " + std::to_string(i) + " is " + std::to_string(got[i]) + ", ReferenceConv " +
                 std::to_string(want[i]));
      }
    }
  }
}

}  // namespace

int FuzzPlanReader(const uint8_t* data, size_t size) {
  ModelPlan plan;
  std::string error;
  if (!ReadPlan(data, size, &plan, &error)) return 0;
  int ran = 0;
  for (const PlannedOp& op : plan.ops) {
    std::string why;
    const PlannedOp* found = FindPlannedOp(plan, op.subgraph_index, op.operator_index, &why);
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) TuningFor(op, isa);
    if (!op.usable() || op.kind != PlannedOpKind::kPatternConv || op.weight_bytes > (1u << 22))
      continue;
    std::vector<float> zeros(op.weight_bytes / sizeof(float));
    CheckWeightsAgainstPlan(op, zeros.data(), op.weight_bytes, &error);
    if (found != &op) continue;  // not the entry the delegate would use
    RunAgainstReference(op);
    ++ran;
  }
  return ran;
}

std::vector<std::vector<uint8_t>> PlanSeeds() {
  const PrunedFilter small = MakePrunedFilter(3, 2, 0.3, 1);
  const PrunedFilter wide = MakePrunedFilter(9, 4, 0.6, 2);
  const PrunedFilter deep = MakePrunedFilter(20, 17, 0.5, 3);
  ConvPlanSpec tuned = SpecFor(deep, 4, 9);
  const std::vector<std::string> variants = VariantNames(BestIsa());
  tuned.tunings = {{IsaName(BestIsa()), "test cpu", true, variants.size() > 2 ? variants[2] : "",
                    {{"tile_oc", 8}, {"tile_ic", 5}}},
                   {"neon", "", false, "r8v2", {{"tile_oc", 16}}}};
  ConvPlanSpec tuned_v1 = SpecFor(deep, 4, 9);
  tuned_v1.tuned = {{"claim", 1}, {"isa", IsaCode(BestIsa())}, {"variant", 2}, {"tile_oc", 8},
                    {"tile_ic", 5}};
  ConvPlanSpec future = SpecFor(wide, 3, 6);
  future.requires_features.push_back({"unified_weights", "0.3.0"});
  return {
      BuildPlan({SpecFor(small, 0, 1)}),
      BuildPlan({SpecFor(small, 0, 1), SpecFor(wide, 2, 5)}, {{1, "not 3x3"}}),
      BuildPlan({}, {{0, "no pattern"}}),
      BuildPlan({tuned}),
      BuildPlan({tuned_v1, SpecFor(small, 0, 1)}, {{1, "not 3x3"}}, 1),
      BuildPlan({future, SpecFor(small, 0, 1)}),
  };
}

}  // namespace testing
}  // namespace tfpconv
