// Which instruction sets are compiled in (TFPCONV_HAVE_* from CMakeLists.txt) and which this CPU
// runs (libcpuinfo when available, else the compiler's CPU probe; NEON is part of AArch64).
#include <unistd.h>

#include <string>

#include "dispatch.h"
#include "kernels/kernels.h"
#include "pattern_conv.h"

#if defined(TFPCONV_HAVE_CPUINFO)
#include <cpuinfo.h>
#endif

namespace tfpconv {

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kNeon:
      return "neon";
  }
  return "unknown";
}

bool ParseIsa(const std::string& name, Isa* isa) {
  for (Isa candidate : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (name == IsaName(candidate)) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

bool IsaFromCode(int64_t code, Isa* isa) {
  for (Isa candidate : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (code == IsaCode(candidate)) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

namespace {

// Whether this CPU runs `isa` (probed for the x86 sets; NEON is part of AArch64).
bool CpuHas(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
#if defined(TFPCONV_HAVE_CPUINFO)
  static const bool ok = cpuinfo_initialize();
  if (ok) {
    if (isa == Isa::kAvx2) return cpuinfo_has_x86_avx2() && cpuinfo_has_x86_fma3();
    if (isa == Isa::kAvx512) return cpuinfo_has_x86_avx512f();
    return true;
  }
#endif
  __builtin_cpu_init();
  if (isa == Isa::kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == Isa::kAvx512) return __builtin_cpu_supports("avx512f");
#endif
  (void)isa;
  return true;
}

}  // namespace

const kernels::KernelSet* CompiledKernelSetFor(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return kernels::ScalarKernels();
    case Isa::kAvx2:
#if defined(TFPCONV_HAVE_AVX2)
      return kernels::Avx2Kernels();
#else
      return nullptr;
#endif
    case Isa::kAvx512:
#if defined(TFPCONV_HAVE_AVX512)
      return kernels::Avx512Kernels();
#else
      return nullptr;
#endif
    case Isa::kNeon:
#if defined(TFPCONV_HAVE_NEON)
      return kernels::NeonKernels();
#else
      return nullptr;
#endif
  }
  return nullptr;
}

const kernels::KernelSet* KernelSetFor(Isa isa) {
  const kernels::KernelSet* set = CompiledKernelSetFor(isa);
  if (set == nullptr) return nullptr;
  return CpuHas(isa) ? set : nullptr;
}

bool IsaSupported(Isa isa) { return KernelSetFor(isa) != nullptr; }

std::vector<std::string> VariantNames(Isa isa) {
  std::vector<std::string> names;
  if (const kernels::KernelSet* set = CompiledKernelSetFor(isa)) {
    for (int v = 0; v < set->num_variants; ++v) names.emplace_back(set->variants[v].name);
  }
  return names;
}

namespace {

enum class CacheLevel { kL1Data, kL2 };

// The size in bytes of core 0's cache at `level`: libcpuinfo's, else the C library's (sysconf),
// else `fallback` when neither knows (Android's libc reports 0).
size_t CacheBytes(CacheLevel level, size_t fallback) {
#if defined(TFPCONV_HAVE_CPUINFO)
  if (cpuinfo_initialize()) {
    const cpuinfo_cache* cache =
        level == CacheLevel::kL1Data ? cpuinfo_get_l1d_cache(0) : cpuinfo_get_l2_cache(0);
    if (cache != nullptr && cache->size > 0) return size_t{cache->size};
  }
#endif
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
  const long size =
      sysconf(level == CacheLevel::kL1Data ? _SC_LEVEL1_DCACHE_SIZE : _SC_LEVEL2_CACHE_SIZE);
  if (size > 0) return static_cast<size_t>(size);
#endif
  return fallback;
}

}  // namespace

size_t L1DataCacheBytes() {
  static const size_t bytes = CacheBytes(CacheLevel::kL1Data, 48 * 1024);
  return bytes;
}

size_t L2CacheBytes() {
  static const size_t bytes = CacheBytes(CacheLevel::kL2, 1024 * 1024);
  return bytes;
}

Isa BestIsa() {
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kNeon})
    if (IsaSupported(isa)) return isa;
  return Isa::kScalar;
}

}  // namespace tfpconv
