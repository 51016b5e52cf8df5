// The delegate's C API and its TFLite glue: the graph-level Prepare that selects nodes and the
// registration (init/free/prepare/invoke) of the partition kernels.
#include "tfpconv/delegate.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <map>
#include <new>
#include <string>
#include <vector>

#include "conv_geometry.h"
#include "delegate_state.h"
#include "node_selection.h"
#include "partition_kernel.h"
#include "plan_reader.h"
#include "tensor_util.h"

namespace tfpconv {
namespace {

constexpr char kMetadataName[] = "tfpconv";
constexpr char kKernelName[] = "TfpconvDelegate";

tfl::Delegate* AsTfl(TfLiteDelegate* delegate) { return reinterpret_cast<tfl::Delegate*>(delegate); }
TfLiteDelegate* AsPublic(tfl::Delegate* delegate) { return reinterpret_cast<TfLiteDelegate*>(delegate); }

Isa ResolveIsa(const std::string& name, const Logger& logger) {
  if (name == "auto") return BestIsa();
  Isa isa;
  if (!ParseIsa(name, &isa)) {
    logger.Log(kTfpconvLogWarning, "unknown isa '%s'; using %s", name.c_str(), IsaName(BestIsa()));
    return BestIsa();
  }
  if (!IsaSupported(isa)) {
    logger.Log(kTfpconvLogWarning, "isa %s is not available on this CPU or build; using %s",
               name.c_str(), IsaName(BestIsa()));
    return BestIsa();
  }
  return isa;
}

// True when `context` is the primary subgraph's. Runtimes without AcquireSubgraphContext have only
// ever delegated as a whole; there the plan's per-node weight checks are the safeguard.
bool IsPrimarySubgraph(tfl::Context* context, const Logger& log) {
  if (context->AcquireSubgraphContext == nullptr || context->ReleaseSubgraphContext == nullptr) {
    log.Log(kTfpconvLogVerbose, "runtime cannot tell subgraphs apart; assuming the primary one");
    return true;
  }
  tfl::Context* primary = nullptr;
  if (context->AcquireSubgraphContext(context, 0, &primary) != tfl::kOk) return false;
  // Acquiring our own subgraph changes nothing (it is already in its delegate context); releasing it
  // would switch it back to the kernel context while we still need it, so only release others.
  if (primary == context) return true;
  context->ReleaseSubgraphContext(context, 0);
  return false;
}

enum class PlanStatus { kLoaded, kMissing, kUnusable };

// Loads the plan from the model metadata; *problem says why when it is not kLoaded.
PlanStatus LoadPlan(tfl::Context* context, ModelPlan* plan, std::string* problem) {
  if (context->GetModelMetadata == nullptr) {
    *problem = "this TFLite runtime does not expose model metadata to delegates";
    return PlanStatus::kMissing;
  }
  const char* data = nullptr;
  size_t bytes = 0;
  if (context->GetModelMetadata(context, kMetadataName, &data, &bytes) != tfl::kOk || data == nullptr) {
    *problem = "the model has no \"tfpconv\" metadata (convert it with tfpconv.convert)";
    return PlanStatus::kMissing;
  }
  std::string error;
  if (!ReadPlan(data, bytes, plan, &error)) {
    *problem = "the \"tfpconv\" metadata is unusable: " + error;
    return PlanStatus::kUnusable;
  }
  return PlanStatus::kLoaded;
}

void* KernelInit(tfl::Context* context, const char* buffer, size_t) {
  const auto* params = reinterpret_cast<const tfl::DelegateParams*>(buffer);
  DelegateState* state = StateOf(params->delegate);
  try {
    std::string error;
    std::unique_ptr<PartitionKernel> kernel = PartitionKernel::Create(*params, state, &error);
    if (kernel == nullptr) {
      state->logger.Log(kTfpconvLogError, "cannot build the delegate kernel: %s", error.c_str());
      context->ReportError(context, "tfpconv: %s", error.c_str());
    }
    return kernel.release();
  } catch (const std::exception& e) {
    state->logger.Log(kTfpconvLogError, "delegate kernel init failed: %s", e.what());
    return nullptr;
  }
}

void KernelFree(tfl::Context*, void* buffer) { delete static_cast<PartitionKernel*>(buffer); }

tfl::Status KernelPrepare(tfl::Context* context, tfl::Node* node) {
  auto* kernel = static_cast<PartitionKernel*>(node->user_data);
  if (kernel == nullptr) return tfl::kError;
  try {
    return kernel->Prepare(context);
  } catch (const std::exception& e) {
    context->ReportError(context, "tfpconv: prepare failed: %s", e.what());
    return tfl::kError;
  }
}

tfl::Status KernelInvoke(tfl::Context* context, tfl::Node* node) {
  auto* kernel = static_cast<PartitionKernel*>(node->user_data);
  if (kernel == nullptr) return tfl::kError;
  try {
    return kernel->Invoke(context);
  } catch (const std::exception& e) {
    context->ReportError(context, "tfpconv: invoke failed: %s", e.what());
    return tfl::kError;
  }
}

tfl::Registration KernelRegistration() {
  tfl::Registration registration{};
  registration.init = KernelInit;
  registration.free = KernelFree;
  registration.prepare = KernelPrepare;
  registration.invoke = KernelInvoke;
  registration.builtin_code = tfl::kBuiltinDelegate;
  registration.custom_name = kKernelName;
  registration.version = 1;
  return registration;
}

std::string DescribeShape(const ConvShape& s) {
  char text[160];
  std::snprintf(text, sizeof(text), "%dx%dx%dx%d -> %dx%dx%d, stride %dx%d", s.batch, s.in_h, s.in_w,
                s.in_c, s.out_h, s.out_w, s.out_c, s.stride_h, s.stride_w);
  return text;
}

// "avx2 variant=r8v1 tile_ic=20 tile_oc=32": what the engine runs a claimed node with.
std::string DescribeKernel(const PatternConv& conv) {
  return DescribeTuning(conv.kernel_params(), conv.isa());
}

// "MAX_POOL_2D node 5 (2x2 window, 1x224x224x64 -> 112x112x64, stride 2x2)".
std::string DescribePool(const ClaimedNode& claimed) {
  const std::string window = std::to_string(claimed.kernel_h) + "x" + std::to_string(claimed.kernel_w) +
                             " window";
  if (!claimed.shape_note.empty()) return window + "; " + claimed.shape_note;
  return window + ", " + DescribeShape(claimed.shape);
}

// "CONV_2D node 4 (1x56x56x64 -> ..., avx512 variant=...)" or "FULLY_CONNECTED node 9 (...)".
std::string DescribeClaim(const ClaimedNode& claimed) {
  if (claimed.max_pool) {
    return "MAX_POOL_2D node " + std::to_string(claimed.node_index) + " (" + DescribePool(claimed) + ")";
  }
  if (claimed.kind == PlannedOpKind::kUnifiedFc) {
    const FcShape& s = claimed.fc.shape;
    char text[200];
    std::snprintf(text, sizeof(text), "%s node %d (unified weights %dx%d in blocks of %d, %d rows, %s, "
                  "%zu of %zu weight bytes)",
                  claimed.fc.conv1x1 ? "1x1 CONV_2D" : "FULLY_CONNECTED", claimed.node_index, s.out,
                  s.in, s.block, s.rows, IsaName(claimed.fc.fc->isa()),
                  claimed.fc.fc->packed_weight_bytes(),
                  static_cast<size_t>(s.out) * static_cast<size_t>(s.in) * sizeof(float));
    return text;
  }
  std::string mask;
  if (claimed.mask.present()) {
    size_t zeros = 0;
    for (uint8_t kept : claimed.mask.pixels) zeros += kept == 0;
    mask = ", with its activation mask (MUL node " + std::to_string(claimed.mask.node_index) + ", " +
           std::to_string(100 * zeros / std::max<size_t>(claimed.mask.pixels.size(), 1)) +
           "% of pixels zero)";
  }
  const std::string kernel = claimed.kind == PlannedOpKind::kDenseConv
                                 ? std::to_string(claimed.kernel_h) + "x" +
                                       std::to_string(claimed.kernel_w) +
                                       " dense weights, the engine's dense path"
                                 : DescribeKernel(*claimed.conv);
  return "CONV_2D node " + std::to_string(claimed.node_index) + " (" + DescribeShape(claimed.shape) +
         ", " + kernel + mask + (claimed.shape_note.empty() ? "" : "; ") +
         claimed.shape_note + ")";
}

const char* OpName(const tfl::Registration& registration) {
  if (registration.builtin_code == tfl::kBuiltinMaxPool2d) return "MAX_POOL_2D";
  return registration.builtin_code == tfl::kBuiltinFullyConnected ? "FULLY_CONNECTED" : "CONV_2D";
}

// The node's plan entry when it needs a feature (or kind) this delegate lacks, else nullptr.
const PlannedOp* EntryMissingFeature(const ModelPlan* plan, int node_index, const tfl::Node& node) {
  if (plan == nullptr || node.delegate != nullptr) return nullptr;
  std::string why_not;
  const PlannedOp* op = FindPlannedOp(*plan, 0, static_cast<uint32_t>(node_index), &why_not);
  return op != nullptr && !op->missing_feature.name.empty() ? op : nullptr;
}

tfl::Status SelectAndReplace(tfl::Context* context, tfl::Delegate* delegate) {
  DelegateState* state = StateOf(delegate);
  const Logger& log = state->logger;
  state->pending.clear();
  state->absorbed.clear();
  if (!IsPrimarySubgraph(context, log)) {
    log.Log(kTfpconvLogVerbose, "not the primary subgraph: nothing to delegate");
    return tfl::kOk;
  }
  state->claimed_nodes.clear();
  state->packed_weight_bytes = 0;

  ModelPlan plan;
  std::string plan_problem;
  const PlanStatus plan_status = LoadPlan(context, &plan, &plan_problem);
  const bool have_plan = plan_status == PlanStatus::kLoaded;

  tfl::IntArray* execution_plan = nullptr;
  if (context->GetExecutionPlan(context, &execution_plan) != tfl::kOk || execution_plan == nullptr) {
    return tfl::kError;
  }
  // Copy: later context calls may invalidate the runtime's array.
  const std::vector<int> nodes(execution_plan->data, execution_plan->data + execution_plan->size);
  int left_without_plan = 0;
  for (int node_index : nodes) {
    tfl::Node* node = nullptr;
    tfl::Registration* registration = nullptr;
    if (context->GetNodeAndRegistration(context, node_index, &node, &registration) != tfl::kOk ||
        node == nullptr || registration == nullptr) {
      continue;
    }
    // An operator of any type whose plan needs what this delegate lacks: one warning, and the rest
    // of the model still runs on the delegate.
    if (const PlannedOp* op = EntryMissingFeature(have_plan ? &plan : nullptr, node_index, *node)) {
      log.Log(kTfpconvLogWarning, "node %d: %s; left to TFLite", node_index,
              DescribeMissingFeature(op->missing_feature).c_str());
      continue;
    }
    ClaimedNode claimed;
    std::string reason;
    Verdict verdict;
    try {
      // The execution plan is in dependency order: a pool's producer was examined before it.
      verdict = registration->builtin_code == tfl::kBuiltinMaxPool2d
                    ? SelectMaxPoolNode(context, node_index, *node, *registration, state->pending,
                                        &claimed, &reason)
                    : SelectNode(context, node_index, *node, *registration,
                                 have_plan ? &plan : nullptr, state->isa,
                                 state->settings.claim_all, &claimed, &reason);
    } catch (const std::exception& e) {  // e.g. out of memory while packing: leave it to TFLite
      verdict = Verdict::kPlanMismatch;
      reason = std::string("the engine failed: ") + e.what();
    }
    switch (verdict) {
      case Verdict::kClaimed:
        log.Log(kTfpconvLogInfo, "claimed %s", DescribeClaim(claimed).c_str());
        if (!claimed.tuning_note.empty()) {
          log.Log(kTfpconvLogInfo, "node %d: plan's tuned parameters not used: %s", node_index,
                  claimed.tuning_note.c_str());
        }
        if (!claimed.mask_note.empty()) {
          log.Log(kTfpconvLogWarning, "node %d: its activation mask is left to TFLite: %s",
                  node_index, claimed.mask_note.c_str());
        }
        if (claimed.mask.present()) state->absorbed[claimed.mask.node_index] = node_index;
        state->pending[node_index] = std::move(claimed);
        break;
      case Verdict::kNotOurs:
        break;
      case Verdict::kUnsupported:
      case Verdict::kNotPlanned:
      case Verdict::kNotWorthIt:
        log.Log(kTfpconvLogInfo, "declined %s node %d: %s", OpName(*registration), node_index, reason.c_str());
        break;
      case Verdict::kNoPlan:
        ++left_without_plan;
        log.Log(kTfpconvLogInfo, "declined %s node %d: %s", OpName(*registration), node_index, reason.c_str());
        break;
      case Verdict::kMissingFeature:
        log.Log(kTfpconvLogWarning, "node %d: %s; left to TFLite", node_index, reason.c_str());
        break;
      case Verdict::kPlanMismatch:
        log.Log(kTfpconvLogWarning, "declined %s node %d: %s", OpName(*registration), node_index, reason.c_str());
        break;
    }
  }
  // A corrupt plan is always worth a warning; a missing one only when a convolution could have used it.
  if (plan_status == PlanStatus::kUnusable ||
      (plan_status == PlanStatus::kMissing && left_without_plan > 0)) {
    log.Log(kTfpconvLogWarning, "%s; %d CONV_2D node(s) left to TFLite", plan_problem.c_str(),
            left_without_plan);
  }
  if (state->pending.empty()) return tfl::kOk;

  // The record (TfpconvDelegateClaimedNodes) lists the planned operators; pools, like activation
  // masks, run in their partitions without being listed.
  std::vector<int> claimed, replaced;
  size_t packed_bytes = 0;
  for (const auto& entry : state->pending) {
    replaced.push_back(entry.first);
    if (entry.second.max_pool) continue;
    claimed.push_back(entry.first);
    packed_bytes += entry.second.packed_weight_bytes();
  }
  for (const auto& entry : state->absorbed) replaced.push_back(entry.first);
  std::sort(replaced.begin(), replaced.end());
  std::vector<int> storage(1 + replaced.size());
  storage[0] = static_cast<int>(replaced.size());
  std::copy(replaced.begin(), replaced.end(), storage.begin() + 1);
  const auto* to_replace = reinterpret_cast<const tfl::IntArray*>(storage.data());
  const tfl::Status status =
      context->ReplaceNodeSubsetsWithDelegateKernels(context, KernelRegistration(), to_replace, delegate);
  state->pending.clear();
  state->absorbed.clear();
  if (status == tfl::kOk) {
    state->claimed_nodes = claimed;
    state->packed_weight_bytes = packed_bytes;
  }
  return status;
}

tfl::Status DelegatePrepare(tfl::Context* context, tfl::Delegate* delegate) {
  try {
    return SelectAndReplace(context, delegate);
  } catch (const std::exception& e) {
    StateOf(delegate)->pending.clear();
    StateOf(delegate)->absorbed.clear();
    StateOf(delegate)->logger.Log(kTfpconvLogError, "delegate prepare failed: %s", e.what());
    return tfl::kError;
  }
}

}  // namespace

DelegateState::DelegateState(const DelegateSettings& delegate_settings)
    : settings(delegate_settings),
      logger(delegate_settings.log_level, delegate_settings.log_callback,
             delegate_settings.log_user_data) {
  isa = ResolveIsa(settings.isa, logger);
  delegate.data_ = this;
  delegate.Prepare = DelegatePrepare;
  // The partition kernels follow shape changes themselves (Prepare re-resolves every convolution's
  // shape, resizes the outputs and re-packs): TFLite then accepts graphs with dynamic-sized tensors
  // (Flatten's dynamic batch, EfficientNet) and keeps the delegate across input resizes.
  delegate.flags = tfl::kDelegateFlagsAllowDynamicTensors;
}

ThreadPool* DelegateState::pool() {
  if (pool_ == nullptr) pool_.reset(new ThreadPool(settings.num_threads));
  return pool_.get();
}

namespace {

TfLiteDelegate* CreateFromSettings(const DelegateSettings& settings) {
  try {
    auto* state = new DelegateState(settings);
    state->logger.Log(kTfpconvLogVerbose, "delegate created: %d thread(s), isa %s",
                      settings.num_threads, IsaName(state->isa));
    return AsPublic(&state->delegate);
  } catch (const std::exception&) {
    return nullptr;
  }
}

}  // namespace
}  // namespace tfpconv

