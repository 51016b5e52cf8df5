// The pattern-convolution inner loops, written once over a vector-traits type and instantiated by
// each ISA unit (scalar.cc, avx2.cc, avx512.cc, neon.cc).
//
// Data layout (see packing.h): each output tile's input is transformed into a small block per
// input channel in which every tap (dy, dx) of tile pixel (y, x) sits at a fixed offset from
// y * wq + x. A register tile is R output rows x V vectors of output columns. For each output
// channel of a chunk the tile's accumulators stay in registers while its kernels (only the
// non-pruned ones, 4 weights each, packed in execution order) stream by:
//  - flat loops: each packed kernel carries its 4 tap offsets; per tap one broadcast weight and
//    R x V FMAs whose input operands come straight from L1 (row pitch a compile-time constant);
//  - pattern loops (stride 1): kernels come in runs of one pattern and the pattern is a template
//    argument, so the taps are compile-time and an input vector several (tap, row) pairs need is
//    loaded once (e.g. tap (0,1) of row r+1 and tap (1,1) of row r read the same input row).
//
// The including unit must define TFPCONV_KERNEL_NS (a namespace unique to the unit) before
// including this file: every function here then has a distinct symbol per ISA and the linker can
// never merge an AVX-512 copy into the scalar path.
#ifndef TFPCONV_KERNEL_NS
#error "define TFPCONV_KERNEL_NS before including kernel_impl.h"
#endif

#include <cstddef>
#include <cstdint>
#include <utility>

#include "kernels.h"

#if defined(__GNUC__)
#define TFP_INLINE inline __attribute__((always_inline))
#else
#define TFP_INLINE inline
#endif

