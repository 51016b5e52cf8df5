#include "plan_reader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <utility>

#include "crc32.h"
#include "test_plans.h"
#include "weight_check.h"

namespace tfpconv {
namespace {

using testing::BuildPlan;
using testing::ConvPlanSpec;
using testing::MakePrunedFilter;
using testing::PrunedFilter;
using testing::SpecFor;

class PlanReaderTest : public ::testing::Test {
 protected:
  PlanReaderTest()
      : filter_(MakePrunedFilter(5, 3, 0.3, 1)), spec_(SpecFor(filter_, 2, 7)) {}

  // Reads a one-conv plan built from spec_ after `edit`; returns the conv's error.
  template <typename Edit>
  std::string ConvError(Edit edit) {
    ConvPlanSpec spec = spec_;
    edit(&spec);
    const std::vector<uint8_t> bytes = BuildPlan({spec});
    ModelPlan plan;
    std::string error;
    EXPECT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error)) << error;
    EXPECT_EQ(plan.ops.size(), 1u);
    return plan.ops.empty() ? "missing" : plan.ops[0].error;
  }

  PrunedFilter filter_;
  ConvPlanSpec spec_;
};

TEST_F(PlanReaderTest, ReadsAValidPlan) {
  ConvPlanSpec spec = spec_;
  spec.tunings = {{"avx2", "AMD EPYC", false, "r8v1", {{"tile_oc", 8}, {"unknown_key", 1}}},
                  {"riscv_v", "", true, "x", {}}};  // an unknown instruction set: ignored
  const std::vector<uint8_t> bytes = BuildPlan({spec}, {{4, "1x1 kernel"}});
  ModelPlan plan;
  std::string error;
  ASSERT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error)) << error;
  EXPECT_EQ(plan.schema_version, 2u);
  EXPECT_EQ(plan.producer, "tfpconv tests");
  ASSERT_EQ(plan.ops.size(), 1u);
  const PlannedOp& conv = plan.ops[0];
  EXPECT_EQ(conv.error, "");
  EXPECT_TRUE(conv.usable());
  EXPECT_EQ(conv.kind, PlannedOpKind::kPatternConv);
  ASSERT_EQ(conv.required_features.size(), 1u);
  EXPECT_EQ(conv.required_features[0].name, "pattern_conv");
  EXPECT_EQ(conv.operator_index, 2u);
  EXPECT_EQ(conv.weight_tensor_index, 7);
  EXPECT_EQ(conv.out_channels, 5);
  EXPECT_EQ(conv.in_channels, 3);
  EXPECT_EQ(conv.pattern.codes, filter_.codes);
  EXPECT_EQ(conv.pattern.library, filter_.library);
  EXPECT_EQ(conv.pattern.filter_order, spec_.filter_order);
  EXPECT_EQ(conv.pattern.group_offsets, spec_.group_offsets);
  ASSERT_EQ(conv.tunings.size(), 1u);
  EXPECT_EQ(conv.tunings[0].isa, "avx2");
  EXPECT_EQ(conv.tunings[0].cpu, "AMD EPYC");
  EXPECT_FALSE(conv.tunings[0].claim);
  EXPECT_EQ(conv.tunings[0].variant, "r8v1");
  EXPECT_EQ(conv.tunings[0].params.at("tile_oc"), 8);
  EXPECT_EQ(TuningFor(conv, Isa::kAvx2), &conv.tunings[0]);
  EXPECT_EQ(TuningFor(conv, Isa::kNeon), nullptr);
  EXPECT_FALSE(KernelTuningFor(conv, Isa::kNeon).claim.has_value());
  EXPECT_EQ(KernelTuningFor(conv, Isa::kAvx2).variant, "r8v1");

  std::string why;
  EXPECT_EQ(FindPlannedOp(plan, 0, 2, &why), &plan.ops[0]);
  EXPECT_EQ(FindPlannedOp(plan, 0, 4, &why), nullptr);
  EXPECT_NE(why.find("1x1 kernel"), std::string::npos);
  EXPECT_EQ(FindPlannedOp(plan, 1, 2, &why), nullptr);

  EXPECT_TRUE(CheckWeightsAgainstPlan(conv, filter_.weights.data(), filter_.weights.size() * 4, &error))
      << error;
}

