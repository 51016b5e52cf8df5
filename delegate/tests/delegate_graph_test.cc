// Runs the whole delegate (graph-level Prepare, node selection, partition kernels) against a small
// fake TFLite runtime that implements the context functions the delegate uses, the way TFLite does:
// node subsets become delegate nodes, tensors internal to a partition stay unallocated.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "conv_geometry.h"
#include "dispatch.h"
#include "pattern_conv.h"
#include "test_plans.h"
#include "tfpconv/delegate.h"
#include "tflite_abi.h"

namespace tfpconv {
namespace {

using testing::BuildPlan;
using testing::ConvPlanSpec;
using testing::MakePrunedFilter;
using testing::PrunedFilter;
using testing::SpecFor;

tfl::IntArray* NewIntArray(const std::vector<int>& values) {
  auto* array = static_cast<tfl::IntArray*>(std::malloc(sizeof(int) * (1 + values.size())));
  array->size = static_cast<int>(values.size());
  for (size_t i = 0; i < values.size(); ++i) array->data[i] = values[i];
  return array;
}

std::vector<int> ToVector(const tfl::IntArray* array) {
  return array ? std::vector<int>(array->data, array->data + array->size) : std::vector<int>();
}

tfl::ConvParams Conv(tfl::Padding padding, int stride_h, int stride_w, tfl::FusedActivation act) {
  tfl::ConvParams params{};
  params.padding = padding;
  params.stride_height = stride_h;
  params.stride_width = stride_w;
  params.activation = act;
  params.dilation_height_factor = 1;
  params.dilation_width_factor = 1;
  return params;
}

class FakeGraph {
 public:
  FakeGraph() {
    context_.impl_ = this;
    context_.GetExecutionPlan = GetExecutionPlan;
    context_.GetNodeAndRegistration = GetNodeAndRegistration;
    context_.ReplaceNodeSubsetsWithDelegateKernels = Replace;
    context_.ResizeTensorExplicit = ResizeTensorExplicit;
    context_.ResizeTensor = ResizeTensor;
    context_.ReportError = ReportError;
    context_.GetModelMetadata = GetModelMetadata;
  }
  ~FakeGraph() {
    for (size_t n = 0; n < nodes_.size(); ++n) {
      if (registrations_[n].free != nullptr) registrations_[n].free(&context_, nodes_[n].user_data);
      std::free(nodes_[n].inputs);
      std::free(nodes_[n].outputs);
      if (registrations_[n].builtin_code != tfl::kBuiltinDelegate) std::free(nodes_[n].builtin_data);
    }
    for (tfl::DelegateParams* params : owned_params_) {
      std::free(params->nodes_to_replace);
      std::free(params->input_tensors);
      std::free(params->output_tensors);
      std::free(params);
    }
    for (tfl::Tensor& tensor : tensors_) {
      std::free(tensor.dims);
      std::free(const_cast<tfl::IntArray*>(tensor.dims_signature));
    }
    std::free(plan_cache_);
  }

  int AddTensor(const std::vector<int>& dims, tfl::AllocationType allocation,
                const std::vector<float>& constant = {}) {
    tfl::Tensor tensor{};
    tensor.type = tfl::kFloat32;
    tensor.dims = NewIntArray(dims);
    tensor.allocation_type = allocation;
    tensor.bytes = sizeof(float) * Elements(dims);
    tensors_.push_back(tensor);
    buffers_.emplace_back(constant);
    if (allocation == tfl::kMmapRo) tensors_.back().data = buffers_.back().data();
    Sync();
    return static_cast<int>(tensors_.size()) - 1;
  }

  // Adds CONV_2D(input, filter[, bias]) and returns its output tensor.
  int AddConv(int input, const PrunedFilter& filter, bool with_bias, tfl::ConvParams params,
              int* node_index = nullptr) {
    const int filter_tensor = AddTensor({filter.out_c, 3, 3, filter.in_c}, tfl::kMmapRo, filter.weights);
    const int bias_tensor = with_bias ? AddTensor({filter.out_c}, tfl::kMmapRo, filter.bias)
                                      : tfl::kOptionalTensor;
    const int output = AddTensor({1, 1, 1, filter.out_c}, tfl::kArenaRw);
    tfl::Node node{};
    node.inputs = NewIntArray({input, filter_tensor, bias_tensor});
    node.outputs = NewIntArray({output});
    AppendNode(node, tfl::kBuiltinConv2d, params, node_index);
    return output;
  }

  // Adds MAX_POOL_2D(input) and returns its output tensor.
  int AddMaxPool(int input, const tfl::PoolParams& params, int* node_index = nullptr) {
    const int output = AddTensor({1, 1, 1, 1}, tfl::kArenaRw);
    tfl::Node node{};
    node.inputs = NewIntArray({input});
    node.outputs = NewIntArray({output});
    AppendNode(node, tfl::kBuiltinMaxPool2d, params, node_index);
    return output;
  }

  // Appends `node` to the graph and the execution plan, with a malloc'ed copy of its options (the
  // destructor frees it).
  template <typename Params>
  void AppendNode(tfl::Node node, int32_t builtin_code, const Params& params, int* node_index) {
    auto* stored = static_cast<Params*>(std::malloc(sizeof(Params)));
    *stored = params;
    node.builtin_data = stored;
    tfl::Registration registration{};
    registration.builtin_code = builtin_code;
    if (node_index) *node_index = static_cast<int>(nodes_.size());
    execution_plan_.push_back(static_cast<int>(nodes_.size()));
    nodes_.push_back(node);
    registrations_.push_back(registration);
  }

  void MarkGraphOutput(int tensor) { graph_outputs_.insert(tensor); }
  void SetMetadata(std::vector<uint8_t> metadata) {
    metadata_ = std::move(metadata);
    has_metadata_ = true;
  }
  void SetDims(int tensor, const std::vector<int>& dims) {
    std::free(tensors_[tensor].dims);
    tensors_[tensor].dims = NewIntArray(dims);
    tensors_[tensor].bytes = sizeof(float) * Elements(dims);
    tensors_[tensor].data = nullptr;
  }
  // Replaces a constant tensor's shape and data.
  void SetConstant(int tensor, const std::vector<int>& dims, const std::vector<float>& values) {
    std::free(tensors_[tensor].dims);
    tensors_[tensor].dims = NewIntArray(dims);
    tensors_[tensor].bytes = sizeof(float) * values.size();
    buffers_[tensor] = values;
    tensors_[tensor].data = buffers_[tensor].data();
  }
  // The shape signature of the model file (-1: a dimension the model leaves open).
  void SetSignature(int tensor, const std::vector<int>& signature) {
    std::free(const_cast<tfl::IntArray*>(tensors_[tensor].dims_signature));
    tensors_[tensor].dims_signature = NewIntArray(signature);
  }
  void SetType(int tensor, tfl::Type type) { tensors_[tensor].type = type; }
  void SetAllocation(int tensor, tfl::AllocationType allocation) {
    tensors_[tensor].allocation_type = allocation;
  }
  tfl::ConvParams* ConvParamsOf(int node) {
    return static_cast<tfl::ConvParams*>(nodes_[node].builtin_data);
  }
  // The original node is still in the execution plan as TFLite's operator.
  bool RunsOnTflite(int node) const {
    return std::count(execution_plan_.begin(), execution_plan_.end(), node) == 1 &&
           registrations_[node].builtin_code != tfl::kBuiltinDelegate;
  }
  void set_primary(bool primary) {
    context_.AcquireSubgraphContext = primary ? AcquireSelf : AcquireOther;
    context_.ReleaseSubgraphContext = Release;
  }

  // Like TFLite for a delegate without dynamic-tensor support: the graph is prepared first, so the
  // delegate sees propagated shapes.
  tfl::Status Apply(TfLiteDelegate* delegate) {
    if (!AllocateTensors()) return tfl::kError;
    auto* d = reinterpret_cast<tfl::Delegate*>(delegate);
    return d->Prepare(&context_, d);
  }

  // Like TFLite for a delegate that allows dynamic tensors (the tfpconv delegate): the delegate
  // sees the shapes as the model file gives them; the graph is prepared afterwards.
  tfl::Status ApplyUnprepared(TfLiteDelegate* delegate) {
    auto* d = reinterpret_cast<tfl::Delegate*>(delegate);
    return d->Prepare(&context_, d);
  }

