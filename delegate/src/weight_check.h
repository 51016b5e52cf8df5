// Checks a plan entry against the live weights of the model: the plan must have been computed from
// exactly these weights (size and CRC-32), and the weights must have the structure it records:
// * pattern convolutions: every weight outside a kernel's pattern is zero, and the kernels flagged
//   unified (PlannedOp::pattern_unified) have four kept taps of one magnitude (bit for bit);
// * unified FULLY_CONNECTED / 1x1 CONV_2D: every UNIFIED block's |w| are bitwise equal and every
//   PRUNED block is zero (+0 or -0);
// * masked dense convolutions: nothing beyond size and checksum.
#ifndef TFPCONV_SRC_WEIGHT_CHECK_H_
#define TFPCONV_SRC_WEIGHT_CHECK_H_

#include <cstddef>
#include <string>

#include "plan_reader.h"

namespace tfpconv {

// `weights`: the weight tensor's data, float32, `bytes` long (OHWI for a convolution, [out, in] for
// a FULLY_CONNECTED). `op` must be a usable entry (PlannedOp::usable()). Returns false with *error
// when the plan is stale (size or checksum differ) or does not describe the weights (a stray
// non-zero, a unified kernel or block whose magnitudes differ; the message names where and the
// value).
bool CheckWeightsAgainstPlan(const PlannedOp& op, const void* weights, size_t bytes,
                             std::string* error);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_WEIGHT_CHECK_H_