TEST_F(PlanReaderTest, ReadsFromAnUnalignedBuffer) {
  const std::vector<uint8_t> bytes = BuildPlan({spec_});
  std::vector<uint8_t> shifted(bytes.size() + 1);
  std::memcpy(shifted.data() + 1, bytes.data(), bytes.size());
  ModelPlan plan;
  std::string error;
  ASSERT_TRUE(ReadPlan(shifted.data() + 1, bytes.size(), &plan, &error)) << error;
  EXPECT_EQ(plan.ops.at(0).error, "");
}

TEST_F(PlanReaderTest, RejectsWhatIsNotAPlan) {
  ModelPlan plan;
  std::string error;
  EXPECT_FALSE(ReadPlan(nullptr, 0, &plan, &error));
  const char text[] = "definitely not a flatbuffer";
  EXPECT_FALSE(ReadPlan(text, sizeof(text), &plan, &error));
  const std::vector<uint8_t> no_identifier = BuildPlan({spec_}, {}, 1, false);
  EXPECT_FALSE(ReadPlan(no_identifier.data(), no_identifier.size(), &plan, &error));
  EXPECT_NE(error.find("identifier"), std::string::npos) << error;
  for (uint32_t version : {0u, 3u}) {
    const std::vector<uint8_t> other = BuildPlan({spec_}, {}, version);
    EXPECT_FALSE(ReadPlan(other.data(), other.size(), &plan, &error));
    EXPECT_NE(error.find("version " + std::to_string(version)), std::string::npos) << error;
    EXPECT_NE(error.find("convert the model again"), std::string::npos) << error;
    EXPECT_NE(error.find("update the delegate"), std::string::npos) << error;
  }
}

TEST_F(PlanReaderTest, EveryTruncationIsRejectedOrHarmless) {
  const std::vector<uint8_t> bytes = BuildPlan({spec_, SpecFor(filter_, 3, 9)});
  for (size_t size = 0; size < bytes.size(); ++size) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + size);
    ModelPlan plan;
    std::string error;
    if (!ReadPlan(prefix.data(), prefix.size(), &plan, &error)) continue;
    // Only the alignment padding after the first-written object (at the end) may go unnoticed.
    EXPECT_GT(size + 8, bytes.size()) << "size " << size;
    ASSERT_EQ(plan.ops.size(), 2u);
    for (const PlannedOp& op : plan.ops) EXPECT_TRUE(op.usable()) << op.error;
  }
}

TEST_F(PlanReaderTest, RandomCorruptionNeverCrashes) {
  const std::vector<uint8_t> bytes = BuildPlan({spec_});
  std::mt19937 rng(3);
  for (int round = 0; round < 3000; ++round) {
    std::vector<uint8_t> corrupt = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) corrupt[rng() % corrupt.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    ModelPlan plan;
    std::string error;
    if (!ReadPlan(corrupt.data(), corrupt.size(), &plan, &error)) continue;
    for (const PlannedOp& conv : plan.ops) {
      if (!conv.usable()) continue;
      // A usable entry is internally consistent: checking weights against it is safe.
      std::vector<float> zeros(conv.weight_bytes / sizeof(float));
      CheckWeightsAgainstPlan(conv, zeros.data(), conv.weight_bytes, &error);
    }
  }
}

TEST_F(PlanReaderTest, ReportsEachInconsistencyOfAConvPlan) {
  EXPECT_EQ(ConvError([](ConvPlanSpec*) {}), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->codes.pop_back(); }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->codes[0] = 8; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->codes[0] = -2; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->library[1] = 0x1F; }), "");  // 5 taps
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->library[1] = 0x0F; }), "");  // no centre
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->library[1] = 0x210; }), "");  // bit 9
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->library.clear(); }), "");  // codes now out of range
  EXPECT_EQ(ConvError([](ConvPlanSpec* s) {
              s->library.clear();
              for (int8_t& code : s->codes) code = -1;
            }),
            "");  // a fully pruned layer
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->filter_order[0] = 1; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->filter_order[0] = 5; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->filter_order.pop_back(); }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->group_offsets = {0, 3, 2, 5}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->group_offsets = {1, 5}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->group_offsets = {0, 4}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->group_offsets = {5}; }), "");
  // Equal neighbours (an empty group) are invalid too, as in the Python reader.
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->group_offsets = {0, 2, 2, 5}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->library[1] = s->library[0]; }), "");  // repeated
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->kind_type = 0; }), "");  // no kind
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->tunings = {{"", "", true, "", {}}}; }), "");
  // What is not an error: a tuning for an unknown instruction set, an unknown variant name.
  EXPECT_EQ(ConvError([](ConvPlanSpec* s) { s->tunings = {{"mips", "", true, "", {}}}; }), "");
  EXPECT_EQ(ConvError([](ConvPlanSpec* s) { s->tunings = {{"avx2", "", true, "r99v9", {}}}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->kernel_shape = {5, 5, 5, 3}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->kernel_shape = {5, 3, 3}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->kernel_shape = {-5, 3, 3, -3}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->weight_bytes += 4; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->weight_tensor_index = -1; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->checksum_kind = 3; }), "");
}

