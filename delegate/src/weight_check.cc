#include "weight_check.h"

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "crc32.h"

namespace tfpconv {
namespace {

constexpr int kTaps = 9;
constexpr uint32_t kMagnitudeBits = 0x7FFFFFFFu;  // a float's bits without the sign

// memcpy: the tensor data need not be float-aligned.
float LoadFloat(const unsigned char* data, size_t index) {
  float value;
  std::memcpy(&value, data + index * sizeof(float), sizeof(float));
  return value;
}

uint32_t MagnitudeBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits & kMagnitudeBits;
}

std::string FormatValue(float value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.9g", static_cast<double>(value));
  return text;
}

bool CheckPatternWeights(const PlannedOp& conv, const unsigned char* filter, std::string* error) {
  const int in_c = conv.in_channels;
  const bool has_unified = !conv.pattern_unified.empty();
  for (int o = 0; o < conv.out_channels; ++o) {
    for (int i = 0; i < in_c; ++i) {
      const size_t kernel = static_cast<size_t>(o) * in_c + i;
      const int code = conv.pattern.codes[kernel];
      const unsigned mask = code < 0 ? 0u : conv.pattern.library[static_cast<size_t>(code)];
      const bool unified = has_unified && conv.pattern_unified[kernel] == 1;
      int first_tap = -1;
      float first = 0.0f;
      for (int tap = 0; tap < kTaps; ++tap) {
        const float value = LoadFloat(filter, (static_cast<size_t>(o) * kTaps + tap) * in_c + i);
        if ((mask >> tap) & 1u) {
          if (!unified) continue;
          if (first_tap < 0) {
            first_tap = tap;
            first = value;
          } else if (MagnitudeBits(value) != MagnitudeBits(first)) {
            *error = "the weights do not follow the plan: kernel (out " + std::to_string(o) +
                     ", in " + std::to_string(i) + ") is unified but tap " + std::to_string(tap) +
                     " is " + FormatValue(value) + " and tap " + std::to_string(first_tap) +
                     " is " + FormatValue(first) + " (magnitudes differ)";
            return false;
          }
          continue;
        }
        if (value != 0.0f) {
          *error = "the weights do not follow the plan: kernel (out " + std::to_string(o) + ", in " +
                   std::to_string(i) + ") has a non-zero at tap " + std::to_string(tap) +
                   " outside its pattern";
          return false;
        }
      }
    }
  }
  return true;
}

bool CheckUnifiedWeights(const PlannedOp& op, const unsigned char* weights, std::string* error) {
  const UnifiedFcPlan& plan = op.unified_fc;
  const int in = plan.in_features;
  const int block_size = plan.block_size;
  const int blocks = plan.blocks();
  for (int o = 0; o < plan.out_features; ++o) {
    const size_t row = static_cast<size_t>(o) * in;
    for (int b = 0; b < blocks; ++b) {
      const uint8_t state = plan.states[static_cast<size_t>(o) * blocks + b];
      if (state == UnifiedFcPlan::kFree) continue;
      const int begin = b * block_size;
      const int end = begin + block_size < in ? begin + block_size : in;
      const float first = LoadFloat(weights, row + begin);
      for (int i = begin; i < end; ++i) {
        const float value = LoadFloat(weights, row + i);
        const std::string where = "the weights do not follow the plan: row " + std::to_string(o) +
                                  ", block " + std::to_string(b) + " (inputs " +
                                  std::to_string(begin) + ".." + std::to_string(end - 1) + ")";
        if (state == UnifiedFcPlan::kPruned && value != 0.0f) {
          *error = where + " is pruned but input " + std::to_string(i) + " is " +
                   FormatValue(value);
          return false;
        }
        if (state == UnifiedFcPlan::kUnified && MagnitudeBits(value) != MagnitudeBits(first)) {
          *error = where + " is unified but input " + std::to_string(i) + " is " +
                   FormatValue(value) + " and input " + std::to_string(begin) + " is " +
                   FormatValue(first) + " (magnitudes differ)";
          return false;
        }
      }
    }
  }
  return true;
}

}  // namespace

bool CheckWeightsAgainstPlan(const PlannedOp& op, const void* weights, size_t bytes,
                             std::string* error) {
  const bool fully_connected = op.kind == PlannedOpKind::kUnifiedFc && !op.unified_fc.conv1x1;
  const char* noun = fully_connected ? "weight tensor" : "filter";
  if (weights == nullptr) {
    *error = fully_connected ? "the weight tensor has no data" : "the filter tensor has no data";
    return false;
  }
  if (bytes != op.weight_bytes) {
    *error = std::string("stale plan: the ") + noun + " has " + std::to_string(bytes) +
             " bytes, the plan expects " + std::to_string(op.weight_bytes);
    return false;
  }
  const uint32_t crc = Crc32(weights, bytes);
  if (crc != op.weight_checksum) {
    char message[128];
    std::snprintf(message, sizeof(message),
                  "stale plan: weight checksum mismatch (plan %08" PRIx32 ", weights %08" PRIx32 ")",
                  op.weight_checksum, crc);
    *error = message;
    return false;
  }
  const auto* data = static_cast<const unsigned char*>(weights);
  switch (op.kind) {
    case PlannedOpKind::kPatternConv:
      return CheckPatternWeights(op, data, error);
    case PlannedOpKind::kUnifiedFc:
      return CheckUnifiedWeights(op, data, error);
    case PlannedOpKind::kDenseConv:
      return true;  // dense weights: any values (the checksum above pins them)
    case PlannedOpKind::kUnknown:
      break;
  }
  *error = "the plan entry is of a kind this delegate does not check";
  return false;
}

}  // namespace tfpconv
