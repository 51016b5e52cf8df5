#include "mask_selection.h"

#include <algorithm>

#include "conv_geometry.h"
#include "crc32.h"
#include "tensor_util.h"

namespace tfpconv {
namespace {

// How many nodes of the execution plan read `tensor`.
int ReaderCount(tfl::Context* context, int tensor) {
  tfl::IntArray* plan = nullptr;
  if (context->GetExecutionPlan(context, &plan) != tfl::kOk || plan == nullptr) return -1;
  int readers = 0;
  for (int i = 0; i < plan->size; ++i) {
    tfl::Node* node = nullptr;
    tfl::Registration* registration = nullptr;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node, &registration) != tfl::kOk ||
        node == nullptr) {
      return -1;
    }
    if (Contains(node->inputs, tensor)) ++readers;
  }
  return readers;
}

// Checks the mask tensor's shape, bytes and values; fills mask->pixels.
std::string CheckMaskTensor(const tfl::Tensor* tensor, const ActivationMaskRecord& record,
                            int height, int width, ClaimedMask* mask) {
  if (!IsFloatTensorOfRank(tensor, 4) || !IsConstantFloat(tensor)) {
    return "the mask is not a constant float32 [1, H, W, 1] tensor";
  }
  const int* d = tensor->dims->data;
  if (d[0] != 1 || d[1] != height || d[2] != width || d[3] != 1 || record.height != height ||
      record.width != width) {
    return "the mask's shape does not match the convolution's " + std::to_string(height) + "x" +
           std::to_string(width) + " output";
  }
  const size_t pixels = static_cast<size_t>(height) * static_cast<size_t>(width);
  if (tensor->bytes != pixels * sizeof(float)) return "the mask tensor has the wrong byte count";
  if (Crc32(tensor->data, tensor->bytes) != record.mask_checksum) {
    return "stale plan: the mask tensor's checksum differs from the plan's";
  }
  const float* values = static_cast<const float*>(tensor->data);
  mask->pixels.resize(pixels);
  for (size_t i = 0; i < pixels; ++i) {
    if (values[i] != 0.0f && values[i] != 1.0f) return "the mask holds a value other than 0 and 1";
    mask->pixels[i] = values[i] != 0.0f ? 1 : 0;
  }
  return std::string();
}

}  // namespace

void IntersectClamp(float min, float max, float* out_min, float* out_max) {
  *out_min = std::max(*out_min, min);
  *out_max = std::min(*out_max, max);
}

std::string SelectActivationMask(tfl::Context* context, const ActivationMaskRecord& record,
                                 int conv_node, int conv_output, int height, int width,
                                 ClaimedMask* mask) {
  *mask = ClaimedMask();
  const int mul_index = static_cast<int>(record.operator_index);
  tfl::Node* node = nullptr;
  tfl::Registration* registration = nullptr;
  if (mul_index == conv_node ||
      context->GetNodeAndRegistration(context, mul_index, &node, &registration) != tfl::kOk ||
      node == nullptr || registration == nullptr) {
    return "the plan's mask operator " + std::to_string(mul_index) + " is not in the graph";
  }
  if (registration->builtin_code != tfl::kBuiltinMul || node->delegate != nullptr) {
    return "operator " + std::to_string(mul_index) + " is not a MUL";
  }
  if (ArraySize(node->inputs) != 2 || ArraySize(node->outputs) != 1 || node->builtin_data == nullptr) {
    return "the MUL has unexpected inputs, outputs or options";
  }
  const int a = TensorIndexAt(node->inputs, 0), b = TensorIndexAt(node->inputs, 1);
  const int other = a == conv_output ? b : a;
  if ((a == conv_output) == (b == conv_output) || other != record.mask_tensor_index) {
    return "stale plan: the MUL does not multiply the convolution's output by the plan's mask";
  }
  if (ReaderCount(context, conv_output) != 1) {
    return "the convolution's output is read by other operators than its mask";
  }
  std::string reason = CheckMaskTensor(TensorAt(context, other), record, height, width, mask);
  if (!reason.empty()) return reason;
  const tfl::Tensor* output = TensorAt(context, TensorIndexAt(node->outputs, 0));
  if (!IsFloatTensorOfRank(output, 4)) return "the MUL's output is not a float32 NHWC tensor";
  const auto activation = static_cast<const tfl::MulParams*>(node->builtin_data)->activation;
  if (activation != tfl::kActNone && activation != tfl::kActRelu && activation != tfl::kActRelu6 &&
      activation != tfl::kActReluN1To1) {
    return "the MUL's fused activation is not NONE, RELU, RELU_N1_TO_1 or RELU6";
  }
  ActivationClamp(activation, &mask->act_min, &mask->act_max);
  mask->node_index = mul_index;
  mask->mask_tensor = other;
  mask->output_tensor = TensorIndexAt(node->outputs, 0);
  mask->height = height;
  mask->width = width;
  return std::string();
}

}  // namespace tfpconv
