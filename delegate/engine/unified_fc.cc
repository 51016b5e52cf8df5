// Unified fully connected layers: validation and packing of the weights (format in
// kernels/unified_fc_kernels.h), the run-time choice of a kernel unit, threading, and the dense
// reference.
#include "unified_fc.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "kernels/unified_fc_kernels.h"

namespace tfpconv {
namespace {

using kernels::FcArgs;
using kernels::FcGroupOffsets;
using kernels::FcKernelSet;
using kernels::FcPacked;
using kernels::kFcGroup;
using kernels::kFcPadBytes;

const FcKernelSet* FcKernelsFor(Isa isa) {
  if (!IsaSupported(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return kernels::ScalarFcKernels();
    case Isa::kAvx2:
#if defined(TFPCONV_HAVE_AVX2)
      return kernels::Avx2FcKernels();
#else
      return nullptr;
#endif
    case Isa::kAvx512:
#if defined(TFPCONV_HAVE_AVX512)
      return kernels::Avx512FcKernels();
#else
      return nullptr;
#endif
    case Isa::kNeon:
#if defined(TFPCONV_HAVE_NEON)
      return kernels::NeonFcKernels();
#else
      return nullptr;
#endif
  }
  return nullptr;
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

std::string FloatText(float f) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(f));
  return buf;
}

// Checks that every block's weights fit its state; on failure a message naming the block.
bool CheckStates(const FcShape& s, const float* weights, const uint8_t* states,
                 std::string* message) {
  const int nb = FcBlocksPerRow(s);
  for (int o = 0; o < s.out; ++o) {
    const float* w = weights + size_t(o) * s.in;
    for (int j = 0; j < nb; ++j) {
      const int i0 = j * s.block, i1 = std::min(s.in, i0 + s.block);
      const uint8_t state = states[size_t(o) * nb + j];
      const std::string where = "row " + std::to_string(o) + ", block " + std::to_string(j) +
                                " (inputs " + std::to_string(i0) + ".." + std::to_string(i1 - 1) +
                                ")";
      if (state == kBlockFree) continue;
      if (state == kBlockPruned) {
        for (int i = i0; i < i1; ++i) {
          if (w[i] != 0.0f) {
            *message = where + ": PRUNED but weight [" + std::to_string(o) + "][" +
                       std::to_string(i) + "] = " + FloatText(w[i]) + " is not zero";
            return false;
          }
        }
      } else if (state == kBlockUnified) {
        const uint32_t m = Bits(w[i0]) & 0x7fffffffu;
        for (int i = i0 + 1; i < i1; ++i) {
          if ((Bits(w[i]) & 0x7fffffffu) != m) {
            *message = where + ": UNIFIED but |weight [" + std::to_string(o) + "][" +
                       std::to_string(i) + "]| = " + FloatText(std::fabs(w[i])) + " differs from |[" +
                       std::to_string(o) + "][" + std::to_string(i0) +
                       "]| = " + FloatText(std::fabs(w[i0]));
            return false;
          }
        }
      } else {
        *message = where + ": unknown state " + std::to_string(int(state)) +
                   " (0 FREE, 1 UNIFIED, 2 PRUNED)";
        return false;
      }
    }
  }
  return true;
}

// Arrays from this size on are streamed from DRAM on every Run: they are put on transparent huge
// pages where the kernel allows it (madvise). The hardware prefetchers stop at every 4 KiB page
// boundary, and a 2 MiB page has 512 times fewer: a plain read of VGG-16's fc1 weights on one core
// of an AMD EPYC (Zen 4) went from 22 to 31 GB/s, the unified kernel on them 5-8% faster.
constexpr size_t kHugePageBytes = size_t(2) << 20;

// A 64-byte aligned array followed by kFcPadBytes zero bytes (the kernels load whole vectors).
template <typename T>
class AlignedArray {
 public:
  void Allocate(size_t n) {
    n_ = n;
    const size_t bytes = (n * sizeof(T) + kFcPadBytes + 63) / 64 * 64;
    const size_t alignment = bytes >= kHugePageBytes ? kHugePageBytes : 64;
    void* data = nullptr;
    if (posix_memalign(&data, alignment, bytes) != 0) throw std::bad_alloc();
    data_.reset(static_cast<T*>(data));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // A hint (the last, partial 2 MiB stays on normal pages; so does everything where transparent
    // huge pages are off).
    if (alignment == kHugePageBytes) madvise(data, bytes, MADV_HUGEPAGE);
#endif
    std::memset(static_cast<void*>(data_.get()), 0, bytes);
    bytes_ = bytes;
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  size_t size() const { return n_; }
  size_t bytes() const { return bytes_; }  // what stays allocated, padding included

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  size_t n_ = 0, bytes_ = 0;
};

class UnifiedFcImpl final : public UnifiedFc {
 public:
  UnifiedFcImpl(const FcShape& shape, Isa isa, const FcKernelSet* kernels)
      : shape_(shape), isa_(isa), kernels_(kernels) {}

