// AVX-512F kernels (16 floats per vector, 32 registers). Compiled with -mavx512f only here.
#include <immintrin.h>

#define TFPCONV_KERNEL_NS avx512
#include "kernel_impl.h"

namespace tfpconv {
namespace kernels {
namespace avx512 {
namespace {

struct Vec {
  using V = __m512;
  static constexpr int kLanes = 16;
  static TFP_INLINE V Load(const float* p) { return _mm512_loadu_ps(p); }
  static TFP_INLINE void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static TFP_INLINE V Set1(float f) { return _mm512_set1_ps(f); }
  static TFP_INLINE V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};

constexpr Variant kVariants[] = {
    MakeVariant<Vec, 4, 2, true>("r4v2-pattern"), MakeVariant<Vec, 4, 2, false>("r4v2"),
    MakeVariant<Vec, 6, 2, false>("r6v2"),        MakeVariant<Vec, 8, 1, false>("r8v1"),
    MakeVariant<Vec, 12, 1, false>("r12v1"),      MakeVariant<Vec, 8, 2, false>("r8v2"),
    MakeWholeRowVariant<Vec, 1>("w1"),            MakeWholeRowVariant<Vec, 2>("w2"),
    MakeWholeRowVariant<Vec, 4>("w4"),            MakeWholeRowVariant<Vec, 8>("w8"),
};
constexpr KernelSet kSet{Vec::kLanes, sizeof(kVariants) / sizeof(kVariants[0]), kVariants};

}  // namespace
}  // namespace avx512

const KernelSet* Avx512Kernels() { return &avx512::kSet; }

}  // namespace kernels
}  // namespace tfpconv
