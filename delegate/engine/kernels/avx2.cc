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
  static TFP_INLINE V Load(const float* p) { return _mm256_loadu_ps(p); }
  static TFP_INLINE void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static TFP_INLINE V Set1(float f) { return _mm256_set1_ps(f); }
  static TFP_INLINE V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
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
constexpr KernelSet kSet{Vec::kLanes, sizeof(kVariants) / sizeof(kVariants[0]), kVariants};

}  // namespace
}  // namespace avx2

const KernelSet* Avx2Kernels() { return &avx2::kSet; }

}  // namespace kernels
}  // namespace tfpconv
