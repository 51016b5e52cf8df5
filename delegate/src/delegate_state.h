// The state behind one TfLiteDelegate created by TfpconvDelegateCreate: settings, the thread pool
// shared by its kernels, and the hand-over of selected nodes to the partition kernels.
#ifndef TFPCONV_SRC_DELEGATE_STATE_H_
#define TFPCONV_SRC_DELEGATE_STATE_H_

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "logging.h"
#include "node_selection.h"
#include "options.h"
#include "pattern_conv.h"
#include "tflite_abi.h"

namespace tfpconv {

struct DelegateState {
  explicit DelegateState(const DelegateSettings& delegate_settings);

  tfl::Delegate delegate{};  // what TFLite sees; delegate.data_ points back here
  DelegateSettings settings;
  Logger logger;
  Isa isa = Isa::kScalar;

  // Kernels of all partitions run their convolutions on one pool, one partition at a time.
  std::mutex run_mutex;
  ThreadPool* pool();  // created on first use; call with run_mutex held

  // Nodes selected by the graph-level Prepare, taken by the partition kernels' init.
  std::map<int, ClaimedNode> pending;
  // Activation-mask MUL nodes claimed with their convolution (MUL node -> convolution node): in
  // the partitions, but run by the convolution's step.
  std::map<int, int> absorbed;
  // Node indices claimed the last time the delegate was applied to a primary subgraph, and the
  // bytes of their packed weights.
  std::vector<int> claimed_nodes;
  size_t packed_weight_bytes = 0;

 private:
  std::unique_ptr<ThreadPool> pool_;
};

inline DelegateState* StateOf(tfl::Delegate* delegate) {
  return static_cast<DelegateState*>(delegate->data_);
}

}  // namespace tfpconv

#endif  // TFPCONV_SRC_DELEGATE_STATE_H_
