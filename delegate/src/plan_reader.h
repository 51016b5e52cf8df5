// Reads and verifies the tfpconv plan (the "tfpconv" model metadata entry, converter/tfpconv_plan.fbs)
// into plain structures. Nothing here trusts the bytes: a FlatBuffers Verifier pass first, then
// bounds and consistency checks of every planned operator. Schema versions 1 (tfpconv 0.1:
// Plan.convs) and 2 (Plan.ops) are read into the same representation.
#ifndef TFPCONV_SRC_PLAN_READER_H_
#define TFPCONV_SRC_PLAN_READER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "pattern_conv.h"

namespace tfpconv {

// The schema major versions this reader understands.
constexpr uint32_t kPlanSchemaVersionMin = 1;
constexpr uint32_t kPlanSchemaVersion = 2;

// The plan features (OpPlan.requires) this delegate has. An operator that requires any other is
// declined (left to TFLite) with a warning naming the feature; the rest of the model still runs.
const std::vector<std::string>& KnownPlanFeatures();
bool IsKnownPlanFeature(const std::string& name);

// The feature of the pattern-convolution kind (fb::PatternConv, since tfpconv 0.1.0).
constexpr char kPatternConvFeature[] = "pattern_conv";
// The feature of the unified FULLY_CONNECTED / 1x1 CONV_2D kind (fb::UnifiedFc, since 0.3.0).
constexpr char kUnifiedFcFeature[] = "unified_fc";
// The feature of the masked dense convolution kind (fb::DenseConv, since 0.4.0).
constexpr char kDenseConvFeature[] = "dense_conv";

// OpPlan.activation_mask (since 0.4.0): the operator's output feeds only a MUL (operator_index) by
// a constant 0/1 float32 tensor [1, height, width, 1] (mask_tensor_index, CRC-32 mask_checksum).
struct ActivationMaskRecord {
  bool present = false;
  uint32_t operator_index = 0;
  int32_t mask_tensor_index = -1;
  uint32_t mask_checksum = 0;
  int height = 0;
  int width = 0;
  int masked_pixels = 0;
};

// The data of a kUnifiedFc operator: the weight matrix W[out][in] (FULLY_CONNECTED [out, in], or a
// 1x1 CONV_2D's OHWI [out, 1, 1, in]) in blocks of `block_size` consecutive inputs per row; block
// b of row o is W[o][b * block_size, min((b + 1) * block_size, in)), the last one shorter when
// block_size does not divide in. (The engine's unified_fc.h has the same state values.)
struct UnifiedFcPlan {
  static constexpr uint8_t kFree = 0;     // arbitrary weights
  static constexpr uint8_t kUnified = 1;  // |w| bitwise equal across the block, own signs
  static constexpr uint8_t kPruned = 2;   // all zero
  static constexpr int kMaxBlockSize = 64;

  int out_features = 0;
  int in_features = 0;
  int block_size = 0;    // 1..kMaxBlockSize (the converter writes 16, 8 or 4)
  bool conv1x1 = false;  // the weights are [out, 1, 1, in] (a 1x1 CONV_2D)
  // One state per block, row-major: states[o * blocks() + b], values kFree, kUnified, kPruned;
  // length out * ceil(in / block_size).
  std::vector<uint8_t> states;

  int blocks() const { return block_size > 0 ? (in_features + block_size - 1) / block_size : 0; }
};

struct PlanFeature {
  std::string name;   // empty: none
  std::string since;  // the tfpconv version that introduced it (may be empty)
};

// One tuned decision (fb::Tuning; a version 1 plan's tuned keys become one).
struct PlannedTuning {
  // The instruction set measured (a name ParseIsa knows; tunings for unknown names are dropped).
  // Empty only for a version 1 plan whose tuned keys had no "isa": it applies to every one.
  std::string isa;
  std::string cpu;
  bool claim = true;
  std::string variant;                    // empty: the engine's default
  std::map<std::string, int64_t> params;  // "tile_oc", "tile_ic", ...
};

enum class PlannedOpKind { kUnknown, kPatternConv, kUnifiedFc, kDenseConv };

struct PlannedOp {
  uint32_t subgraph_index = 0;
  uint32_t operator_index = 0;
  int32_t weight_tensor_index = -1;
  uint32_t weight_checksum = 0;  // CRC-32 (see crc32.h) of the weight tensor's bytes
  uint64_t weight_bytes = 0;
  PlannedOpKind kind = PlannedOpKind::kUnknown;
  std::vector<PlanFeature> required_features;  // OpPlan.requires
  // kPatternConv: the kernel shape's channel counts and the pattern data (pattern.tuning is left
  // default: the glue fills it from `tunings` for the instruction set it runs with).
  int out_channels = 0;
  int in_channels = 0;
  PatternPlan pattern;
  // kPatternConv: PatternConv.unified, one flag per (out, in) kernel, row-major like
  // pattern.codes: 1 when the four weights its pattern keeps share one magnitude. Empty = none
  // recorded. Checked against the live weights by CheckWeightsAgainstPlan.
  std::vector<uint8_t> pattern_unified;
  // kUnifiedFc: the block states of the weight matrix.
  UnifiedFcPlan unified_fc;
  // kDenseConv: the kernel's size (1 or 3; out_channels and in_channels as above).
  int kernel_size = 0;
  // kPatternConv and kDenseConv (required for kDenseConv): the mask after the operator.
  ActivationMaskRecord activation_mask;
  std::vector<PlannedTuning> tunings;
  // Empty when the entry is valid; otherwise why it is not (the rest may be partly filled).
  std::string error;
  // Set (name non-empty) when the operator needs a feature this delegate lacks (or is of a kind it
  // does not know, then named "kind_<union type>"); the entry is then not checked further.
  PlanFeature missing_feature;

  bool usable() const { return error.empty() && missing_feature.name.empty(); }
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
  std::vector<PlannedOp> ops;
  std::vector<SkippedNote> skipped;
};

// Parses a plan buffer. Returns false, with *error saying why, when the buffer as a whole is unusable
// (not a verified tfpconv plan, unsupported schema version). A malformed individual operator plan
// does not fail the call: its PlannedOp carries the error (or the missing feature) instead. The
// same (subgraph, operator) in several entries (ops, or an op and a skipped note) makes all those
// ops invalid.
bool ReadPlan(const void* data, size_t size, ModelPlan* plan, std::string* error);

// The plan's entry for an operator (usable or not), or nullptr when it has none; then *why_not
// says so (and the converter's reason when it skipped the operator).
const PlannedOp* FindPlannedOp(const ModelPlan& plan, uint32_t subgraph_index,
                               uint32_t operator_index, std::string* why_not);

// The tuning of `op` for instruction set `isa`: the one named `isa`, else (version 1 plans) an
// untagged one; nullptr when none applies.
const PlannedTuning* TuningFor(const PlannedOp& op, Isa isa);

// The engine's tuning for `op` on `isa` (TuningFor as a KernelTuning; default when none applies).
KernelTuning KernelTuningFor(const PlannedOp& op, Isa isa);

// "needs plan feature 'x' (tfpconv 0.3.0 or newer)".
std::string DescribeMissingFeature(const PlanFeature& feature);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_PLAN_READER_H_
