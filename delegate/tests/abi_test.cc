// Proves that tflite_abi.h lays out every TFLite structure the delegate touches exactly like
// TFLite's official C headers (TFLite 2.15's, from the npm package react-native-fast-tflite@0.3.1;
// the layouts are unchanged up to 2.21). Compiled only when those headers are available.
#include <gtest/gtest.h>

#include <cstddef>

#include "common.h"  // official: TfLiteTensor, TfLiteNode, TfLiteContext, ...
#include "builtin_ops.h"
#if __has_include("builtin_op_data.h")
#include "builtin_op_data.h"  // official: TfLitePoolParams (not in every set of public headers)
#define TFPCONV_HAVE_BUILTIN_OP_DATA 1
#endif
#include "tflite_abi.h"

namespace tfpconv {
namespace {

#define TFPCONV_SAME_SIZE(ours, theirs) \
  static_assert(sizeof(ours) == sizeof(theirs), "size of " #ours " differs from " #theirs)
#define TFPCONV_SAME_FIELD(ours, theirs, field)                    \
  static_assert(offsetof(ours, field) == offsetof(theirs, field), \
                "offset of " #ours "::" #field " differs from " #theirs)

// Structures the delegate allocates, indexes or passes by value: whole layout and size.
TFPCONV_SAME_FIELD(tfl::IntArray, ::TfLiteIntArray, size);
TFPCONV_SAME_FIELD(tfl::IntArray, ::TfLiteIntArray, data);
TFPCONV_SAME_SIZE(tfl::IntArray, ::TfLiteIntArray);

TFPCONV_SAME_SIZE(tfl::Tensor, ::TfLiteTensor);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, type);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, data);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, dims);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, params);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, allocation_type);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, bytes);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, allocation);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, name);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, delegate);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, buffer_handle);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, data_is_stale);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, is_variable);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, quantization);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, sparsity);
TFPCONV_SAME_FIELD(tfl::Tensor, ::TfLiteTensor, dims_signature);

TFPCONV_SAME_SIZE(tfl::Node, ::TfLiteNode);
TFPCONV_SAME_FIELD(tfl::Node, ::TfLiteNode, inputs);
TFPCONV_SAME_FIELD(tfl::Node, ::TfLiteNode, outputs);
TFPCONV_SAME_FIELD(tfl::Node, ::TfLiteNode, intermediates);
TFPCONV_SAME_FIELD(tfl::Node, ::TfLiteNode, temporaries);
TFPCONV_SAME_FIELD(tfl::Node, ::TfLiteNode, user_data);
TFPCONV_SAME_FIELD(tfl::Node, ::TfLiteNode, builtin_data);
TFPCONV_SAME_FIELD(tfl::Node, ::TfLiteNode, custom_initial_data);
TFPCONV_SAME_FIELD(tfl::Node, ::TfLiteNode, custom_initial_data_size);
TFPCONV_SAME_FIELD(tfl::Node, ::TfLiteNode, delegate);
TFPCONV_SAME_FIELD(tfl::Node, ::TfLiteNode, might_have_side_effect);

TFPCONV_SAME_SIZE(tfl::Registration, ::TfLiteRegistration);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, init);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, free);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, prepare);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, invoke);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, profiling_string);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, builtin_code);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, custom_name);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, version);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, registration_external);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, async_kernel);
TFPCONV_SAME_FIELD(tfl::Registration, ::TfLiteRegistration, inplace_operator);

TFPCONV_SAME_SIZE(tfl::Delegate, ::TfLiteDelegate);
TFPCONV_SAME_FIELD(tfl::Delegate, ::TfLiteDelegate, data_);
TFPCONV_SAME_FIELD(tfl::Delegate, ::TfLiteDelegate, Prepare);
TFPCONV_SAME_FIELD(tfl::Delegate, ::TfLiteDelegate, CopyFromBufferHandle);
TFPCONV_SAME_FIELD(tfl::Delegate, ::TfLiteDelegate, CopyToBufferHandle);
TFPCONV_SAME_FIELD(tfl::Delegate, ::TfLiteDelegate, FreeBufferHandle);
TFPCONV_SAME_FIELD(tfl::Delegate, ::TfLiteDelegate, flags);
TFPCONV_SAME_FIELD(tfl::Delegate, ::TfLiteDelegate, opaque_delegate_builder);

TFPCONV_SAME_SIZE(tfl::DelegateParams, ::TfLiteDelegateParams);
TFPCONV_SAME_FIELD(tfl::DelegateParams, ::TfLiteDelegateParams, delegate);
TFPCONV_SAME_FIELD(tfl::DelegateParams, ::TfLiteDelegateParams, nodes_to_replace);
TFPCONV_SAME_FIELD(tfl::DelegateParams, ::TfLiteDelegateParams, input_tensors);
TFPCONV_SAME_FIELD(tfl::DelegateParams, ::TfLiteDelegateParams, output_tensors);

