#include "node_selection.h"

#include <algorithm>

#include "conv_geometry.h"
#include "fc_selection.h"
#include "tensor_util.h"
#include "weight_check.h"

namespace tfpconv {
namespace {

// Whether the model leaves the height or width of an NHWC tensor open (a -1 in its signature).
bool SpatialSizeOpen(const tfl::Tensor* tensor) {
  const tfl::IntArray* signature = tensor->dims_signature;
  return signature != nullptr && signature->size == 4 &&
         (signature->data[1] < 0 || signature->data[2] < 0);
}

// Checks the op itself (no plan involved): a 3x3 filter, or with allow_1x1 (the dense path) also a
// 1x1 one. Fills the tensor indices, params and kernel size of *claimed.
std::string UnsupportedConvNode(tfl::Context* context, const tfl::Node& node, bool allow_1x1,
                                ClaimedNode* claimed) {
  const int inputs = ArraySize(node.inputs);
  if ((inputs != 2 && inputs != 3) || ArraySize(node.outputs) != 1) return "unexpected input/output count";
  if (node.builtin_data == nullptr) return "missing CONV_2D options";
  claimed->params = *static_cast<const tfl::ConvParams*>(node.builtin_data);
  std::string reason = UnsupportedConvParams(claimed->params);
  if (!reason.empty()) return reason;

  claimed->input_tensor = TensorIndexAt(node.inputs, 0);
  claimed->filter_tensor = TensorIndexAt(node.inputs, 1);
  claimed->bias_tensor = TensorIndexAt(node.inputs, 2);
  claimed->output_tensor = TensorIndexAt(node.outputs, 0);
  const tfl::Tensor* input = TensorAt(context, claimed->input_tensor);
  const tfl::Tensor* filter = TensorAt(context, claimed->filter_tensor);
  const tfl::Tensor* output = TensorAt(context, claimed->output_tensor);
  if (!IsFloatTensorOfRank(input, 4) || !IsFloatTensorOfRank(output, 4)) {
    return "input or output is not a float32 NHWC tensor";
  }
  if (!IsFloatTensorOfRank(filter, 4) || !IsConstantFloat(filter)) {
    return "filter is not a constant dense float32 tensor";
  }
  const int* f = filter->dims->data;
  const bool square = f[1] == f[2];
  if (!square || (f[1] != kKernelSize && !(allow_1x1 && f[1] == 1))) {
    return "filter is " + std::to_string(f[1]) + "x" + std::to_string(f[2]) +
           (allow_1x1 ? ", not 1x1 or 3x3" : ", not 3x3");
  }
  const int kernel = f[1];
  claimed->kernel_h = claimed->kernel_w = kernel;
  if (f[3] != input->dims->data[3]) return "grouped convolution (filter depth != input channels)";
  if (claimed->bias_tensor != tfl::kOptionalTensor) {
    const tfl::Tensor* bias = TensorAt(context, claimed->bias_tensor);
    if (!IsFloatTensorOfRank(bias, 1) || !IsConstantFloat(bias) || bias->dims->data[0] != f[0]) {
      return "bias is not a constant float32 vector of out_channels";
    }
  }
  // A dynamic-sized tensor gets its shape only while the graph runs (e.g. after a RESHAPE whose
  // shape is computed): nothing can be planned or packed for it now.
  if (input->allocation_type == tfl::kDynamic || output->allocation_type == tfl::kDynamic) {
    return "input or output is a dynamic-sized tensor (shape known only at run time)";
  }
  for (int d = 0; d < 4; ++d) {
    if (input->dims->data[d] <= 0) return "input shape is not known yet (a dimension is 0)";
  }
  const int* in = input->dims->data;
  std::string error;
  if (!ResolveConvShape(claimed->params, in[0], in[1], in[2], in[3], f[0], &claimed->shape, &error,
                        kernel, kernel)) {
    // A height or width the model leaves open (-1 in the shape signature) has a placeholder size
    // in the file, often 1, too small for a VALID 3x3 convolution. The partition kernel packs for
    // the real size once TFLite has it; the plan is checked against a kernel-sized stand-in now.
    if (!SpatialSizeOpen(input) ||
        !ResolveConvShape(claimed->params, in[0], std::max(in[1], kernel), std::max(in[2], kernel),
                          in[3], f[0], &claimed->shape, &error, kernel, kernel)) {
      return error;
    }
    claimed->shape_note = "input height/width known only at run time";
  }
  return std::string();
}

// Checks the plan entry of the node against the live filter. Returns the reason it does not fit.
std::string PlanMismatch(tfl::Context* context, const PlannedOp& planned, const ClaimedNode& claimed) {
  if (planned.weight_tensor_index != claimed.filter_tensor) {
    return "stale plan: it names weight tensor " + std::to_string(planned.weight_tensor_index) +
           ", the node's filter is tensor " + std::to_string(claimed.filter_tensor);
  }
  const tfl::Tensor* filter = TensorAt(context, claimed.filter_tensor);
  const bool kernel_differs =
      planned.kind == PlannedOpKind::kDenseConv && planned.kernel_size != claimed.kernel_h;
  if (planned.out_channels != filter->dims->data[0] || planned.in_channels != filter->dims->data[3] ||
      kernel_differs) {
    return "stale plan: its kernel_shape differs from the filter's shape";
  }
  std::string error;
  if (!CheckWeightsAgainstPlan(planned, filter->data, filter->bytes, &error)) return error;
  return std::string();
}

// The dense path pays only where it skips enough. Per computed pixel it measured 0.96-1.24x
// XNNPACK's speed on ResNet-18's 3x3 layers with AVX-512, 0.80-1.19x with its AVX2 kernels against
// XNNPACK's AVX-512 ones (AMD EPYC Zen 4, one thread, runs on two days;
// delegate/engine/bench/dense_conv_bench.cc): a layer is claimed when its mask leaves at most this
// fraction of the output to compute, with a margin for the MUL it replaces. With AVX2, 0.9 takes
// ResNet-18's 14x14 and 7x7 layers at sparsity 0.2 (86% computed): the whole model 1.21x faster
// than XNNPACK with them, 1.11x without (benchmarks/activation_speed.py --isa avx2).
// A 1x1 convolution is a plain GEMM, where XNNPACK is at its best: against TFLite's convolution +
// MUL, one-layer models of ResNet-50's and ResNet-18's 1x1 shapes (same CPU, interleaved runs)
// ran 0.82-1.05x with about 95% of the output computed, 0.97-1.24x with 80% (the slowest: 56x56,
// 64 -> 256 channels) and 1.04-1.38x with 70-75%, with either instruction set: 1x1 layers are
// claimed up to 75%.
double DenseMaxComputedFraction(Isa isa, int kernel) {
  if (kernel == 1) return 0.75;
  return isa == Isa::kAvx512 ? 0.95 : 0.9;
}

// The fraction of output pixels the dense path computes: those in units with a kept pixel.
double ComputedFraction(const std::vector<uint8_t>& pixels, int height, int width) {
  size_t computed = 0;
  for (const ActivationUnit& unit : ActiveUnits(pixels, height, width)) computed += unit.width;
  return static_cast<double>(computed) / std::max<size_t>(size_t(height) * size_t(width), 1);
}

// The masked dense convolution selection (plan kind kDenseConv).
Verdict SelectDenseConvNode(tfl::Context* context, int node_index, const tfl::Node& node,
                            const PlannedOp& planned, Isa isa, bool claim_all, ClaimedNode* claimed,
                            std::string* reason) {
  *claimed = ClaimedNode();
  claimed->kind = PlannedOpKind::kDenseConv;
  claimed->node_index = node_index;
  *reason = UnsupportedConvNode(context, node, /*allow_1x1=*/true, claimed);
  if (!reason->empty()) return Verdict::kUnsupported;
  *reason = PlanMismatch(context, planned, *claimed);
  if (!reason->empty()) return Verdict::kPlanMismatch;
  if (!claimed->shape_note.empty()) {
    *reason = "its input height/width is known only at run time (a mask has a fixed size)";
    return Verdict::kUnsupported;
  }
  *reason = SelectActivationMask(context, planned.activation_mask, node_index,
                                 claimed->output_tensor, claimed->shape.out_h,
                                 claimed->shape.out_w, &claimed->mask);
  if (!reason->empty()) return Verdict::kPlanMismatch;
  IntersectClamp(claimed->mask.act_min, claimed->mask.act_max, &claimed->shape.act_min,
                 &claimed->shape.act_max);
  claimed->output_tensor = claimed->mask.output_tensor;
  if (!DenseConvAvailable(isa)) {
    *reason = std::string("the engine's dense path does not run ") + IsaName(isa) +
              " here (it needs libxsmm on x86-64 with AVX2 or AVX-512)";
    return Verdict::kNotWorthIt;
  }
  const double computed =
      ComputedFraction(claimed->mask.pixels, claimed->shape.out_h, claimed->shape.out_w);
  if (!claim_all && computed > DenseMaxComputedFraction(isa, claimed->kernel_h)) {
    *reason = "its mask leaves " + std::to_string(static_cast<int>(100 * computed + 0.5)) +
              "% of the output to compute: TFLite's dense kernel is faster";
    return Verdict::kNotWorthIt;
  }
  std::string error;
  claimed->dense = CreateDenseConv(context, *claimed, isa, &error);
  if (claimed->dense == nullptr) {
    *reason = "the engine rejected it: " + error;
    return Verdict::kPlanMismatch;
  }
  return Verdict::kClaimed;
}

}  // namespace

std::unique_ptr<DenseConv> CreateDenseConv(tfl::Context* context, const ClaimedNode& node, Isa isa,
                                           std::string* error) {
  const tfl::Tensor* filter = TensorAt(context, node.filter_tensor);
  const tfl::Tensor* bias = TensorAt(context, node.bias_tensor);
  return DenseConv::Create(DenseConvShape(node.shape, node.kernel_h, node.kernel_w),
                           static_cast<const float*>(filter->data),
                           bias ? static_cast<const float*>(bias->data) : nullptr,
                           node.mask.pixels, isa, error);
}

Verdict SelectConvNode(tfl::Context* context, int node_index, const tfl::Node& node,
                       const tfl::Registration& registration, const ModelPlan* plan, Isa isa,
                       bool claim_all, ClaimedNode* claimed, std::string* reason) {
  if (registration.builtin_code != tfl::kBuiltinConv2d || node.delegate != nullptr) {
    return Verdict::kNotOurs;
  }
  *claimed = ClaimedNode();
  claimed->node_index = node_index;
  *reason = UnsupportedConvNode(context, node, /*allow_1x1=*/false, claimed);
  if (!reason->empty()) return Verdict::kUnsupported;
  if (plan == nullptr) {
    *reason = "no usable tfpconv plan";
    return Verdict::kNoPlan;
  }
  const PlannedOp* planned = FindPlannedOp(*plan, 0, static_cast<uint32_t>(node_index), reason);
  if (planned == nullptr) return Verdict::kNotPlanned;
  if (!planned->missing_feature.name.empty()) {
    *reason = DescribeMissingFeature(planned->missing_feature);
    return Verdict::kMissingFeature;
  }
  if (!planned->error.empty()) {
    *reason = "its plan entry is invalid: " + planned->error;
    return Verdict::kPlanMismatch;
  }
  if (planned->kind != PlannedOpKind::kPatternConv) {
    *reason = "its plan entry is not a pattern convolution";
    return Verdict::kPlanMismatch;
  }
  *reason = PlanMismatch(context, *planned, *claimed);
  if (!reason->empty()) return Verdict::kPlanMismatch;

  claimed->pattern = planned->pattern;
  if (planned->activation_mask.present) {
    // A mask that does not fit is left to TFLite's MUL: the convolution still runs exactly.
    const std::string why = SelectActivationMask(context, planned->activation_mask, node_index,
                                                 claimed->output_tensor, claimed->shape.out_h,
                                                 claimed->shape.out_w, &claimed->mask);
    if (why.empty()) {
      claimed->pattern.pixel_mask = claimed->mask.pixels;
      IntersectClamp(claimed->mask.act_min, claimed->mask.act_max, &claimed->shape.act_min,
                     &claimed->shape.act_max);
      claimed->output_tensor = claimed->mask.output_tensor;
    } else {
      claimed->mask = ClaimedMask();
      claimed->mask_note = why;
    }
  }
  // The decision tuned on the instruction set we run with; none: the defaults and default policy
  // (a plan tuned on x86 says nothing about an ARM phone).
  claimed->pattern.tuning = KernelTuningFor(*planned, isa);
  if (!claim_all && !WorthClaiming(claimed->shape, claimed->pattern, reason))
    return Verdict::kNotWorthIt;
  const tfl::Tensor* filter = TensorAt(context, claimed->filter_tensor);
  const tfl::Tensor* bias = TensorAt(context, claimed->bias_tensor);
  std::string error;
  claimed->conv = PatternConv::Create(claimed->shape, static_cast<const float*>(filter->data),
                                      bias ? static_cast<const float*>(bias->data) : nullptr,
                                      claimed->pattern, isa, &error, &claimed->tuning_note);
  if (claimed->conv == nullptr) {
    *reason = "the engine rejected the plan: " + error;
    return Verdict::kPlanMismatch;
  }
  if (claimed->tuning_note.empty() && !planned->tunings.empty() &&
      TuningFor(*planned, isa) == nullptr) {
    std::string tuned_isas;
    for (const PlannedTuning& tuning : planned->tunings)
      tuned_isas += (tuned_isas.empty() ? "" : ", ") + tuning.isa;
    claimed->tuning_note = "tuned for " + tuned_isas + ", running " + IsaName(isa) +
                           ": the engine's defaults run instead";
  }
  return Verdict::kClaimed;
}

Verdict SelectMaxPoolNode(tfl::Context* context, int node_index, const tfl::Node& node,
                          const tfl::Registration& registration,
                          const std::map<int, ClaimedNode>& claimed_before, ClaimedNode* claimed,
                          std::string* reason) {
  if (registration.builtin_code != tfl::kBuiltinMaxPool2d || node.delegate != nullptr) {
    return Verdict::kNotOurs;
  }
  *claimed = ClaimedNode();
  claimed->max_pool = true;
  claimed->node_index = node_index;
  if (ArraySize(node.inputs) != 1 || ArraySize(node.outputs) != 1) {
    *reason = "unexpected input/output count";
    return Verdict::kUnsupported;
  }
  claimed->input_tensor = TensorIndexAt(node.inputs, 0);
  claimed->output_tensor = TensorIndexAt(node.outputs, 0);
  // Alone between TFLite's operators a pool gains nothing from the delegate; next to a claimed node
  // it keeps the partition whole (and its output is smaller than its input).
  const bool after_claimed =
      std::any_of(claimed_before.begin(), claimed_before.end(), [&](const auto& entry) {
        return entry.second.output_tensor == claimed->input_tensor;
      });
  if (!after_claimed) {
    *reason = "its input is not produced by a node the delegate runs";
    return Verdict::kUnsupported;
  }
  if (node.builtin_data == nullptr) {
    *reason = "missing MAX_POOL_2D options";
    return Verdict::kUnsupported;
  }
  const auto& pool = *static_cast<const tfl::PoolParams*>(node.builtin_data);
  if (pool.padding != tfl::kPaddingSame && pool.padding != tfl::kPaddingValid) {
    *reason = "padding is neither SAME nor VALID";
    return Verdict::kUnsupported;
  }
  const auto small = [](int v) { return v >= 1 && v <= kMaxPoolWindow; };
  if (!small(pool.filter_height) || !small(pool.filter_width) || !small(pool.stride_height) ||
      !small(pool.stride_width)) {
    *reason = "window " + std::to_string(pool.filter_height) + "x" + std::to_string(pool.filter_width) +
              ", stride " + std::to_string(pool.stride_height) + "x" + std::to_string(pool.stride_width) +
              " (each only 1 to " + std::to_string(kMaxPoolWindow) + ")";
    return Verdict::kUnsupported;
  }
  if (pool.activation != tfl::kActNone && pool.activation != tfl::kActRelu &&
      pool.activation != tfl::kActRelu6) {
    *reason = "fused activation " + std::to_string(pool.activation) + " (only NONE, RELU, RELU6)";
    return Verdict::kUnsupported;
  }
  const tfl::Tensor* input = TensorAt(context, claimed->input_tensor);
  const tfl::Tensor* output = TensorAt(context, claimed->output_tensor);
  if (!IsFloatTensorOfRank(input, 4) || !IsFloatTensorOfRank(output, 4)) {
    *reason = "input or output is not a float32 NHWC tensor";
    return Verdict::kUnsupported;
  }
  if (input->allocation_type == tfl::kDynamic || output->allocation_type == tfl::kDynamic) {
    *reason = "input or output is a dynamic-sized tensor (shape known only at run time)";
    return Verdict::kUnsupported;
  }
  claimed->params.padding = pool.padding;
  claimed->params.stride_height = pool.stride_height;
  claimed->params.stride_width = pool.stride_width;
  claimed->params.activation = pool.activation;
  claimed->params.dilation_height_factor = claimed->params.dilation_width_factor = 1;
  claimed->kernel_h = pool.filter_height;
  claimed->kernel_w = pool.filter_width;
  // The geometry for the log; the partition resolves it again from the real input in Prepare (the
  // file's shape may be a placeholder, or leave nothing to compute).
  const int* in = input->dims->data;
  std::string error;
  if (!ResolveConvShape(claimed->params, in[0], in[1], in[2], in[3], in[3], &claimed->shape, &error,
                        claimed->kernel_h, claimed->kernel_w)) {
    claimed->shape_note = "output size known only at run time";
  }
  return Verdict::kClaimed;
}

Verdict SelectNode(tfl::Context* context, int node_index, const tfl::Node& node,
                   const tfl::Registration& registration, const ModelPlan* plan, Isa isa,
                   bool claim_all, ClaimedNode* claimed, std::string* reason) {
  const bool conv = registration.builtin_code == tfl::kBuiltinConv2d;
  const bool fully_connected = registration.builtin_code == tfl::kBuiltinFullyConnected;
  if ((!conv && !fully_connected) || node.delegate != nullptr) return Verdict::kNotOurs;
  // A CONV_2D whose plan entry is of the unified kind is a 1x1 convolution run as a layer over
  // its pixels; without an entry it is examined (and declined) as a pattern convolution.
  std::string why_not;
  const PlannedOp* planned =
      plan == nullptr ? nullptr : FindPlannedOp(*plan, 0, static_cast<uint32_t>(node_index), &why_not);
  const bool unified = planned != nullptr && planned->usable() && planned->kind == PlannedOpKind::kUnifiedFc;
  if (conv && planned != nullptr && planned->usable() && planned->kind == PlannedOpKind::kDenseConv) {
    return SelectDenseConvNode(context, node_index, node, *planned, isa, claim_all, claimed, reason);
  }
  if (conv && !unified) {
    return SelectConvNode(context, node_index, node, registration, plan, isa, claim_all, claimed, reason);
  }
  if (unified) {
    return SelectFcNode(context, node_index, node, registration, *planned, isa, claim_all, claimed, reason);
  }
  // A FULLY_CONNECTED without a usable unified plan entry.
  *claimed = ClaimedNode();
  if (planned == nullptr) {
    // Dense layers are not expected to be planned: a model without a plan is no reason to warn.
    *reason = plan == nullptr ? "no usable tfpconv plan" : why_not;
    return Verdict::kNotPlanned;
  }
  if (!planned->missing_feature.name.empty()) {
    *reason = DescribeMissingFeature(planned->missing_feature);
    return Verdict::kMissingFeature;
  }
  *reason = planned->error.empty() ? "its plan entry is not of the unified_fc kind"
                                   : "its plan entry is invalid: " + planned->error;
  return Verdict::kPlanMismatch;
}

}  // namespace tfpconv