TEST_F(PlanReaderTest, DuplicateEntriesAreAmbiguous) {
  for (const std::vector<uint8_t>& bytes :
       {BuildPlan({spec_, spec_, SpecFor(filter_, 3, 9)}),
        BuildPlan({spec_, SpecFor(filter_, 3, 9)}, {{2, "also skipped"}})}) {
    ModelPlan plan;
    std::string error;
    ASSERT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error));
    for (const PlannedOp& op : plan.ops) {
      if (op.operator_index == 2) {
        EXPECT_NE(op.error.find("several"), std::string::npos) << op.error;
      } else {
        EXPECT_TRUE(op.usable()) << op.error;
      }
    }
  }
}

TEST_F(PlanReaderTest, WeightCheckCatchesStaleAndForeignWeights) {
  const std::vector<uint8_t> bytes = BuildPlan({spec_});
  ModelPlan plan;
  std::string error;
  ASSERT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error));
  PlannedOp conv = plan.ops.at(0);
  std::vector<float> weights = filter_.weights;
  const size_t size = weights.size() * sizeof(float);

  EXPECT_FALSE(CheckWeightsAgainstPlan(conv, weights.data(), size - 4, &error));
  EXPECT_NE(error.find("bytes"), std::string::npos);
  EXPECT_FALSE(CheckWeightsAgainstPlan(conv, nullptr, size, &error));

  weights[1] += 1.0f;  // a fine-tuned weight: same size, different checksum
  EXPECT_FALSE(CheckWeightsAgainstPlan(conv, weights.data(), size, &error));
  EXPECT_NE(error.find("checksum"), std::string::npos);

  // A non-zero outside a pattern, with a checksum that matches (a plan that lies).
  weights = filter_.weights;
  size_t outside = 0;
  for (int tap = 0; tap < 9; ++tap) {
    const int code = conv.pattern.codes[0];
    const unsigned mask = code < 0 ? 0u : conv.pattern.library[static_cast<size_t>(code)];
    if (!((mask >> tap) & 1u)) {
      outside = static_cast<size_t>(tap) * filter_.in_c;  // kernel (out 0, in 0)
      break;
    }
  }
  weights[outside] = 0.25f;
  conv.weight_checksum = Crc32(weights.data(), size);
  EXPECT_FALSE(CheckWeightsAgainstPlan(conv, weights.data(), size, &error));
  EXPECT_NE(error.find("outside its pattern"), std::string::npos) << error;
}


// tfpconv 0.1 plans (schema version 1, Plan.convs, integer tuned keys) still load, as pattern
// convolutions requiring "pattern_conv" with their tuned keys as one tuning.
TEST_F(PlanReaderTest, ReadsVersion1Plans) {
  ConvPlanSpec tagged = spec_;
  const std::vector<std::string> avx2 = VariantNames(Isa::kAvx2);
  tagged.tuned = {{"isa", 1}, {"claim", 0}, {"variant", 1}, {"tile_oc", 16}, {"tile_ic", 4}};
  ConvPlanSpec untagged = SpecFor(filter_, 3, 9);
  untagged.tuned = {{"claim", 1}, {"tile_oc", 8}, {"variant", 0}};
  ConvPlanSpec unknown_isa = SpecFor(filter_, 5, 11);
  unknown_isa.tuned = {{"isa", 9}, {"variant", 1}};
  const std::vector<uint8_t> bytes =
      BuildPlan({tagged, untagged, unknown_isa}, {{4, "1x1 kernel"}}, 1);
  ModelPlan plan;
  std::string error;
  ASSERT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error)) << error;
  EXPECT_EQ(plan.schema_version, 1u);
  ASSERT_EQ(plan.ops.size(), 3u);
  for (const PlannedOp& op : plan.ops) {
    EXPECT_TRUE(op.usable()) << op.error;
    EXPECT_EQ(op.kind, PlannedOpKind::kPatternConv);
    ASSERT_EQ(op.required_features.size(), 1u);
    EXPECT_EQ(op.required_features[0].name, "pattern_conv");
    EXPECT_EQ(op.pattern.codes, filter_.codes);
  }
  ASSERT_EQ(plan.ops[0].tunings.size(), 1u);
  const PlannedTuning& t = plan.ops[0].tunings[0];
  EXPECT_EQ(t.isa, "avx2");
  EXPECT_FALSE(t.claim);
  EXPECT_EQ(t.variant, avx2.size() > 1 ? avx2[1] : "");  // empty where avx2 is not compiled in
  EXPECT_EQ(t.params, (std::map<std::string, int64_t>{{"tile_ic", 4}, {"tile_oc", 16}}));
  EXPECT_EQ(TuningFor(plan.ops[0], Isa::kNeon), nullptr);
  // Untagged keys apply to every instruction set, without the (per-set) variant index.
  ASSERT_EQ(plan.ops[1].tunings.size(), 1u);
  EXPECT_EQ(plan.ops[1].tunings[0].isa, "");
  EXPECT_TRUE(plan.ops[1].tunings[0].claim);
  EXPECT_EQ(plan.ops[1].tunings[0].variant, "");
  EXPECT_EQ(TuningFor(plan.ops[1], Isa::kNeon), &plan.ops[1].tunings[0]);
  EXPECT_TRUE(plan.ops[2].tunings.empty());
  std::string why;
  EXPECT_EQ(FindPlannedOp(plan, 0, 4, &why), nullptr);
  EXPECT_NE(why.find("1x1 kernel"), std::string::npos);
}

