// Portable kernels: one float per "vector", no ISA flags. The fallback on any CPU.
#define TFPCONV_KERNEL_NS scalar
#include "kernel_impl.h"

namespace tfpconv {
namespace kernels {
namespace scalar {
namespace {

struct Vec {
  using V = float;
  static constexpr int kLanes = 1;
  static constexpr int kRegisters = 16;
  static TFP_INLINE V Load(const float* p) { return *p; }
  static TFP_INLINE void Store(float* p, V v) { *p = v; }
  static TFP_INLINE V Set1(float f) { return f; }
  static TFP_INLINE V Fma(V a, V b, V c) { return a * b + c; }
  static TFP_INLINE V Add(V a, V b) { return a + b; }
  static TFP_INLINE V Zero() { return 0.0f; }
  // Like x86 minps / maxps: b when either is NaN (kernel_impl.h's store relies on it).
  static TFP_INLINE V Min(V a, V b) { return a < b ? a : b; }
  static TFP_INLINE V Max(V a, V b) { return a > b ? a : b; }
  static TFP_INLINE void Transpose(V (&)[1]) {}
};

constexpr Variant kVariants[] = {
    MakeVariant<Vec, 4, 4, false>("r4v4"),
    MakeVariant<Vec, 2, 3, false>("r2v3"),
    MakeWholeRowVariant<Vec, 8>("w8"),
    // One activation unit wide (kActivationUnitPixels): the tile of the gathered path.
    MakeVariant<Vec, 2, 16, false>("r2v16"),
};
constexpr KernelSet kSet = MakeKernelSet<Vec>(kVariants, "r2v16");

}  // namespace
}  // namespace scalar

const KernelSet* ScalarKernels() { return &scalar::kSet; }

}  // namespace kernels
}  // namespace tfpconv
