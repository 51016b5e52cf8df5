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
  return spec;
}

std::vector<uint8_t> BuildPlan(const std::vector<ConvPlanSpec>& convs,
                               const std::vector<SkippedSpec>& skipped, uint32_t schema_version,
                               bool with_identifier) {
  flatbuffers::FlatBufferBuilder builder;
  builder.ForceDefaults(true);
  const auto params_of = [&](const std::vector<std::pair<std::string, int64_t>>& entries) {
    std::vector<flatbuffers::Offset<fb::TunedParam>> params;
    for (const auto& entry : entries) {
      params.push_back(fb::CreateTunedParamDirect(builder, entry.first.c_str(), entry.second));
    }
    return params;
  };
  std::vector<flatbuffers::Offset<fb::ConvPlan>> conv_offsets;
  std::vector<flatbuffers::Offset<fb::OpPlan>> op_offsets;
  for (const ConvPlanSpec& spec : convs) {
    if (schema_version == 1) {
      const auto tuned = params_of(spec.tuned);
      conv_offsets.push_back(fb::CreateConvPlanDirect(
          builder, spec.subgraph_index, spec.operator_index, spec.weight_tensor_index,
          static_cast<fb::ChecksumKind>(spec.checksum_kind), spec.weight_checksum,
          spec.weight_bytes, &spec.kernel_shape, &spec.library, &spec.codes, &spec.filter_order,
          &spec.group_offsets, &tuned));
      continue;
    }
    std::vector<flatbuffers::Offset<fb::Feature>> features;
    for (const FeatureSpec& feature : spec.requires_features) {
      features.push_back(fb::CreateFeatureDirect(builder, feature.name.c_str(),
                                                 feature.since.c_str()));
    }
    std::vector<flatbuffers::Offset<fb::Tuning>> tunings;
    for (const TuningSpec& tuning : spec.tunings) {
      const auto params = params_of(tuning.params);
      tunings.push_back(fb::CreateTuningDirect(builder, tuning.isa.c_str(), tuning.cpu.c_str(),
                                               tuning.claim, tuning.variant.c_str(), &params));
    }
    flatbuffers::Offset<void> kind;
    if (spec.kind_type != 0) {
      kind = fb::CreatePatternConvDirect(builder, &spec.kernel_shape, &spec.library, &spec.codes,
                                         &spec.filter_order, &spec.group_offsets)
                 .Union();
    } else {
      // NONE with a value: the (required) field must be present to pass the Verifier.
      kind = fb::CreateFeatureDirect(builder, "none").Union();
    }
    op_offsets.push_back(fb::CreateOpPlanDirect(
        builder, spec.subgraph_index, spec.operator_index, &features, spec.weight_tensor_index,
        static_cast<fb::ChecksumKind>(spec.checksum_kind), spec.weight_checksum, spec.weight_bytes,
        static_cast<fb::OpKind>(spec.kind_type), kind, &tunings));
  }
  std::vector<flatbuffers::Offset<fb::SkippedOp>> skipped_offsets;
  for (const SkippedSpec& spec : skipped) {
    skipped_offsets.push_back(
        fb::CreateSkippedOpDirect(builder, 0, spec.operator_index, "CONV_2D", spec.reason.c_str()));
  }
  const std::string producer = schema_version == 1 ? "tfpconv 0.1.0 tests" : "tfpconv tests";
  auto plan = fb::CreatePlanDirect(builder, schema_version, producer.c_str(),
                                   schema_version == 1 ? &conv_offsets : nullptr, &skipped_offsets,
                                   schema_version == 1 ? nullptr : &op_offsets);
  if (with_identifier) {
    fb::FinishPlanBuffer(builder, plan);
  } else {
    builder.Finish(plan);
  }
  return std::vector<uint8_t>(builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize());
}

}  // namespace testing
}  // namespace tfpconv