// An operator that requires a feature this delegate lacks, or is of a kind it does not know, is
// declined (not invalid), naming the feature; the other operators stay usable.
TEST_F(PlanReaderTest, UnknownFeaturesAndKindsDeclineOnlyTheirOperator) {
  ConvPlanSpec future = SpecFor(filter_, 3, 9);
  future.requires_features.push_back({"unified_weights", "0.3.0"});
  future.codes.clear();  // whatever the data: it may follow rules this reader does not know
  ConvPlanSpec new_kind = SpecFor(filter_, 5, 11);
  new_kind.kind_type = 7;
  const std::vector<uint8_t> bytes = BuildPlan({spec_, future, new_kind});
  ModelPlan plan;
  std::string error;
  ASSERT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error)) << error;
  ASSERT_EQ(plan.ops.size(), 3u);
  EXPECT_TRUE(plan.ops[0].usable());
  EXPECT_EQ(plan.ops[1].error, "");
  EXPECT_EQ(plan.ops[1].missing_feature.name, "unified_weights");
  EXPECT_EQ(DescribeMissingFeature(plan.ops[1].missing_feature),
            "needs plan feature 'unified_weights' (tfpconv 0.3.0 or newer)");
  EXPECT_EQ(plan.ops[2].error, "");
  EXPECT_EQ(plan.ops[2].kind, PlannedOpKind::kUnknown);
  EXPECT_EQ(plan.ops[2].missing_feature.name, "kind_7");
  EXPECT_EQ(KnownPlanFeatures(),
            (std::vector<std::string>{"pattern_conv", "unified_fc", "dense_conv"}));
}

// -- unified weights: kind UnifiedFc, PatternConv.unified (tfpconv 0.3) ---------------------------
// The reader's rules for them are checked on the shared corpus (plan_corpus_test.cc, the same files
// as the Python reader); here: the weight check.

struct UnifiedFcCase {
  PlannedOp op;
  std::vector<float> weights;  // [out][in], following the states
};

// A usable unified FULLY_CONNECTED (or 1x1 CONV_2D) entry of out x in with random states and
// weights that follow them: unified blocks +-m (m = 0.25 + row / 8), pruned blocks +0 / -0, free
// blocks random.
UnifiedFcCase MakeUnifiedFc(int out, int in, int block_size, bool conv1x1, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  UnifiedFcCase c;
  c.op.kind = PlannedOpKind::kUnifiedFc;
  c.op.weight_tensor_index = 3;
  c.op.required_features.push_back({kUnifiedFcFeature, "0.3.0"});
  UnifiedFcPlan& plan = c.op.unified_fc;
  plan.out_features = out;
  plan.in_features = in;
  plan.block_size = block_size;
  plan.conv1x1 = conv1x1;
  c.weights.assign(static_cast<size_t>(out) * in, 0.0f);
  for (int o = 0; o < out; ++o) {
    for (int b = 0; b < plan.blocks(); ++b) {
      const uint8_t state = static_cast<uint8_t>(rng() % 3);
      plan.states.push_back(state);
      for (int i = b * block_size; i < std::min((b + 1) * block_size, in); ++i) {
        float& w = c.weights[static_cast<size_t>(o) * in + i];
        if (state == UnifiedFcPlan::kFree) w = value(rng);
        if (state == UnifiedFcPlan::kUnified) w = (rng() % 2 ? 1.0f : -1.0f) * (0.25f + o / 8.0f);
        if (state == UnifiedFcPlan::kPruned) w = rng() % 2 ? 0.0f : -0.0f;
      }
    }
  }
  c.op.weight_bytes = c.weights.size() * sizeof(float);
  c.op.weight_checksum = Crc32(c.weights.data(), c.op.weight_bytes);
  return c;
}

