// Node selection: decides, node by node, whether the delegate runs an operator. A node is claimed
// only when the op is supported, the plan has a valid entry for it that matches the live weights,
// the engine expects to be faster than TFLite on it, and the engine accepts it; everything else is
// declined with the reason. The kinds:
// * pattern convolutions: CONV_2D, float32 NHWC, constant 3x3 filter, SAME/VALID, stride 1 or 2,
//   fused NONE/RELU/RELU6; input and output not dynamic-sized, the input's shape known;
// * unified weights (fc_selection.h): FULLY_CONNECTED, and 1x1 CONV_2D over few pixels;
// * masked dense convolutions: a 3x3 CONV_2D as above, dense weights, whose output feeds only an
//   activation-mask MUL (mask_selection.h), run by the engine's dense path skipping masked units;
// * max pools (no plan entry): MAX_POOL_2D, float32 NHWC, window and strides 1..kMaxPoolWindow,
//   SAME/VALID, fused NONE/RELU/RELU6, whose input a node claimed earlier in the execution plan
//   produces. It runs in that node's partition (one partition per VGG block stack instead of one
//   per block) on the delegate's threads; a pool after TFLite's own operators stays TFLite's.
#ifndef TFPCONV_SRC_NODE_SELECTION_H_
#define TFPCONV_SRC_NODE_SELECTION_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dense_conv.h"
#include "mask_selection.h"
#include "pattern_conv.h"
#include "plan_reader.h"
#include "tflite_abi.h"
#include "unified_fc.h"

namespace tfpconv {

// A verified FULLY_CONNECTED or 1x1 CONV_2D with unified weights (PlannedOpKind::kUnifiedFc).
struct ClaimedFc {
  FcShape shape;             // rows when it was selected
  bool conv1x1 = false;      // a CONV_2D: output [N, H, W, out]
  bool keep_num_dims = false;  // a FULLY_CONNECTED keeping the input's leading dimensions
  std::vector<uint8_t> states;
  std::unique_ptr<UnifiedFc> fc;  // the engine's layer for `shape`
};

// A verified node the delegate will run: a pattern convolution, unified weights (`fc`), or a max
// pool (`max_pool`: params and shape hold its padding, strides, clamp and geometry, kernel_h x
// kernel_w its window; no plan entry, no weights).
struct ClaimedNode {
  PlannedOpKind kind = PlannedOpKind::kPatternConv;
  bool max_pool = false;
  int node_index = -1;
  int input_tensor = -1;
  int filter_tensor = -1;
  int bias_tensor = tfl::kOptionalTensor;
  int output_tensor = -1;  // with an activation mask: the MUL's output (the step writes it)
  tfl::ConvParams params{};
  PatternPlan pattern;
  ConvShape shape;                    // geometry when it was selected
  int kernel_h = 3, kernel_w = 3;     // filter taps (1x1 only on the dense path)
  std::unique_ptr<PatternConv> conv;  // the engine's convolution for `shape` (kPatternConv)
  std::unique_ptr<DenseConv> dense;   // the engine's convolution for `shape` (kDenseConv)
  std::string tuning_note;            // why the plan's tuned parameters were not used, if so
  std::string shape_note;             // why `shape` is a stand-in for a size known only later
  ClaimedFc fc;                       // kind kUnifiedFc
  ClaimedMask mask;                   // the activation mask claimed with the convolution, if any
  std::string mask_note;              // why the plan's activation mask is left to TFLite, if so

  size_t packed_weight_bytes() const {
    if (kind == PlannedOpKind::kUnifiedFc) return fc.fc ? fc.fc->packed_weight_bytes() : 0;
    if (kind == PlannedOpKind::kDenseConv) return dense ? dense->packed_weight_bytes() : 0;
    return conv ? conv->packed_weight_bytes() : 0;
  }
};

enum class Verdict {
  kClaimed,
  kNotOurs,      // another operator: not the delegate's business
  kUnsupported,  // a CONV_2D / FULLY_CONNECTED with options, types or shapes it does not run
  kNoPlan,       // a supported CONV_2D, but the model has no usable plan at all
  kNotPlanned,   // the plan has no entry for this node (the converter skipped it)
  kNotWorthIt,   // planned, but TFLite's own kernel is (measured or expected to be) faster
  kMissingFeature,  // the node's plan entry needs a feature (or kind) this delegate lacks
  kPlanMismatch, // the node's plan entry is invalid, ambiguous, stale or rejected by the engine
};

// Examines node `node_index` of the primary subgraph: dispatches to the pattern convolution or the
// unified-weights selection by operator and plan entry. `plan` may be null (no usable plan);
// claim_all skips the is-it-faster check. On kClaimed fills *claimed; otherwise sets *reason.
Verdict SelectNode(tfl::Context* context, int node_index, const tfl::Node& node,
                   const tfl::Registration& registration, const ModelPlan* plan, Isa isa,
                   bool claim_all, ClaimedNode* claimed, std::string* reason);

// The pattern-convolution selection. Examines node `node_index` of the primary subgraph. `plan` may be null (no usable plan);
// claim_all skips the is-it-faster check (WorthClaiming). On kClaimed fills *claimed; otherwise
// sets *reason.
Verdict SelectConvNode(tfl::Context* context, int node_index, const tfl::Node& node,
                       const tfl::Registration& registration, const ModelPlan* plan, Isa isa,
                       bool claim_all, ClaimedNode* claimed, std::string* reason);

// The largest MAX_POOL_2D window side and stride the delegate claims.
constexpr int kMaxPoolWindow = 16;

// The max pool selection. `claimed_before` holds the nodes claimed earlier in the execution plan:
// the pool is claimed only when one of them produces its input. Same contract as SelectConvNode
// otherwise (kNotOurs for any other operator).
Verdict SelectMaxPoolNode(tfl::Context* context, int node_index, const tfl::Node& node,
                          const tfl::Registration& registration,
                          const std::map<int, ClaimedNode>& claimed_before, ClaimedNode* claimed,
                          std::string* reason);

// The engine's masked dense convolution for a claimed node's shape, filter, bias and mask.
std::unique_ptr<DenseConv> CreateDenseConv(tfl::Context* context, const ClaimedNode& node, Isa isa,
                                           std::string* error);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_NODE_SELECTION_H_
