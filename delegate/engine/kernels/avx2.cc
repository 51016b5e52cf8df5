// AVX2 + FMA kernels (8 floats per vector, 16 registers). Compiled with -mavx2 -mfma only here.
#include <immintrin.h>

#define TFPCONV_KERNEL_NS avx2
#include "kernel_impl.h"

namespace tfpconv {
namespace kernels {
namespace avx2 {
namespace {

struct Vec {
  using V = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kRegisters = 16;
  static TFP_INLINE V Load(const float* p) { return _mm256_loadu_ps(p); }
  static TFP_INLINE void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static TFP_INLINE V Set1(float f) { return _mm256_set1_ps(f); }
  static TFP_INLINE V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static TFP_INLINE V Add(V a, V b) { return _mm256_add_ps(a, b); }
  static TFP_INLINE V Zero() { return _mm256_setzero_ps(); }
  // b when either is NaN (the store clamp in kernel_impl.h relies on it).
  static TFP_INLINE V Min(V a, V b) { return _mm256_min_ps(a, b); }
  static TFP_INLINE V Max(V a, V b) { return _mm256_max_ps(a, b); }
  // 8x8: interleave row pairs, then 4x4 blocks within 128-bit lanes, then swap the lanes.
  static TFP_INLINE void Transpose(V (&r)[8]) {
    V t[8], u[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 2; ++g) {
      u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
      u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
      u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
      u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int m = 0; m < 4; ++m) {
      r[m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
      r[4 + m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
    }
  }
};

// Flat variants hold R x V accumulators + 1 broadcast weight (inputs are FMA memory operands) in
// the 16 ymm registers; the pattern variant also needs 4 weights and a loaded input.
constexpr Variant kVariants[] = {
    MakeVariant<Vec, 4, 2, true>("r4v2-pattern"), MakeVariant<Vec, 4, 2, false>("r4v2"),
    MakeVariant<Vec, 6, 2, false>("r6v2"),        MakeVariant<Vec, 8, 1, false>("r8v1"),
    MakeVariant<Vec, 12, 1, false>("r12v1"),      MakeVariant<Vec, 3, 4, false>("r3v4"),
    MakeWholeRowVariant<Vec, 1>("w1"),            MakeWholeRowVariant<Vec, 2>("w2"),
    MakeWholeRowVariant<Vec, 4>("w4"),            MakeWholeRowVariant<Vec, 8>("w8"),
};
// Gathered tiles (masked activations, packing.h): 4 units x 2 vectors, 8 accumulators. On VGG-16's
// conv3_2 and conv4_2 it measured as fast as r6v2 on average, faster than r2v2 (4 accumulators).
constexpr KernelSet kSet = MakeKernelSet<Vec>(kVariants, "r4v2");

}  // namespace
}  // namespace avx2

const KernelSet* Avx2Kernels() { return &avx2::kSet; }

}  // namespace kernels
}  // namespace tfpconv
