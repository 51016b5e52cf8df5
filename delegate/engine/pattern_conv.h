// The pattern-convolution engine: the contract between the TFLite glue (delegate/src) and the
// kernels (delegate/engine). Nothing here knows about TFLite or FlatBuffers.
#ifndef TFPCONV_ENGINE_PATTERN_CONV_H_
#define TFPCONV_ENGINE_PATTERN_CONV_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tfpconv {

// Instruction sets. Plans name them by IsaName ("scalar", "avx2", "avx512", "neon"); the values are
// the stable codes version 1 plans (tfpconv 0.1) used in their tuned key "isa" (scalar = 0,
// avx2 = 1, avx512 = 2, neon = 3). Never renumber them; add new ones at the end.
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kNeon = 3 };

inline int64_t IsaCode(Isa isa) { return static_cast<int64_t>(isa); }
// The instruction set of a stable code; false for a code no Isa has.
bool IsaFromCode(int64_t code, Isa* isa);
const char* IsaName(Isa isa);
// Parses "scalar", "avx2", "avx512", "neon"; returns false for anything else.
bool ParseIsa(const std::string& name, Isa* isa);
// The kernel variants of an instruction set compiled into this build, by their stable names, in
// the order version 1 plans indexed them ("variant" = a position in this list); empty when the
// instruction set is not compiled in.
std::vector<std::string> VariantNames(Isa isa);
bool IsaSupported(Isa isa);  // compiled in and supported by this CPU (runtime detection)
Isa BestIsa();

// A fixed pool of worker threads (num_threads - 1 workers plus the caller).
class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  int num_threads() const;
  // Runs task(i) for i in [0, n), spread over the threads; returns when all are done.
  void ParallelFor(size_t n, void (*task)(void* context, size_t i), void* context);
  // Puts idle workers to sleep now rather than letting them wait busily for the next job: call it
  // before handing the CPU back to other code (TFLite's own kernels and thread pool).
  void ReleaseWorkers();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Geometry of one NHWC float32 3x3 convolution, padding already resolved the TFLite way.
struct ConvShape {
  int batch = 1;
  int in_h = 0, in_w = 0, in_c = 0;
  int out_h = 0, out_w = 0, out_c = 0;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0;  // bottom/right padding follows from the sizes
  float act_min = -3.402823466e+38f, act_max = 3.402823466e+38f;  // fused activation clamp
};

// One tuned decision for the instruction set a layer runs with (converter/tfpconv_plan.fbs, Tuning:
// the glue picks the plan's Tuning whose isa is the one the engine runs with). Default-constructed:
// not tuned, the engine's defaults and default claim policy apply.
struct KernelTuning {
  // The tuner's verdict on this instruction set (absent: not measured): false when TFLite's own
  // kernel was faster (see WorthClaiming).
  std::optional<bool> claim;
  // The kernel variant by its stable name (kernels::Variant::name, e.g. "r8v1"); empty: default.
  std::string variant;
  // Further kernel parameters: "tile_oc", "tile_ic" (absent: defaults; unknown keys are ignored),
  // and for a layer with a pixel mask "gather" (1: compute only the active units, 0: every pixel;
  // absent: the engine's cost model decides). The variant and tiles apply to the normal path only.
  std::map<std::string, int64_t> params;
};

inline bool operator==(const KernelTuning& a, const KernelTuning& b) {
  return a.claim == b.claim && a.variant == b.variant && a.params == b.params;
}
inline bool operator!=(const KernelTuning& a, const KernelTuning& b) { return !(a == b); }

// The unit of an activation mask on a layer with out_h output rows (exposed to Python): a block of
// ActivationUnitRows(out_h) rows x kActivationUnitPixels pixels, on a grid from pixel (0, 0) (blocks
// at the bottom and right edges may be smaller). Rows: 8 on maps of 56 rows or more, 4 from 14
// rows, else 1, so that a layer has enough units to mask close to its target fraction (at least 7
// bands of units from 28 rows up, 4 on 14x14). An 8- or 4-row unit is one or more whole tiles of
// kernels the engine has on every instruction set (8x16: r8v1 with AVX-512, r4v2 or r8v1 with
// AVX2; 4x16: r4v1, r4v2), which Run skips at no cost (on 14x14 maps, 2-row units would need
// whole-row tiles, which measured 1.4x slower than r4v1 there). A row of a unit
// (kActivationUnitPixels along one row) is what the gathered path and the dense path compute
// together.
constexpr int kActivationUnitPixels = 16;
int ActivationUnitRows(int out_h);

// One unit of an output pixel mask: output row y, columns [x0, x0 + width).
struct ActivationUnit {
  int32_t y, x0, width;
};