  void Pack(const float* weights, const uint8_t* states, const float* bias);

  void Run(const float* input, float* output, ThreadPool* pool) const override;
  size_t packed_weight_bytes() const override {
    return free_bits_.bytes() + free_cols_.bytes() + unified_.bytes() +
           offsets_.size() * sizeof(FcGroupOffsets) +
           free_.bytes() + mags_.bytes() + signs_.bytes() + bias_.bytes();
  }
  Isa isa() const override { return isa_; }
  const FcShape& shape() const override { return shape_; }

 private:
  FcShape shape_;
  Isa isa_;
  const FcKernelSet* kernels_;
  AlignedArray<uint64_t> free_bits_;
  AlignedArray<uint16_t> free_cols_;
  AlignedArray<uint16_t> unified_;
  std::vector<FcGroupOffsets> offsets_;
  AlignedArray<float> free_;
  AlignedArray<float> mags_;
  AlignedArray<uint8_t> signs_;
  AlignedArray<float> bias_;
  FcPacked packed_{};
  mutable std::vector<float> scratch_;  // Run is called from one thread at a time
};

void UnifiedFcImpl::Pack(const float* weights, const uint8_t* states, const float* bias) {
  const FcShape& s = shape_;
  const int b = s.block, nb = FcBlocksPerRow(s);
  const int words = (nb + 63) / 64;
  const int groups = (s.out + kFcGroup - 1) / kFcGroup;
  const bool column_major = (kernels_->column_major_free >> b) & 1;
  // Pass 1: the bookkeeping and the stream sizes.
  if (column_major) {
    free_cols_.Allocate(size_t(groups) * nb);
  } else {
    free_bits_.Allocate(size_t(s.out) * words);
  }
  unified_.Allocate(size_t(groups) * nb);
  size_t n_free = 0, n_unified = 0, n_signs = 0;
  for (int o = 0; o < s.out; ++o) {
    for (int j = 0; j < nb; ++j) {
      const uint8_t state = states[size_t(o) * nb + j];
      if (state == kBlockFree) {
        if (column_major) {
          free_cols_.data()[size_t(o / kFcGroup) * nb + j] |= uint16_t(1u << (o % kFcGroup));
        } else {
          free_bits_.data()[size_t(o) * words + j / 64] |= uint64_t(1) << (j % 64);
        }
        n_free += std::min(b, s.in - j * b);
      } else if (state == kBlockUnified) {
        unified_.data()[size_t(o / kFcGroup) * nb + j] |= uint16_t(1u << (o % kFcGroup));
        ++n_unified;
      }
    }
  }
  for (size_t k = 0; k < unified_.size(); ++k)
    n_signs += kernels::FcSignBytes(__builtin_popcount(unified_.data()[k]), b);
  free_.Allocate(n_free);
  mags_.Allocate(n_unified);
  signs_.Allocate(n_signs);
  offsets_.resize(groups);
  // Pass 2: the payload.
  float* fp = free_.data();
  float* mp = mags_.data();
  uint8_t* sp = signs_.data();
  for (int g = 0; g < groups; ++g) {
    offsets_[g] = FcGroupOffsets{uint64_t(fp - free_.data()), uint64_t(mp - mags_.data()),
                                 uint64_t(sp - signs_.data())};
    const int rows = std::min(kFcGroup, s.out - g * kFcGroup);
    if (column_major) {
      for (int j = 0; j < nb; ++j) {
        const uint32_t kf = free_cols_.data()[size_t(g) * nb + j];
        for (int i = j * b; i < std::min(s.in, (j + 1) * b); ++i)
          for (int l = 0; l < rows; ++l)
            if ((kf >> l) & 1) *fp++ = weights[size_t(g * kFcGroup + l) * s.in + i];
      }
    } else {
      for (int w = 0; w < words; ++w) {
        for (int l = 0; l < rows; ++l) {
          const int o = g * kFcGroup + l;
          for (int j = 64 * w; j < std::min(nb, 64 * w + 64); ++j) {
            if (states[size_t(o) * nb + j] != kBlockFree) continue;
            const int bi = std::min(b, s.in - j * b);
            std::memcpy(fp, weights + size_t(o) * s.in + size_t(j) * b, sizeof(float) * bi);
            fp += bi;
          }
        }
      }
    }
    for (int j = 0; j < nb; ++j) {
      const int i0 = j * b, bi = std::min(b, s.in - i0);
      const uint32_t ku = unified_.data()[size_t(g) * nb + j];
      int u = 0;
      for (int l = 0; l < rows; ++l) {
        if (!((ku >> l) & 1)) continue;
        const float* w = weights + size_t(g * kFcGroup + l) * s.in + i0;
        const uint32_t m = Bits(w[0]) & 0x7fffffffu;
        std::memcpy(mp++, &m, sizeof(float));
        uint32_t word = 0;
        for (int i = 0; i < bi; ++i) word |= (Bits(w[i]) >> 31) << i;
        if (b == 16) {
          sp[2 * u] = uint8_t(word & 0xff);
          sp[2 * u + 1] = uint8_t(word >> 8);
        } else if (b == 8) {
          sp[u] = uint8_t(word);
        } else {
          sp[u / 2] |= uint8_t(word << (4 * (u & 1)));
        }
        ++u;
      }
      sp += kernels::FcSignBytes(u, b);
    }
  }
  bias_.Allocate(size_t(groups) * kFcGroup);
  if (bias != nullptr) std::copy(bias, bias + s.out, bias_.data());

  packed_.in = s.in;
  packed_.out = s.out;
  packed_.block = b;
  packed_.nb = nb;
  packed_.words = words;
  packed_.groups = groups;
  packed_.column_major_free = column_major;
  packed_.free_bits = free_bits_.data();
  packed_.free_cols = free_cols_.data();
  packed_.unified = unified_.data();
  packed_.group_off = offsets_.data();
  packed_.free = free_.data();
  packed_.mags = mags_.data();
  packed_.signs = signs_.data();
  packed_.bias = bias_.data();
}

struct RunContext {
  const FcKernelSet* kernels;
  FcArgs args;
  int groups_per_task;
};

void RunTask(void* context, size_t task) {
  const RunContext& c = *static_cast<const RunContext*>(context);
  FcArgs a = c.args;
  a.group_begin = c.args.group_begin + int(task) * c.groups_per_task;
  a.group_end = std::min(c.args.group_end, a.group_begin + c.groups_per_task);
  c.kernels->run(a);
}

void UnifiedFcImpl::Run(const float* input, float* output, ThreadPool* pool) const {
  const int threads = pool != nullptr ? pool->num_threads() : 1;
  // Passes of at most kFcMaxRowsPerRun input rows (each reads the packed weights once).
  for (int r0 = 0; r0 < shape_.rows; r0 += kernels::kFcMaxRowsPerRun) {
    const int rows = std::min(kernels::kFcMaxRowsPerRun, shape_.rows - r0);
    RunContext c;
    c.kernels = kernels_;
    c.args = FcArgs{&packed_, input + size_t(r0) * shape_.in, output + size_t(r0) * shape_.out,
                    rows, 0, packed_.groups, shape_.act_min, shape_.act_max, nullptr};
    if (kernels_->prepare != nullptr) {
      // 64-byte aligned: the kernels load whole cache lines of it.
      const size_t n = kernels_->scratch_floats(packed_, rows) + 16;
      if (scratch_.size() < n) scratch_.resize(n);
      const uintptr_t at = reinterpret_cast<uintptr_t>(scratch_.data());
      c.args.scratch = scratch_.data() + ((64 - at % 64) % 64) / sizeof(float);
      kernels_->prepare(c.args);
    }
    if (threads <= 1 || packed_.groups < 2) {
      kernels_->run(c.args);
      continue;
    }
    // A few tasks per thread so that a thread slowed by others still finishes with the rest.
    const int tasks = std::min(packed_.groups, threads * 8);
    c.groups_per_task = (packed_.groups + tasks - 1) / tasks;
    const size_t n = size_t((packed_.groups + c.groups_per_task - 1) / c.groups_per_task);
    pool->ParallelFor(n, RunTask, &c);
  }
}

}  // namespace

std::unique_ptr<UnifiedFc> UnifiedFc::Create(const FcShape& shape, const float* weights,
                                             const uint8_t* states, const float* bias, Isa isa,
                                             std::string* error) {
  std::string scratch;
  std::string* message = error != nullptr ? error : &scratch;
  if (shape.block != 4 && shape.block != 8 && shape.block != 16) {
    *message = "block size " + std::to_string(shape.block) + " is not 4, 8 or 16";
    return nullptr;
  }
  if (shape.rows < 1 || shape.in < 1 || shape.out < 1) {
    *message = "bad shape: rows " + std::to_string(shape.rows) + ", in " +
               std::to_string(shape.in) + ", out " + std::to_string(shape.out) +
               " (all must be positive)";
    return nullptr;
  }
  if (!(shape.act_min <= shape.act_max)) {
    *message = "activation clamp [" + FloatText(shape.act_min) + ", " + FloatText(shape.act_max) +
               "] is empty";
    return nullptr;
  }
  if (weights == nullptr || states == nullptr) {
    *message = "weights and states are required";
    return nullptr;
  }
  const FcKernelSet* kernels = FcKernelsFor(isa);
  if (kernels == nullptr) {
    *message = std::string("instruction set ") + IsaName(isa) + " is not supported here";
    return nullptr;
  }
  if (!CheckStates(shape, weights, states, message)) return nullptr;
  auto fc = std::make_unique<UnifiedFcImpl>(shape, isa, kernels);
  fc->Pack(weights, states, bias);
  return fc;
}

void ReferenceFc(const FcShape& shape, const float* weights, const float* bias, const float* input,
                 float* output) {
  for (int r = 0; r < shape.rows; ++r) {
    const float* x = input + size_t(r) * shape.in;
    for (int o = 0; o < shape.out; ++o) {
      const float* w = weights + size_t(o) * shape.in;
      double acc = bias != nullptr ? bias[o] : 0.0;
      for (int i = 0; i < shape.in; ++i) acc += double(x[i]) * double(w[i]);
      const float v = static_cast<float>(acc);
      // std::max / std::min with the value first: a NaN result stays NaN.
      output[size_t(r) * shape.out + o] = std::min(std::max(v, shape.act_min), shape.act_max);
    }
  }
}

}  // namespace tfpconv
