// The masked dense convolution (dense_conv.h) on libxsmm's batch-reduce GEMM generator.
//
// libxsmm is column-major. For a unit (up to kActivationUnitPixels consecutive output pixels of one
// row) and a block of output channels, C [block x pixels] (ldc = out_c: NHWC output pixels) is the
// sum over the kernel's taps of A_tap [block x in_c] (weights packed per block and tap as
// [in_c][block]) times B_tap [in_c x pixels] (the NHWC input pixels the tap reads: columns
// stride_w * in_c apart, read in place). One batch-reduce call sums the taps with per-tap offsets
// into the packed weights and the input image. Taps that would read padding are left out of the
// call: a unit on the top or bottom edge drops a kernel row, and on the left or right edge the taps
// of a kernel column that reaches outside run as a separate call over the pixels whose reads are
// inside. So no padded copy of the input is needed and no multiply-add is spent on padding.
//
// The kernels are generated directly with libxsmm's code generator (libxsmm_generator_gemm_kernel)
// for the requested instruction set, not through its dispatch registry, whose target is global to
// the process (one CPUID-chosen instruction set for everything).
#include "dense_conv.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#if defined(TFPCONV_HAVE_LIBXSMM)
#include <libxsmm_cpuid.h>
#include <libxsmm_generator.h>
#include <sys/mman.h>
#endif

namespace tfpconv {

#if !defined(TFPCONV_HAVE_LIBXSMM)

bool DenseConvAvailable(Isa) { return false; }

std::unique_ptr<DenseConv> DenseConv::Create(const DenseConvShape&, const float*, const float*,
                                             const std::vector<uint8_t>&, Isa, std::string* error) {
  if (error != nullptr) *error = "dense convolutions need libxsmm (x86 only)";
  return nullptr;
}

#else  // TFPCONV_HAVE_LIBXSMM

namespace {

using Brgemm = libxsmm_smmfunction_reducebatch_offs;

// Machine code, staged kernel by kernel, then copied into pages of its own that are made
// executable (and no longer writable) once.
class CodePages {
 public:
  CodePages() = default;
  CodePages(const CodePages&) = delete;
  CodePages& operator=(const CodePages&) = delete;
  ~CodePages() {
    if (base_ != nullptr) munmap(base_, size_);
  }

  // Stages `size` bytes of code; returns their offset (valid after Seal).
  size_t Add(const unsigned char* code, size_t size) {
    const size_t offset = (staged_.size() + 63) / 64 * 64;
    staged_.resize(offset + size);
    std::memcpy(staged_.data() + offset, code, size);
    return offset;
  }

  bool Seal(std::string* error) {
    if (staged_.empty()) return true;  // every unit masked: no kernels
    size_ = staged_.size();
    void* pages = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pages == MAP_FAILED) {
      *error = "cannot map memory for the generated kernels";
      return false;
    }
    base_ = pages;
    std::memcpy(base_, staged_.data(), staged_.size());
    if (mprotect(base_, size_, PROT_READ | PROT_EXEC) != 0) {
      *error = "cannot make the generated kernels executable";
      return false;
    }
    staged_.clear();
    staged_.shrink_to_fit();
    return true;
  }

  const void* At(size_t offset) const { return static_cast<const char*>(base_) + offset; }

