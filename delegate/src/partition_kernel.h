// The delegate kernel of one partition: a chain of claimed nodes (pattern convolutions, unified
// FULLY_CONNECTED / 1x1 CONV_2D, max pools). Prepare infers shapes, resizes the partition outputs
// and owns the tensors internal to the partition (TFLite leaves those unallocated); Invoke runs
// the engine's layers in order.
#ifndef TFPCONV_SRC_PARTITION_KERNEL_H_
#define TFPCONV_SRC_PARTITION_KERNEL_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "delegate_state.h"
#include "node_selection.h"
#include "tflite_abi.h"

namespace tfpconv {

class PartitionKernel {
 public:
  // Takes the claimed convolutions of params.nodes_to_replace from state->pending. Returns nullptr
  // with *error when a node was not claimed or the nodes do not form a chain it can order.
  static std::unique_ptr<PartitionKernel> Create(const tfl::DelegateParams& params,
                                                 DelegateState* state, std::string* error);

  tfl::Status Prepare(tfl::Context* context);
  tfl::Status Invoke(tfl::Context* context);

 private:
  struct Step {
    ClaimedNode node;
    bool use_reference = false;  // the engine rejected the current shape: dense reference instead
    bool empty = false;          // the current shape has no output element (batch 0, ...)
  };
  struct OwnedTensor {
    std::vector<int> dims;
    std::vector<float> data;
  };

  explicit PartitionKernel(DelegateState* state) : state_(state) {}
  bool PrepareConvStep(tfl::Context* context, Step* step);
  bool PrepareFcStep(tfl::Context* context, Step* step);
  bool PreparePoolStep(tfl::Context* context, Step* step);
  bool InputDims(tfl::Context* context, int tensor, std::vector<int>* dims);
  bool SetOutputDims(tfl::Context* context, int tensor, const std::vector<int>& dims);
  float* TensorData(tfl::Context* context, int tensor);

  DelegateState* state_;
  std::vector<Step> steps_;                 // in execution order
  std::map<int, OwnedTensor> owned_;        // tensors produced and consumed inside the partition
};

}  // namespace tfpconv

#endif  // TFPCONV_SRC_PARTITION_KERNEL_H_