  // Prepares every node of the execution plan, then gives arena memory to every tensor they use.
  bool AllocateTensors() {
    for (int n : execution_plan_) {
      if (registrations_[n].prepare != nullptr) {
        if (registrations_[n].prepare(&context_, &nodes_[n]) != tfl::kOk) return false;
      } else if (registrations_[n].builtin_code == tfl::kBuiltinMaxPool2d) {
        PrepareReferencePool(nodes_[n]);
      } else if (!PrepareReferenceConv(nodes_[n])) {
        return false;
      }
    }
    for (size_t t = 0; t < tensors_.size(); ++t) {
      if (tensors_[t].allocation_type == tfl::kArenaRw) tensors_[t].data = nullptr;
    }
    for (int n : execution_plan_) {
      for (const tfl::IntArray* list : {nodes_[n].inputs, nodes_[n].outputs}) {
        for (int t : ToVector(list)) {
          if (t < 0 || tensors_[t].allocation_type != tfl::kArenaRw) continue;
          buffers_[t].assign(tensors_[t].bytes / sizeof(float), std::nanf(""));
          tensors_[t].data = buffers_[t].data();
        }
      }
    }
    return true;
  }

  bool Invoke() {
    for (int n : execution_plan_) {
      if (registrations_[n].invoke != nullptr) {
        if (registrations_[n].invoke(&context_, &nodes_[n]) != tfl::kOk) return false;
      } else if (registrations_[n].builtin_code == tfl::kBuiltinMaxPool2d) {
        RunReferencePool(nodes_[n]);
      } else {
        RunReferenceConv(nodes_[n]);
      }
    }
    return true;
  }

  float* Data(int tensor) { return static_cast<float*>(tensors_[tensor].data); }
  std::vector<int> Dims(int tensor) { return ToVector(tensors_[tensor].dims); }
  size_t Elements(int tensor) { return Elements(Dims(tensor)); }
  const std::vector<int>& execution_plan() const { return execution_plan_; }
  int delegate_nodes() const {
    int count = 0;
    for (int n : execution_plan_) count += registrations_[n].builtin_code == tfl::kBuiltinDelegate;
    return count;
  }

 private:
  static size_t Elements(const std::vector<int>& dims) {
    size_t n = 1;
    for (int d : dims) n *= static_cast<size_t>(d);
    return n;
  }
  static FakeGraph* Self(const tfl::Context* context) { return static_cast<FakeGraph*>(context->impl_); }
  void Sync() { context_.tensors = tensors_.data(); context_.tensors_size = tensors_.size(); }

  bool ShapeOf(const tfl::Node& node, ConvShape* shape) {
    const auto* params = static_cast<const tfl::ConvParams*>(node.builtin_data);
    const std::vector<int> in = Dims(node.inputs->data[0]);
    const std::vector<int> filter = Dims(node.inputs->data[1]);
    std::string error;
    return ResolveConvShape(*params, in[0], in[1], in[2], in[3], filter[0], shape, &error);
  }
  bool PrepareReferenceConv(const tfl::Node& node) {
    ConvShape shape;
    if (!ShapeOf(node, &shape)) return false;
    SetDims(node.outputs->data[0], {shape.batch, shape.out_h, shape.out_w, shape.out_c});
    return true;
  }
  void RunReferenceConv(const tfl::Node& node) {
    ConvShape shape;
    ASSERT_TRUE(ShapeOf(node, &shape));
    const int bias = node.inputs->data[2];
    ReferenceConv(shape, Data(node.inputs->data[1]), bias >= 0 ? Data(bias) : nullptr,
                  Data(node.inputs->data[0]), Data(node.outputs->data[0]));
  }

  // TFLite's pooling, written out: out = ceil(in / stride) (SAME) or (in - window) / stride + 1
  // (VALID); SAME pads (out - 1) * stride + window - in, the odd one at the end; padded positions
  // are skipped; then the fused activation's clamp.
  static void PoolDimension(const tfl::PoolParams& p, bool height, int in, int* out, int* pad) {
    const int window = height ? p.filter_height : p.filter_width;
    const int stride = height ? p.stride_height : p.stride_width;
    *out = p.padding == tfl::kPaddingSame ? (in + stride - 1) / stride : (in - window + stride) / stride;
    *pad = std::max((*out - 1) * stride + window - in, 0) / 2;
  }
  void PrepareReferencePool(const tfl::Node& node) {
    const auto& p = *static_cast<const tfl::PoolParams*>(node.builtin_data);
    const std::vector<int> in = Dims(node.inputs->data[0]);
    int out_h, out_w, pad;
    PoolDimension(p, true, in[1], &out_h, &pad);
    PoolDimension(p, false, in[2], &out_w, &pad);
    SetDims(node.outputs->data[0], {in[0], out_h, out_w, in[3]});
  }
  void RunReferencePool(const tfl::Node& node) {
    const auto& p = *static_cast<const tfl::PoolParams*>(node.builtin_data);
    const std::vector<int> in = Dims(node.inputs->data[0]);
    int out_h, out_w, pad_top, pad_left;
    PoolDimension(p, true, in[1], &out_h, &pad_top);
    PoolDimension(p, false, in[2], &out_w, &pad_left);
    float act_min, act_max;
    ActivationClamp(p.activation, &act_min, &act_max);
    const float* input = Data(node.inputs->data[0]);
    float* output = Data(node.outputs->data[0]);
    const int c_count = in[3];
    for (int b = 0; b < in[0]; ++b)
      for (int oy = 0; oy < out_h; ++oy)
        for (int ox = 0; ox < out_w; ++ox)
          for (int c = 0; c < c_count; ++c) {
            float m = std::numeric_limits<float>::lowest();
            for (int fy = 0; fy < p.filter_height; ++fy)
              for (int fx = 0; fx < p.filter_width; ++fx) {
                const int y = oy * p.stride_height - pad_top + fy;
                const int x = ox * p.stride_width - pad_left + fx;
                if (y < 0 || y >= in[1] || x < 0 || x >= in[2]) continue;
                m = std::max(m, input[((size_t(b) * in[1] + y) * in[2] + x) * c_count + c]);
              }
            output[((size_t(b) * out_h + oy) * out_w + ox) * c_count + c] =
                std::min(std::max(m, act_min), act_max);
          }
  }