 private:
  std::vector<unsigned char> staged_;
  void* base_ = nullptr;
  size_t size_ = 0;
};

// Generates C[m x n] += sum_i A_i[m x k] B_i[k x n] (column-major, f32, batch-reduce by offsets)
// for `arch` into *pages; returns its offset there, or false with *error.
bool GenerateBrgemm(unsigned int arch, int m, int n, int k, int lda, int ldb, int ldc,
                    CodePages* pages, size_t* offset, std::string* error) {
  libxsmm_descriptor_blob blob;
  const libxsmm_gemm_descriptor* desc =
      libxsmm_sgemm_descriptor_init(&blob, m, n, k, lda, ldb, ldc, 1.0f, 1.0f,
                                    LIBXSMM_GEMM_FLAG_BATCH_REDUCE_OFFSET,
                                    LIBXSMM_GEMM_PREFETCH_NONE);
  if (desc == nullptr) {
    *error = "libxsmm cannot describe a " + std::to_string(m) + "x" + std::to_string(n) + "x" +
             std::to_string(k) + " GEMM";
    return false;
  }
  std::vector<unsigned char> buffer(size_t{1} << 18);
  libxsmm_generated_code code;
  std::memset(&code, 0, sizeof(code));
  code.generated_code = buffer.data();
  code.buffer_size = static_cast<unsigned int>(buffer.size());
  code.code_type = 2;  // binary machine code
  code.arch = arch;
  libxsmm_generator_gemm_kernel(&code, desc);
  if (code.last_error != 0 || code.code_size == 0) {
    *error = std::string("libxsmm could not generate a kernel: ") +
             libxsmm_strerror(code.last_error);
    return false;
  }
  *offset = pages->Add(buffer.data(), code.code_size);
  return true;
}

bool CpuHasAvx512Core() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

// Output channels per block (the GEMM's M): 32, two AVX-512 vectors (libxsmm then keeps up to 14
// pixels x 2 vectors of sums in registers) or four AVX2 vectors (3 pixels x 4: its AVX2 blocking).
// On Zen 4, 48 and 64 were no faster with AVX-512 on ResNet-18's layers, 16 and 24 slower with AVX2.
constexpr int kBlockChannels = 32;

std::string CheckShape(const DenseConvShape& s) {
  if (s.batch < 1 || s.in_h < 1 || s.in_w < 1 || s.in_c < 1 || s.out_h < 1 || s.out_w < 1 ||
      s.out_c < 1)
    return "every size must be positive";
  if ((s.kernel_h != 1 && s.kernel_h != 3) || (s.kernel_w != 1 && s.kernel_w != 3))
    return "kernel " + std::to_string(s.kernel_h) + "x" + std::to_string(s.kernel_w) +
           " (the dense path runs 1 and 3 high and wide)";
  if (s.stride_h < 1 || s.stride_w < 1) return "strides must be positive";
  if (s.pad_top < 0 || s.pad_left < 0 || s.pad_top >= s.kernel_h || s.pad_left >= s.kernel_w)
    return "padding must be in [0, kernel size)";
  if (!(s.act_min <= s.act_max)) return "activation clamp min > max";
  // Offsets and leading dimensions are 32-bit in libxsmm's descriptors.
  const double in_floats = double(s.in_h) * s.in_w * s.in_c;
  const double out_floats = double(s.out_h) * s.out_w * s.out_c;
  if (in_floats >= 1u << 30 || out_floats >= 1u << 30 || double(s.stride_w) * s.in_c >= 1u << 30)
    return "tensors too large";
  return "";
}

enum class UnitKind : uint8_t { kMasked, kPartial, kFull };

// One batch-reduce call of a unit: `taps` taps from tap_begin in the offset tables, over the unit's
// pixels [first, first + pixels).
struct Call {
  uint32_t tap_begin;
  uint16_t taps;
  uint8_t first, pixels;
};

struct Unit {
  int y, x0, pixels;
  UnitKind kind;
  uint32_t call_begin, call_end;
};

class DenseConvImpl final : public DenseConv {
 public:
  DenseConvImpl(const DenseConvShape& shape, Isa isa) : s_(shape), isa_(isa) {
    block_ = std::min(s_.out_c, kBlockChannels);
    blocks_ = (s_.out_c + block_ - 1) / block_;
    last_block_ = s_.out_c - (blocks_ - 1) * block_;
    clamp_ = s_.act_min > -std::numeric_limits<float>::max() ||
             s_.act_max < std::numeric_limits<float>::max();
  }

