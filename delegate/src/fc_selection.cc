#include "fc_selection.h"

#include "conv_geometry.h"
#include "tensor_util.h"
#include "weight_check.h"

namespace tfpconv {
namespace {

int64_t ElementCount(const tfl::Tensor* tensor) {
  int64_t count = 1;
  for (int d = 0; d < tensor->dims->size; ++d) count *= tensor->dims->data[d];
  return count;
}

// Checks the op (no plan involved); fills the tensors, activation and kind-specific flags.
std::string UnsupportedFcNode(tfl::Context* context, const tfl::Node& node,
                              const tfl::Registration& registration, ClaimedNode* claimed,
                              tfl::FusedActivation* activation) {
  const int inputs = ArraySize(node.inputs);
  if ((inputs != 2 && inputs != 3) || ArraySize(node.outputs) != 1) return "unexpected input/output count";
  if (node.builtin_data == nullptr) return "missing options";
  claimed->input_tensor = TensorIndexAt(node.inputs, 0);
  claimed->filter_tensor = TensorIndexAt(node.inputs, 1);
  claimed->bias_tensor = TensorIndexAt(node.inputs, 2);
  claimed->output_tensor = TensorIndexAt(node.outputs, 0);
  const tfl::Tensor* input = TensorAt(context, claimed->input_tensor);
  const tfl::Tensor* filter = TensorAt(context, claimed->filter_tensor);
  const tfl::Tensor* output = TensorAt(context, claimed->output_tensor);
  if (input == nullptr || output == nullptr || input->type != tfl::kFloat32 ||
      output->type != tfl::kFloat32 || input->dims == nullptr || input->dims->size < 1) {
    return "input or output is not a float32 tensor";
  }
  if (filter == nullptr || !IsConstantFloat(filter)) return "weights are not a constant dense float32 tensor";
  if (registration.builtin_code == tfl::kBuiltinConv2d) {
    claimed->params = *static_cast<const tfl::ConvParams*>(node.builtin_data);
    std::string reason = UnsupportedConvParams(claimed->params);
    if (!reason.empty()) return reason;
    if (claimed->params.stride_height != 1 || claimed->params.stride_width != 1) {
      return "a strided 1x1 convolution";
    }
    if (!IsFloatTensorOfRank(filter, 4) || filter->dims->data[1] != 1 || filter->dims->data[2] != 1) {
      return "filter is not 1x1";
    }
    if (!IsFloatTensorOfRank(input, 4) || input->dims->data[3] != filter->dims->data[3]) {
      return "input is not NHWC with the filter's input channels";
    }
    claimed->fc.conv1x1 = true;
    *activation = claimed->params.activation;
  } else {
    const auto* params = static_cast<const tfl::FullyConnectedParams*>(node.builtin_data);
    if (params->weights_format != 0) return "shuffled weights format";
    if (params->activation != tfl::kActNone && params->activation != tfl::kActRelu &&
        params->activation != tfl::kActRelu6) {
      return "fused activation " + std::to_string(params->activation) + " (only NONE, RELU, RELU6)";
    }
    if (!IsFloatTensorOfRank(filter, 2)) return "weights are not a [out, in] matrix";
    claimed->fc.keep_num_dims = params->keep_num_dims;
    *activation = params->activation;
  }
  const int out = filter->dims->data[0];
  const int in = filter->dims->data[filter->dims->size - 1];
  if (claimed->bias_tensor != tfl::kOptionalTensor) {
    const tfl::Tensor* bias = TensorAt(context, claimed->bias_tensor);
    if (!IsFloatTensorOfRank(bias, 1) || !IsConstantFloat(bias) || bias->dims->data[0] != out) {
      return "bias is not a constant float32 vector of out_features";
    }
  }
  if (input->allocation_type == tfl::kDynamic || output->allocation_type == tfl::kDynamic) {
    return "input or output is a dynamic-sized tensor (shape known only at run time)";
  }
  const int64_t elements = ElementCount(input);
  if (elements <= 0 || in <= 0 || elements % in != 0) return "input size is not a multiple of in_features";
  if (claimed->fc.keep_num_dims && input->dims->data[input->dims->size - 1] != in) {
    return "keep_num_dims with an input whose last dimension is not in_features";
  }
  claimed->fc.shape.in = in;
  claimed->fc.shape.out = out;
  claimed->fc.shape.rows = static_cast<int>(elements / in);
  ActivationClamp(*activation, &claimed->fc.shape.act_min, &claimed->fc.shape.act_max);
  return std::string();
}

}  // namespace

std::unique_ptr<UnifiedFc> CreateUnifiedFc(tfl::Context* context, const ClaimedNode& claimed,
                                           int rows, Isa isa, std::string* error) {
  const tfl::Tensor* filter = TensorAt(context, claimed.filter_tensor);
  const tfl::Tensor* bias = TensorAt(context, claimed.bias_tensor);
  FcShape shape = claimed.fc.shape;
  shape.rows = rows;
  return UnifiedFc::Create(shape, static_cast<const float*>(filter->data), claimed.fc.states.data(),
                           bias ? static_cast<const float*>(bias->data) : nullptr, isa, error);
}

Verdict SelectFcNode(tfl::Context* context, int node_index, const tfl::Node& node,
                     const tfl::Registration& registration, const PlannedOp& planned, Isa isa,
                     bool claim_all, ClaimedNode* claimed, std::string* reason) {
  *claimed = ClaimedNode();
  claimed->kind = PlannedOpKind::kUnifiedFc;
  claimed->node_index = node_index;
  tfl::FusedActivation activation = tfl::kActNone;
  *reason = UnsupportedFcNode(context, node, registration, claimed, &activation);
  if (!reason->empty()) return Verdict::kUnsupported;
  const UnifiedFcPlan& plan = planned.unified_fc;
  if (planned.weight_tensor_index != claimed->filter_tensor) {
    *reason = "stale plan: it names weight tensor " + std::to_string(planned.weight_tensor_index) +
              ", the node's weights are tensor " + std::to_string(claimed->filter_tensor);
    return Verdict::kPlanMismatch;
  }
  if (plan.out_features != claimed->fc.shape.out || plan.in_features != claimed->fc.shape.in ||
      plan.conv1x1 != claimed->fc.conv1x1) {
    *reason = "stale plan: its weight shape differs from the node's weights";
    return Verdict::kPlanMismatch;
  }
  const tfl::Tensor* filter = TensorAt(context, claimed->filter_tensor);
  if (!CheckWeightsAgainstPlan(planned, filter->data, filter->bytes, reason)) {
    return Verdict::kPlanMismatch;
  }
  claimed->fc.shape.block = plan.block_size;
  claimed->fc.states = plan.states;
  const PlannedTuning* tuning = TuningFor(planned, isa);
  if (!claim_all) {
    if (tuning != nullptr && !tuning->claim) {
      *reason = std::string("the tuner measured TFLite faster on ") + IsaName(isa);
      return Verdict::kNotWorthIt;
    }
    if (tuning == nullptr && claimed->fc.shape.rows > kMaxUnifiedRows) {
      *reason = std::to_string(claimed->fc.shape.rows) + " rows (batch x pixels) > " +
                std::to_string(kMaxUnifiedRows) +
                ": compute-bound, where fewer weight bytes do not pay";
      return Verdict::kNotWorthIt;
    }
  }
  std::string error;
  claimed->fc.fc = CreateUnifiedFc(context, *claimed, claimed->fc.shape.rows, isa, &error);
  if (claimed->fc.fc == nullptr) {
    *reason = "the engine rejected the plan: " + error;
    return Verdict::kPlanMismatch;
  }
  return Verdict::kClaimed;
}

}  // namespace tfpconv
