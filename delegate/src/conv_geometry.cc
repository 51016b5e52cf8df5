#include "conv_geometry.h"

#include <algorithm>
#include <limits>

namespace tfpconv {
namespace {

// Output size and leading padding of one spatial dimension. TFLite: SAME gives ceil(in / stride)
// outputs and pads (out - 1) * stride + k - in in total, the odd element at the end; VALID gives
// ceil((in - k + 1) / stride) outputs and no padding.
bool ResolveDimension(tfl::Padding padding, int in, int stride, int kernel, int* out,
                      int* pad_before) {
  const long long size = padding == tfl::kPaddingSame ? (static_cast<long long>(in) + stride - 1) / stride
                                                      : (static_cast<long long>(in) - kernel + stride) / stride;
  if (in <= 0 || size <= 0) return false;
  const long long total = std::max<long long>((size - 1) * stride + kernel - in, 0);
  *out = static_cast<int>(size);
  *pad_before = static_cast<int>(total / 2);
  return true;
}

}  // namespace

std::string UnsupportedConvParams(const tfl::ConvParams& params) {
  if (params.padding != tfl::kPaddingSame && params.padding != tfl::kPaddingValid) {
    return "padding is neither SAME nor VALID";
  }
  const auto supported_stride = [](int s) { return s == 1 || s == 2; };
  if (!supported_stride(params.stride_height) || !supported_stride(params.stride_width)) {
    return "stride " + std::to_string(params.stride_height) + "x" + std::to_string(params.stride_width) +
           " (only 1 and 2 are supported)";
  }
  if (params.dilation_height_factor != 1 || params.dilation_width_factor != 1) {
    return "dilated convolution";
  }
  if (params.activation != tfl::kActNone && params.activation != tfl::kActRelu &&
      params.activation != tfl::kActRelu6) {
    return "fused activation " + std::to_string(params.activation) + " (only NONE, RELU, RELU6)";
  }
  return std::string();
}

bool ResolveConvShape(const tfl::ConvParams& params, int batch, int in_h, int in_w, int in_c,
                      int out_c, ConvShape* shape, std::string* error, int kernel_h,
                      int kernel_w) {
  if (batch <= 0 || in_c <= 0 || out_c <= 0) {
    *error = "empty batch or channel dimension";
    return false;
  }
  ConvShape result;
  result.batch = batch;
  result.in_h = in_h;
  result.in_w = in_w;
  result.in_c = in_c;
  result.out_c = out_c;
  result.stride_h = params.stride_height;
  result.stride_w = params.stride_width;
  if (!ResolveDimension(params.padding, in_h, params.stride_height, kernel_h, &result.out_h,
                        &result.pad_top) ||
      !ResolveDimension(params.padding, in_w, params.stride_width, kernel_w, &result.out_w,
                        &result.pad_left)) {
    *error = "input " + std::to_string(in_h) + "x" + std::to_string(in_w) + " gives an empty output";
    return false;
  }
  ActivationClamp(params.activation, &result.act_min, &result.act_max);
  *shape = result;
  return true;
}

void ActivationClamp(tfl::FusedActivation activation, float* min, float* max) {
  *min = std::numeric_limits<float>::lowest();
  *max = std::numeric_limits<float>::max();
  if (activation == tfl::kActRelu || activation == tfl::kActRelu6) *min = 0.0f;
  if (activation == tfl::kActRelu6) *max = 6.0f;
  if (activation == tfl::kActReluN1To1) {
    *min = -1.0f;
    *max = 1.0f;
  }
}

bool SameConvShape(const ConvShape& a, const ConvShape& b) {
  return a.batch == b.batch && a.in_h == b.in_h && a.in_w == b.in_w && a.in_c == b.in_c &&
         a.out_h == b.out_h && a.out_w == b.out_w && a.out_c == b.out_c && a.stride_h == b.stride_h &&
         a.stride_w == b.stride_w && a.pad_top == b.pad_top && a.pad_left == b.pad_left &&
         a.act_min == b.act_min && a.act_max == b.act_max;
}

int TfliteOutputSize(tfl::Padding padding, int in, int stride, int kernel) {
  if (stride <= 0) return -1;
  // C++ division truncates toward zero, as in TFLite's ComputeOutSize.
  return padding == tfl::kPaddingSame ? (in + stride - 1) / stride : (in + stride - kernel) / stride;
}

}  // namespace tfpconv
