// Portable unified FC kernel (no ISA flags), the fallback on any CPU. Decodes the packed format of
// unified_fc_kernels.h one output row (lane) at a time.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "unified_fc_kernels.h"

namespace tfpconv {
namespace kernels {
namespace fc_scalar {
namespace {

uint32_t SignWord(const uint8_t* signs, int u, int block) {
  if (block == 16) return uint32_t(signs[2 * u]) | (uint32_t(signs[2 * u + 1]) << 8);
  if (block == 8) return signs[u];
  return (signs[u / 2] >> (4 * (u & 1))) & 0xfu;
}

void Run(const FcArgs& a) {
  const FcPacked& p = *a.packed;
  const int b = p.block;
  for (int g = a.group_begin; g < a.group_end; ++g) {
    const int lanes = std::min(kFcGroup, p.out - g * kFcGroup);
    for (int r = 0; r < a.rows; ++r) {
      const float* x = a.x + size_t(r) * p.in;
      const FcGroupOffsets& off = p.group_off[g];
      float acc[kFcGroup] = {};
      // Free blocks, a word of 64 columns at a time, row by row (the free stream's order).
      const float* fp = p.free + off.free;
      for (int w = 0; w < p.words; ++w) {
        for (int l = 0; l < lanes; ++l) {
          const uint64_t bits = p.free_bits[size_t(g * kFcGroup + l) * p.words + w];
          float s = 0.0f;
          for (int j = 64 * w; j < std::min(p.nb, 64 * w + 64); ++j) {
            if (!((bits >> (j % 64)) & 1)) continue;
            const int i0 = j * b, bi = std::min(b, p.in - i0);
            for (int i = 0; i < bi; ++i) s += fp[i] * x[i0 + i];
            fp += bi;
          }
          acc[l] += s;
        }
      }
      // Unified blocks, column by column.
      const float* mp = p.mags + off.mags;
      const uint8_t* sp = p.signs + off.signs;
      for (int j = 0; j < p.nb; ++j) {
        const uint32_t ku = p.unified[size_t(g) * p.nb + j];
        const int i0 = j * b, bi = std::min(b, p.in - i0);
        int u = 0;
        for (int l = 0; l < kFcGroup; ++l) {
          if (!((ku >> l) & 1)) continue;
          const uint32_t word = SignWord(sp, u, b);
          float s = 0.0f;
          for (int i = 0; i < bi; ++i) s += (word >> i & 1) ? -x[i0 + i] : x[i0 + i];
          acc[l] += mp[u] * s;
          ++u;
        }
        mp += u;
        sp += FcSignBytes(u, b);
      }
      float* y = a.y + size_t(r) * p.out + size_t(g) * kFcGroup;
      for (int l = 0; l < lanes; ++l) {
        const float v = acc[l] + p.bias[g * kFcGroup + l];
        y[l] = std::min(std::max(v, a.lo), a.hi);  // a NaN stays NaN
      }
    }
  }
}

constexpr FcKernelSet kSet = {"scalar", Run, nullptr, nullptr, 0};

}  // namespace
}  // namespace fc_scalar

const FcKernelSet* ScalarFcKernels() { return &fc_scalar::kSet; }

}  // namespace kernels
}  // namespace tfpconv
