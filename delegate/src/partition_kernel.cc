#include "partition_kernel.h"

#include <algorithm>
#include <cstdlib>
#include <set>

#include "conv_geometry.h"
#include "fc_selection.h"
#include "max_pool.h"
#include "tensor_util.h"

namespace tfpconv {
namespace {

// Zeroes the output pixels (every image, every channel) whose mask flag is 0.
void ApplyPixelMask(const ConvShape& shape, const std::vector<uint8_t>& pixels, float* output) {
  const size_t image = size_t(shape.out_h) * size_t(shape.out_w);
  for (int b = 0; b < shape.batch; ++b) {
    for (size_t p = 0; p < image; ++p) {
      if (pixels[p] == 0) std::fill_n(output + (b * image + p) * size_t(shape.out_c), shape.out_c, 0.0f);
    }
  }
}

}  // namespace

std::unique_ptr<PartitionKernel> PartitionKernel::Create(const tfl::DelegateParams& params,
                                                         DelegateState* state, std::string* error) {
  std::unique_ptr<PartitionKernel> kernel(new PartitionKernel(state));
  std::vector<ClaimedNode> unordered;
  for (int i = 0; i < ArraySize(params.nodes_to_replace); ++i) {
    const int node = params.nodes_to_replace->data[i];
    if (state->absorbed.erase(node) > 0) continue;  // an activation mask: its convolution's step
    auto it = state->pending.find(node);
    if (it == state->pending.end()) {
      *error = "node " + std::to_string(node) + " was not selected by this delegate";
      return nullptr;
    }
    unordered.push_back(std::move(it->second));
    state->pending.erase(it);
  }
  // Execution order: a node runs once its input is a partition input or already computed.
  std::set<int> available;
  for (int i = 0; i < ArraySize(params.input_tensors); ++i) available.insert(params.input_tensors->data[i]);
  while (!unordered.empty()) {
    auto ready = unordered.begin();
    while (ready != unordered.end() && available.count(ready->input_tensor) == 0) ++ready;
    if (ready == unordered.end()) {
      *error = "the partition's nodes do not form a chain";
      return nullptr;
    }
    available.insert(ready->output_tensor);
    Step step;
    step.node = std::move(*ready);
    unordered.erase(ready);
    kernel->steps_.push_back(std::move(step));
  }
  for (const Step& step : kernel->steps_) {
    if (!Contains(params.output_tensors, step.node.output_tensor)) {
      kernel->owned_[step.node.output_tensor] = OwnedTensor();
    }
  }
  return kernel;
}

bool PartitionKernel::InputDims(tfl::Context* context, int tensor, std::vector<int>* dims) {
  auto owned = owned_.find(tensor);
  if (owned != owned_.end()) {
    *dims = owned->second.dims;
    return true;
  }
  const tfl::Tensor* input = TensorAt(context, tensor);
  if (input == nullptr || input->type != tfl::kFloat32 || input->dims == nullptr) return false;
  dims->assign(input->dims->data, input->dims->data + input->dims->size);
  return true;
}

bool PartitionKernel::SetOutputDims(tfl::Context* context, int tensor, const std::vector<int>& dims) {
  auto owned = owned_.find(tensor);
  size_t elements = 1;
  for (int d : dims) elements *= static_cast<size_t>(d);
  if (owned != owned_.end()) {
    owned->second.dims = dims;
    owned->second.data.resize(elements);
    return true;
  }
  tfl::Tensor* output = TensorAt(context, tensor);
  const int rank = static_cast<int>(dims.size());
  if (output == nullptr || output->type != tfl::kFloat32 || output->dims == nullptr) return false;
  bool same = output->dims->size == rank;
  for (int d = 0; same && d < rank; ++d) same = output->dims->data[d] == dims[static_cast<size_t>(d)];
  if (same) return true;
  if (context->ResizeTensorExplicit != nullptr) {
    return context->ResizeTensorExplicit(context, output, rank, dims.data()) == tfl::kOk;
  }
  // ResizeTensor takes ownership of a malloc'ed array (TFLite frees it with free()).
  auto* new_size = static_cast<tfl::IntArray*>(std::malloc(sizeof(int) * (1 + dims.size())));
  if (new_size == nullptr) return false;
  new_size->size = rank;
  for (int d = 0; d < rank; ++d) new_size->data[d] = dims[static_cast<size_t>(d)];
  return context->ResizeTensor(context, output, new_size) == tfl::kOk;
}

bool PartitionKernel::PrepareConvStep(tfl::Context* context, Step* step) {
  ClaimedNode& conv = step->node;
  std::vector<int> in;
  if (!InputDims(context, conv.input_tensor, &in) || in.size() != 4 || in[3] != conv.shape.in_c) {
    state_->logger.Log(kTfpconvLogError, "node %d: input is not float32 NHWC with %d channels",
                       conv.node_index, conv.shape.in_c);
    return false;
  }
  ConvShape shape;
  std::string error;
  const bool resolved =
      ResolveConvShape(conv.params, in[0], in[1], in[2], in[3], conv.shape.out_c, &shape, &error,
                       conv.kernel_h, conv.kernel_w);
  if (resolved && conv.mask.present()) {
    if (shape.out_h != conv.mask.height || shape.out_w != conv.mask.width) {
      state_->logger.Log(kTfpconvLogError, "node %d: output %dx%d does not fit its %dx%d activation mask",
                         conv.node_index, shape.out_h, shape.out_w, conv.mask.height, conv.mask.width);
      return false;
    }
    IntersectClamp(conv.mask.act_min, conv.mask.act_max, &shape.act_min, &shape.act_max);
  }
  if (!resolved) {
    // An input with no elements (batch 0) or too small for VALID: TFLite's kernel gives an empty
    // output, so does the partition. Sizes TFLite refuses fail here too.
    const std::vector<int> out = {in[0],
                                  TfliteOutputSize(conv.params.padding, in[1], conv.params.stride_height,
                                                   conv.kernel_h),
                                  TfliteOutputSize(conv.params.padding, in[2], conv.params.stride_width,
                                                   conv.kernel_w),
                                  conv.shape.out_c};
    if (std::min({out[0], out[1], out[2]}) < 0 || in[1] < 0 || in[2] < 0) {
      state_->logger.Log(kTfpconvLogError, "node %d: %s", conv.node_index, error.c_str());
      return false;
    }
    step->empty = true;
    if (!SetOutputDims(context, conv.output_tensor, out)) {
      state_->logger.Log(kTfpconvLogError, "node %d: cannot resize the output tensor", conv.node_index);
      return false;
    }
    return true;
  }
  step->empty = false;
  const bool shape_changed = !SameConvShape(shape, conv.shape);
  const bool dense = conv.kind == PlannedOpKind::kDenseConv;
  const bool missing = dense ? conv.dense == nullptr : conv.conv == nullptr;
  if ((shape_changed || (missing && !step->use_reference)) && dense) {
    conv.shape = shape;
    conv.dense = CreateDenseConv(context, conv, state_->isa, &error);
    step->use_reference = conv.dense == nullptr;
    if (step->use_reference) {
      state_->logger.Log(kTfpconvLogWarning,
                         "node %d: the engine rejected the new shape (%s); using the dense reference",
                         conv.node_index, error.c_str());
    }
  } else if (shape_changed || (missing && !step->use_reference)) {
    conv.shape = shape;
    conv.conv.reset();
    const tfl::Tensor* filter = TensorAt(context, conv.filter_tensor);
    const tfl::Tensor* bias = TensorAt(context, conv.bias_tensor);
    std::string note;
    conv.conv = PatternConv::Create(shape, static_cast<const float*>(filter->data),
                                    bias ? static_cast<const float*>(bias->data) : nullptr,
                                    conv.pattern, state_->isa, &error, &note);
    if (!note.empty()) {
      state_->logger.Log(kTfpconvLogInfo, "node %d: plan's tuned parameters not used: %s",
                         conv.node_index, note.c_str());
    }
    step->use_reference = conv.conv == nullptr;
    if (step->use_reference) {
      state_->logger.Log(kTfpconvLogWarning,
                         "node %d: the engine rejected the new shape (%s); using the dense reference",
                         conv.node_index, error.c_str());
    }
  }
  const std::vector<int> out = {shape.batch, shape.out_h, shape.out_w, shape.out_c};
  if (!SetOutputDims(context, conv.output_tensor, out)) {
    state_->logger.Log(kTfpconvLogError, "node %d: cannot resize the output tensor", conv.node_index);
    return false;
  }
  return true;
}

bool PartitionKernel::PrepareFcStep(tfl::Context* context, Step* step) {
  ClaimedNode& node = step->node;
  ClaimedFc& fc = node.fc;
  std::vector<int> in;
  int64_t elements = 1;
  if (InputDims(context, node.input_tensor, &in)) {
    for (int d : in) elements *= d;
  }
  if (in.empty() || elements < 0 || elements % fc.shape.in != 0 ||
      (fc.conv1x1 && (in.size() != 4 || in[3] != fc.shape.in)) ||
      (fc.keep_num_dims && in.back() != fc.shape.in)) {
    state_->logger.Log(kTfpconvLogError, "node %d: input does not fit %d input features",
                       node.node_index, fc.shape.in);
    return false;
  }
  const int rows = static_cast<int>(elements / fc.shape.in);
  std::vector<int> out = {rows, fc.shape.out};
  if (fc.conv1x1 || fc.keep_num_dims) {
    out = in;
    out.back() = fc.shape.out;
  }
  step->empty = rows == 0;
  if (!step->empty && (fc.fc == nullptr || fc.fc->shape().rows != rows) &&
      !(step->use_reference && fc.shape.rows == rows)) {
    std::string error;
    fc.fc = CreateUnifiedFc(context, node, rows, state_->isa, &error);
    fc.shape.rows = rows;
    step->use_reference = fc.fc == nullptr;
    if (step->use_reference) {
      state_->logger.Log(kTfpconvLogWarning,
                         "node %d: the engine rejected %d rows (%s); using the dense reference",
                         node.node_index, rows, error.c_str());
    }
  }
  if (!SetOutputDims(context, node.output_tensor, out)) {
    state_->logger.Log(kTfpconvLogError, "node %d: cannot resize the output tensor", node.node_index);
    return false;
  }
  return true;
}

// TFLite's pooling Prepare: out = ceil(in / stride) for SAME, (in - window) / stride + 1 for VALID
// (0 when the window does not fit: an empty output, as TFLite's kernel gives).
bool PartitionKernel::PreparePoolStep(tfl::Context* context, Step* step) {
  ClaimedNode& pool = step->node;
  std::vector<int> in;
  if (!InputDims(context, pool.input_tensor, &in) || in.size() != 4) {
    state_->logger.Log(kTfpconvLogError, "node %d: input is not a float32 NHWC tensor", pool.node_index);
    return false;
  }
  const tfl::ConvParams& p = pool.params;
  const std::vector<int> out = {in[0], TfliteOutputSize(p.padding, in[1], p.stride_height, pool.kernel_h),
                                TfliteOutputSize(p.padding, in[2], p.stride_width, pool.kernel_w), in[3]};
  if (*std::min_element(in.begin(), in.end()) < 0 || *std::min_element(out.begin(), out.end()) < 0) {
    state_->logger.Log(kTfpconvLogError, "node %d: input %dx%d is too small for the %dx%d window",
                       pool.node_index, in[1], in[2], pool.kernel_h, pool.kernel_w);
    return false;
  }
  step->empty = *std::min_element(out.begin(), out.end()) == 0;
  std::string error;
  if (!step->empty && !ResolveConvShape(p, in[0], in[1], in[2], in[3], in[3], &pool.shape, &error,
                                        pool.kernel_h, pool.kernel_w)) {
    state_->logger.Log(kTfpconvLogError, "node %d: %s", pool.node_index, error.c_str());
    return false;
  }
  if (!SetOutputDims(context, pool.output_tensor, out)) {
    state_->logger.Log(kTfpconvLogError, "node %d: cannot resize the output tensor", pool.node_index);
    return false;
  }
  return true;
}

tfl::Status PartitionKernel::Prepare(tfl::Context* context) {
  for (Step& step : steps_) {
    const bool ok = step.node.max_pool                            ? PreparePoolStep(context, &step)
                    : step.node.kind == PlannedOpKind::kUnifiedFc ? PrepareFcStep(context, &step)
                                                                  : PrepareConvStep(context, &step);
    if (!ok) return tfl::kError;
  }
  return tfl::kOk;
}

float* PartitionKernel::TensorData(tfl::Context* context, int tensor) {
  auto owned = owned_.find(tensor);
  if (owned != owned_.end()) return owned->second.data.data();
  tfl::Tensor* t = TensorAt(context, tensor);
  return t == nullptr ? nullptr : static_cast<float*>(t->data);
}

tfl::Status PartitionKernel::Invoke(tfl::Context* context) {
  std::lock_guard<std::mutex> lock(state_->run_mutex);
  ThreadPool* pool = state_->pool();
  for (Step& step : steps_) {
    const ClaimedNode& conv = step.node;
    if (step.empty) continue;
    const float* input = TensorData(context, conv.input_tensor);
    float* output = TensorData(context, conv.output_tensor);
    if (input == nullptr || output == nullptr) {
      state_->logger.Log(kTfpconvLogError, "node %d: input or output tensor has no data",
                         conv.node_index);
      return tfl::kError;
    }
    if (conv.max_pool) {
      MaxPool(PoolShape(conv.shape, conv.kernel_h, conv.kernel_w), input, output, pool);
    } else if (conv.kind == PlannedOpKind::kUnifiedFc) {
      if (step.use_reference) {
        const tfl::Tensor* weights = TensorAt(context, conv.filter_tensor);
        const tfl::Tensor* bias = TensorAt(context, conv.bias_tensor);
        ReferenceFc(conv.fc.shape, static_cast<const float*>(weights->data),
                    bias ? static_cast<const float*>(bias->data) : nullptr, input, output);
      } else {
        conv.fc.fc->Run(input, output, pool);
      }
    } else if (step.use_reference) {
      const tfl::Tensor* filter = TensorAt(context, conv.filter_tensor);
      const tfl::Tensor* bias = TensorAt(context, conv.bias_tensor);
      ReferenceConv(conv.shape, static_cast<const float*>(filter->data),
                    bias ? static_cast<const float*>(bias->data) : nullptr, input, output,
                    conv.kernel_h, conv.kernel_w);
      if (conv.mask.present()) ApplyPixelMask(conv.shape, conv.mask.pixels, output);
    } else if (conv.kind == PlannedOpKind::kDenseConv) {
      conv.dense->Run(input, output, pool);
    } else {
      conv.conv->Run(input, output, pool);
    }
  }
  // The next operators are TFLite's: our spinning workers would take their cores.
  if (pool != nullptr) pool->ReleaseWorkers();
  return tfl::kOk;
}

}  // namespace tfpconv
