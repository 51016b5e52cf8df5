#include "test_plans.h"

#include <random>

#include "crc32.h"
#include "tfpconv_plan_generated.h"

namespace tfpconv {
namespace testing {

std::vector<uint16_t> DefaultLibrary() {
  // Masks as 3x3 drawings, rows top to bottom; x = kept.
  const char* drawings[] = {"xx./.x./..x", ".x./xx./.x.", "x.x/.x./.x.", ".../xxx/.x.",
                            ".../.xx/.xx", "..x/.x./x.x", ".x./.xx/.x.", "x../xx./x.."};
  std::vector<uint16_t> library;
  for (const char* drawing : drawings) {
    uint16_t mask = 0;
    int tap = 0;
    for (const char* c = drawing; *c; ++c) {
      if (*c == '/') continue;
      if (*c == 'x') mask |= static_cast<uint16_t>(1u << tap);
      ++tap;
    }
    library.push_back(mask);
  }
  return library;
}

PrunedFilter MakePrunedFilter(int out_c, int in_c, double pruned_fraction, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  PrunedFilter filter;
  filter.out_c = out_c;
  filter.in_c = in_c;
  filter.library = DefaultLibrary();
  filter.weights.assign(static_cast<size_t>(out_c) * 9 * in_c, 0.0f);
  filter.codes.resize(static_cast<size_t>(out_c) * in_c);
  std::uniform_int_distribution<int> pattern(0, static_cast<int>(filter.library.size()) - 1);
  for (int o = 0; o < out_c; ++o) {
    for (int i = 0; i < in_c; ++i) {
      int8_t code = unit(rng) < pruned_fraction ? int8_t{-1} : static_cast<int8_t>(pattern(rng));
      filter.codes[static_cast<size_t>(o) * in_c + i] = code;
      if (code < 0) continue;
      for (int tap = 0; tap < 9; ++tap) {
        if ((filter.library[static_cast<size_t>(code)] >> tap) & 1u) {
          float w = value(rng);
          if (w == 0.0f) w = 0.5f;
          filter.weights[(static_cast<size_t>(o) * 9 + tap) * in_c + i] = w;
        }
      }
    }
  }
  filter.bias.resize(static_cast<size_t>(out_c));
  for (float& b : filter.bias) b = value(rng);
  return filter;
}

ConvPlanSpec SpecFor(const PrunedFilter& filter, uint32_t operator_index, int32_t weight_tensor_index) {
  ConvPlanSpec spec;
  spec.operator_index = operator_index;
  spec.weight_tensor_index = weight_tensor_index;
  spec.weight_bytes = filter.weights.size() * sizeof(float);
  spec.weight_checksum = Crc32(filter.weights.data(), spec.weight_bytes);
  spec.kernel_shape = {filter.out_c, 3, 3, filter.in_c};
  spec.library = filter.library;
  spec.codes = filter.codes;
  for (int o = 0; o < filter.out_c; ++o) spec.filter_order.push_back(o);
  for (int g = 0; g < filter.out_c; g += 8) spec.group_offsets.push_back(g);
  spec.group_offsets.push_back(filter.out_c);
  spec.tuned = {{"tile_oc", 8}, {"unknown_key", 1}};
  return spec;
}

std::vector<uint8_t> BuildPlan(const std::vector<ConvPlanSpec>& convs,
                               const std::vector<SkippedSpec>& skipped, uint32_t schema_version,
                               bool with_identifier) {
  flatbuffers::FlatBufferBuilder builder;
  builder.ForceDefaults(true);
  std::vector<flatbuffers::Offset<fb::ConvPlan>> conv_offsets;
  for (const ConvPlanSpec& spec : convs) {
    std::vector<flatbuffers::Offset<fb::TunedParam>> tuned;
    for (const auto& entry : spec.tuned) {
      tuned.push_back(fb::CreateTunedParamDirect(builder, entry.first.c_str(), entry.second));
    }
    conv_offsets.push_back(fb::CreateConvPlanDirect(
        builder, spec.subgraph_index, spec.operator_index, spec.weight_tensor_index,
        static_cast<fb::ChecksumKind>(spec.checksum_kind), spec.weight_checksum, spec.weight_bytes,
        &spec.kernel_shape, &spec.library, &spec.codes, &spec.filter_order, &spec.group_offsets,
        &tuned));
  }
  std::vector<flatbuffers::Offset<fb::SkippedOp>> skipped_offsets;
  for (const SkippedSpec& spec : skipped) {
    skipped_offsets.push_back(
        fb::CreateSkippedOpDirect(builder, 0, spec.operator_index, "CONV_2D", spec.reason.c_str()));
  }
  auto plan = fb::CreatePlanDirect(builder, schema_version, "tfpconv tests", &conv_offsets,
                                   &skipped_offsets);
  if (with_identifier) {
    fb::FinishPlanBuffer(builder, plan);
  } else {
    builder.Finish(plan);
  }
  return std::vector<uint8_t>(builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize());
}

}  // namespace testing
}  // namespace tfpconv
