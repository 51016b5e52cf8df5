// Node selection for unified weights (plan kind "unified_fc"): a FULLY_CONNECTED, or a 1x1 CONV_2D
// (stride 1) treated as one over its pixels, whose float32 weights are constant and match a valid
// plan entry, is run from its compressed blocks (engine/unified_fc.h). A 1x1 CONV_2D over many
// pixels is compute-bound, where reading fewer weight bytes does not pay: it is left to TFLite.
#ifndef TFPCONV_SRC_FC_SELECTION_H_
#define TFPCONV_SRC_FC_SELECTION_H_

#include <string>

#include "node_selection.h"

namespace tfpconv {

// Rows (batch x pixels) up to which a unified layer is claimed without a tuned verdict.
constexpr int kMaxUnifiedRows = 16;

// `planned` is the node's usable plan entry of kind kUnifiedFc. Same contract as SelectConvNode.
Verdict SelectFcNode(tfl::Context* context, int node_index, const tfl::Node& node,
                     const tfl::Registration& registration, const PlannedOp& planned, Isa isa,
                     bool claim_all, ClaimedNode* claimed, std::string* reason);

// The engine's layer for `fc` at `rows` rows (nullptr with *error when it refuses).
std::unique_ptr<UnifiedFc> CreateUnifiedFc(tfl::Context* context, const ClaimedNode& claimed,
                                           int rows, Isa isa, std::string* error);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_FC_SELECTION_H_
