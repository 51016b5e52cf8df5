#include "plan_fuzz_target.h"

#include <string>

#include "plan_reader.h"
#include "test_plans.h"
#include "weight_check.h"

namespace tfpconv {
namespace testing {

void FuzzPlanReader(const uint8_t* data, size_t size) {
  ModelPlan plan;
  std::string error;
  if (!ReadPlan(data, size, &plan, &error)) return;
  for (const PlannedConv& conv : plan.convs) {
    std::string why;
    bool missing = false;
    FindPlannedConv(plan, conv.subgraph_index, conv.operator_index, &why, &missing);
    if (!conv.error.empty() || conv.weight_bytes > (1u << 22)) continue;
    std::vector<float> zeros(conv.weight_bytes / sizeof(float));
    CheckWeightsAgainstPlan(conv, zeros.data(), conv.weight_bytes, &error);
  }
}

std::vector<std::vector<uint8_t>> PlanSeeds() {
  const PrunedFilter small = MakePrunedFilter(3, 2, 0.3, 1);
  const PrunedFilter wide = MakePrunedFilter(9, 4, 0.6, 2);
  return {
      BuildPlan({SpecFor(small, 0, 1)}),
      BuildPlan({SpecFor(small, 0, 1), SpecFor(wide, 2, 5)}, {{1, "not 3x3"}}),
      BuildPlan({}, {{0, "no pattern"}}),
  };
}

}  // namespace testing
}  // namespace tfpconv
