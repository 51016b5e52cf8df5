// The part of a unified FC kernel unit that does not depend on its instruction set: the table
// sizes and the dispatch over block sizes and input-row counts. Included by unified_fc_avx2.cc,
// unified_fc_avx512.cc and unified_fc_neon.cc inside their own anonymous namespace, so every
// function here is the unit's own (internal linkage, compiled with the unit's -m flags); the unit
// defines TableFloatsPerColumn(block) before the inclusion and Group<B, R> after it, which
// computes one group of kFcGroup outputs for R <= 4 input rows from its packed weights and the
// per-row tables of signed sums.
//
// No include guard on purpose: one inclusion per unit, inside the unit's namespace, after
// <algorithm>, <cstdint>, <utility> and unified_fc_kernels.h.

#ifndef TFP_FC_INLINE
#if defined(__GNUC__)
#define TFP_FC_INLINE inline __attribute__((always_inline))
#define TFP_FC_LAMBDA_INLINE __attribute__((always_inline))
#else
#define TFP_FC_INLINE inline
#define TFP_FC_LAMBDA_INLINE
#endif
#endif

template <typename F, int... I>
TFP_FC_INLINE void UnrollImpl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
// f(std::integral_constant<int, i>) for i in [0, N).
template <int N, typename F>
TFP_FC_INLINE void Unroll(F&& f) {
  UnrollImpl(f, std::make_integer_sequence<int, N>{});
}

// The row-major free blocks of a row are walked a word of 64 block columns at a time (the free
// stream's order, see unified_fc_kernels.h). The shorter last column when the words [w_begin,
// w_end) hold it (the kernels do it apart, AddFreeTail), else -1.
// B is p.block: a constant divisor, not an idiv (this runs once per output row and word).
template <int B>
TFP_FC_INLINE int FreeTailIn(const FcPacked& p, int w_begin, int w_end) {
  const int tail = p.in % B != 0 ? p.nb - 1 : -1;
  return tail >= 0 && tail / 64 >= w_begin && tail / 64 < w_end ? tail : -1;
}

// The row-major FREE blocks of a group in the free stream's order -- a word of 64 columns at a
// time (their inputs stay in L1 for the 16 rows), one output row at a time -- each row with a
// sixteenth of the word's block columns [j, j_end), so that the unified work overlaps the
// streaming of the free blocks: free_row(w, l, j, j_end) for the rows l < lanes, which may do
// columns [j, j') itself between its blocks and move j to j'; then columns(j, j_end).
template <typename FreeRowFn, typename ColumnsFn>
TFP_FC_INLINE void WalkFreeWords(const FcPacked& p, int lanes, FreeRowFn&& free_row,
                                 ColumnsFn&& columns) {
  for (int w = 0; w < p.words; ++w) {
    const int c0 = 64 * w, cn = std::min(64, p.nb - c0);
    for (int l = 0; l < kFcGroup; ++l) {
      int j = c0 + cn * l / kFcGroup;
      const int j_end = c0 + cn * (l + 1) / kFcGroup;
      if (l < lanes) free_row(w, l, j, j_end);
      columns(j, j_end);
    }
  }
}

// The last, shorter block of a row (block `tail`, inputs [tail * B, in)) when it is free: its
// floats (next in the free stream at *fp, which moves past them) times the R input rows' inputs,
// added to sums[r][lane].
template <int B, int R>
TFP_FC_INLINE void AddFreeTail(const FcPacked& p, const uint64_t* bits, int tail, const float* x,
                               size_t in, const float*& fp, float (&sums)[R][kFcGroup],
                               int lane) {
  if (tail < 0 || ((bits[tail / 64] >> (tail % 64)) & 1) == 0) return;
  const int i0 = tail * B, bi = p.in - i0;
  for (int r = 0; r < R; ++r) {
    float s = 0.0f;
    for (int i = 0; i < bi; ++i) s += fp[i] * x[r * in + i0 + i];
    sums[r][lane] += s;
  }
  fp += bi;
}

template <int B, int R>
void Group(const FcPacked& p, int g, const float* x, const float* tables, float* y, float lo,
           float hi);

// Floats of one input row's tables, whole block columns (zero past `in`): the unit's
// TableFloatsPerColumn(block), defined before it includes this file.
size_t TableFloats(const FcPacked& p) { return size_t(p.nb) * TableFloatsPerColumn(p.block); }

size_t ScratchFloats(const FcPacked& p, int rows) { return TableFloats(p) * size_t(rows); }

template <int B>
void RunBlock(const FcArgs& a) {
  const FcPacked& p = *a.packed;
  const size_t tstride = TableFloats(p);
  for (int g = a.group_begin; g < a.group_end; ++g) {
    for (int r0 = 0; r0 < a.rows; r0 += 4) {
      const float* x = a.x + size_t(r0) * p.in;
      const float* t = a.scratch + size_t(r0) * tstride;
      float* y = a.y + size_t(r0) * p.out + size_t(g) * kFcGroup;
      switch (std::min(4, a.rows - r0)) {
        case 1:
          Group<B, 1>(p, g, x, t, y, a.lo, a.hi);
          break;
        case 2:
          Group<B, 2>(p, g, x, t, y, a.lo, a.hi);
          break;
        case 3:
          Group<B, 3>(p, g, x, t, y, a.lo, a.hi);
          break;
        default:
          Group<B, 4>(p, g, x, t, y, a.lo, a.hi);
          break;
      }
    }
  }
}

void Run(const FcArgs& a) {
  switch (a.packed->block) {
    case 4:
      return RunBlock<4>(a);
    case 8:
      return RunBlock<8>(a);
    default:
      return RunBlock<16>(a);
  }
}