  static tfl::Status GetExecutionPlan(tfl::Context* context, tfl::IntArray** plan) {
    FakeGraph* self = Self(context);
    std::free(self->plan_cache_);
    self->plan_cache_ = NewIntArray(self->execution_plan_);
    *plan = self->plan_cache_;
    return tfl::kOk;
  }
  static tfl::Status GetNodeAndRegistration(tfl::Context* context, int index, tfl::Node** node,
                                            tfl::Registration** registration) {
    FakeGraph* self = Self(context);
    if (index < 0 || static_cast<size_t>(index) >= self->nodes_.size()) return tfl::kError;
    *node = &self->nodes_[index];
    *registration = &self->registrations_[index];
    return tfl::kOk;
  }
  // Maximal runs of consecutive replaced nodes become one delegate node each (enough for chains).
  static tfl::Status Replace(tfl::Context* context, tfl::Registration registration,
                             const tfl::IntArray* to_replace, tfl::Delegate* delegate) {
    FakeGraph* self = Self(context);
    const std::set<int> replaced(to_replace->data, to_replace->data + to_replace->size);
    std::vector<int> new_plan;
    std::vector<std::vector<int>> runs;
    for (int n : self->execution_plan_) {
      if (!replaced.count(n)) {
        new_plan.push_back(n);
        continue;
      }
      if (new_plan.empty() || new_plan.back() != -1) {
        new_plan.push_back(-1);
        runs.emplace_back();
      }
      runs.back().push_back(n);
    }
    size_t run_index = 0;
    for (int& entry : new_plan) {
      if (entry != -1) continue;
      entry = self->AddDelegateNode(registration, runs[run_index++], delegate);
    }
    self->execution_plan_ = new_plan;
    return tfl::kOk;
  }
  int AddDelegateNode(tfl::Registration registration, const std::vector<int>& run, tfl::Delegate* delegate) {
    const std::set<int> members(run.begin(), run.end());
    std::set<int> produced, inputs, outputs;
    for (int n : run) {
      for (int t : ToVector(nodes_[n].outputs)) produced.insert(t);
    }
    for (int n : run) {
      for (int t : ToVector(nodes_[n].inputs)) {
        if (t >= 0 && !produced.count(t)) inputs.insert(t);
      }
    }
    for (int t : produced) {
      bool consumed_outside = graph_outputs_.count(t) > 0;
      for (int n : execution_plan_) {
        if (members.count(n)) continue;
        for (int in : ToVector(nodes_[n].inputs)) consumed_outside = consumed_outside || in == t;
      }
      if (consumed_outside) outputs.insert(t);
    }
    auto* params = static_cast<tfl::DelegateParams*>(std::malloc(sizeof(tfl::DelegateParams)));
    params->delegate = delegate;
    params->nodes_to_replace = NewIntArray(run);
    params->input_tensors = NewIntArray(std::vector<int>(inputs.begin(), inputs.end()));
    params->output_tensors = NewIntArray(std::vector<int>(outputs.begin(), outputs.end()));
    tfl::Node node{};
    node.inputs = NewIntArray(ToVector(params->input_tensors));
    node.outputs = NewIntArray(ToVector(params->output_tensors));
    node.delegate = delegate;
    registration.builtin_code = tfl::kBuiltinDelegate;
    node.user_data = registration.init(&context_, reinterpret_cast<const char*>(params), 0);
    node.builtin_data = params;  // freed with the node, like TFLite does
    owned_params_.push_back(params);
    nodes_.push_back(node);
    registrations_.push_back(registration);
    return static_cast<int>(nodes_.size()) - 1;
  }
  static tfl::Status ResizeTensorExplicit(tfl::Context* context, tfl::Tensor* tensor, int rank,
                                          const int* dims) {
    FakeGraph* self = Self(context);
    self->SetDims(static_cast<int>(tensor - self->tensors_.data()), std::vector<int>(dims, dims + rank));
    return tfl::kOk;
  }
  static tfl::Status ResizeTensor(tfl::Context* context, tfl::Tensor* tensor, tfl::IntArray* size) {
    tfl::Status status = ResizeTensorExplicit(context, tensor, size->size, size->data);
    std::free(size);
    return status;
  }
  static void ReportError(tfl::Context*, const char* format, ...) {
    va_list args;
    va_start(args, format);
    std::vfprintf(stderr, format, args);
    va_end(args);
    std::fputc('\n', stderr);
  }
  static tfl::Status GetModelMetadata(const tfl::Context* context, const char* name, const char** ptr,
                                      size_t* bytes) {
    FakeGraph* self = Self(context);
    if (!self->has_metadata_ || std::string(name) != "tfpconv") return tfl::kError;
    *ptr = reinterpret_cast<const char*>(self->metadata_.data());
    *bytes = self->metadata_.size();
    return tfl::kOk;
  }
  static tfl::Status AcquireSelf(tfl::Context* context, int, tfl::Context** acquired) {
    *acquired = context;
    return tfl::kOk;
  }
  static tfl::Status AcquireOther(tfl::Context*, int, tfl::Context** acquired) {
    static tfl::Context other{};
    *acquired = &other;
    return tfl::kOk;
  }
  static tfl::Status Release(tfl::Context*, int) { return tfl::kOk; }

 private:
  tfl::Context context_{};
  std::vector<tfl::Tensor> tensors_;
  std::vector<std::vector<float>> buffers_;
  std::vector<tfl::Node> nodes_;
  std::vector<tfl::Registration> registrations_;
  std::vector<int> execution_plan_;
  std::vector<tfl::DelegateParams*> owned_params_;
  std::set<int> graph_outputs_;
  tfl::IntArray* plan_cache_ = nullptr;
  std::vector<uint8_t> metadata_;
  bool has_metadata_ = false;
};

struct ChainSpec {
  std::vector<int> input_dims;
  std::vector<PrunedFilter> filters;
  std::vector<tfl::ConvParams> params;
  std::vector<bool> with_bias;
};

struct Chain {
  std::unique_ptr<FakeGraph> graph;
  int input = -1;
  int output = -1;
  std::vector<int> nodes;
  std::vector<int> filter_tensors;
};

Chain BuildChain(const ChainSpec& spec) {
  Chain chain;
  chain.graph.reset(new FakeGraph());
  chain.input = chain.graph->AddTensor(spec.input_dims, tfl::kArenaRw);
  int tensor = chain.input;
  for (size_t i = 0; i < spec.filters.size(); ++i) {
    int node = -1;
    tensor = chain.graph->AddConv(tensor, spec.filters[i], spec.with_bias[i], spec.params[i], &node);
    chain.nodes.push_back(node);
    chain.filter_tensors.push_back(tensor - (spec.with_bias[i] ? 2 : 1));
  }
  chain.output = tensor;
  chain.graph->MarkGraphOutput(tensor);
  return chain;
}

std::vector<uint8_t> PlanFor(const ChainSpec& spec, const Chain& chain) {
  std::vector<ConvPlanSpec> convs;
  for (size_t i = 0; i < spec.filters.size(); ++i) {
    convs.push_back(SpecFor(spec.filters[i], static_cast<uint32_t>(chain.nodes[i]), chain.filter_tensors[i]));
  }
  return BuildPlan(convs);
}

void FillInput(Chain* chain, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  float* data = chain->graph->Data(chain->input);
  for (size_t i = 0; i < chain->graph->Elements(chain->input); ++i) data[i] = value(rng);
}

// Runs `spec` without the delegate: the expected output.
std::vector<float> Expected(const ChainSpec& spec, const std::vector<int>& input_dims, uint32_t seed) {
  Chain chain = BuildChain(spec);
  chain.graph->SetDims(chain.input, input_dims);
  EXPECT_TRUE(chain.graph->AllocateTensors());
  FillInput(&chain, seed);
  EXPECT_TRUE(chain.graph->Invoke());
  const float* out = chain.graph->Data(chain.output);
  return std::vector<float>(out, out + chain.graph->Elements(chain.output));
}

void ExpectClose(const std::vector<float>& expected, const float* actual) {
  float scale = 1.0f;
  for (float v : expected) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_NEAR(actual[i], expected[i], 1e-4f * scale) << "element " << i;
  }
}

class DelegateGraphTest : public ::testing::Test {
 protected:
  DelegateGraphTest() {
    TfpconvDelegateOptions options = TfpconvDelegateOptionsDefault();
    options.num_threads = 2;
    options.log_level = kTfpconvLogInfo;
    options.claim_all = 1;  // these tests are about what the delegate can run
    delegate_ = TfpconvDelegateCreate(&options);
    spec_.input_dims = {1, 9, 7, 5};
    spec_.filters = {MakePrunedFilter(6, 5, 0.3, 11), MakePrunedFilter(3, 6, 0.5, 12)};
    spec_.params = {Conv(tfl::kPaddingSame, 1, 1, tfl::kActRelu), Conv(tfl::kPaddingValid, 2, 1, tfl::kActRelu6)};
    spec_.with_bias = {true, false};
  }
  ~DelegateGraphTest() override { TfpconvDelegateDelete(delegate_); }

  std::vector<int> Claimed() {
    const int count = TfpconvDelegateClaimedNodes(delegate_, nullptr, 0);
    std::vector<int> nodes(static_cast<size_t>(count));
    TfpconvDelegateClaimedNodes(delegate_, nodes.data(), count);
    return nodes;
  }

  // Applies the delegate to a chain with `plan` and checks the outputs against TFLite's way.
  void RunAndCompare(Chain* chain, const std::vector<int>& input_dims, uint32_t seed) {
    ASSERT_TRUE(chain->graph->AllocateTensors());
    FillInput(chain, seed);
    ASSERT_TRUE(chain->graph->Invoke());
    const std::vector<float> expected = Expected(spec_, input_dims, seed);
    ASSERT_EQ(chain->graph->Elements(chain->output), expected.size());
    ExpectClose(expected, chain->graph->Data(chain->output));
  }