// The first (row, block) in `state` with at least `min_length` inputs, or (-1, -1).
std::pair<int, int> FindBlock(const UnifiedFcPlan& plan, uint8_t state, int min_length) {
  for (int o = 0; o < plan.out_features; ++o) {
    for (int b = 0; b < plan.blocks(); ++b) {
      const int length = std::min(plan.in_features, (b + 1) * plan.block_size) - b * plan.block_size;
      if (plan.states[static_cast<size_t>(o) * plan.blocks() + b] == state && length >= min_length) {
        return {o, b};
      }
    }
  }
  return {-1, -1};
}

TEST(UnifiedFcWeightCheck, AcceptsWeightsThatFollowTheStates) {
  for (const UnifiedFcCase& c : {MakeUnifiedFc(6, 21, 8, false, 1), MakeUnifiedFc(3, 32, 16, true, 2),
                                 MakeUnifiedFc(4, 7, 1, false, 3), MakeUnifiedFc(2, 70, 64, false, 4)}) {
    std::string error;
    EXPECT_TRUE(CheckWeightsAgainstPlan(c.op, c.weights.data(), c.op.weight_bytes, &error)) << error;
  }
}

TEST(UnifiedFcWeightCheck, NamesTheBlockThatBreaksItsState) {
  UnifiedFcCase c = MakeUnifiedFc(5, 19, 8, false, 5);
  const int in = 19;
  std::string error;
  // A unified block with one magnitude off (the checksum matches: a plan that lies).
  const std::pair<int, int> unified = FindBlock(c.op.unified_fc, UnifiedFcPlan::kUnified, 2);
  ASSERT_GE(unified.first, 0);
  const size_t second_input = static_cast<size_t>(unified.first) * in + unified.second * 8 + 1;
  std::vector<float> weights = c.weights;
  weights[second_input] *= 1.5f;
  c.op.weight_checksum = Crc32(weights.data(), c.op.weight_bytes);
  EXPECT_FALSE(CheckWeightsAgainstPlan(c.op, weights.data(), c.op.weight_bytes, &error));
  EXPECT_NE(error.find("row " + std::to_string(unified.first) + ", block " +
                       std::to_string(unified.second)),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("is unified but input " + std::to_string(unified.second * 8 + 1) + " is "),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("(magnitudes differ)"), std::string::npos) << error;
  // Signs may differ; magnitudes may not.
  weights = c.weights;
  weights[second_input] = -weights[second_input];
  c.op.weight_checksum = Crc32(weights.data(), c.op.weight_bytes);
  EXPECT_TRUE(CheckWeightsAgainstPlan(c.op, weights.data(), c.op.weight_bytes, &error)) << error;
  // A pruned block with a non-zero.
  const std::pair<int, int> pruned = FindBlock(c.op.unified_fc, UnifiedFcPlan::kPruned, 1);
  ASSERT_GE(pruned.first, 0);
  weights = c.weights;
  weights[static_cast<size_t>(pruned.first) * in + pruned.second * 8] = 0.125f;
  c.op.weight_checksum = Crc32(weights.data(), c.op.weight_bytes);
  EXPECT_FALSE(CheckWeightsAgainstPlan(c.op, weights.data(), c.op.weight_bytes, &error));
  EXPECT_NE(error.find("row " + std::to_string(pruned.first) + ", block " +
                       std::to_string(pruned.second)),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("is pruned but input " + std::to_string(pruned.second * 8) + " is 0.125"),
            std::string::npos)
      << error;
  // Stale weights: size and checksum, as for pattern convolutions.
  EXPECT_FALSE(CheckWeightsAgainstPlan(c.op, weights.data(), c.op.weight_bytes - 4, &error));
  EXPECT_NE(error.find("the weight tensor has"), std::string::npos) << error;
  EXPECT_FALSE(CheckWeightsAgainstPlan(c.op, c.weights.data(), c.op.weight_bytes, &error));
  EXPECT_NE(error.find("checksum"), std::string::npos) << error;
  EXPECT_FALSE(CheckWeightsAgainstPlan(c.op, nullptr, c.op.weight_bytes, &error));
  EXPECT_EQ(error, "the weight tensor has no data");
}

