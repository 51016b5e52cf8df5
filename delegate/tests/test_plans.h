// Test helpers: random pattern-pruned filters and tfpconv plan buffers built with the generated
// FlatBuffers builder (so tests can also write deliberately broken plans).
#ifndef TFPCONV_TESTS_TEST_PLANS_H_
#define TFPCONV_TESTS_TEST_PLANS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tfpconv {
namespace testing {

// Eight of the 56 candidate masks (bit 3 * row + col; 4 bits with the centre, bit 4).
std::vector<uint16_t> DefaultLibrary();

// A pattern-pruned 3x3 filter, OHWI, with its codes (pattern position or -1).
struct PrunedFilter {
  int out_c = 0;
  int in_c = 0;
  std::vector<float> weights;
  std::vector<float> bias;
  std::vector<uint16_t> library;
  std::vector<int8_t> codes;
};

// Every kernel gets a random library pattern; a `pruned_fraction` of them are zeroed whole.
PrunedFilter MakePrunedFilter(int out_c, int in_c, double pruned_fraction, uint32_t seed);

// A plan feature (OpPlan.requires).
struct FeatureSpec {
  std::string name;
  std::string since;
};

// One Tuning table (version 2).
struct TuningSpec {
  std::string isa;
  std::string cpu;
  bool claim = true;
  std::string variant;
  std::vector<std::pair<std::string, int64_t>> params;
};

// All fields of one planned pattern convolution, explicit so that tests can break any of them.
// Version 2 plans write it as an OpPlan with a PatternConv kind (requires, kind_type, tunings);
// version 1 plans as a ConvPlan (tuned).
struct ConvPlanSpec {
  uint32_t subgraph_index = 0;
  uint32_t operator_index = 0;
  int32_t weight_tensor_index = 0;
  int8_t checksum_kind = 0;
  uint32_t weight_checksum = 0;
  uint64_t weight_bytes = 0;
  std::vector<int32_t> kernel_shape;
  std::vector<uint16_t> library;
  std::vector<int8_t> codes;
  std::vector<int32_t> filter_order;
  std::vector<int32_t> group_offsets;
  // Version 2 only.
  std::vector<FeatureSpec> requires_features = {{"pattern_conv", "0.1.0"}};
  // The OpKind union type written (1 = PatternConv; another value: a kind this delegate does not
  // know, still written with a PatternConv table); 0 = NONE, no kind table.
  uint8_t kind_type = 1;
  std::vector<TuningSpec> tunings;
  // Version 1 only: integer tuned keys.
  std::vector<std::pair<std::string, int64_t>> tuned;
};

// A valid spec for `filter` (identity filter order, groups of 8, CRC of the weights, no tunings).
ConvPlanSpec SpecFor(const PrunedFilter& filter, uint32_t operator_index, int32_t weight_tensor_index);

struct SkippedSpec {
  uint32_t operator_index = 0;
  std::string reason;
};

// Schema version 1 writes Plan.convs, any other version Plan.ops.
std::vector<uint8_t> BuildPlan(const std::vector<ConvPlanSpec>& convs,
                               const std::vector<SkippedSpec>& skipped = {},
                               uint32_t schema_version = 2, bool with_identifier = true);

}  // namespace testing
}  // namespace tfpconv

#endif  // TFPCONV_TESTS_TEST_PLANS_H_