  bool Init(const float* weights, const float* bias, const std::vector<uint8_t>& mask,
            std::string* error) {
    PackWeights(weights, bias);
    mask_ = mask;
    PlanUnits();
    return GenerateKernels(error);
  }

  void Run(const float* input, float* output, ThreadPool* pool) const override {
    Job job{this, input, output};
    const size_t tasks = size_t(blocks_) * s_.batch * units_.size();
    if (pool != nullptr && pool->num_threads() > 1) {
      pool->ParallelFor(tasks, &Task, &job);
    } else {
      for (size_t i = 0; i < tasks; ++i) Task(&job, i);
    }
  }

  size_t packed_weight_bytes() const override {
    return (weights_.size() + bias_.size()) * sizeof(float);
  }

 private:
  struct Job {
    const DenseConvImpl* self;
    const float* input;
    float* output;
  };

  int Taps() const { return s_.kernel_h * s_.kernel_w; }
  size_t BlockFloats() const { return size_t(Taps()) * s_.in_c * block_; }

  // [block][tap][in_c][block_] with zeros past out_c, so every block has the same layout.
  void PackWeights(const float* weights, const float* bias) {
    const int taps = Taps();
    weights_.assign(BlockFloats() * blocks_, 0.0f);
    for (int o = 0; o < s_.out_c; ++o) {
      float* block = weights_.data() + size_t(o / block_) * BlockFloats() + o % block_;
      for (int t = 0; t < taps; ++t) {
        const float* src = weights + (size_t(o) * taps + t) * s_.in_c;
        for (int k = 0; k < s_.in_c; ++k) block[(size_t(t) * s_.in_c + k) * block_] = src[k];
      }
    }
    bias_.assign(size_t(blocks_) * block_, 0.0f);
    if (bias != nullptr) std::copy(bias, bias + s_.out_c, bias_.begin());
  }

  UnitKind KindOf(int y, int x0, int pixels) const {
    if (mask_.empty()) return UnitKind::kFull;
    const uint8_t* m = mask_.data() + size_t(y) * s_.out_w + x0;
    const int active = static_cast<int>(std::count(m, m + pixels, uint8_t{1}));
    return active == 0 ? UnitKind::kMasked
                       : active == pixels ? UnitKind::kFull : UnitKind::kPartial;
  }

  // The units, and for each one that is computed its calls and their taps' offsets.
  void PlanUnits() {
    for (int y = 0; y < s_.out_h; ++y) {
      for (int x0 = 0; x0 < s_.out_w; x0 += kActivationUnitPixels) {
        Unit u;
        u.y = y;
        u.x0 = x0;
        u.pixels = std::min(kActivationUnitPixels, s_.out_w - x0);
        u.kind = KindOf(y, x0, u.pixels);
        u.call_begin = u.call_end = static_cast<uint32_t>(calls_.size());
        if (u.kind != UnitKind::kMasked) PlanCalls(&u);
        units_.push_back(u);
      }
    }
  }

  // The input pixels [lo, hi) of the unit whose reads through kernel column dx are inside.
  std::pair<int, int> InsideRange(const Unit& u, int dx) const {
    int lo = 0, hi = u.pixels;
    while (lo < hi && (u.x0 + lo) * s_.stride_w - s_.pad_left + dx < 0) ++lo;
    while (hi > lo && (u.x0 + hi - 1) * s_.stride_w - s_.pad_left + dx >= s_.in_w) --hi;
    return {lo, hi};
  }