// TfLiteContext: only a prefix is declared (the delegate only ever holds pointers to it).
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, tensors_size);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, GetExecutionPlan);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, tensors);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, impl_);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, ResizeTensor);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, ReportError);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, AddTensors);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, GetNodeAndRegistration);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, ReplaceNodeSubsetsWithDelegateKernels);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, recommended_num_threads);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, GetExternalContext);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, SetExternalContext);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, allow_fp32_relax_to_fp16);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, profiler);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, AllocatePersistentBuffer);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, AllocateBufferForEval);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, RequestScratchBufferInArena);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, GetScratchBuffer);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, ResizeTensorExplicit);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, PreviewDelegatePartitioning);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, GetTensor);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, GetEvalTensor);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, GetModelMetadata);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, AcquireSubgraphContext);
TFPCONV_SAME_FIELD(tfl::Context, ::TfLiteContext, ReleaseSubgraphContext);
static_assert(sizeof(tfl::Context) <= sizeof(::TfLiteContext), "Context prefix too long");

// Enumerations and constants.
constexpr bool SameValue(int ours, int theirs) { return ours == theirs; }
static_assert(SameValue(tfl::kOk, kTfLiteOk) && SameValue(tfl::kError, kTfLiteError), "TfLiteStatus");
static_assert(SameValue(tfl::kFloat32, kTfLiteFloat32), "TfLiteType");
static_assert(SameValue(tfl::kMmapRo, kTfLiteMmapRo) && SameValue(tfl::kArenaRw, kTfLiteArenaRw) &&
                  SameValue(tfl::kArenaRwPersistent, kTfLiteArenaRwPersistent) &&
                  SameValue(tfl::kDynamic, kTfLiteDynamic),
              "TfLiteAllocationType");
static_assert(SameValue(tfl::kBuiltinConv2d, kTfLiteBuiltinConv2d), "CONV_2D");
static_assert(SameValue(tfl::kBuiltinFullyConnected, kTfLiteBuiltinFullyConnected), "FULLY_CONNECTED");
static_assert(SameValue(tfl::kBuiltinMaxPool2d, kTfLiteBuiltinMaxPool2d), "MAX_POOL_2D");
static_assert(SameValue(tfl::kBuiltinMul, kTfLiteBuiltinMul), "MUL");
static_assert(SameValue(tfl::kBuiltinDelegate, kTfLiteBuiltinDelegate), "DELEGATE");
static_assert(tfl::kOptionalTensor == kTfLiteOptionalTensor, "optional tensor");
static_assert(tfl::kDelegateFlagsAllowDynamicTensors == kTfLiteDelegateFlagsAllowDynamicTensors,
              "TfLiteDelegateFlags");
static_assert(sizeof(tfl::Status) == sizeof(TfLiteStatus), "TfLiteStatus size");
static_assert(sizeof(tfl::Type) == sizeof(TfLiteType), "TfLiteType size");

// builtin_data structs live in builtin_op_data.h, which the npm package (TensorFlowLiteC's public
// headers) does not ship; checked wherever TFLite's full headers are given. TfLitePoolParams was
// checked by hand against TFLite's tensorflow/lite/core/c/builtin_op_data.h (the same layout in
// old and current versions).
#ifdef TFPCONV_HAVE_BUILTIN_OP_DATA
TFPCONV_SAME_SIZE(tfl::PoolParams, ::TfLitePoolParams);
TFPCONV_SAME_FIELD(tfl::PoolParams, ::TfLitePoolParams, padding);
TFPCONV_SAME_FIELD(tfl::PoolParams, ::TfLitePoolParams, stride_width);
TFPCONV_SAME_FIELD(tfl::PoolParams, ::TfLitePoolParams, stride_height);
TFPCONV_SAME_FIELD(tfl::PoolParams, ::TfLitePoolParams, filter_width);
TFPCONV_SAME_FIELD(tfl::PoolParams, ::TfLitePoolParams, filter_height);
TFPCONV_SAME_FIELD(tfl::PoolParams, ::TfLitePoolParams, activation);
TFPCONV_SAME_FIELD(tfl::PoolParams, ::TfLitePoolParams, computed);
static_assert(SameValue(tfl::kPaddingSame, kTfLitePaddingSame) &&
                  SameValue(tfl::kPaddingValid, kTfLitePaddingValid), "TfLitePadding");
static_assert(SameValue(tfl::kActRelu, kTfLiteActRelu) && SameValue(tfl::kActRelu6, kTfLiteActRelu6),
              "TfLiteFusedActivation");
#endif

TEST(Abi, LayoutsMatchTheOfficialHeaders) {
  // Everything is checked at compile time; this records that the check ran.
  SUCCEED() << "sizeof(TfLiteTensor) = " << sizeof(::TfLiteTensor)
            << ", sizeof(TfLiteRegistration) = " << sizeof(::TfLiteRegistration);
}

}  // namespace
}  // namespace tfpconv
