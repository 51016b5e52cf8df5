// Node selection: decides, node by node, whether the delegate runs a CONV_2D. A node is claimed only
// when the op is supported (float32 NHWC, constant 3x3 filter, SAME/VALID, stride 1 or 2, fused
// NONE/RELU/RELU6; input and output not dynamic-sized, the input's shape known), the plan has a valid entry for it that matches the live weights, the engine
// expects to be faster than TFLite on it, and the engine accepts it. Everything else is declined
// with the reason.
#ifndef TFPCONV_SRC_NODE_SELECTION_H_
#define TFPCONV_SRC_NODE_SELECTION_H_

#include <memory>
#include <string>

#include "pattern_conv.h"
#include "plan_reader.h"
#include "tflite_abi.h"

namespace tfpconv {

// A verified CONV_2D the delegate will run.
struct ClaimedConv {
  int node_index = -1;
  int input_tensor = -1;
  int filter_tensor = -1;
  int bias_tensor = tfl::kOptionalTensor;
  int output_tensor = -1;
  tfl::ConvParams params{};
  PatternPlan pattern;
  ConvShape shape;                    // geometry when it was selected
  std::unique_ptr<PatternConv> conv;  // the engine's convolution for `shape`
  std::string tuning_note;            // why the plan's tuned parameters were not used, if so
  std::string shape_note;             // why `shape` is a stand-in for a size known only later
};

enum class Verdict {
  kClaimed,
  kNotConv2d,    // another operator: not the delegate's business
  kUnsupported,  // a CONV_2D with options, types or shapes the delegate does not run
  kNoPlan,       // a supported CONV_2D, but the model has no usable plan at all
  kNotPlanned,   // the plan has no entry for this node (the converter skipped it)
  kNotWorthIt,   // planned, but TFLite's own kernel is (measured or expected to be) faster
  kMissingFeature,  // the node's plan entry needs a feature (or kind) this delegate lacks
  kPlanMismatch, // the node's plan entry is invalid, ambiguous, stale or rejected by the engine
};

// Examines node `node_index` of the primary subgraph. `plan` may be null (no usable plan);
// claim_all skips the is-it-faster check (WorthClaiming). On kClaimed fills *claimed; otherwise
// sets *reason.
Verdict SelectConvNode(tfl::Context* context, int node_index, const tfl::Node& node,
                       const tfl::Registration& registration, const ModelPlan* plan, Isa isa,
                       bool claim_all, ClaimedConv* claimed, std::string* reason);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_NODE_SELECTION_H_
