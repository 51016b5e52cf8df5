#include "plan_reader.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>

#include "tfpconv_plan_generated.h"

namespace tfpconv {
namespace {

constexpr int kTaps = 9;
constexpr uint16_t kCentreBit = 1u << 4;
constexpr size_t kMaxLibrary = 127;

bool IsPatternMask(uint16_t mask) {
  if (mask >= (1u << kTaps) || (mask & kCentreBit) == 0) return false;
  int bits = 0;
  for (int tap = 0; tap < kTaps; ++tap) bits += (mask >> tap) & 1u;
  return bits == 4;
}

// The fields of a pattern convolution, whichever table (version 1 ConvPlan, version 2
// OpPlan + PatternConv) holds them.
struct PatternFields {
  fb::ChecksumKind checksum_kind;
  const flatbuffers::Vector<int32_t>* kernel_shape;
  const flatbuffers::Vector<uint16_t>* library;
  const flatbuffers::Vector<int8_t>* codes;
  const flatbuffers::Vector<int32_t>* filter_order;
  const flatbuffers::Vector<int32_t>* group_offsets;
  // PatternConv.unified (version 2, since tfpconv 0.3.0); nullptr for a version 1 ConvPlan.
  const flatbuffers::Vector<uint8_t>* unified;
};

// Checks a pattern convolution's fields (the rules shared with the Python reader, see
// converter/tfpconv_plan.fbs) and decodes them into *out. Returns the reason the entry is unusable,
// or an empty string.
std::string DecodePattern(const PatternFields& f, PlannedOp* out) {
  out->kind = PlannedOpKind::kPatternConv;
  if (f.checksum_kind != fb::ChecksumKind::CRC32) return "unknown checksum kind";
  if (out->weight_tensor_index < 0) return "negative weight_tensor_index";

  const auto* shape = f.kernel_shape;
  if (shape->size() != 4 || shape->Get(1) != 3 || shape->Get(2) != 3) {
    return "kernel_shape is not [out, 3, 3, in]";
  }
  const int64_t out_c = shape->Get(0);
  const int64_t in_c = shape->Get(3);
  if (out_c <= 0 || in_c <= 0) return "kernel_shape has a non-positive channel count";

  const auto* library = f.library;
  // An empty library is fine for a layer whose every kernel is pruned (all codes -1).
  if (library->size() > kMaxLibrary) return "library larger than 127 patterns";
  PatternPlan& pattern = out->pattern;
  pattern.library.assign(library->begin(), library->end());
  for (size_t i = 0; i < pattern.library.size(); ++i) {
    if (!IsPatternMask(pattern.library[i])) {
      return "library has a mask that is not 4 taps with the centre";
    }
    if (std::find(pattern.library.begin(), pattern.library.begin() + static_cast<long>(i),
                  pattern.library[i]) != pattern.library.begin() + static_cast<long>(i)) {
      return "library has a repeated mask";
    }
  }

  const uint64_t kernels = static_cast<uint64_t>(out_c) * static_cast<uint64_t>(in_c);
  const auto* codes = f.codes;
  if (codes->size() != kernels) return "codes length is not out * in";
  // codes fit in the buffer, so out and in are below 2^31 and these products cannot overflow.
  out->out_channels = static_cast<int>(out_c);
  out->in_channels = static_cast<int>(in_c);
  const int library_size = static_cast<int>(library->size());
  pattern.codes.assign(codes->begin(), codes->end());
  for (int8_t code : pattern.codes) {
    if (code < -1 || code >= library_size) return "a code is outside -1..library size - 1";
  }

  const auto* order = f.filter_order;
  if (order->size() != static_cast<uint32_t>(out_c)) return "filter_order length is not out";
  pattern.filter_order.assign(order->begin(), order->end());
  std::vector<bool> seen(static_cast<size_t>(out_c), false);
  for (int32_t channel : pattern.filter_order) {
    if (channel < 0 || channel >= out_c || seen[static_cast<size_t>(channel)]) {
      return "filter_order is not a permutation of the output channels";
    }
    seen[static_cast<size_t>(channel)] = true;
  }

  pattern.group_offsets.assign(f.group_offsets->begin(), f.group_offsets->end());
  const auto& offsets = pattern.group_offsets;
  if (offsets.size() < 2 || offsets.front() != 0 || offsets.back() != out_c) {
    return "group_offsets does not run from 0 to out";
  }
  for (size_t g = 1; g < offsets.size(); ++g) {
    if (offsets[g] <= offsets[g - 1]) return "group_offsets does not rise strictly";
  }

  // PatternConv.unified: absent or empty = none recorded; else one 0/1 flag per kernel, and only a
  // kernel with a pattern may be unified.
  if (f.unified != nullptr && f.unified->size() != 0) {
    if (f.unified->size() != kernels) return "unified length is not 0 or out * in";
    out->pattern_unified.assign(f.unified->begin(), f.unified->end());
    for (size_t k = 0; k < out->pattern_unified.size(); ++k) {
      if (out->pattern_unified[k] > 1) return "unified has a flag other than 0 and 1";
      if (out->pattern_unified[k] == 1 && pattern.codes[k] < 0) {
        return "unified flags a removed kernel (code -1)";
      }
    }
  }

  if (out->weight_bytes != kernels * kTaps * sizeof(float)) {
    return "weight_bytes does not match kernel_shape";
  }
  return std::string();
}

// Checks a UnifiedFc table (the rules shared with the Python reader, see
// converter/tfpconv_plan.fbs) and decodes it into *out. Returns the reason the entry is unusable,
// or an empty string.
std::string DecodeUnifiedFc(fb::ChecksumKind checksum_kind, const fb::UnifiedFc& table,
                            PlannedOp* out) {
  out->kind = PlannedOpKind::kUnifiedFc;
  if (checksum_kind != fb::ChecksumKind::CRC32) return "unknown checksum kind";
  if (out->weight_tensor_index < 0) return "negative weight_tensor_index";

  const auto* shape = table.weight_shape();
  bool conv1x1 = false;
  if (shape->size() == 4 && shape->Get(1) == 1 && shape->Get(2) == 1) {
    conv1x1 = true;
  } else if (shape->size() != 2) {
    return "weight_shape is not [out, in] or [out, 1, 1, in]";
  }
  const int64_t out_f = shape->Get(0);
  const int64_t in_f = shape->Get(shape->size() - 1);
  if (out_f <= 0 || in_f <= 0) return "weight_shape has a non-positive size";

  const int block_size = table.block_size();
  if (block_size < 1 || block_size > UnifiedFcPlan::kMaxBlockSize) {
    return "block_size is not in 1..64";
  }
  // out and in are below 2^31: these products fit in 64 bits.
  const uint64_t blocks = static_cast<uint64_t>((in_f + block_size - 1) / block_size);
  const auto* states = table.states();
  if (states->size() != static_cast<uint64_t>(out_f) * blocks) {
    return "states length is not out * ceil(in / block_size)";
  }
  UnifiedFcPlan& plan = out->unified_fc;
  plan.out_features = static_cast<int>(out_f);
  plan.in_features = static_cast<int>(in_f);
  plan.block_size = block_size;
  plan.conv1x1 = conv1x1;
  plan.states.assign(states->begin(), states->end());
  for (uint8_t state : plan.states) {
    if (state > UnifiedFcPlan::kPruned) return "a block state is not 0, 1 or 2";
  }
  if (out->weight_bytes !=
      static_cast<uint64_t>(out_f) * static_cast<uint64_t>(in_f) * sizeof(float)) {
    return "weight_bytes does not match weight_shape";
  }
  return std::string();
}

// Checks a DenseConv table and decodes it into *out. Returns the reason the entry is unusable, or
// an empty string.
std::string DecodeDenseConv(fb::ChecksumKind checksum_kind, const fb::DenseConv& table,
                            PlannedOp* out) {
  out->kind = PlannedOpKind::kDenseConv;
  if (checksum_kind != fb::ChecksumKind::CRC32) return "unknown checksum kind";
  if (out->weight_tensor_index < 0) return "negative weight_tensor_index";
  const auto* shape = table.kernel_shape();
  if (shape->size() != 4 || shape->Get(1) != shape->Get(2) ||
      (shape->Get(1) != 1 && shape->Get(1) != 3)) {
    return "kernel_shape is not [out, 3, 3, in] or [out, 1, 1, in]";
  }
  const int64_t out_c = shape->Get(0);
  const int64_t in_c = shape->Get(3);
  if (out_c <= 0 || in_c <= 0) return "kernel_shape has a non-positive channel count";
  out->out_channels = static_cast<int>(out_c);
  out->in_channels = static_cast<int>(in_c);
  out->kernel_size = shape->Get(1);
  const uint64_t weights = static_cast<uint64_t>(out_c) * static_cast<uint64_t>(in_c) *
                           static_cast<uint64_t>(out->kernel_size * out->kernel_size);
  if (out->weight_bytes != weights * sizeof(float)) return "weight_bytes does not match kernel_shape";
  return std::string();
}

// Checks OpPlan.activation_mask (absent: nothing to check) and decodes it into *out.
std::string DecodeActivationMask(const fb::ActivationMask* table, PlannedOp* out) {
  if (table == nullptr) {
    return out->kind == PlannedOpKind::kDenseConv ? "a dense_conv plan needs its activation mask"
                                                  : std::string();
  }
  ActivationMaskRecord& mask = out->activation_mask;
  mask.operator_index = table->operator_index();
  mask.mask_tensor_index = table->mask_tensor_index();
  mask.mask_checksum = table->mask_checksum();
  mask.height = table->height();
  mask.width = table->width();
  mask.masked_pixels = table->masked_pixels();
  if (mask.operator_index == out->operator_index) return "the activation mask names the operator itself";
  if (mask.mask_tensor_index < 0) return "negative activation mask tensor index";
  if (table->mask_checksum_kind() != fb::ChecksumKind::CRC32) return "unknown mask checksum kind";
  if (mask.height <= 0 || mask.width <= 0) return "activation mask with a non-positive size";
  if (mask.masked_pixels < 0 ||
      static_cast<int64_t>(mask.masked_pixels) > int64_t{mask.height} * mask.width) {
    return "activation mask's masked_pixels out of range";
  }
  mask.present = true;
  return std::string();
}

// Version 1 tuned keys ("isa" code, "claim", "variant" index, "tile_oc", "tile_ic") as one tuning.
// Returns false (no tuning) when there are no keys or the "isa" code is unknown.
bool TuningFromV1(const flatbuffers::Vector<flatbuffers::Offset<fb::TunedParam>>* tuned,
                  PlannedTuning* out) {
  if (tuned == nullptr || tuned->size() == 0) return false;
  std::map<std::string, int64_t> keys;
  for (const auto* param : *tuned) {
    if (param != nullptr) keys[param->key()->str()] = param->value();
  }
  Isa isa = Isa::kScalar;
  const auto code = keys.find("isa");
  const bool tagged = code != keys.end();
  if (tagged) {
    if (!IsaFromCode(code->second, &isa)) return false;  // unknown instruction set: ignored
    out->isa = IsaName(isa);
  }
  const auto claim = keys.find("claim");
  if (claim != keys.end()) out->claim = claim->second != 0;
  const auto variant = keys.find("variant");
  if (variant != keys.end() && tagged) {  // an index into that instruction set's variant table
    const std::vector<std::string> names = VariantNames(isa);
    if (variant->second >= 0 && variant->second < static_cast<int64_t>(names.size())) {
      out->variant = names[static_cast<size_t>(variant->second)];
    }
  }
  for (const char* key : {"tile_oc", "tile_ic"}) {
    const auto found = keys.find(key);
    if (found != keys.end()) out->params[key] = found->second;
  }
  return true;
}

void ReadConvPlan(const fb::ConvPlan& table, PlannedOp* out) {
  out->subgraph_index = table.subgraph_index();
  out->operator_index = table.operator_index();
  out->weight_tensor_index = table.weight_tensor_index();
  out->weight_checksum = table.weight_checksum();
  out->weight_bytes = table.weight_bytes();
  out->required_features.push_back({kPatternConvFeature, "0.1.0"});
  PlannedTuning tuning;
  if (TuningFromV1(table.tuned(), &tuning)) out->tunings.push_back(std::move(tuning));
  out->error = DecodePattern({table.weight_checksum_kind(), table.kernel_shape(), table.library(),
                              table.codes(), table.filter_order(), table.group_offsets(), nullptr},
                             out);
}

void ReadOpPlan(const fb::OpPlan& table, PlannedOp* out) {
  out->subgraph_index = table.subgraph_index();
  out->operator_index = table.operator_index();
  out->weight_tensor_index = table.weight_tensor_index();
  out->weight_checksum = table.weight_checksum();
  out->weight_bytes = table.weight_bytes();
  if (const auto* requires_list = table.requires_()) {
    for (const fb::Feature* feature : *requires_list) {
      if (feature == nullptr) continue;
      PlanFeature f{feature->name()->str(), feature->since() ? feature->since()->str() : ""};
      if (out->missing_feature.name.empty() && !IsKnownPlanFeature(f.name)) out->missing_feature = f;
      out->required_features.push_back(std::move(f));
    }
  }
  if (!out->missing_feature.name.empty()) return;  // its data may follow rules we do not know

  if (const auto* tunings = table.tunings()) {
    for (const fb::Tuning* t : *tunings) {
      if (t == nullptr) continue;
      PlannedTuning tuning;
      tuning.isa = t->isa()->str();
      if (tuning.isa.empty()) {
        out->error = "a tuning has an empty isa";
        return;
      }
      Isa isa;
      if (!ParseIsa(tuning.isa, &isa)) continue;  // an instruction set we do not know: ignored
      if (t->cpu() != nullptr) tuning.cpu = t->cpu()->str();
      tuning.claim = t->claim();
      if (t->variant() != nullptr) tuning.variant = t->variant()->str();
      if (const auto* params = t->params()) {
        for (const fb::TunedParam* param : *params) {
          if (param != nullptr) tuning.params[param->key()->str()] = param->value();
        }
      }
      out->tunings.push_back(std::move(tuning));
    }
  }

  switch (table.kind_type()) {
    case fb::OpKind::PatternConv: {
      const fb::PatternConv* conv = table.kind_as_PatternConv();
      if (conv == nullptr) {
        out->error = "missing PatternConv table";
        return;
      }
      out->error = DecodePattern({table.weight_checksum_kind(), conv->kernel_shape(),
                                  conv->library(), conv->codes(), conv->filter_order(),
                                  conv->group_offsets(), conv->unified()},
                                 out);
      if (out->error.empty()) out->error = DecodeActivationMask(table.activation_mask(), out);
      return;
    }
    case fb::OpKind::UnifiedFc: {
      const fb::UnifiedFc* fc = table.kind_as_UnifiedFc();
      if (fc == nullptr) {
        out->error = "missing UnifiedFc table";
        return;
      }
      out->error = DecodeUnifiedFc(table.weight_checksum_kind(), *fc, out);
      return;  // a mask after a unified operator is left to TFLite (no reader needs it)
    }
    case fb::OpKind::DenseConv: {
      const fb::DenseConv* conv = table.kind_as_DenseConv();
      if (conv == nullptr) {
        out->error = "missing DenseConv table";
        return;
      }
      out->error = DecodeDenseConv(table.weight_checksum_kind(), *conv, out);
      if (out->error.empty()) out->error = DecodeActivationMask(table.activation_mask(), out);
      return;
    }
    case fb::OpKind::NONE:
      out->error = "operator plan without a kind";
      return;
    default:  // a kind added after this delegate was built
      out->kind = PlannedOpKind::kUnknown;
      out->missing_feature = {"kind_" + std::to_string(static_cast<int>(table.kind_type())), ""};
      return;
  }
}

// Marks every op whose (subgraph, operator) appears more than once among the ops and skipped notes.
void RejectDuplicates(ModelPlan* plan) {
  std::map<std::pair<uint32_t, uint32_t>, int> count;
  for (const PlannedOp& op : plan->ops) ++count[{op.subgraph_index, op.operator_index}];
  for (const SkippedNote& note : plan->skipped) ++count[{note.subgraph_index, note.operator_index}];
  for (PlannedOp& op : plan->ops) {
    if (count[{op.subgraph_index, op.operator_index}] > 1) {
      op.error = "the plan has several entries for this operator";
    }
  }
}

}  // namespace

const std::vector<std::string>& KnownPlanFeatures() {
  static const std::vector<std::string> features = {kPatternConvFeature, kUnifiedFcFeature,
                                                     kDenseConvFeature};
  return features;
}

bool IsKnownPlanFeature(const std::string& name) {
  const auto& known = KnownPlanFeatures();
  return std::find(known.begin(), known.end(), name) != known.end();
}

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
  if (plan->schema_version < kPlanSchemaVersionMin || plan->schema_version > kPlanSchemaVersion) {
    *error = "plan schema version " + std::to_string(plan->schema_version) +
             " is not supported (this delegate reads versions " +
             std::to_string(kPlanSchemaVersionMin) + " to " + std::to_string(kPlanSchemaVersion) +
             "): convert the model again with this tfpconv, or update the delegate";
    return false;
  }
  if (root->producer() != nullptr) plan->producer = root->producer()->str();
  if (plan->schema_version == 1) {
    if (root->convs() != nullptr) {
      for (const fb::ConvPlan* table : *root->convs()) {
        plan->ops.emplace_back();
        if (table == nullptr) {
          plan->ops.back().error = "null ConvPlan";
        } else {
          ReadConvPlan(*table, &plan->ops.back());
        }
      }
    }
  } else if (root->ops() != nullptr) {
    for (const fb::OpPlan* table : *root->ops()) {
      plan->ops.emplace_back();
      if (table == nullptr) {
        plan->ops.back().error = "null OpPlan";
      } else {
        ReadOpPlan(*table, &plan->ops.back());
      }
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
  RejectDuplicates(plan);
  return true;
}

const PlannedOp* FindPlannedOp(const ModelPlan& plan, uint32_t subgraph_index,
                               uint32_t operator_index, std::string* why_not) {
  for (const PlannedOp& op : plan.ops) {
    if (op.subgraph_index == subgraph_index && op.operator_index == operator_index) return &op;
  }
  *why_not = "the plan has no entry for this operator";
  for (const SkippedNote& note : plan.skipped) {
    if (note.subgraph_index == subgraph_index && note.operator_index == operator_index) {
      *why_not = "the converter skipped it: " + note.reason;
    }
  }
  return nullptr;
}

const PlannedTuning* TuningFor(const PlannedOp& op, Isa isa) {
  const PlannedTuning* untagged = nullptr;
  for (const PlannedTuning& tuning : op.tunings) {
    if (tuning.isa == IsaName(isa)) return &tuning;
    if (tuning.isa.empty() && untagged == nullptr) untagged = &tuning;
  }
  return untagged;
}

KernelTuning KernelTuningFor(const PlannedOp& op, Isa isa) {
  KernelTuning kernel;
  if (const PlannedTuning* tuning = TuningFor(op, isa)) {
    kernel.claim = tuning->claim;
    kernel.variant = tuning->variant;
    kernel.params = tuning->params;
  }
  return kernel;
}

std::string DescribeMissingFeature(const PlanFeature& feature) {
  return "needs plan feature '" + feature.name + "' (" +
         (feature.since.empty() ? std::string("a newer tfpconv")
                                : "tfpconv " + feature.since + " or newer") +
         ")";
}

}  // namespace tfpconv
