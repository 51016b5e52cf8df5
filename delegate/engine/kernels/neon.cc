// NEON kernels for aarch64 (4 floats per vector, 32 registers).
#include <arm_neon.h>

#define TFPCONV_KERNEL_NS neon
#include "kernel_impl.h"

namespace tfpconv {
namespace kernels {
namespace neon {
namespace {

struct Vec {
  using V = float32x4_t;
  static constexpr int kLanes = 4;
  static TFP_INLINE V Load(const float* p) { return vld1q_f32(p); }
  static TFP_INLINE void Store(float* p, V v) { vst1q_f32(p, v); }
  static TFP_INLINE V Set1(float f) { return vdupq_n_f32(f); }
  static TFP_INLINE V Fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
};

constexpr Variant kVariants[] = {
    MakeVariant<Vec, 4, 4, true>("r4v4-pattern"), MakeVariant<Vec, 4, 4, false>("r4v4"),
    MakeVariant<Vec, 8, 2, false>("r8v2"),        MakeVariant<Vec, 6, 3, false>("r6v3"),
    MakeVariant<Vec, 4, 2, false>("r4v2"),
    MakeWholeRowVariant<Vec, 2>("w2"),            MakeWholeRowVariant<Vec, 4>("w4"),
    MakeWholeRowVariant<Vec, 8>("w8"),            MakeWholeRowVariant<Vec, 16>("w16"),
};
constexpr KernelSet kSet{Vec::kLanes, sizeof(kVariants) / sizeof(kVariants[0]), kVariants};

}  // namespace
}  // namespace neon

const KernelSet* NeonKernels() { return &neon::kSet; }

}  // namespace kernels
}  // namespace tfpconv
