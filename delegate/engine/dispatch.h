// Internal: the kernel set of an instruction set, nullptr when not compiled in or not supported by
// this CPU.
#ifndef TFPCONV_ENGINE_DISPATCH_H_
#define TFPCONV_ENGINE_DISPATCH_H_

#include "kernels/kernels.h"
#include "pattern_conv.h"

namespace tfpconv {

const kernels::KernelSet* KernelSetFor(Isa isa);

}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_DISPATCH_H_