  TfLiteDelegate* delegate_ = nullptr;
  ChainSpec spec_;
};

TEST_F(DelegateGraphTest, ClaimsAChainIntoOnePartitionAndOwnsItsInternalTensor) {
  Chain chain = BuildChain(spec_);
  chain.graph->SetMetadata(PlanFor(spec_, chain));
  ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
  EXPECT_EQ(Claimed(), chain.nodes);
  EXPECT_EQ(chain.graph->delegate_nodes(), 1);
  EXPECT_EQ(chain.graph->execution_plan().size(), 1u);
  RunAndCompare(&chain, spec_.input_dims, 5);
  // The tensor between the two convolutions is internal: TFLite never allocated it.
  EXPECT_EQ(chain.graph->Data(chain.filter_tensors[1] - 1), nullptr);
}

TEST_F(DelegateGraphTest, FollowsInputResizes) {
  Chain chain = BuildChain(spec_);
  chain.graph->SetMetadata(PlanFor(spec_, chain));
  ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
  RunAndCompare(&chain, spec_.input_dims, 6);
  const std::vector<int> bigger = {2, 12, 5, 5};
  chain.graph->SetDims(chain.input, bigger);
  RunAndCompare(&chain, bigger, 7);
  EXPECT_EQ(chain.graph->Dims(chain.output), (std::vector<int>{2, 5, 3, 3}));
}

TEST_F(DelegateGraphTest, DeclinesAConvWhosePlanIsStale) {
  Chain chain = BuildChain(spec_);
  std::vector<ConvPlanSpec> convs = {SpecFor(spec_.filters[0], chain.nodes[0], chain.filter_tensors[0]),
                                     SpecFor(spec_.filters[1], chain.nodes[1], chain.filter_tensors[1])};
  convs[0].weight_checksum ^= 1u;
  chain.graph->SetMetadata(BuildPlan(convs));
  ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
  EXPECT_EQ(Claimed(), std::vector<int>{chain.nodes[1]});
  RunAndCompare(&chain, spec_.input_dims, 8);
}

TEST_F(DelegateGraphTest, DeclinesAPlanNamingAnotherWeightTensor) {
  Chain chain = BuildChain(spec_);
  std::vector<ConvPlanSpec> convs = {SpecFor(spec_.filters[0], chain.nodes[0], chain.filter_tensors[1]),
                                     SpecFor(spec_.filters[1], chain.nodes[1], chain.filter_tensors[1])};
  chain.graph->SetMetadata(BuildPlan(convs));
  ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
  EXPECT_EQ(Claimed(), std::vector<int>{chain.nodes[1]});
  RunAndCompare(&chain, spec_.input_dims, 9);
}

TEST_F(DelegateGraphTest, LeavesEverythingToTfliteWithoutAUsablePlan) {
  for (int variant = 0; variant < 4; ++variant) {
    Chain chain = BuildChain(spec_);
    std::vector<uint8_t> plan = PlanFor(spec_, chain);
    if (variant == 1) plan.resize(plan.size() / 2);  // truncated
    if (variant == 2) plan[5] ^= 0xFF;                // not a tfpconv plan (identifier)
    if (variant == 3) plan = BuildPlan({}, {}, 7);     // a future schema version
    if (variant > 0) chain.graph->SetMetadata(plan);
    ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
    EXPECT_EQ(chain.graph->delegate_nodes(), 0) << variant;
    RunAndCompare(&chain, spec_.input_dims, 10);
  }
}

TEST_F(DelegateGraphTest, CorruptBytesNeverGiveWrongNumbers) {
  std::mt19937 rng(21);
  for (int round = 0; round < 40; ++round) {
    Chain chain = BuildChain(spec_);
    std::vector<uint8_t> plan = PlanFor(spec_, chain);
    for (int flips = 0; flips < 3; ++flips) plan[rng() % plan.size()] ^= static_cast<uint8_t>(1u + rng() % 255);
    chain.graph->SetMetadata(plan);
    ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
    RunAndCompare(&chain, spec_.input_dims, 13);
  }
}

TEST_F(DelegateGraphTest, UnsupportedConvSplitsThePartitions) {
  spec_.filters.push_back(MakePrunedFilter(4, 3, 0.2, 13));
  spec_.params.push_back(Conv(tfl::kPaddingSame, 1, 1, tfl::kActNone));
  spec_.with_bias.push_back(true);
  spec_.params[1] = Conv(tfl::kPaddingSame, 3, 3, tfl::kActNone);  // stride 3: not supported
  Chain chain = BuildChain(spec_);
  chain.graph->SetMetadata(PlanFor(spec_, chain));
  ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
  EXPECT_EQ(Claimed(), (std::vector<int>{chain.nodes[0], chain.nodes[2]}));
  EXPECT_EQ(chain.graph->delegate_nodes(), 2);
  RunAndCompare(&chain, spec_.input_dims, 11);
}

TEST_F(DelegateGraphTest, LeavesLayersToTfliteWhereTfliteIsFaster) {
  TfpconvDelegateOptions options = TfpconvDelegateOptionsDefault();
  options.log_level = kTfpconvLogInfo;
  TfLiteDelegate* delegate = TfpconvDelegateCreate(&options);
  spec_.filters.push_back(MakePrunedFilter(4, 3, 0.2, 13));  // 3 input channels
  spec_.params.push_back(Conv(tfl::kPaddingSame, 1, 1, tfl::kActNone));
  spec_.with_bias.push_back(true);
  const auto plan_with = [&](const Chain& chain, int64_t claim0, int64_t claim2) {
    std::vector<ConvPlanSpec> convs;
    for (size_t i = 0; i < spec_.filters.size(); ++i)
      convs.push_back(SpecFor(spec_.filters[i], static_cast<uint32_t>(chain.nodes[i]),
                              chain.filter_tensors[i]));
    const std::string here = IsaName(BestIsa());
    if (claim0 >= 0) convs[0].tunings = {{here, "", claim0 != 0, "", {}}};
    if (claim2 >= 0) convs[2].tunings = {{here, "", claim2 != 0, "", {}}};
    return BuildPlan(convs);
  };
  const auto claimed = [&] {
    std::vector<int> nodes(static_cast<size_t>(TfpconvDelegateClaimedNodes(delegate, nullptr, 0)));
    TfpconvDelegateClaimedNodes(delegate, nodes.data(), static_cast<int>(nodes.size()));
    return nodes;
  };
  {  // tuning said TFLite is faster on node 0; node 2 has too few input channels
    Chain chain = BuildChain(spec_);
    chain.graph->SetMetadata(plan_with(chain, 0, -1));
    ASSERT_EQ(chain.graph->Apply(delegate), tfl::kOk);
    EXPECT_EQ(claimed(), (std::vector<int>{chain.nodes[1]}));
    RunAndCompare(&chain, spec_.input_dims, 21);
  }
  {  // tuning measured the delegate faster on both
    Chain chain = BuildChain(spec_);
    chain.graph->SetMetadata(plan_with(chain, 1, 1));
    ASSERT_EQ(chain.graph->Apply(delegate), tfl::kOk);
    EXPECT_EQ(claimed(), chain.nodes);
    RunAndCompare(&chain, spec_.input_dims, 22);
  }
  TfpconvDelegateDelete(delegate);
}

// Node-level declines: the first convolution of the chain has one property the delegate does not
// run; it must stay with TFLite, with the reason logged, while the second is still claimed.
class DeclinedNodeTest : public DelegateGraphTest {
 protected:
  DeclinedNodeTest() : chain_(BuildChain(spec_)) {
    filter_ = chain_.filter_tensors[0];
    bias_ = filter_ + 1;  // spec_ gives the first convolution a bias
  }

  void ExpectFirstNodeDeclined(const std::string& reason, bool prepared = true) {
    chain_.graph->SetMetadata(PlanFor(spec_, chain_));
    ::testing::internal::CaptureStderr();
    const tfl::Status status =
        prepared ? chain_.graph->Apply(delegate_) : chain_.graph->ApplyUnprepared(delegate_);
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_EQ(status, tfl::kOk) << log;
    EXPECT_EQ(Claimed(), std::vector<int>{chain_.nodes[1]});
    EXPECT_TRUE(chain_.graph->RunsOnTflite(chain_.nodes[0]));
    EXPECT_EQ(chain_.graph->delegate_nodes(), 1);
    const std::string line =
        "declined CONV_2D node " + std::to_string(chain_.nodes[0]) + ": " + reason;
    EXPECT_NE(log.find(line), std::string::npos) << "expected \"" << line << "\" in:\n" << log;
  }

