// Small bounds-checked accessors over the TFLite structures of tflite_abi.h.
#ifndef TFPCONV_SRC_TENSOR_UTIL_H_
#define TFPCONV_SRC_TENSOR_UTIL_H_

#include "tflite_abi.h"

namespace tfpconv {

inline tfl::Tensor* TensorAt(tfl::Context* context, int index) {
  if (index < 0 || static_cast<size_t>(index) >= context->tensors_size) return nullptr;
  return &context->tensors[index];
}

inline int ArraySize(const tfl::IntArray* array) { return array == nullptr ? 0 : array->size; }

// The index at `position` of a node's input/output list, or kOptionalTensor when absent.
inline int TensorIndexAt(const tfl::IntArray* array, int position) {
  return position < ArraySize(array) ? array->data[position] : tfl::kOptionalTensor;
}

inline bool IsFloatTensorOfRank(const tfl::Tensor* tensor, int rank) {
  return tensor != nullptr && tensor->type == tfl::kFloat32 && tensor->dims != nullptr &&
         tensor->dims->size == rank;
}

// A constant (read-only, mapped), dense float32 tensor: weights the delegate may pack.
inline bool IsConstantFloat(const tfl::Tensor* tensor) {
  return tensor != nullptr && tensor->type == tfl::kFloat32 &&
         tensor->allocation_type == tfl::kMmapRo && tensor->data != nullptr &&
         tensor->sparsity == nullptr;
}

inline bool Contains(const tfl::IntArray* array, int value) {
  for (int i = 0; i < ArraySize(array); ++i) {
    if (array->data[i] == value) return true;
  }
  return false;
}

}  // namespace tfpconv

#endif  // TFPCONV_SRC_TENSOR_UTIL_H_
