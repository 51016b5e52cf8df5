// Activation masks (semi-structured activation sparsity): a claimed convolution whose output feeds
// only a MUL by a constant 0/1 mask [1, H, W, 1] takes the MUL with it. The plan names the MUL and
// the mask tensor (OpPlan.activation_mask); everything is checked against the live graph first.
#ifndef TFPCONV_SRC_MASK_SELECTION_H_
#define TFPCONV_SRC_MASK_SELECTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "plan_reader.h"
#include "tflite_abi.h"

namespace tfpconv {

// A verified activation mask: the MUL node the delegate runs together with its convolution.
struct ClaimedMask {
  int node_index = -1;     // the MUL; -1: no mask
  int mask_tensor = -1;
  int output_tensor = -1;  // the MUL's output, which the convolution step writes
  int height = 0, width = 0;
  // The MUL's fused activation clamp (applied after the mask: 0 stays 0 for every supported one).
  float act_min = -3.402823466e+38f, act_max = 3.402823466e+38f;
  std::vector<uint8_t> pixels;  // height * width flags, 1 = kept

  bool present() const { return node_index >= 0; }
};

// Checks the plan's record against the graph: node record.operator_index is a MUL of the
// convolution's output (node conv_node writes tensor conv_output, of height x width pixels, read by
// no other node) and the constant mask tensor of the record (float32 [1, H, W, 1], 0s and 1s, the
// plan's CRC-32), with a NONE/RELU/RELU_N1_TO_1/RELU6 activation. Returns the reason it does not
// fit, or an empty string with *mask filled.
std::string SelectActivationMask(tfl::Context* context, const ActivationMaskRecord& record,
                                 int conv_node, int conv_output, int height, int width,
                                 ClaimedMask* mask);

// The intersection of two activation clamps (both contain 0, so it is never empty).
void IntersectClamp(float min, float max, float* out_min, float* out_max);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_MASK_SELECTION_H_