  // Kernel columns with the same inside range share a call.
  void PlanCalls(Unit* u) {
    std::vector<int> rows;
    for (int dy = 0; dy < s_.kernel_h; ++dy) {
      const int iy = u->y * s_.stride_h - s_.pad_top + dy;
      if (iy >= 0 && iy < s_.in_h) rows.push_back(dy);
    }
    std::vector<bool> done(size_t(s_.kernel_w), false);
    for (int dx = 0; dx < s_.kernel_w && !rows.empty(); ++dx) {
      if (done[size_t(dx)]) continue;
      const std::pair<int, int> range = InsideRange(*u, dx);
      Call call;
      call.tap_begin = static_cast<uint32_t>(a_offs_.size());
      call.first = static_cast<uint8_t>(range.first);
      call.pixels = static_cast<uint8_t>(range.second - range.first);
      for (int dx2 = dx; dx2 < s_.kernel_w; ++dx2) {
        if (done[size_t(dx2)] || InsideRange(*u, dx2) != range) continue;
        done[size_t(dx2)] = true;
        if (call.pixels == 0) continue;
        const int ix = (u->x0 + range.first) * s_.stride_w - s_.pad_left + dx2;
        for (int dy : rows) {
          const int iy = u->y * s_.stride_h - s_.pad_top + dy;
          a_offs_.push_back((size_t(dy) * s_.kernel_w + dx2) * s_.in_c * block_ * sizeof(float));
          b_offs_.push_back((size_t(iy) * s_.in_w + ix) * s_.in_c * sizeof(float));
        }
      }
      call.taps = static_cast<uint16_t>(a_offs_.size() - call.tap_begin);
      if (call.taps > 0) calls_.push_back(call);
    }
    u->call_end = static_cast<uint32_t>(calls_.size());
  }

  bool GenerateKernels(std::string* error) {
    const unsigned int arch = isa_ == Isa::kAvx512 ? LIBXSMM_X86_AVX512_CORE : LIBXSMM_X86_AVX2;
    const int ms[2] = {block_, last_block_};
    size_t offsets[2][kActivationUnitPixels + 1] = {};
    bool needed[kActivationUnitPixels + 1] = {};
    for (const Call& c : calls_) needed[c.pixels] = true;
    for (int mi = 0; mi < 2; ++mi) {
      if (mi == 1 && last_block_ == block_) break;
      for (int n = 1; n <= kActivationUnitPixels; ++n) {
        if (!needed[n]) continue;
        if (!GenerateBrgemm(arch, ms[mi], n, s_.in_c, block_, s_.stride_w * s_.in_c, s_.out_c,
                            &pages_, &offsets[mi][n], error))
          return false;
      }
    }
    if (!pages_.Seal(error)) return false;
    for (int mi = 0; mi < 2; ++mi) {
      for (int n = 1; n <= kActivationUnitPixels; ++n) {
        if (!needed[n]) continue;
        const int from = (mi == 1 && last_block_ == block_) ? 0 : mi;
        kernels_[mi][n] = reinterpret_cast<Brgemm>(const_cast<void*>(pages_.At(offsets[from][n])));
      }
    }
    return true;
  }

  static void Task(void* context, size_t i) {
    const Job& job = *static_cast<const Job*>(context);
    const DenseConvImpl& self = *job.self;
    // Block-major: consecutive tasks (one thread's share) reuse one block's weights.
    const size_t per_block = size_t(self.s_.batch) * self.units_.size();
    const int block = static_cast<int>(i / per_block);
    const size_t rest = i % per_block;
    self.RunUnit(job, block, static_cast<int>(rest / self.units_.size()),
                 self.units_[rest % self.units_.size()]);
  }

