// CONV_2D geometry the TFLite way: output size and padding from the op's padding mode and strides,
// and the clamp of the fused activation. Pure functions, no TFLite state.
#ifndef TFPCONV_SRC_CONV_GEOMETRY_H_
#define TFPCONV_SRC_CONV_GEOMETRY_H_

#include <string>

#include "pattern_conv.h"
#include "tflite_abi.h"

namespace tfpconv {

constexpr int kKernelSize = 3;

// Why the delegate cannot run a CONV_2D with these options, or an empty string.
std::string UnsupportedConvParams(const tfl::ConvParams& params);

// Fills *shape for an NHWC input [batch, in_h, in_w, in_c] and out_c output channels of a
// kernel_h x kernel_w filter. Returns false with *error when the sizes are not positive or the
// output would be empty. The params must have passed UnsupportedConvParams.
bool ResolveConvShape(const tfl::ConvParams& params, int batch, int in_h, int in_w, int in_c,
                      int out_c, ConvShape* shape, std::string* error, int kernel_h = kKernelSize,
                      int kernel_w = kKernelSize);

bool SameConvShape(const ConvShape& a, const ConvShape& b);

// The clamp [*min, *max] of a fused activation (NONE, RELU, RELU_N1_TO_1, RELU6).
void ActivationClamp(tfl::FusedActivation activation, float* min, float* max);

// TFLite's output size of one spatial dimension of a CONV_2D (kernel taps along it), also where
// ResolveConvShape refuses: 0 for an empty output, negative where TFLite's own kernel fails too.
int TfliteOutputSize(tfl::Padding padding, int in, int stride, int kernel = kKernelSize);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_CONV_GEOMETRY_H_
