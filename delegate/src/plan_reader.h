// Reads and verifies the tfpconv plan (the "tfpconv" model metadata entry, converter/tfpconv_plan.fbs)
// into plain structures. Nothing here trusts the bytes: a FlatBuffers Verifier pass first, then
// bounds and consistency checks of every planned convolution.
#ifndef TFPCONV_SRC_PLAN_READER_H_
#define TFPCONV_SRC_PLAN_READER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pattern_conv.h"

namespace tfpconv {

// The schema major version this reader understands.
constexpr uint32_t kPlanSchemaVersion = 1;

struct PlannedConv {
  uint32_t subgraph_index = 0;
  uint32_t operator_index = 0;
  int32_t weight_tensor_index = -1;
  uint32_t weight_checksum = 0;  // CRC-32 (see crc32.h) of the weight tensor's bytes
  uint64_t weight_bytes = 0;
  int out_channels = 0;
  int in_channels = 0;
  PatternPlan pattern;
  // Empty when the entry is usable; otherwise why it is not (the rest may be partly filled).
  std::string error;
};

struct SkippedNote {
  uint32_t subgraph_index = 0;
  uint32_t operator_index = 0;
  std::string op_name;
  std::string reason;
};

struct ModelPlan {
  uint32_t schema_version = 0;
  std::string producer;
  std::vector<PlannedConv> convs;
  std::vector<SkippedNote> skipped;
};

// Parses a plan buffer. Returns false, with *error saying why, when the buffer as a whole is unusable
// (not a verified tfpconv plan, wrong schema major version). A malformed individual ConvPlan does not
// fail the call: its PlannedConv carries the error instead.
bool ReadPlan(const void* data, size_t size, ModelPlan* plan, std::string* error);

// The usable entry for an operator, or nullptr with *why_not set (no entry, ambiguous, or broken).
// *missing tells the first case (the converter did not plan the operator) from the others.
const PlannedConv* FindPlannedConv(const ModelPlan& plan, uint32_t subgraph_index,
                                   uint32_t operator_index, std::string* why_not, bool* missing);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_PLAN_READER_H_