  Chain chain_;
  int filter_ = -1, bias_ = -1;
};

TEST_F(DeclinedNodeTest, FilterThatIsNot3x3) {
  chain_.graph->SetConstant(filter_, {6, 1, 1, 5}, std::vector<float>(6 * 5, 0.25f));
  ExpectFirstNodeDeclined("filter is 1x1, not 3x3");
}

TEST_F(DeclinedNodeTest, Dilation2) {
  chain_.graph->ConvParamsOf(chain_.nodes[0])->dilation_height_factor = 2;
  chain_.graph->ConvParamsOf(chain_.nodes[0])->dilation_width_factor = 2;
  ExpectFirstNodeDeclined("dilated convolution");
}

TEST_F(DeclinedNodeTest, FilterThatIsNotConstant) {
  chain_.graph->SetAllocation(filter_, tfl::kArenaRw);  // e.g. computed by another op
  ExpectFirstNodeDeclined("filter is not a constant dense float32 tensor");
}

TEST_F(DeclinedNodeTest, BiasOfTheWrongSize) {
  chain_.graph->SetConstant(bias_, {5}, std::vector<float>(5, 0.5f));  // 6 output channels
  ExpectFirstNodeDeclined("bias is not a constant float32 vector of out_channels");
}

TEST_F(DeclinedNodeTest, InputThatIsNotFloat32) {
  chain_.graph->SetType(chain_.input, static_cast<tfl::Type>(9));  // kTfLiteInt8
  ExpectFirstNodeDeclined("input or output is not a float32 NHWC tensor");
}

TEST_F(DeclinedNodeTest, FilterThatIsNotFloat32) {
  chain_.graph->SetType(filter_, static_cast<tfl::Type>(9));  // kTfLiteInt8
  ExpectFirstNodeDeclined("filter is not a constant dense float32 tensor");
}

// The delegate's outputs do not depend on its thread count, bit for bit (and 2 threads do run:
// ThreadPool.TwoThreadsBothTakeWork in the engine's tests).
TEST_F(DelegateGraphTest, TwoThreadsGiveTheSameBitsAsOne) {
  spec_.input_dims = {2, 16, 15, 8};
  spec_.filters = {MakePrunedFilter(24, 8, 0.3, 31), MakePrunedFilter(16, 24, 0.5, 32)};
  std::vector<std::vector<float>> outputs;
  for (int threads : {1, 2}) {
    TfpconvDelegateOptions options = TfpconvDelegateOptionsDefault();
    options.num_threads = threads;
    options.claim_all = 1;
    TfLiteDelegate* delegate = TfpconvDelegateCreate(&options);
    Chain chain = BuildChain(spec_);
    chain.graph->SetMetadata(PlanFor(spec_, chain));
    ASSERT_EQ(chain.graph->Apply(delegate), tfl::kOk);
    EXPECT_EQ(chain.graph->delegate_nodes(), 1);
    ASSERT_TRUE(chain.graph->AllocateTensors());
    FillInput(&chain, 41);
    ASSERT_TRUE(chain.graph->Invoke());
    const float* out = chain.graph->Data(chain.output);
    outputs.emplace_back(out, out + chain.graph->Elements(chain.output));
    TfpconvDelegateDelete(delegate);
  }
  ExpectClose(Expected(spec_, spec_.input_dims, 41), outputs[0].data());
  EXPECT_EQ(outputs[0], outputs[1]);
}

// Tuned decisions are per instruction set: a plan tuned on another CPU (another "isa"), even one
// that measured TFLite faster there, runs with the engine's defaults and default claim policy, still
// delegated; so does a tuned variant this build does not have.
TEST_F(DelegateGraphTest, PlanTunedForAnotherIsaStillRuns) {
  const std::string here = IsaName(BestIsa());
  const std::string other = here == "neon" ? "avx2" : "neon";
  for (const std::string& isa : {other, here}) {
    Chain chain = BuildChain(spec_);
    std::vector<ConvPlanSpec> convs;
    for (size_t i = 0; i < spec_.filters.size(); ++i) {
      convs.push_back(SpecFor(spec_.filters[i], static_cast<uint32_t>(chain.nodes[i]),
                              chain.filter_tensors[i]));
      convs.back().tunings = {{isa, "some cpu", /*claim=*/isa == here, "r99v9", {{"tile_oc", 4}}}};
    }
    chain.graph->SetMetadata(BuildPlan(convs));
    ::testing::internal::CaptureStderr();
    const tfl::Status status = chain.graph->Apply(delegate_);
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_EQ(status, tfl::kOk) << log;
    EXPECT_EQ(Claimed(), chain.nodes) << log;
    EXPECT_NE(log.find("plan's tuned parameters not used: " +
                       (isa == here ? "tuned variant 'r99v9' is not one of this build's " + here
                                    : "tuned for " + other + ", running " + here)),
              std::string::npos)
        << log;
    RunAndCompare(&chain, spec_.input_dims, 42);
  }
}

// tfpconv 0.1 plans (schema version 1) still run; their integer tuned keys are tagged with an
// instruction set code and apply only there.
TEST_F(DelegateGraphTest, RunsVersion1Plans) {
  const int64_t here = IsaCode(BestIsa());
  Chain chain = BuildChain(spec_);
  std::vector<ConvPlanSpec> convs;
  for (size_t i = 0; i < spec_.filters.size(); ++i) {
    convs.push_back(SpecFor(spec_.filters[i], static_cast<uint32_t>(chain.nodes[i]),
                            chain.filter_tensors[i]));
  }
  convs[0].tuned = {{"claim", 1}, {"isa", here}, {"variant", 1}, {"tile_oc", 8}};
  convs[1].tuned = {{"claim", 0}, {"isa", (here + 1) % 4}, {"variant", 0}};  // another set: ignored
  chain.graph->SetMetadata(BuildPlan(convs, {}, 1));
  ::testing::internal::CaptureStderr();
  const tfl::Status status = chain.graph->Apply(delegate_);
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(status, tfl::kOk) << log;
  EXPECT_EQ(Claimed(), chain.nodes) << log;
  RunAndCompare(&chain, spec_.input_dims, 45);
}

// An operator whose plan needs a feature this delegate lacks is declined with one warning; the rest
// of the model still runs on the delegate.
TEST_F(DelegateGraphTest, UnknownPlanFeatureDeclinesOnlyThatNode) {
  Chain chain = BuildChain(spec_);
  std::vector<ConvPlanSpec> convs;
  for (size_t i = 0; i < spec_.filters.size(); ++i) {
    convs.push_back(SpecFor(spec_.filters[i], static_cast<uint32_t>(chain.nodes[i]),
                            chain.filter_tensors[i]));
  }
  convs[0].requires_features.push_back({"unified_weights", "0.3.0"});
  chain.graph->SetMetadata(BuildPlan(convs));
  ::testing::internal::CaptureStderr();
  const tfl::Status status = chain.graph->Apply(delegate_);
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(status, tfl::kOk) << log;
  EXPECT_EQ(Claimed(), std::vector<int>(chain.nodes.begin() + 1, chain.nodes.end())) << log;
  EXPECT_NE(log.find("tfpconv warning: node " + std::to_string(chain.nodes[0]) +
                     ": needs plan feature 'unified_weights' (tfpconv 0.3.0 or newer); left to "
                     "TFLite\n"),
            std::string::npos)
      << log;
  RunAndCompare(&chain, spec_.input_dims, 46);
}

// A whole-row variant tuned for the model's input size is too narrow after the input grows: the
// partition re-creates the convolution with the defaults (not the dense reference).
TEST_F(DelegateGraphTest, TunedVariantTooNarrowAfterAResizeFallsBackToTheDefaults) {
  const kernels::KernelSet& set = *KernelSetFor(BestIsa());
  int narrowest = -1;
  for (int v = 0; v < set.num_variants; ++v) {
    const bool narrower = narrowest < 0 || set.variants[v].vecs < set.variants[narrowest].vecs;
    if (set.variants[v].whole_rows && narrower) narrowest = v;
  }
  ASSERT_GE(narrowest, 0);
  ASSERT_GE(set.variants[narrowest].vecs * set.lanes, 7);  // fits the 9x7 output
  Chain chain = BuildChain(spec_);
  std::vector<ConvPlanSpec> convs;
  for (size_t i = 0; i < spec_.filters.size(); ++i) {
    convs.push_back(SpecFor(spec_.filters[i], static_cast<uint32_t>(chain.nodes[i]),
                            chain.filter_tensors[i]));
  }
  convs[0].tunings = {{IsaName(BestIsa()), "", true, set.variants[narrowest].name, {}}};
  chain.graph->SetMetadata(BuildPlan(convs));
  ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
  RunAndCompare(&chain, spec_.input_dims, 43);
  const std::vector<int> wide = {1, 9, 8 * set.variants[narrowest].vecs * set.lanes + 5, 5};
  chain.graph->SetDims(chain.input, wide);
  ::testing::internal::CaptureStderr();
  RunAndCompare(&chain, wide, 44);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("plan's tuned parameters not used: tuned variant " +
                     std::string(set.variants[narrowest].name)),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("narrower than the layer"), std::string::npos) << log;
  EXPECT_EQ(log.find("dense reference"), std::string::npos) << log;
}

