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
  static constexpr int kRegisters = 32;
  static TFP_INLINE V Load(const float* p) { return vld1q_f32(p); }
  static TFP_INLINE void Store(float* p, V v) { vst1q_f32(p, v); }
  static TFP_INLINE V Set1(float f) { return vdupq_n_f32(f); }
  static TFP_INLINE V Fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  static TFP_INLINE V Add(V a, V b) { return vaddq_f32(a, b); }
  static TFP_INLINE V Zero() { return vdupq_n_f32(0.0f); }
  // NaN when either is NaN (the store clamp in kernel_impl.h needs NaN to survive).
  static TFP_INLINE V Min(V a, V b) { return vminq_f32(a, b); }
  static TFP_INLINE V Max(V a, V b) { return vmaxq_f32(a, b); }
  static TFP_INLINE void Transpose(V (&r)[4]) {
    const float32x4x2_t ab = vtrnq_f32(r[0], r[1]), cd = vtrnq_f32(r[2], r[3]);
    r[0] = vcombine_f32(vget_low_f32(ab.val[0]), vget_low_f32(cd.val[0]));
    r[1] = vcombine_f32(vget_low_f32(ab.val[1]), vget_low_f32(cd.val[1]));
    r[2] = vcombine_f32(vget_high_f32(ab.val[0]), vget_high_f32(cd.val[0]));
    r[3] = vcombine_f32(vget_high_f32(ab.val[1]), vget_high_f32(cd.val[1]));
  }
};

constexpr Variant kVariants[] = {
    MakeVariant<Vec, 4, 4, true>("r4v4-pattern"), MakeVariant<Vec, 4, 4, false>("r4v4"),
    MakeVariant<Vec, 8, 2, false>("r8v2"),        MakeVariant<Vec, 6, 3, false>("r6v3"),
    MakeVariant<Vec, 4, 2, false>("r4v2"),
    MakeWholeRowVariant<Vec, 2>("w2"),            MakeWholeRowVariant<Vec, 4>("w4"),
    MakeWholeRowVariant<Vec, 8>("w8"),            MakeWholeRowVariant<Vec, 16>("w16"),
};
// Gathered tiles (masked activations, packing.h): 4 units x 4 vectors.
constexpr KernelSet kSet = MakeKernelSet<Vec>(kVariants, "r4v4");

}  // namespace
}  // namespace neon

const KernelSet* NeonKernels() { return &neon::kSet; }

}  // namespace kernels
}  // namespace tfpconv