namespace tfpconv {
namespace kernels {
namespace TFPCONV_KERNEL_NS {

template <int... I>
using Seq = std::integer_sequence<int, I...>;

// Compile-time description of pattern Mask at stride S (same stride in both dimensions). Two taps
// read the same input vectors, shifted by whole rows, when they share a "column key": the same
// row phase, column phase and column offset. The first tap of a key is its leader.
template <int Mask, int S>
struct TapInfo {
  static constexpr int Bit(int t) { return TapOf(Mask, t); }
  static constexpr int Dy(int t) { return Bit(t) / 3; }
  static constexpr int Dx(int t) { return Bit(t) % 3; }
  static constexpr int RowShift(int t) { return Dy(t) / S; }
  static constexpr int Key(int t) { return (Dy(t) % S) * 3 + Dx(t); }
  static constexpr int Leader(int t) {
    for (int u = 0; u < t; ++u)
      if (Key(u) == Key(t)) return u;
    return t;
  }
};

// The straight-line program for one kernel of a register tile: each distinct input vector is
// loaded once, then multiplied into every (tap, row) accumulator that needs it.
struct Op {
  bool load;
  int8_t lead, y, v;  // load: input row y (relative to the leader's row 0), vector v
  int8_t t, r;        // fma: acc[r][v] += w[t] * last loaded vector
};
struct Schedule {
  int n = 0;
  Op ops[160] = {};
};

template <int Mask, int S, int R, int V>
constexpr Schedule BuildSchedule() {
  using Info = TapInfo<Mask, S>;
  Schedule s;
  for (int lead = 0; lead < 4; ++lead) {
    if (Info::Leader(lead) != lead) continue;
    for (int y = 0; y < R + 2; ++y) {
      for (int v = 0; v < V; ++v) {
        int first = s.n;
        s.ops[s.n++] = Op{true, int8_t(lead), int8_t(y), int8_t(v), 0, 0};
        for (int t = 0; t < 4; ++t) {
          const int r = y - Info::RowShift(t);
          if (Info::Leader(t) == lead && r >= 0 && r < R)
            s.ops[s.n++] = Op{false, 0, 0, int8_t(v), int8_t(t), int8_t(r)};
        }
        if (s.n == first + 1) --s.n;  // nobody needs this vector
      }
    }
  }
  return s;
}

template <int Mask, int S, int R, int V>
struct ScheduleOf {
  static constexpr Schedule value = BuildSchedule<Mask, S, R, V>();
};

// Everything below is forced inline and unrolled with index-sequence folds, so each register
// tile lives in named registers. (Lambdas would be left out of line by GCC in functions this big.)
template <class VT, int R, int V>
using Acc = typename VT::V[R][V];

// Op I of the kernel program for (Mask, S, R, V).
template <class VT, int R, int V, int Mask, int S, int I>
TFP_INLINE void DoOp(Acc<VT, R, V>& acc, typename VT::V& in, const typename VT::V* w,
                     const float* xc, const ptrdiff_t* key_off) {
  constexpr Op op = ScheduleOf<Mask, S, R, V>::value.ops[I];
  constexpr int kWq = V * VT::kLanes;
  if constexpr (op.load) {
    in = VT::Load(xc + key_off[op.lead] + (op.y * kWq + op.v * VT::kLanes));
  } else {
    acc[op.r][op.v] = VT::Fma(w[op.t], in, acc[op.r][op.v]);
  }
}

template <class VT, int R, int V, int Mask, int S, int... I>
TFP_INLINE void KernelProgram(Acc<VT, R, V>& acc, const typename VT::V* w, const float* xc,
                              const ptrdiff_t* key_off, Seq<I...>) {
  typename VT::V in;
  (DoOp<VT, R, V, Mask, S, I>(acc, in, w, xc, key_off), ...);
}

template <class Info, int... T>
TFP_INLINE void KeyOffsets(ptrdiff_t* key_off, const int32_t* tap_off, ptrdiff_t wq, Seq<T...>) {
  ((key_off[T] = tap_off[Info::Bit(T)] - ptrdiff_t{Info::RowShift(T)} * wq), ...);
}

// Accumulates `count` kernels of pattern Mask into acc.
template <class VT, int R, int V, int Mask, int S>
TFP_INLINE void PatternRun(Acc<VT, R, V>& acc, const float* x, const int32_t* tap_off,
                           const PackedKernel* k, uint32_t count) {
  static_assert(4 * (R + 2) * V + 4 * R * V <= 160, "schedule too long");
  constexpr int kOps = ScheduleOf<Mask, S, R, V>::value.n;
  ptrdiff_t key_off[4];  // offset of each leader's input row 0
  KeyOffsets<TapInfo<Mask, S>>(key_off, tap_off, V * VT::kLanes,
                               std::make_integer_sequence<int, 4>{});
  for (uint32_t i = 0; i < count; ++i, ++k) {
    const typename VT::V w[4] = {VT::Set1(k->w[0]), VT::Set1(k->w[1]), VT::Set1(k->w[2]),
                                 VT::Set1(k->w[3])};
    KernelProgram<VT, R, V, Mask, S>(acc, w, x + k->off[0], key_off,
                                     std::make_integer_sequence<int, kOps>{});
  }
}

// acc[r][v] for the flat index I = r * V + v.
template <class VT, int R, int V, int I>
TFP_INLINE typename VT::V& At(Acc<VT, R, V>& acc) {
  return acc[I / V][I % V];
}

// Row pitch: compile-time when kWq > 0.
template <int kWq>
TFP_INLINE ptrdiff_t Pitch(ptrdiff_t wq) {
  if constexpr (kWq > 0) {
    return kWq;
  } else {
    return wq;
  }
}

template <class VT, int R, int V, int kWq, int... I>
TFP_INLINE void TapAll(Acc<VT, R, V>& acc, typename VT::V w, const float* p, ptrdiff_t wq,
                       Seq<I...>) {
  ((At<VT, R, V, I>(acc) = VT::Fma(
        w, VT::Load(p + (I / V) * Pitch<kWq>(wq) + (I % V) * VT::kLanes), At<VT, R, V, I>(acc))),
   ...);
}

// Flat packing: each kernel carries its 4 tap offsets; any pattern, no branches per kernel.
template <class VT, int R, int V, int kWq>
TFP_INLINE void FlatKernels(Acc<VT, R, V>& acc, const float* x, ptrdiff_t wq,
                            const PackedKernel* k, const PackedKernel* end) {
  constexpr auto kTile = std::make_integer_sequence<int, R * V>{};
  for (; k != end; ++k) {
    TapAll<VT, R, V, kWq>(acc, VT::Set1(k->w[0]), x + k->off[0], wq, kTile);
    TapAll<VT, R, V, kWq>(acc, VT::Set1(k->w[1]), x + k->off[1], wq, kTile);
    TapAll<VT, R, V, kWq>(acc, VT::Set1(k->w[2]), x + k->off[2], wq, kTile);
    TapAll<VT, R, V, kWq>(acc, VT::Set1(k->w[3]), x + k->off[3], wq, kTile);
  }
}

template <class VT, int R, int V, int... I>
TFP_INLINE void LoadAcc(Acc<VT, R, V>& acc, const float* src, Seq<I...>) {
  ((At<VT, R, V, I>(acc) = VT::Load(src + I * VT::kLanes)), ...);
}

template <class VT, int R, int V, int... I>
TFP_INLINE void StoreAcc(Acc<VT, R, V>& acc, float* dst, Seq<I...>) {
  (VT::Store(dst + I * VT::kLanes, At<VT, R, V, I>(acc)), ...);
}

#define TFP_PATTERN_CASE(id)                                                           \
  case id:                                                                             \
    PatternRun<VT, R, V, MaskAt(id), S>(acc, a.x, a.tap_off, k, run.count); \
    break;
#define TFP_PATTERN_CASES8(b)                                                              \
  TFP_PATTERN_CASE(b + 0) TFP_PATTERN_CASE(b + 1) TFP_PATTERN_CASE(b + 2)                  \
  TFP_PATTERN_CASE(b + 3) TFP_PATTERN_CASE(b + 4) TFP_PATTERN_CASE(b + 5)                  \
  TFP_PATTERN_CASE(b + 6) TFP_PATTERN_CASE(b + 7)

// One chunk of output channels, stride S in both dimensions, pattern-specialised. The switch
// keeps the accumulators in registers across runs; runs come in library order, so the jump is
// the same sequence for every output channel and predicts well.
template <class VT, int R, int V, int S>
void SpecialisedChunk(const ChunkArgs& a) {
  static_assert(kNumMasks == 56, "the case list below covers 56 masks");
  constexpr int kTile = R * V * VT::kLanes;
  for (size_t j = 0; j < a.num_tasks; ++j) {
    const OcTask& task = a.tasks[j];
    if (task.run_begin == task.run_end) continue;
    float* acc_mem = a.acc + j * kTile;
    Acc<VT, R, V> acc;
    LoadAcc<VT, R, V>(acc, acc_mem, std::make_integer_sequence<int, R * V>{});
    const PackedKernel* k = a.kernels + task.kernel_begin;
    for (uint32_t i = task.run_begin; i < task.run_end; ++i) {
      const Run run = a.runs[i];
      switch (run.mask_id) {
        TFP_PATTERN_CASES8(0)
        TFP_PATTERN_CASES8(8)
        TFP_PATTERN_CASES8(16)
        TFP_PATTERN_CASES8(24)
        TFP_PATTERN_CASES8(32)
        TFP_PATTERN_CASES8(40)
        TFP_PATTERN_CASES8(48)
        default:
          break;
      }
      k += run.count;
    }
    StoreAcc<VT, R, V>(acc, acc_mem, std::make_integer_sequence<int, R * V>{});
  }
}

#undef TFP_PATTERN_CASES8
#undef TFP_PATTERN_CASE

template <class VT, int V, int... I>
TFP_INLINE void TapRow(typename VT::V (&acc)[V], typename VT::V w, const float* p, Seq<I...>) {
  ((acc[I] = VT::Fma(w, VT::Load(p + I * VT::kLanes), acc[I])), ...);
}

// A one-row tile of V vectors with taps t % 2 and t % 4 (kSplit 2 or 4) summed apart: V * kSplit
// independent FMA chains instead of V, for tiles too small to hide the FMA latency otherwise.
template <class VT, int V, int kSplit>
TFP_INLINE void SplitTapKernels(Acc<VT, kSplit, V>& acc, const float* x, const PackedKernel* k,
                                const PackedKernel* end) {
  constexpr auto kRow = std::make_integer_sequence<int, V>{};
  for (; k != end; ++k) {
    TapRow<VT, V>(acc[0], VT::Set1(k->w[0]), x + k->off[0], kRow);
    TapRow<VT, V>(acc[1 % kSplit], VT::Set1(k->w[1]), x + k->off[1], kRow);
    TapRow<VT, V>(acc[2 % kSplit], VT::Set1(k->w[2]), x + k->off[2], kRow);
    TapRow<VT, V>(acc[3 % kSplit], VT::Set1(k->w[3]), x + k->off[3], kRow);
  }
}

// ---- shared kernels (flat packing): one input load for G filters ----------------------------
// A tile of RV vectors runs in passes of P vectors, with the passes of about equal size; the
// task's kernels stream by once per pass. A tap runs in one of two orders, whichever lets a pass
// hold more accumulators in VT::kRegisters:
//  - input-outer: the tap's G weights are broadcast once and each input vector is loaded and
//    multiplied into its G accumulators (G x P accumulators + G weights + the input, one spare);
//  - weight-outer: the pass's P input vectors are loaded once and each weight is broadcast and
//    multiplied into its P accumulators (G x P accumulators + P inputs + one weight).
// With 16 registers and G = 4 weight-outer fits 3 vectors per pass instead of 2: fewer passes and
// 12 independent FMA chains instead of 8 (AVX2, AMD EPYC Zen 3: 4-8% faster on most VGG-16 layers
// with filter groups of 4). With 32 registers both give the same P and input-outer stays. Each
// accumulator takes its FMAs in the same order either way, so the sums are bit-identical.
template <class VT, int G>
struct SharedOrder {
  static constexpr int kInputOuter = (VT::kRegisters - G - 2) / G;
  static constexpr int kWeightOuter = (VT::kRegisters - 1) / (G + 1);
  static constexpr bool kWeightOuterFirst = kWeightOuter > kInputOuter;
  static constexpr int kMost = kWeightOuterFirst ? kWeightOuter : (kInputOuter > 0 ? kInputOuter : 1);
};

template <class VT, int G, int RV>
constexpr int SharedPassVectors() {
  constexpr int kMost = SharedOrder<VT, G>::kMost;
  constexpr int kPasses = (RV + kMost - 1) / kMost;
  return (RV + kPasses - 1) / kPasses;
}

template <class VT, int G, int P>
using SharedAcc = typename VT::V[G][P];

// Input vector I of the pass (tile vector Q + I) at tap pointer p.
template <class VT, int V, int kWq, int Q, int I>
TFP_INLINE typename VT::V PassInput(const float* p, ptrdiff_t wq) {
  return VT::Load(p + ((Q + I) / V) * Pitch<kWq>(wq) + ((Q + I) % V) * VT::kLanes);
}

// Input-outer: input I into the G accumulators of column I.
template <class VT, int G, int P, int I, int... F>
TFP_INLINE void FmaFilters(SharedAcc<VT, G, P>& acc, const typename VT::V (&w)[G],
                           typename VT::V in, Seq<F...>) {
  ((acc[F][I] = VT::Fma(w[F], in, acc[F][I])), ...);
}

template <class VT, int V, int kWq, int G, int P, int Q, int... I, int... F>
TFP_INLINE void InputOuterTap(SharedAcc<VT, G, P>& acc, const float* tap_weights, const float* p,
                              ptrdiff_t wq, Seq<I...>, Seq<F...> filters) {
  const typename VT::V w[G] = {VT::Set1(tap_weights[F])...};
  (FmaFilters<VT, G, P, I>(acc, w, PassInput<VT, V, kWq, Q, I>(p, wq), filters), ...);
}

// Weight-outer: filter F's weight into the P accumulators of row F.
template <class VT, int G, int P, int F, int... I>
TFP_INLINE void FmaInputs(SharedAcc<VT, G, P>& acc, typename VT::V w, const typename VT::V (&in)[P],
                          Seq<I...>) {
  ((acc[F][I] = VT::Fma(w, in[I], acc[F][I])), ...);
}

template <class VT, int V, int kWq, int G, int P, int Q, int... I, int... F>
TFP_INLINE void WeightOuterTap(SharedAcc<VT, G, P>& acc, const float* tap_weights, const float* p,
                               ptrdiff_t wq, Seq<I...> inputs, Seq<F...>) {
  const typename VT::V in[P] = {PassInput<VT, V, kWq, Q, I>(p, wq)...};
  (FmaInputs<VT, G, P, F>(acc, VT::Set1(tap_weights[F]), in, inputs), ...);
}

// One tap of the pass: tile vectors Q .. Q + P - 1 of all G filters.
template <class VT, int V, int kWq, int G, int P, int Q>
TFP_INLINE void SharedTap(SharedAcc<VT, G, P>& acc, const float* tap_weights, const float* p,
                          ptrdiff_t wq) {
  constexpr auto kPass = std::make_integer_sequence<int, P>{};
  constexpr auto kFilters = std::make_integer_sequence<int, G>{};
  if constexpr (SharedOrder<VT, G>::kWeightOuterFirst) {
    WeightOuterTap<VT, V, kWq, G, P, Q>(acc, tap_weights, p, wq, kPass, kFilters);
  } else {
    InputOuterTap<VT, V, kWq, G, P, Q>(acc, tap_weights, p, wq, kPass, kFilters);
  }
}

template <class VT, int G, int P, int Q, int I>
TFP_INLINE void LoadShared(SharedAcc<VT, G, P>& acc, const float* src, ptrdiff_t filter_floats) {
  if constexpr (I < G * P) {
    acc[I / P][I % P] = VT::Load(src + (I / P) * filter_floats + (Q + I % P) * VT::kLanes);
    LoadShared<VT, G, P, Q, I + 1>(acc, src, filter_floats);
  }
}

template <class VT, int G, int P, int Q, int I>
TFP_INLINE void StoreShared(SharedAcc<VT, G, P>& acc, float* dst, ptrdiff_t filter_floats) {
  if constexpr (I < G * P) {
    VT::Store(dst + (I / P) * filter_floats + (Q + I % P) * VT::kLanes, acc[I / P][I % P]);
    StoreShared<VT, G, P, Q, I + 1>(acc, dst, filter_floats);
  }
}

template <class VT, int V, int kWq, int G, int P, int Q>
TFP_INLINE void SharedPass(float* acc_mem, ptrdiff_t filter_floats, const float* x, ptrdiff_t wq,
                           const SharedKernel<G>* k, const SharedKernel<G>* end) {
  SharedAcc<VT, G, P> acc;
  LoadShared<VT, G, P, Q, 0>(acc, acc_mem, filter_floats);
  for (; k != end; ++k) {
    SharedTap<VT, V, kWq, G, P, Q>(acc, k->w[0], x + k->off[0], wq);
    SharedTap<VT, V, kWq, G, P, Q>(acc, k->w[1], x + k->off[1], wq);
    SharedTap<VT, V, kWq, G, P, Q>(acc, k->w[2], x + k->off[2], wq);
    SharedTap<VT, V, kWq, G, P, Q>(acc, k->w[3], x + k->off[3], wq);
  }
  StoreShared<VT, G, P, Q, 0>(acc, acc_mem, filter_floats);
}

// G filters' accumulators (filter_floats apart) over a tile of RV vectors, pass by pass.
template <class VT, int RV, int V, int kWq, int G, int Q = 0>
void SharedKernels(float* acc_mem, ptrdiff_t filter_floats, const float* x, ptrdiff_t wq,
                   const SharedKernel<G>* k, const SharedKernel<G>* end) {
  constexpr int kP = SharedPassVectors<VT, G, RV>();
  if constexpr (Q < RV) {
    constexpr int kThis = RV - Q < kP ? RV - Q : kP;
    SharedPass<VT, V, kWq, G, kThis, Q>(acc_mem, filter_floats, x, wq, k, end);
    SharedKernels<VT, RV, V, kWq, G, Q + kThis>(acc_mem, filter_floats, x, wq, k, end);
  }
}

template <class VT, int R, int V, int kWq>
void FlatChunk(const ChunkArgs& a) {
  constexpr int kTile = R * V * VT::kLanes;
  // Split taps when a one-row tile has fewer than 8 accumulators.
  constexpr int kSplit = R > 1 || V >= 8 ? 1 : (V >= 4 ? 2 : 4);
  constexpr int kSplitRows = kSplit == 1 ? R : kSplit;
  for (size_t j = 0; j < a.num_tasks; ++j) {
    const OcTask& task = a.tasks[j];
    if (task.kernel_begin == task.kernel_end) continue;
    float* acc_mem = a.acc + j * kTile;
    if (task.filters == 2) {
      SharedKernels<VT, R * V, V, kWq, 2>(acc_mem, kTile, a.x, a.wq, a.kernels2 + task.kernel_begin,
                                          a.kernels2 + task.kernel_end);
      continue;
    }
    if (task.filters == 4) {
      SharedKernels<VT, R * V, V, kWq, 4>(acc_mem, kTile, a.x, a.wq, a.kernels4 + task.kernel_begin,
                                          a.kernels4 + task.kernel_end);
      continue;
    }
    const PackedKernel* begin = a.kernels + task.kernel_begin;
    const PackedKernel* end = a.kernels + task.kernel_end;
    if constexpr (kSplit == 1) {
      Acc<VT, R, V> acc;
      LoadAcc<VT, R, V>(acc, acc_mem, std::make_integer_sequence<int, R * V>{});
      FlatKernels<VT, R, V, kWq>(acc, a.x, a.wq, begin, end);
      StoreAcc<VT, R, V>(acc, acc_mem, std::make_integer_sequence<int, R * V>{});
    } else {
      Acc<VT, kSplitRows, V> acc;
      for (int s = 0; s < kSplit; ++s)
        for (int v = 0; v < V; ++v)
          acc[s][v] = s == 0 ? VT::Load(acc_mem + v * VT::kLanes) : VT::Zero();
      SplitTapKernels<VT, V, kSplit>(acc, a.x, begin, end);
      for (int v = 0; v < V; ++v) {
        typename VT::V sum = acc[0][v];
        for (int s = 1; s < kSplit; ++s) sum = VT::Add(sum, acc[s][v]);
        VT::Store(acc_mem + v * VT::kLanes, sum);
      }
    }
  }
}

template <class VT, int R, int V, bool kSpecialised>
constexpr Variant MakeVariant(const char* name) {
  constexpr int kCols = V * VT::kLanes;
  ChunkFn pattern11 = nullptr;
  if constexpr (kSpecialised) pattern11 = &SpecialisedChunk<VT, R, V, 1>;
  return Variant{name,
                 R,
                 V,
                 kSpecialised,
                 /*whole_rows=*/false,
                 pattern11,
                 &FlatChunk<VT, R, V, kCols>};
}

// A whole-row variant: one register row of V vectors running over the flattened plane (the row
// pitch never matters, any stride).
template <class VT, int V>
constexpr Variant MakeWholeRowVariant(const char* name) {
  return Variant{name, 1, V, false, /*whole_rows=*/true, nullptr, &FlatChunk<VT, 1, V, 1>};
}

// ---- layout transforms ------------------------------------------------------------------------
// Both move lanes x lanes blocks through VT::Transpose (rows of the block become columns); block
// edges (channel counts and widths that are not multiples of the lanes) take scalar loops.

// Asks for the cache lines of [begin, begin + floats) to be brought in (ahead of reading them, or
// with kForWrite of overwriting them), one request per line.
template <bool kForWrite>
TFP_INLINE void PrefetchFloats(const float* begin, ptrdiff_t floats) {
  const char* end = reinterpret_cast<const char*>(begin + floats);
  for (const char* p = reinterpret_cast<const char*>(begin); p < end; p += 64)
    __builtin_prefetch(p, kForWrite ? 1 : 0, 2);
}

// PrefetchFloats for reading the input pixels [x0, x1) of an image row, clipped to the row.
TFP_INLINE void PrefetchPixels(const float* src_row, int x0, int x1, int in_w, int channels) {
  x0 = x0 < 0 ? 0 : x0;
  x1 = x1 > in_w ? in_w : x1;
  if (src_row == nullptr || x1 <= x0) return;
  PrefetchFloats<false>(src_row + ptrdiff_t{x0} * channels, ptrdiff_t{x1 - x0} * channels);
}

template <class VT>
void TransformTileImpl(const TransformArgs& t) {
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  const int channels = t.channels;
  // The input columns that the tile to the right reads beyond this tile's.
  const int next_x0 = t.col0 + t.stride_w * (t.wq - 1) + 3;
  const int next_x1 = t.col0 + t.stride_w * (2 * t.wq - 1) + 3;
  for (int a = 0; a < t.ph; ++a) {
    for (int i = 0; i < t.hq; ++i) {
      const int iy = t.row0 + a + t.stride_h * i;
      const float* src_row =
          iy >= 0 && iy < t.in_h ? t.image + ptrdiff_t{iy} * t.in_w * channels : nullptr;
      if (t.prefetch_next) PrefetchPixels(src_row, next_x0, next_x1, t.in_w, channels);
      for (int b = 0; b < t.pw; ++b) {
        float* dst_row = t.x + (a * t.pw + b) * t.plane + ptrdiff_t{i} * t.wq;
        // The source pixel of plane column j, or nullptr for padding.
        const auto pixel = [&](int j) -> const float* {
          const int ix = t.col0 + b + t.stride_w * j;
          return src_row != nullptr && ix >= 0 && ix < t.in_w ? src_row + ptrdiff_t{ix} * channels
                                                              : nullptr;
        };
        int j = 0;
        for (; j + L <= t.wq; j += L) {
          const float* src[L];
#pragma GCC unroll 16
          for (int k = 0; k < L; ++k) src[k] = pixel(j + k);
          int c = 0;
          for (; c + L <= channels; c += L) {
            V v[L];
#pragma GCC unroll 16
            for (int k = 0; k < L; ++k) v[k] = src[k] != nullptr ? VT::Load(src[k] + c) : VT::Zero();
            VT::Transpose(v);
#pragma GCC unroll 16
            for (int k = 0; k < L; ++k) VT::Store(dst_row + (c + k) * t.channel_stride + j, v[k]);
          }
          for (; c < channels; ++c)
            for (int k = 0; k < L; ++k)
              dst_row[c * t.channel_stride + j + k] = src[k] != nullptr ? src[k][c] : 0.0f;
        }
        for (; j < t.wq; ++j) {
          const float* src = pixel(j);
          for (int c = 0; c < channels; ++c)
            dst_row[c * t.channel_stride + j] = src != nullptr ? src[c] : 0.0f;
        }
      }
    }
  }
  float* tail = t.x + t.channel_stride * channels;
  for (ptrdiff_t k = 0; k < t.tail; ++k) tail[k] = 0.0f;
}

// Blocks of lanes output channels x lanes pixels are read from their channels' accumulators,
// transposed, and stored as one vector per pixel; channels past the last full block one by one.
//
// The clamp keeps a NaN accumulator NaN, as TFLite's min(max(x, lo), hi) does: VT::Max(a, b) and
// VT::Min(a, b) return b when either is NaN (x86 maxps/minps; NEON returns NaN anyway), so the
// accumulator goes second.
template <class VT>
void StoreTileImpl(const StoreArgs& s) {
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  const V lo = VT::Set1(s.lo), hi = VT::Set1(s.hi);
  // Locals: the vector stores may alias anything (the intrinsics' types), so fields of s would be
  // loaded again after each one.
  const ptrdiff_t out_c = s.out_c, acc_floats = s.acc_floats;
  const int32_t* position = s.position;
  // Branch-free (maxss/minss): a ReLU's clamp would mispredict on every other value.
  const auto clamp = [&](float v) {
    const float low = s.lo > v ? s.lo : v;
    return low > s.hi ? s.hi : low;
  };
  for (int r = 0; r < s.rows; ++r) {
    const float* acc_row = s.acc + r * s.acc_pitch;
    float* out_row = s.out + r * s.out_row;
    PrefetchFloats<true>(out_row + s.cols * out_c, s.next_cols * out_c);
    // Pixel blocks outside, channel blocks inside: the block's output is one contiguous region,
    // written from start to end. A last block of fewer than L pixels transposes all L (the
    // accumulators past the tile's edge exist: StoreArgs) and stores the pixels that are there.
    const int full_oc = s.out_c / L * L;
    for (int c0 = 0; c0 < s.cols; c0 += L) {
      float* out_block = out_row + c0 * out_c;
      const int pixels = s.cols - c0 < L ? s.cols - c0 : L;
      for (int o0 = 0; o0 < full_oc; o0 += L) {
        V v[L];
#pragma GCC unroll 16
        for (int k = 0; k < L; ++k)
          v[k] = VT::Load(acc_row + position[o0 + k] * acc_floats + c0);
        VT::Transpose(v);
        if (pixels == L) {
#pragma GCC unroll 16
          for (int k = 0; k < L; ++k)
            VT::Store(out_block + k * out_c + o0, VT::Min(hi, VT::Max(lo, v[k])));
        } else {
          for (int k = 0; k < pixels; ++k)
            VT::Store(out_block + k * out_c + o0, VT::Min(hi, VT::Max(lo, v[k])));
        }
      }
      for (int o = full_oc; o < s.out_c; ++o)
        for (int k = 0; k < pixels; ++k)
          out_block[k * out_c + o] = clamp(acc_row[position[o] * acc_floats + c0 + k]);
    }
  }
}

template <class VT, size_t N>
constexpr KernelSet MakeKernelSet(const Variant (&variants)[N], const char* gathered) {
  return KernelSet{VT::kLanes, static_cast<int>(N), variants, &TransformTileImpl<VT>,
                   &StoreTileImpl<VT>, gathered};
}

}  // namespace TFPCONV_KERNEL_NS
}  // namespace kernels
}  // namespace tfpconv
