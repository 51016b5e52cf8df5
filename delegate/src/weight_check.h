// Checks a plan entry against the live filter weights of the model: the plan must have been computed
// from exactly these weights (size and CRC-32), and every weight outside a kernel's pattern is zero.
#ifndef TFPCONV_SRC_WEIGHT_CHECK_H_
#define TFPCONV_SRC_WEIGHT_CHECK_H_

#include <cstddef>
#include <string>

#include "plan_reader.h"

namespace tfpconv {

// `weights`: the filter tensor's data, OHWI float32, `bytes` long. Returns false with *error when the
// plan is stale (size or checksum differ) or does not describe the weights (a stray non-zero).
bool CheckWeightsAgainstPlan(const PlannedOp& conv, const void* weights, size_t bytes,
                             std::string* error);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_WEIGHT_CHECK_H_