  void RunUnit(const Job& job, int block, int image, const Unit& u) const {
    const int m = block == blocks_ - 1 ? last_block_ : block_;
    float* c = job.output +
               ((size_t(image) * s_.out_h + u.y) * s_.out_w + u.x0) * s_.out_c +
               size_t(block) * block_;
    if (u.kind == UnitKind::kMasked) {
      for (int p = 0; p < u.pixels; ++p) std::fill_n(c + size_t(p) * s_.out_c, m, 0.0f);
      return;
    }
    const float* bias = bias_.data() + size_t(block) * block_;
    for (int p = 0; p < u.pixels; ++p) std::copy(bias, bias + m, c + size_t(p) * s_.out_c);
    const float* a = weights_.data() + size_t(block) * BlockFloats();
    const float* b = job.input + size_t(image) * s_.in_h * s_.in_w * s_.in_c;
    const Brgemm* kernels = kernels_[m == block_ ? 0 : 1];
    for (uint32_t k = u.call_begin; k < u.call_end; ++k) {
      const Call& call = calls_[k];
      const unsigned long long count = call.taps;
      kernels[call.pixels](a, b, c + size_t(call.first) * s_.out_c, &count,
                           a_offs_.data() + call.tap_begin, b_offs_.data() + call.tap_begin);
    }
    if (clamp_) Clamp(c, u.pixels, m);
    if (u.kind == UnitKind::kPartial) {
      const uint8_t* flags = mask_.data() + size_t(u.y) * s_.out_w + u.x0;
      for (int p = 0; p < u.pixels; ++p)
        if (flags[p] == 0) std::fill_n(c + size_t(p) * s_.out_c, m, 0.0f);
    }
  }

  // TFLite's order (max, then min), which keeps a NaN sum NaN.
  void Clamp(float* c, int pixels, int m) const {
    const float lo = s_.act_min, hi = s_.act_max;
    for (int p = 0; p < pixels; ++p) {
      float* row = c + size_t(p) * s_.out_c;
      for (int j = 0; j < m; ++j) row[j] = std::min(std::max(row[j], lo), hi);
    }
  }

  DenseConvShape s_;
  Isa isa_;
  int block_ = 0, blocks_ = 0, last_block_ = 0;
  bool clamp_ = false;
  std::vector<float> weights_, bias_;
  std::vector<uint8_t> mask_;
  std::vector<Unit> units_;
  std::vector<Call> calls_;
  std::vector<unsigned long long> a_offs_, b_offs_;  // bytes, per call tap
  CodePages pages_;
  // By [last block is narrower][pixels]: the generated kernels.
  Brgemm kernels_[2][kActivationUnitPixels + 1] = {};
};

}  // namespace

bool DenseConvAvailable(Isa isa) {
  if (isa == Isa::kAvx2) return IsaSupported(Isa::kAvx2);
  if (isa == Isa::kAvx512) {
    static const bool core = CpuHasAvx512Core();
    return IsaSupported(Isa::kAvx512) && core;
  }
  return false;
}

std::unique_ptr<DenseConv> DenseConv::Create(const DenseConvShape& shape, const float* weights,
                                             const float* bias,
                                             const std::vector<uint8_t>& pixel_mask, Isa isa,
                                             std::string* error) {
  std::string local_error;
  if (error == nullptr) error = &local_error;
  if (isa != Isa::kAvx2 && isa != Isa::kAvx512) {
    *error = std::string("the dense path has no ") + IsaName(isa) + " kernels (avx2, avx512)";
    return nullptr;
  }
  if (!DenseConvAvailable(isa)) {
    *error = std::string("this CPU cannot run the dense path's ") + IsaName(isa) + " kernels";
    return nullptr;
  }
  *error = CheckShape(shape);
  if (!error->empty()) return nullptr;
  if (weights == nullptr) {
    *error = "no weights";
    return nullptr;
  }
  if (!pixel_mask.empty()) {
    if (pixel_mask.size() != size_t(shape.out_h) * shape.out_w) {
      *error = "the pixel mask has " + std::to_string(pixel_mask.size()) + " flags, not out_h * " +
               "out_w = " + std::to_string(size_t(shape.out_h) * shape.out_w);
      return nullptr;
    }
    if (std::any_of(pixel_mask.begin(), pixel_mask.end(), [](uint8_t f) { return f > 1; })) {
      *error = "pixel mask flags must be 0 or 1";
      return nullptr;
    }
  }
  auto conv = std::make_unique<DenseConvImpl>(shape, isa);
  if (!conv->Init(weights, bias, pixel_mask, error)) return nullptr;
  return conv;
}

#endif  // TFPCONV_HAVE_LIBXSMM

}  // namespace tfpconv