TEST_F(DelegateGraphTest, FullyPrunedLayerStillWritesBiasAndActivation) {
  spec_.filters[0] = MakePrunedFilter(6, 5, 1.0, 14);
  Chain chain = BuildChain(spec_);
  chain.graph->SetMetadata(PlanFor(spec_, chain));
  ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
  EXPECT_EQ(Claimed(), chain.nodes);
  RunAndCompare(&chain, spec_.input_dims, 12);
}

TEST_F(DelegateGraphTest, OnlyThePrimarySubgraphIsDelegated) {
  Chain chain = BuildChain(spec_);
  chain.graph->SetMetadata(PlanFor(spec_, chain));
  chain.graph->set_primary(false);
  ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
  EXPECT_EQ(chain.graph->delegate_nodes(), 0);
  Chain primary = BuildChain(spec_);
  primary.graph->SetMetadata(PlanFor(spec_, primary));
  primary.graph->set_primary(true);
  ASSERT_EQ(primary.graph->Apply(delegate_), tfl::kOk);
  EXPECT_EQ(primary.graph->delegate_nodes(), 1);
}

// -- graphs with dynamic-sized tensors (Flatten under a dynamic batch, EfficientNet, resizes) --------

TEST_F(DelegateGraphTest, AllowsDynamicTensorsSoTfliteKeepsItAcrossResizes) {
  const auto* delegate = reinterpret_cast<const tfl::Delegate*>(delegate_);
  EXPECT_NE(delegate->flags & tfl::kDelegateFlagsAllowDynamicTensors, 0);
}

// Applied before the graph is prepared (what TFLite does with the flag): the partition kernel
// resolves the real shapes in its own Prepare and follows every later resize.
TEST_F(DelegateGraphTest, AppliedBeforeShapesArePropagatedFollowsEveryResize) {
  Chain chain = BuildChain(spec_);
  // The shapes the converter writes into the file (batch 1), not propagated by the fake runtime.
  chain.graph->SetDims(chain.filter_tensors[1] - 1, {1, 9, 7, 6});
  chain.graph->SetDims(chain.output, {1, 4, 5, 3});
  chain.graph->SetMetadata(PlanFor(spec_, chain));
  ASSERT_EQ(chain.graph->ApplyUnprepared(delegate_), tfl::kOk);
  EXPECT_EQ(Claimed(), chain.nodes);
  EXPECT_EQ(chain.graph->delegate_nodes(), 1);
  RunAndCompare(&chain, spec_.input_dims, 50);
  for (const std::vector<int>& dims : {std::vector<int>{4, 9, 7, 5}, std::vector<int>{1, 9, 7, 5},
                                       std::vector<int>{3, 14, 10, 5}}) {
    chain.graph->SetDims(chain.input, dims);
    RunAndCompare(&chain, dims, 51);
  }
}

// Height and width left open by the model (-1 in the signature): the file's placeholder 1x1 is too
// small for the VALID convolution, which is still claimed and packed once the real size is known.
TEST_F(DelegateGraphTest, ClaimsConvsWhoseHeightAndWidthAreKnownOnlyAtRunTime) {
  spec_.input_dims = {1, 1, 1, 5};
  Chain chain = BuildChain(spec_);
  chain.graph->SetSignature(chain.input, {-1, -1, -1, 5});
  chain.graph->SetSignature(chain.filter_tensors[1] - 1, {-1, -1, -1, 6});  // the internal tensor
  chain.graph->SetMetadata(PlanFor(spec_, chain));
  ::testing::internal::CaptureStderr();
  ASSERT_EQ(chain.graph->ApplyUnprepared(delegate_), tfl::kOk);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(Claimed(), chain.nodes) << log;
  EXPECT_NE(log.find("input height/width known only at run time"), std::string::npos) << log;
  for (const std::vector<int>& dims : {std::vector<int>{1, 9, 7, 5}, std::vector<int>{2, 6, 11, 5}}) {
    chain.graph->SetDims(chain.input, dims);
    RunAndCompare(&chain, dims, 52);
  }
}

// Without an open signature an unusable placeholder shape is declined as before.
TEST_F(DeclinedNodeTest, InputTooSmallWithAFixedSignature) {
  chain_.graph->SetDims(chain_.input, {1, 9, 1, 5});
  chain_.graph->ConvParamsOf(chain_.nodes[0])->padding = tfl::kPaddingValid;
  chain_.graph->SetSignature(chain_.input, {1, 9, 1, 5});
  chain_.graph->SetMetadata(PlanFor(spec_, chain_));
  ::testing::internal::CaptureStderr();
  ASSERT_EQ(chain_.graph->ApplyUnprepared(delegate_), tfl::kOk);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(chain_.graph->RunsOnTflite(chain_.nodes[0]));
  EXPECT_NE(log.find("declined CONV_2D node " + std::to_string(chain_.nodes[0]) +
                     ": input 9x1 gives an empty output"),
            std::string::npos)
      << log;
}

TEST_F(DeclinedNodeTest, InputThatIsADynamicSizedTensor) {
  chain_.graph->SetAllocation(chain_.input, tfl::kDynamic);  // e.g. a RESHAPE to a computed shape
  ExpectFirstNodeDeclined("input or output is a dynamic-sized tensor (shape known only at run time)");
}

TEST_F(DeclinedNodeTest, InputShapeNotKnownYet) {
  chain_.graph->SetDims(chain_.input, {1, 0, 7, 5});
  chain_.graph->SetDims(bias_ + 1, {1, 9, 7, 6});  // the second convolution's input, as in a file
  ExpectFirstNodeDeclined("input shape is not known yet (a dimension is 0)", /*prepared=*/false);
}

// Inputs that leave a convolution nothing to compute (batch 0; narrower than a VALID 3x3): TFLite's
// kernels give empty outputs, so does the partition; then it runs normally again.
TEST_F(DelegateGraphTest, EmptyOutputsAfterAResizeDoNotFail) {
  Chain chain = BuildChain(spec_);
  chain.graph->SetMetadata(PlanFor(spec_, chain));
  ASSERT_EQ(chain.graph->Apply(delegate_), tfl::kOk);
  ASSERT_EQ(chain.graph->delegate_nodes(), 1);
  RunAndCompare(&chain, spec_.input_dims, 53);
  chain.graph->SetDims(chain.input, {0, 9, 7, 5});
  ASSERT_TRUE(chain.graph->AllocateTensors());
  ASSERT_TRUE(chain.graph->Invoke());
  EXPECT_EQ(chain.graph->Dims(chain.output), (std::vector<int>{0, 4, 5, 3}));
  chain.graph->SetDims(chain.input, {1, 9, 2, 5});  // the second (VALID) convolution: width 0
  ASSERT_TRUE(chain.graph->AllocateTensors());
  ASSERT_TRUE(chain.graph->Invoke());
  EXPECT_EQ(chain.graph->Dims(chain.output), (std::vector<int>{1, 4, 0, 3}));
  chain.graph->SetDims(chain.input, spec_.input_dims);
  RunAndCompare(&chain, spec_.input_dims, 54);
}

