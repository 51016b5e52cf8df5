#include "plan_reader.h"

#include <cstring>
#include <memory>

#include "tfpconv_plan_generated.h"

namespace tfpconv {
namespace {

constexpr int kTaps = 9;
constexpr uint16_t kCentreBit = 1u << 4;

bool IsPatternMask(uint16_t mask) {
  if (mask >= (1u << kTaps) || (mask & kCentreBit) == 0) return false;
  int bits = 0;
  for (int tap = 0; tap < kTaps; ++tap) bits += (mask >> tap) & 1u;
  return bits == 4;
}

// Checks one verified ConvPlan table and decodes it into *out. Returns the reason it is unusable,
// or an empty string.
std::string DecodeConvPlan(const fb::ConvPlan& table, PlannedConv* out) {
  out->subgraph_index = table.subgraph_index();
  out->operator_index = table.operator_index();
  out->weight_tensor_index = table.weight_tensor_index();
  out->weight_checksum = table.weight_checksum();
  out->weight_bytes = table.weight_bytes();
  if (table.weight_checksum_kind() != fb::ChecksumKind::CRC32) return "unknown checksum kind";
  if (out->weight_tensor_index < 0) return "negative weight_tensor_index";

  const auto* shape = table.kernel_shape();
  if (shape->size() != 4 || shape->Get(1) != 3 || shape->Get(2) != 3) {
    return "kernel_shape is not [out, 3, 3, in]";
  }
  const int64_t out_c = shape->Get(0);
  const int64_t in_c = shape->Get(3);
  if (out_c <= 0 || in_c <= 0) return "kernel_shape has a non-positive channel count";
  const uint64_t kernels = static_cast<uint64_t>(out_c) * static_cast<uint64_t>(in_c);
  const auto* codes = table.codes();
  if (codes->size() != kernels) return "codes length is not out * in";
  // codes fit in the buffer, so out and in are below 2^31 and these products cannot overflow.
  out->out_channels = static_cast<int>(out_c);
  out->in_channels = static_cast<int>(in_c);
  if (out->weight_bytes != kernels * kTaps * sizeof(float)) {
    return "weight_bytes does not match kernel_shape";
  }

  const auto* library = table.library();
  // An empty library is fine for a layer whose every kernel is pruned (all codes -1).
  if (library->size() > 127) return "library larger than 127 patterns";
  out->pattern.library.assign(library->begin(), library->end());
  for (uint16_t mask : out->pattern.library) {
    if (!IsPatternMask(mask)) return "library has a mask that is not 4 taps with the centre";
  }

  const int library_size = static_cast<int>(library->size());
  out->pattern.codes.assign(codes->begin(), codes->end());
  for (int8_t code : out->pattern.codes) {
    if (code < -1 || code >= library_size) return "a code is outside -1..library size - 1";
  }

  const auto* order = table.filter_order();
  if (order->size() != static_cast<uint32_t>(out_c)) return "filter_order length is not out";
  out->pattern.filter_order.assign(order->begin(), order->end());
  std::vector<bool> seen(static_cast<size_t>(out_c), false);
  for (int32_t channel : out->pattern.filter_order) {
    if (channel < 0 || channel >= out_c || seen[static_cast<size_t>(channel)]) {
      return "filter_order is not a permutation of the output channels";
    }
    seen[static_cast<size_t>(channel)] = true;
  }

  const auto* groups = table.group_offsets();
  out->pattern.group_offsets.assign(groups->begin(), groups->end());
  const auto& offsets = out->pattern.group_offsets;
  if (offsets.size() < 2 || offsets.front() != 0 || offsets.back() != out_c) {
    return "group_offsets does not run from 0 to out";
  }
  for (size_t g = 1; g < offsets.size(); ++g) {
    if (offsets[g] < offsets[g - 1]) return "group_offsets is not monotone";
  }

  if (const auto* tuned = table.tuned()) {
    for (const auto* param : *tuned) {
      if (param == nullptr) return "null tuned parameter";
      out->pattern.tuned[param->key()->str()] = param->value();
    }
  }
  return std::string();
}

}  // namespace

bool ReadPlan(const void* data, size_t size, ModelPlan* plan, std::string* error) {
  *plan = ModelPlan();
  if (data == nullptr || size == 0) {
    *error = "empty plan";
    return false;
  }
  if (size >= static_cast<size_t>(FLATBUFFERS_MAX_BUFFER_SIZE)) {
    *error = "plan larger than a FlatBuffer can be";
    return false;
  }
  // The metadata buffer need not be aligned; verify and read an aligned copy.
  std::unique_ptr<uint64_t[]> aligned(new uint64_t[(size + 7) / 8]);
  std::memcpy(aligned.get(), data, size);
  const auto* bytes = reinterpret_cast<const uint8_t*>(aligned.get());

  flatbuffers::Verifier verifier(bytes, size, /*max_depth=*/16, /*max_tables=*/1u << 20);
  if (!fb::VerifyPlanBuffer(verifier)) {
    *error = size >= 8 && !fb::PlanBufferHasIdentifier(bytes)
                 ? "metadata is not a tfpconv plan (file identifier is not TFPC)"
                 : "plan failed FlatBuffers verification (corrupt or truncated)";
    return false;
  }
  const fb::Plan* root = fb::GetPlan(bytes);
  plan->schema_version = root->schema_version();
  if (plan->schema_version != kPlanSchemaVersion) {
    *error = "plan schema version " + std::to_string(plan->schema_version) +
             " is not supported (this delegate reads version " +
             std::to_string(kPlanSchemaVersion) + ")";
    return false;
  }
  if (root->producer() != nullptr) plan->producer = root->producer()->str();
  if (root->convs() != nullptr) {
    plan->convs.resize(root->convs()->size());
    for (uint32_t i = 0; i < root->convs()->size(); ++i) {
      const fb::ConvPlan* table = root->convs()->Get(i);
      plan->convs[i].error = table == nullptr ? "null ConvPlan" : DecodeConvPlan(*table, &plan->convs[i]);
    }
  }
  if (root->skipped() != nullptr) {
    for (const auto* table : *root->skipped()) {
      if (table == nullptr) continue;
      SkippedNote note;
      note.subgraph_index = table->subgraph_index();
      note.operator_index = table->operator_index();
      if (table->op_name() != nullptr) note.op_name = table->op_name()->str();
      if (table->reason() != nullptr) note.reason = table->reason()->str();
      plan->skipped.push_back(std::move(note));
    }
  }
  return true;
}

const PlannedConv* FindPlannedConv(const ModelPlan& plan, uint32_t subgraph_index,
                                   uint32_t operator_index, std::string* why_not, bool* missing) {
  *missing = false;
  const PlannedConv* found = nullptr;
  int matches = 0;
  for (const PlannedConv& conv : plan.convs) {
    if (conv.subgraph_index == subgraph_index && conv.operator_index == operator_index) {
      found = &conv;
      ++matches;
    }
  }
  if (matches == 0) {
    *missing = true;
    *why_not = "the plan has no entry for this operator";
    for (const SkippedNote& note : plan.skipped) {
      if (note.subgraph_index == subgraph_index && note.operator_index == operator_index) {
        *why_not = "the converter skipped it: " + note.reason;
      }
    }
    return nullptr;
  }
  if (matches > 1) {
    *why_not = "the plan has several entries for this operator";
    return nullptr;
  }
  if (!found->error.empty()) {
    *why_not = "its plan entry is invalid: " + found->error;
    return nullptr;
  }
  return found;
}

}  // namespace tfpconv
