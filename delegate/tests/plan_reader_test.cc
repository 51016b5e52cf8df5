#include "plan_reader.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

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
    EXPECT_EQ(plan.convs.size(), 1u);
    return plan.convs.empty() ? "missing" : plan.convs[0].error;
  }

  PrunedFilter filter_;
  ConvPlanSpec spec_;
};

TEST_F(PlanReaderTest, ReadsAValidPlan) {
  const std::vector<uint8_t> bytes = BuildPlan({spec_}, {{4, "1x1 kernel"}});
  ModelPlan plan;
  std::string error;
  ASSERT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error)) << error;
  EXPECT_EQ(plan.schema_version, 1u);
  EXPECT_EQ(plan.producer, "tfpconv tests");
  ASSERT_EQ(plan.convs.size(), 1u);
  const PlannedConv& conv = plan.convs[0];
  EXPECT_EQ(conv.error, "");
  EXPECT_EQ(conv.operator_index, 2u);
  EXPECT_EQ(conv.weight_tensor_index, 7);
  EXPECT_EQ(conv.out_channels, 5);
  EXPECT_EQ(conv.in_channels, 3);
  EXPECT_EQ(conv.pattern.codes, filter_.codes);
  EXPECT_EQ(conv.pattern.library, filter_.library);
  EXPECT_EQ(conv.pattern.filter_order, spec_.filter_order);
  EXPECT_EQ(conv.pattern.group_offsets, spec_.group_offsets);
  EXPECT_EQ(conv.pattern.tuned.at("tile_oc"), 8);

  std::string why;
  bool missing = false;
  EXPECT_EQ(FindPlannedConv(plan, 0, 2, &why, &missing), &plan.convs[0]);
  EXPECT_EQ(FindPlannedConv(plan, 0, 4, &why, &missing), nullptr);
  EXPECT_TRUE(missing);
  EXPECT_NE(why.find("1x1 kernel"), std::string::npos);
  EXPECT_EQ(FindPlannedConv(plan, 1, 2, &why, &missing), nullptr);

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
  EXPECT_EQ(plan.convs.at(0).error, "");
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
  const std::vector<uint8_t> future = BuildPlan({spec_}, {}, 2);
  EXPECT_FALSE(ReadPlan(future.data(), future.size(), &plan, &error));
  EXPECT_NE(error.find("version 2"), std::string::npos) << error;
}

TEST_F(PlanReaderTest, EveryTruncationIsRejectedOrHarmless) {
  const std::vector<uint8_t> bytes = BuildPlan({spec_, SpecFor(filter_, 3, 9)});
  for (size_t size = 0; size < bytes.size(); ++size) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + size);
    ModelPlan plan;
    std::string error;
    EXPECT_FALSE(ReadPlan(prefix.data(), prefix.size(), &plan, &error)) << "size " << size;
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
    for (const PlannedConv& conv : plan.convs) {
      if (!conv.error.empty()) continue;
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
  EXPECT_EQ(ConvError([](ConvPlanSpec* s) { s->group_offsets = {0, 2, 2, 5}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->kernel_shape = {5, 5, 5, 3}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->kernel_shape = {5, 3, 3}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->kernel_shape = {-5, 3, 3, -3}; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->weight_bytes += 4; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->weight_tensor_index = -1; }), "");
  EXPECT_NE(ConvError([](ConvPlanSpec* s) { s->checksum_kind = 3; }), "");
}

TEST_F(PlanReaderTest, DuplicateEntriesAreAmbiguous) {
  const std::vector<uint8_t> bytes = BuildPlan({spec_, spec_});
  ModelPlan plan;
  std::string error;
  ASSERT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error));
  bool missing = true;
  EXPECT_EQ(FindPlannedConv(plan, 0, 2, &error, &missing), nullptr);
  EXPECT_FALSE(missing);
  EXPECT_NE(error.find("several"), std::string::npos);
}

TEST_F(PlanReaderTest, WeightCheckCatchesStaleAndForeignWeights) {
  const std::vector<uint8_t> bytes = BuildPlan({spec_});
  ModelPlan plan;
  std::string error;
  ASSERT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error));
  PlannedConv conv = plan.convs.at(0);
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

}  // namespace
}  // namespace tfpconv
