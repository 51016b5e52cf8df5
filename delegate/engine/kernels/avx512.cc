// AVX-512F kernels (16 floats per vector, 32 registers). Compiled with -mavx512f only here.
#include <immintrin.h>

// GCC 12 flags the undefined source operand inside its own AVX-512 intrinsics (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define TFPCONV_KERNEL_NS avx512
#include "kernel_impl.h"

namespace tfpconv {
namespace kernels {
namespace avx512 {
namespace {

struct Vec {
  using V = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kRegisters = 32;
  static TFP_INLINE V Load(const float* p) { return _mm512_loadu_ps(p); }
  static TFP_INLINE void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static TFP_INLINE V Set1(float f) { return _mm512_set1_ps(f); }
  static TFP_INLINE V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static TFP_INLINE V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static TFP_INLINE V Zero() { return _mm512_setzero_ps(); }
  // b when either is NaN (the store clamp in kernel_impl.h relies on it).
  static TFP_INLINE V Min(V a, V b) { return _mm512_min_ps(a, b); }
  static TFP_INLINE V Max(V a, V b) { return _mm512_max_ps(a, b); }
  // 16x16: interleave row pairs, then 4x4 blocks within 128-bit lanes, then the lanes themselves.
  static TFP_INLINE void Transpose(V (&r)[16]) {
    V t[16], u[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; ++g) {
      u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
      u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
      u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
      u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int m = 0; m < 4; ++m) {
      const V v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);
      const V v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
      const V v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
      const V v3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
      r[m] = _mm512_shuffle_f32x4(v0, v2, 0x88);
      r[4 + m] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
      r[8 + m] = _mm512_shuffle_f32x4(v1, v3, 0x88);
      r[12 + m] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
  }
};

constexpr Variant kVariants[] = {
    MakeVariant<Vec, 4, 2, true>("r4v2-pattern"), MakeVariant<Vec, 4, 2, false>("r4v2"),
    MakeVariant<Vec, 6, 2, false>("r6v2"),        MakeVariant<Vec, 8, 1, false>("r8v1"),
    MakeVariant<Vec, 12, 1, false>("r12v1"),      MakeVariant<Vec, 8, 2, false>("r8v2"),
    MakeWholeRowVariant<Vec, 1>("w1"),            MakeWholeRowVariant<Vec, 2>("w2"),
    MakeWholeRowVariant<Vec, 4>("w4"),            MakeWholeRowVariant<Vec, 8>("w8"),
    // One activation unit wide (kActivationUnitPixels): the tile of the gathered path.
    MakeVariant<Vec, 4, 1, false>("r4v1"),
};
// Gathered tiles (masked activations, packing.h): 4 units, so a tile's 9 planes per input channel
// are about as large as r8v1's 3 and a block of input channels holds about as many kernels per
// output channel. Measured on VGG-16's conv3_2 and conv4_2 with every unit active (Zen 4: one
// 512-bit FMA per cycle, so 4 accumulators keep it busy), r4v1 ran 10-15% faster than r8v1 and
// ~5% faster than r6v1, whose blocks hold 2x and 1.5x fewer input channels (more loop exits).
constexpr KernelSet kSet = MakeKernelSet<Vec>(kVariants, "r4v1");

}  // namespace
}  // namespace avx512

const KernelSet* Avx512Kernels() { return &avx512::kSet; }

}  // namespace kernels
}  // namespace tfpconv