// -- max pools between claimed convolutions --------------------------------------------------------

tfl::PoolParams Pool(int window, int stride, tfl::Padding padding, tfl::FusedActivation act) {
  tfl::PoolParams params{};
  params.padding = padding;
  params.filter_height = params.filter_width = window;
  params.stride_height = params.stride_width = stride;
  params.activation = act;
  return params;
}

struct PoolGraph {
  std::unique_ptr<FakeGraph> graph;
  int input = -1, output = -1;
  std::vector<int> convs, pools, filter_tensors;
};

// [pool 2x2/2 SAME ->] conv 5->6 RELU -> pool 2x2/2 VALID -> conv 6->7 -> pool 3x3/2 SAME RELU6:
// VGG's block ends, on odd sizes (13x11 -> 6x5 -> 3x3), and a ResNet-stem-like pool.
class MaxPoolGraphTest : public DelegateGraphTest {
 protected:
  MaxPoolGraphTest()
      : filters_{MakePrunedFilter(6, 5, 0.3, 61), MakePrunedFilter(7, 6, 0.5, 62)},
        pools_{Pool(2, 2, tfl::kPaddingValid, tfl::kActNone), Pool(3, 2, tfl::kPaddingSame, tfl::kActRelu6)} {}

  PoolGraph Build() const {
    PoolGraph g;
    g.graph.reset(new FakeGraph());
    g.input = g.graph->AddTensor(dims_, tfl::kArenaRw);
    int tensor = g.input, node = -1;
    if (pool_first_) {
      tensor = g.graph->AddMaxPool(tensor, Pool(2, 2, tfl::kPaddingSame, tfl::kActNone), &node);
      g.pools.push_back(node);
    }
    const tfl::ConvParams convs[] = {Conv(tfl::kPaddingSame, 1, 1, tfl::kActRelu),
                                     Conv(tfl::kPaddingSame, 1, 1, tfl::kActNone)};
    for (size_t i = 0; i < 2; ++i) {
      tensor = g.graph->AddConv(tensor, filters_[i], true, convs[i], &node);
      g.convs.push_back(node);
      g.filter_tensors.push_back(tensor - 2);
      tensor = g.graph->AddMaxPool(tensor, pools_[i], &node);
      g.pools.push_back(node);
    }
    g.output = tensor;
    g.graph->MarkGraphOutput(tensor);
    return g;
  }

  std::vector<uint8_t> Plan(const PoolGraph& g) const {
    std::vector<ConvPlanSpec> convs;
    for (size_t i = 0; i < 2; ++i) convs.push_back(SpecFor(filters_[i], g.convs[i], g.filter_tensors[i]));
    if (stale_second_conv_) convs[1].weight_checksum ^= 1u;
    return BuildPlan(convs);
  }

  // Applies the delegate; returns its log.
  std::string Apply(PoolGraph* g, bool prepared = true) {
    g->graph->SetMetadata(Plan(*g));
    ::testing::internal::CaptureStderr();
    const tfl::Status status = prepared ? g->graph->Apply(delegate_) : g->graph->ApplyUnprepared(delegate_);
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(status, tfl::kOk) << log;
    return log;
  }

  void RunAndCompare(PoolGraph* g, const std::vector<int>& dims, uint32_t seed) {
    PoolGraph plain = Build();
    std::vector<float> expected;
    for (PoolGraph* graph : {&plain, g}) {
      graph->graph->SetDims(graph->input, dims);
      ASSERT_TRUE(graph->graph->AllocateTensors());
      std::mt19937 rng(seed);
      std::uniform_real_distribution<float> value(-1.0f, 1.0f);
      float* data = graph->graph->Data(graph->input);
      for (size_t i = 0; i < graph->graph->Elements(graph->input); ++i) data[i] = value(rng);
      ASSERT_TRUE(graph->graph->Invoke());
    }
    const float* out = plain.graph->Data(plain.output);
    expected.assign(out, out + plain.graph->Elements(plain.output));
    ASSERT_EQ(g->graph->Dims(g->output), plain.graph->Dims(plain.output));
    ExpectClose(expected, g->graph->Data(g->output));
  }

  static bool Logged(const std::string& log, const std::string& line) {
    return log.find(line) != std::string::npos;
  }

  std::vector<int> dims_ = {1, 13, 11, 5};
  std::vector<PrunedFilter> filters_;
  std::vector<tfl::PoolParams> pools_;
  bool pool_first_ = false;
  bool stale_second_conv_ = false;
};

TEST_F(MaxPoolGraphTest, PoolsAfterClaimedConvsJoinOnePartition) {
  PoolGraph g = Build();
  const std::string log = Apply(&g);
  EXPECT_EQ(Claimed(), g.convs);  // the record lists the planned operators only
  for (int pool : g.pools) {
    EXPECT_FALSE(g.graph->RunsOnTflite(pool)) << log;
    EXPECT_TRUE(Logged(log, "claimed MAX_POOL_2D node " + std::to_string(pool) + " (")) << log;
  }
  EXPECT_EQ(g.graph->execution_plan().size(), 1u);
  EXPECT_TRUE(Logged(log, "(2x2 window, 1x13x11x6 -> 6x5x6, stride 2x2)")) << log;
  RunAndCompare(&g, dims_, 71);
  EXPECT_EQ(g.graph->Dims(g.output), (std::vector<int>{1, 3, 3, 7}));
  for (const std::vector<int>& dims : {std::vector<int>{2, 17, 9, 5}, std::vector<int>{1, 4, 4, 5},
                                       std::vector<int>{3, 2, 7, 5}}) {
    RunAndCompare(&g, dims, 72);
  }
}

TEST_F(MaxPoolGraphTest, ResolvesPoolShapesWhenAppliedBeforeTheGraphIsPrepared) {
  PoolGraph g = Build();
  // The shapes a file gives the pools' outputs; the convolutions' outputs stay 1x1 placeholders
  // (too small for the VALID window: the shape is left to the partition's Prepare).
  g.graph->SetDims(g.filter_tensors[1] - 1, {1, 6, 5, 6});  // the first pool's output
  g.graph->SetDims(g.output, {1, 3, 3, 7});
  const std::string log = Apply(&g, /*prepared=*/false);
  EXPECT_TRUE(Logged(log, "(2x2 window; output size known only at run time)")) << log;
  EXPECT_EQ(Claimed(), g.convs);
  EXPECT_EQ(g.graph->execution_plan().size(), 1u) << log;
  RunAndCompare(&g, dims_, 73);
  // A VALID window taller than the input: empty outputs from there on, as TFLite's kernels give.
  g.graph->SetDims(g.input, {1, 1, 11, 5});
  ASSERT_TRUE(g.graph->AllocateTensors());
  ASSERT_TRUE(g.graph->Invoke());
  EXPECT_EQ(g.graph->Dims(g.output), (std::vector<int>{1, 0, 3, 7}));
  RunAndCompare(&g, {2, 8, 12, 5}, 74);
}

TEST_F(MaxPoolGraphTest, PoolAfterTflitesOwnOperatorStaysWithTflite) {
  pool_first_ = true;  // reads the graph input
  stale_second_conv_ = true;  // the second convolution and the pool after it stay with TFLite
  PoolGraph g = Build();
  const std::string log = Apply(&g);
  EXPECT_EQ(Claimed(), std::vector<int>{g.convs[0]});
  for (int declined : {g.pools[0], g.pools[2]}) {
    EXPECT_TRUE(g.graph->RunsOnTflite(declined));
    EXPECT_TRUE(Logged(log, "declined MAX_POOL_2D node " + std::to_string(declined) +
                                ": its input is not produced by a node the delegate runs"))
        << log;
  }
  EXPECT_FALSE(g.graph->RunsOnTflite(g.pools[1]));
  EXPECT_EQ(g.graph->delegate_nodes(), 1);
  RunAndCompare(&g, dims_, 75);
}

