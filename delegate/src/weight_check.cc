#include "weight_check.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "crc32.h"

namespace tfpconv {

bool CheckWeightsAgainstPlan(const PlannedOp& conv, const void* weights, size_t bytes,
                             std::string* error) {
  if (weights == nullptr) {
    *error = "the filter tensor has no data";
    return false;
  }
  if (bytes != conv.weight_bytes) {
    *error = "stale plan: the filter has " + std::to_string(bytes) + " bytes, the plan expects " +
             std::to_string(conv.weight_bytes);
    return false;
  }
  const uint32_t crc = Crc32(weights, bytes);
  if (crc != conv.weight_checksum) {
    char message[128];
    std::snprintf(message, sizeof(message),
                  "stale plan: weight checksum mismatch (plan %08" PRIx32 ", weights %08" PRIx32 ")",
                  conv.weight_checksum, crc);
    *error = message;
    return false;
  }
  const int in_c = conv.in_channels;
  const auto* filter = static_cast<const unsigned char*>(weights);
  for (int o = 0; o < conv.out_channels; ++o) {
    for (int i = 0; i < in_c; ++i) {
      const int code = conv.pattern.codes[static_cast<size_t>(o) * in_c + i];
      const unsigned mask = code < 0 ? 0u : conv.pattern.library[static_cast<size_t>(code)];
      for (int tap = 0; tap < 9; ++tap) {
        if ((mask >> tap) & 1u) continue;
        float value;  // memcpy: the tensor data need not be float-aligned
        std::memcpy(&value, filter + ((static_cast<size_t>(o) * 9 + tap) * in_c + i) * sizeof(float),
                    sizeof(float));
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

}  // namespace tfpconv
