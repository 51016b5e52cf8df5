// The few TFLite C structures the delegate touches, declared by tfpconv itself so the delegate
// builds without TFLite's sources. Layouts follow TFLite's C ABI (unchanged from 2.14 to 2.21);
// delegate/tests/abi_test.cc checks every size and offset against TFLite's official headers.
// Names live in tfpconv::tfl so they never clash with the official declarations.
#ifndef TFPCONV_SRC_TFLITE_ABI_H_
#define TFPCONV_SRC_TFLITE_ABI_H_

#include <cstddef>
#include <cstdint>

namespace tfpconv {
namespace tfl {

enum Status : int { kOk = 0, kError = 1 };
enum Type : int { kNoType = 0, kFloat32 = 1 };
enum AllocationType : int { kMemNone = 0, kMmapRo = 1, kArenaRw = 2, kArenaRwPersistent = 3, kDynamic = 4 };
enum BuiltinOperator : int32_t {
  kBuiltinConv2d = 3,
  kBuiltinFullyConnected = 9,
  kBuiltinMaxPool2d = 17,
  kBuiltinMul = 18,
  kBuiltinDelegate = 51
};
enum Padding : int { kPaddingUnknown = 0, kPaddingSame = 1, kPaddingValid = 2 };
enum FusedActivation : int { kActNone = 0, kActRelu = 1, kActReluN1To1 = 2, kActRelu6 = 3 };
constexpr int kOptionalTensor = -1;
// TfLiteDelegateFlags: the delegate kernels handle tensors resized after delegation (TFLite then
// neither refuses graphs with dynamic-sized tensors nor re-applies the delegate after a resize).
constexpr int64_t kDelegateFlagsAllowDynamicTensors = 1;

struct IntArray {
  int size;
  int data[];  // flexible array member (a GNU extension in C++, as in TFLite)
};

struct Delegate;
struct Context;

struct Tensor {
  Type type;
  void* data;  // TfLitePtrUnion: every member is a pointer
  IntArray* dims;
  struct { float scale; int32_t zero_point; } params;
  AllocationType allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
  Delegate* delegate;
  int buffer_handle;
  bool data_is_stale;
  bool is_variable;
  struct { int type; void* params; } quantization;
  void* sparsity;  // non-null for a sparse-encoded tensor
  const IntArray* dims_signature;
};

struct Node {
  IntArray* inputs;
  IntArray* outputs;
  IntArray* intermediates;
  IntArray* temporaries;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
  Delegate* delegate;
  bool might_have_side_effect;
};

struct Registration {
  void* (*init)(Context* context, const char* buffer, size_t length);
  void (*free)(Context* context, void* buffer);
  Status (*prepare)(Context* context, Node* node);
  Status (*invoke)(Context* context, Node* node);
  const char* (*profiling_string)(const Context* context, const Node* node);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  void* registration_external;
  void* async_kernel;
  uint64_t inplace_operator;
};

// Only the leading members the delegate uses; the real struct continues after GetModelMetadata.
struct Context {
  size_t tensors_size;
  Status (*GetExecutionPlan)(Context* context, IntArray** execution_plan);
  Tensor* tensors;
  void* impl_;
  Status (*ResizeTensor)(Context* context, Tensor* tensor, IntArray* new_size);  // owns new_size
  void (*ReportError)(Context* context, const char* format, ...);
  void* AddTensors;
  Status (*GetNodeAndRegistration)(Context* context, int node_index, Node** node,
                                   Registration** registration);
  Status (*ReplaceNodeSubsetsWithDelegateKernels)(Context* context, Registration registration,
                                                  const IntArray* nodes_to_replace,
                                                  Delegate* delegate);
  int recommended_num_threads;
  void* GetExternalContext;
  void* SetExternalContext;
  bool allow_fp32_relax_to_fp16;
  void* profiler;
  void* AllocatePersistentBuffer;
  void* AllocateBufferForEval;
  void* RequestScratchBufferInArena;
  void* GetScratchBuffer;
  Status (*ResizeTensorExplicit)(Context* context, Tensor* tensor, int dims, const int* shape);
  void* PreviewDelegatePartitioning;
  void* GetTensor;
  void* GetEvalTensor;
  Status (*GetModelMetadata)(const Context* context, const char* name, const char** ptr,
                             size_t* bytes);
  Status (*AcquireSubgraphContext)(Context* context, int subgraph_index, Context** acquired);
  Status (*ReleaseSubgraphContext)(Context* context, int subgraph_index);
};

struct Delegate {
  void* data_;
  Status (*Prepare)(Context* context, Delegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
};

// builtin_data of a delegate kernel node.
struct DelegateParams {
  Delegate* delegate;
  IntArray* nodes_to_replace;
  IntArray* input_tensors;
  IntArray* output_tensors;
};

// builtin_data of a CONV_2D node (leading members; later versions append more).
struct ConvParams {
  Padding padding;
  int stride_width;
  int stride_height;
  FusedActivation activation;
  int dilation_width_factor;
  int dilation_height_factor;
};

// The leading members of TfLiteFullyConnectedParams (TFLite's struct has more after them; the
// delegate only reads these).
struct FullyConnectedParams {
  FusedActivation activation;
  int weights_format;  // kTfLiteFullyConnectedWeightsFormatDefault = 0
  bool keep_num_dims;
  bool asymmetric_quantize_inputs;
};

// builtin_data of a MUL node (TfLiteMulParams).
struct MulParams {
  FusedActivation activation;
};

// builtin_data of a MAX_POOL_2D / AVERAGE_POOL_2D node (TfLitePoolParams, whole). Width comes
// before height in both pairs. `computed` is filled by TFLite's own Prepare of the node: the
// delegate never reads it (it selects nodes before TFLite prepares them).
struct PoolParams {
  Padding padding;
  int stride_width;
  int stride_height;
  int filter_width;
  int filter_height;
  FusedActivation activation;
  struct {
    struct { int width, height, width_offset, height_offset; } padding;  // TfLitePaddingValues
  } computed;
};

}  // namespace tfl
}  // namespace tfpconv

#endif  // TFPCONV_SRC_TFLITE_ABI_H_