extern "C" {

TfpconvDelegateOptions TfpconvDelegateOptionsDefault(void) {
  TfpconvDelegateOptions options;
  options.num_threads = 1;
  options.log_level = kTfpconvLogWarning;
  options.isa = nullptr;
  options.claim_all = 0;
  options.log_callback = nullptr;
  options.log_user_data = nullptr;
  return options;
}

TfLiteDelegate* TfpconvDelegateCreate(const TfpconvDelegateOptions* options) {
  return tfpconv::CreateFromSettings(tfpconv::SettingsFromOptions(options));
}

void TfpconvDelegateDelete(TfLiteDelegate* delegate) {
  if (delegate == nullptr) return;
  delete tfpconv::StateOf(tfpconv::AsTfl(delegate));
}

TfLiteDelegate* tflite_plugin_create_delegate(char** options_keys, char** options_values,
                                              size_t num_options, void (*report_error)(const char*)) {
  tfpconv::DelegateSettings settings;
  for (size_t i = 0; i < num_options; ++i) {
    std::string error;
    const char* key = options_keys != nullptr ? options_keys[i] : nullptr;
    const char* value = options_values != nullptr ? options_values[i] : nullptr;
    if (key == nullptr || value == nullptr) {
      error = "null option key or value";
    } else if (tfpconv::ApplyOption(key, value, &settings, &error)) {
      continue;
    }
    error = "tfpconv delegate: " + error;
    if (report_error != nullptr) report_error(error.c_str());
    return nullptr;
  }
  return tfpconv::CreateFromSettings(settings);
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) { TfpconvDelegateDelete(delegate); }

int TfpconvDelegateClaimedNodes(const TfLiteDelegate* delegate, int* node_indices, int capacity) {
  if (delegate == nullptr) return -1;
  const auto* state = static_cast<const tfpconv::DelegateState*>(
      reinterpret_cast<const tfpconv::tfl::Delegate*>(delegate)->data_);
  const int count = static_cast<int>(state->claimed_nodes.size());
  for (int i = 0; i < count && i < capacity && node_indices != nullptr; ++i) {
    node_indices[i] = state->claimed_nodes[static_cast<size_t>(i)];
  }
  return count;
}

size_t TfpconvDelegatePackedWeightBytes(const TfLiteDelegate* delegate) {
  if (delegate == nullptr) return 0;
  return static_cast<const tfpconv::DelegateState*>(
             reinterpret_cast<const tfpconv::tfl::Delegate*>(delegate)->data_)
      ->packed_weight_bytes;
}

int TfpconvDelegateActivationUnitRows(int out_h) {
  return out_h >= 1 ? tfpconv::ActivationUnitRows(out_h) : 0;
}
int TfpconvDelegateActivationUnitPixels(void) { return tfpconv::kActivationUnitPixels; }

int TfpconvDelegateTuningCandidates(int in_h, int in_w, int in_c, int out_c, int stride_h,
                                    int stride_w, int padding, const char* isa, char* buffer,
                                    int capacity) {
  tfpconv::Isa chosen = tfpconv::BestIsa();
  if (isa != nullptr && std::string(isa) != "auto" &&
      (!tfpconv::ParseIsa(isa, &chosen) || !tfpconv::IsaSupported(chosen)))
    return -1;
  tfpconv::tfl::ConvParams params{};
  params.padding = static_cast<tfpconv::tfl::Padding>(padding);
  params.stride_height = stride_h;
  params.stride_width = stride_w;
  params.dilation_height_factor = 1;
  params.dilation_width_factor = 1;
  tfpconv::ConvShape shape;
  std::string error;
  if (!tfpconv::UnsupportedConvParams(params).empty() ||
      !tfpconv::ResolveConvShape(params, 1, in_h, in_w, in_c, out_c, &shape, &error))
    return -1;
  std::string text;
  for (const auto& candidate : tfpconv::TuningCandidates(shape, chosen)) {
    text += std::string("isa=") + tfpconv::IsaName(chosen);
    if (!candidate.variant.empty()) text += " variant=" + candidate.variant;
    for (const char* key : {"tile_oc", "tile_ic"}) {
      const auto found = candidate.params.find(key);
      if (found != candidate.params.end()) text += std::string(" ") + key + "=" + std::to_string(found->second);
    }
    text += '\n';
  }
  if (buffer != nullptr && capacity > 0) {
    const size_t n = std::min(text.size(), static_cast<size_t>(capacity - 1));
    std::copy_n(text.data(), n, buffer);
    buffer[n] = '\0';
  }
  return static_cast<int>(text.size());
}

}  // extern "C"