// The units of an out_h x out_w pixel mask (row-major flags) that hold a kept (non-zero) pixel, in
// row-major order: what a masked layer computes.
std::vector<ActivationUnit> ActiveUnits(const std::vector<uint8_t>& pixel_mask, int out_h,
                                        int out_w);

// One layer's decoded, already verified plan (see converter/tfpconv_plan.fbs, PatternConv).
struct PatternPlan {
  std::vector<uint16_t> library;      // 9-bit masks, bit 3*row+col, 4 bits each, centre set
  std::vector<int8_t> codes;          // out_c * in_c, row-major (out, in); -1 = kernel pruned
  std::vector<int32_t> filter_order;  // permutation of output channels, execution order
  std::vector<int32_t> group_offsets; // groups of filter_order; [0, ..., out_c], rising strictly
  KernelTuning tuning;                // tuned for the instruction set Create runs with, if any
  // Empty, or out_h * out_w flags (row-major, shared by every image and channel): 0 = the output
  // pixel is written as 0 (every channel) -- the layer's output is multiplied by this mask. Tiles
  // and runs of kActivationUnitPixels along a row whose flags are all 0 are not computed.
  std::vector<uint8_t> pixel_mask;
};

// A convolution with its weights packed for execution. Created once per shape, immutable after,
// safe to Run from one thread at a time (Run itself uses the pool).
class PatternConv {
 public:
  virtual ~PatternConv() = default;
  // weights: OHWI [out_c][3][3][in_c]; bias: out_c floats or nullptr. Returns nullptr and sets
  // *error when the plan does not fit the shape or weights (a non-zero outside a kernel's
  // pattern, a wrong code count, ...).
  //
  // plan.tuning (the caller's pick for `isa`) is used when its variant is one of `isa`'s and its
  // parameters fit the shape; otherwise, e.g. a variant this build lacks or one narrower than a
  // resized input, the engine's defaults run instead and *note (when not null) says why. Tuned
  // values never make Create fail.
  //
  // With plan.pixel_mask, Run writes ReferenceConv's output times the mask, computing only the
  // tiles with a kept pixel, and Create decides from the mask and the shape whether gathering
  // the active units into tiles pays (gathers_units()).
  static std::unique_ptr<PatternConv> Create(const ConvShape& shape, const float* weights,
                                             const float* bias, const PatternPlan& plan, Isa isa,
                                             std::string* error, std::string* note = nullptr);
  // input: NHWC [batch][in_h][in_w][in_c]; output: NHWC [batch][out_h][out_w][out_c].
  virtual void Run(const float* input, float* output, ThreadPool* pool) const = 0;
  virtual size_t packed_weight_bytes() const = 0;
  virtual Isa isa() const = 0;
  // The kernel parameters it runs with: the variant's name and "tile_oc", "tile_ic" (claim unset),
  // and with a pixel mask "gather" (1: gathers_units()).
  virtual KernelTuning kernel_params() const = 0;
  // Whether Run gathers the mask's active units (runs of kActivationUnitPixels along a row) from
  // the whole image into tiles; false without a mask, or when Create found the normal tiles (those
  // with a kept pixel computed, then their masked pixels zeroed) cheaper for this mask and shape.
  virtual bool gathers_units() const = 0;
  // The fraction of the output pixels Run computes: 1 without a mask; with one, the pixels of the
  // tiles or gathered units it computes (masked pixels among them are zeroed after).
  virtual double computed_fraction() const = 0;
};

// Whether the engine is expected to beat TFLite's dense kernel on this layer (the delegate leaves
// it to TFLite otherwise, saying why in *reason). plan.tuning.claim decides when set (the
// convert-time tuner measured both on this instruction set); else a layer with fewer than 4 input
// channels (an RGB input layer: few kernels per output, so the layout transforms dominate) is left
// to TFLite, with its pixel mask too (TFLite then runs the mask's MUL).
bool WorthClaiming(const ConvShape& shape, const PatternPlan& plan, std::string* reason);

// Tuning hooks for a convert-time auto-tuner: the kernel tunings worth timing for this shape on
// this instruction set (variant by name, params "tile_oc" and "tile_ic"; claim unset), and a
// one-line description of one for logs: the instruction set's name, then "claim=0|1" when set,
// "variant=<name>" when set, then every parameter as key=value in key order.
std::vector<KernelTuning> TuningCandidates(const ConvShape& shape, Isa isa);
std::string DescribeTuning(const KernelTuning& tuning, Isa isa);

// Dense direct convolution, the reference the kernels are tested against. weights: OHWI
// [out_c][kernel_h][kernel_w][in_c] (3x3 unless said).
void ReferenceConv(const ConvShape& shape, const float* weights, const float* bias,
                   const float* input, float* output, int kernel_h = 3, int kernel_w = 3);

}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_PATTERN_CONV_H_
