// Internal: the kernel set of an instruction set, nullptr when not compiled in or not supported by
// this CPU (KernelSetFor), or when not compiled in (CompiledKernelSetFor).
#ifndef TFPCONV_ENGINE_DISPATCH_H_
#define TFPCONV_ENGINE_DISPATCH_H_

#include <cstddef>

#include "kernels/kernels.h"
#include "pattern_conv.h"

namespace tfpconv {

const kernels::KernelSet* KernelSetFor(Isa isa);

// The kernel set of an instruction set compiled into this build, whether or not this CPU runs it:
// only for its variant names and counts (tests, logs), never to run its kernels.
const kernels::KernelSet* CompiledKernelSetFor(Isa isa);

// The L1 data cache of one core of this CPU in bytes: libcpuinfo's, else the C library's
// (sysconf), else 48 KiB when neither knows (Android's libc reports 0).
size_t L1DataCacheBytes();

// The L2 cache of one core in bytes, found as L1DataCacheBytes, else 1 MiB.
size_t L2CacheBytes();

}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_DISPATCH_H_