TEST(UnifiedFcWeightCheck, ANaNBreaksAUnifiedBlockOnlyIfItsBitsDiffer) {
  UnifiedFcCase c = MakeUnifiedFc(1, 8, 8, false, 6);
  c.op.unified_fc.states = {UnifiedFcPlan::kUnified};
  for (size_t i = 0; i < c.weights.size(); ++i) c.weights[i] = i % 2 ? -0.5f : 0.5f;
  c.op.weight_checksum = Crc32(c.weights.data(), c.op.weight_bytes);
  std::string error;
  EXPECT_TRUE(CheckWeightsAgainstPlan(c.op, c.weights.data(), c.op.weight_bytes, &error)) << error;
  c.weights[3] = std::nanf("");
  c.op.weight_checksum = Crc32(c.weights.data(), c.op.weight_bytes);
  EXPECT_FALSE(CheckWeightsAgainstPlan(c.op, c.weights.data(), c.op.weight_bytes, &error));
  EXPECT_NE(error.find("input 3 is nan"), std::string::npos) << error;
}

// Pattern convolutions with PatternConv.unified: the flagged kernels' four taps share |w|.
TEST_F(PlanReaderTest, WeightCheckOfUnifiedPatternKernels) {
  const std::vector<uint8_t> bytes = BuildPlan({spec_});
  ModelPlan plan;
  std::string error;
  ASSERT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error)) << error;
  PlannedOp op = plan.ops.at(0);
  EXPECT_TRUE(op.pattern_unified.empty());  // a plan without PatternConv.unified

  // Flag every other kept kernel and make its four taps +-0.75.
  std::vector<float> weights = filter_.weights;
  op.pattern_unified.assign(filter_.codes.size(), 0);
  size_t flagged = 0;
  for (size_t k = 0, kept = 0; k < filter_.codes.size(); ++k) {
    if (filter_.codes[k] < 0 || kept++ % 2 != 0) continue;
    op.pattern_unified[k] = 1;
    flagged = k;
    const size_t o = k / static_cast<size_t>(filter_.in_c), i = k % static_cast<size_t>(filter_.in_c);
    for (int tap = 0; tap < 9; ++tap) {
      float& w = weights[(o * 9 + static_cast<size_t>(tap)) * static_cast<size_t>(filter_.in_c) + i];
      if (w != 0.0f) w = w < 0.0f ? -0.75f : 0.75f;
    }
  }
  const size_t size = weights.size() * sizeof(float);
  op.weight_checksum = Crc32(weights.data(), size);
  EXPECT_TRUE(CheckWeightsAgainstPlan(op, weights.data(), size, &error)) << error;

  // A flagged kernel whose last kept tap has another magnitude.
  const size_t o = flagged / static_cast<size_t>(filter_.in_c);
  const size_t i = flagged % static_cast<size_t>(filter_.in_c);
  int last_tap = -1;
  for (int tap = 0; tap < 9; ++tap) {
    if (weights[(o * 9 + static_cast<size_t>(tap)) * static_cast<size_t>(filter_.in_c) + i] != 0.0f) {
      last_tap = tap;
    }
  }
  ASSERT_GE(last_tap, 0);
  weights[(o * 9 + static_cast<size_t>(last_tap)) * static_cast<size_t>(filter_.in_c) + i] = 0.5f;
  op.weight_checksum = Crc32(weights.data(), size);
  EXPECT_FALSE(CheckWeightsAgainstPlan(op, weights.data(), size, &error));
  EXPECT_NE(error.find("kernel (out " + std::to_string(o) + ", in " + std::to_string(i) +
                       ") is unified but tap " + std::to_string(last_tap) + " is 0.5"),
            std::string::npos)
      << error;
  // The same weights are fine for a reader that ignores the flags.
  op.pattern_unified.clear();
  EXPECT_TRUE(CheckWeightsAgainstPlan(op, weights.data(), size, &error)) << error;
}

}  // namespace
}  // namespace tfpconv