TEST_F(MaxPoolGraphTest, UnsupportedPoolOptionsAreDeclined) {
  const struct {
    tfl::PoolParams params;
    std::string reason;
  } cases[] = {
      {Pool(2, 2, tfl::kPaddingValid, static_cast<tfl::FusedActivation>(4)),
       "fused activation 4 (only NONE, RELU, RELU6)"},  // TANH
      {Pool(2, 2, tfl::kPaddingValid, tfl::kActReluN1To1), "fused activation 2 (only NONE, RELU, RELU6)"},
      {Pool(2, 0, tfl::kPaddingValid, tfl::kActNone), "window 2x2, stride 0x0 (each only 1 to 16)"},
      {Pool(17, 1, tfl::kPaddingSame, tfl::kActNone), "window 17x17, stride 1x1 (each only 1 to 16)"},
      {Pool(2, 2, tfl::kPaddingUnknown, tfl::kActNone), "padding is neither SAME nor VALID"},
  };
  for (const auto& c : cases) {
    pools_[0] = c.params;
    PoolGraph g = Build();
    // TFLite's kernel refuses stride 0 and an unknown padding: the graph is never prepared.
    const bool runs = c.params.stride_height > 0 && c.params.padding != tfl::kPaddingUnknown;
    if (!runs) g.graph->SetDims(g.filter_tensors[1] - 1, {1, 6, 5, 6});  // as a file would give it
    const std::string log = Apply(&g, /*prepared=*/runs);
    EXPECT_EQ(Claimed(), g.convs);
    EXPECT_TRUE(g.graph->RunsOnTflite(g.pools[0]));
    EXPECT_FALSE(g.graph->RunsOnTflite(g.pools[1]));
    EXPECT_EQ(g.graph->delegate_nodes(), 2);
    EXPECT_TRUE(Logged(log, "declined MAX_POOL_2D node " + std::to_string(g.pools[0]) + ": " + c.reason))
        << log;
    if (runs) RunAndCompare(&g, dims_, 76);
  }
}

// -- the log callback ----------------------------------------------------------------------------------

struct LogLine {
  TfpconvLogLevel level;
  std::string message;
};

void CollectLogLine(TfpconvLogLevel level, const char* message, void* user_data) {
  static_cast<std::vector<LogLine>*>(user_data)->push_back({level, message});
}

TEST_F(DelegateGraphTest, LogCallbackReceivesTheLinesInsteadOfStderr) {
  for (TfpconvLogLevel log_level : {kTfpconvLogInfo, kTfpconvLogWarning}) {
    std::vector<LogLine> lines;
    TfpconvDelegateOptions options = TfpconvDelegateOptionsDefault();
    EXPECT_EQ(options.log_callback, nullptr);
    EXPECT_EQ(options.log_user_data, nullptr);
    options.log_level = log_level;
    options.claim_all = 1;
    options.isa = "mips";  // a warning at creation
    options.log_callback = CollectLogLine;
    options.log_user_data = &lines;
    ::testing::internal::CaptureStderr();
    TfLiteDelegate* delegate = TfpconvDelegateCreate(&options);
    ASSERT_NE(delegate, nullptr);
    Chain chain = BuildChain(spec_);
    std::vector<ConvPlanSpec> convs = {
        SpecFor(spec_.filters[0], chain.nodes[0], chain.filter_tensors[0]),
        SpecFor(spec_.filters[1], chain.nodes[1], chain.filter_tensors[1])};
    convs[0].weight_checksum ^= 1u;  // stale: a warning naming node 0
    chain.graph->SetMetadata(BuildPlan(convs));
    ASSERT_EQ(chain.graph->Apply(delegate), tfl::kOk);
    TfpconvDelegateDelete(delegate);
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");

    const auto has = [&](TfpconvLogLevel level, const std::string& start) {
      return std::any_of(lines.begin(), lines.end(), [&](const LogLine& line) {
        return line.level == level && line.message.rfind(start, 0) == 0;
      });
    };
    EXPECT_TRUE(has(kTfpconvLogWarning, "unknown isa 'mips'"));
    EXPECT_TRUE(has(kTfpconvLogWarning, "declined CONV_2D node " + std::to_string(chain.nodes[0])));
    EXPECT_EQ(has(kTfpconvLogInfo, "claimed CONV_2D node " + std::to_string(chain.nodes[1])),
              log_level == kTfpconvLogInfo);
    for (const LogLine& line : lines) {
      EXPECT_LE(line.level, log_level) << line.message;
      EXPECT_EQ(line.message.find('\n'), std::string::npos) << line.message;
      EXPECT_EQ(line.message.find("tfpconv "), std::string::npos) << line.message;  // no prefix
    }
  }
}

TEST(DelegateApi, PluginEntryPointsParseOptions) {
  std::string reported;
  static std::string* sink = nullptr;
  sink = &reported;
  auto report = [](const char* message) { *sink += message; };
  char key0[] = "num_threads", value0[] = "3", key1[] = "log_level", value1[] = "error";
  char* keys[] = {key0, key1};
  char* values[] = {value0, value1};
  TfLiteDelegate* delegate = tflite_plugin_create_delegate(keys, values, 2, report);
  ASSERT_NE(delegate, nullptr);
  EXPECT_EQ(TfpconvDelegateClaimedNodes(delegate, nullptr, 0), 0);
  tflite_plugin_destroy_delegate(delegate);

  char bad_key[] = "threads";
  char* bad_keys[] = {bad_key};
  EXPECT_EQ(tflite_plugin_create_delegate(bad_keys, values, 1, report), nullptr);
  EXPECT_NE(reported.find("unknown option"), std::string::npos);
  EXPECT_EQ(TfpconvDelegateClaimedNodes(nullptr, nullptr, 0), -1);
  TfpconvDelegateDelete(nullptr);
  TfLiteDelegate* defaults = TfpconvDelegateCreate(nullptr);
  ASSERT_NE(defaults, nullptr);
  TfpconvDelegateDelete(defaults);
}

// The tuner's candidates, one per line: "isa=<name> variant=<name> tile_oc=<n> tile_ic=<n>".
TEST(DelegateApi, TuningCandidatesNameIsaAndVariant) {
  const int length = TfpconvDelegateTuningCandidates(14, 12, 20, 24, 1, 1, 1, nullptr, nullptr, 0);
  ASSERT_GT(length, 0);
  std::vector<char> buffer(static_cast<size_t>(length) + 1);
  ASSERT_EQ(TfpconvDelegateTuningCandidates(14, 12, 20, 24, 1, 1, 1, "auto", buffer.data(),
                                            length + 1),
            length);
  const std::string text(buffer.data());
  ASSERT_EQ(text.size(), static_cast<size_t>(length));
  ASSERT_EQ(text.back(), '\n');
  const std::string isa = IsaName(BestIsa());
  const std::vector<std::string> variants = VariantNames(BestIsa());
  size_t lines = 0;
  for (size_t start = 0; start < text.size(); ++lines) {
    const size_t end = text.find('\n', start);
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    char variant[64] = {0}, isa_name[64] = {0};
    int tile_oc = 0, tile_ic = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "isa=%63s variant=%63s tile_oc=%d tile_ic=%d", isa_name,
                          variant, &tile_oc, &tile_ic),
              4)
        << line;
    EXPECT_EQ(isa_name, isa) << line;
    EXPECT_NE(std::find(variants.begin(), variants.end(), std::string(variant)), variants.end())
        << line;
    EXPECT_GT(tile_oc, 0);
    EXPECT_GT(tile_ic, 0);
  }
  EXPECT_GT(lines, 0u);
  EXPECT_EQ(TfpconvDelegateTuningCandidates(14, 12, 20, 24, 1, 1, 1, "mips", nullptr, 0), -1);
  std::vector<char> scalar(4096);
  ASSERT_GT(TfpconvDelegateTuningCandidates(14, 12, 20, 24, 2, 2, 2, "scalar", scalar.data(), 4096), 0);
  EXPECT_EQ(std::string(scalar.data()).rfind("isa=scalar variant=", 0), 0u) << scalar.data();
}

}  // namespace
}  // namespace tfpconv
