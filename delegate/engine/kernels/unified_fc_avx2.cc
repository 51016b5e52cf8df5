// AVX2 + FMA unified FC kernel (compiled with -mavx2 -mfma only). Same plan as the AVX-512 unit:
//   FREE blocks row by row: a row's free blocks are consecutive in the free stream; walk its free
//     bits with tzcnt and FMA each block (xmm / ymm / 2 ymm) with the block's inputs;
//   UNIFIED blocks a column of 16 rows at a time, 8 of its unified rows per decode in the rows'
//     compressed order (one decode for a column with at most 8 of them, whichever half of the
//     group they sit in): per Run every 3 consecutive inputs of a block get a table of their 8
//     signed sums (one ymm), so a row's sum over 3 bits of its sign word is one vpermps (6 for a
//     block of 16); times the magnitudes, then permuted into the rows' lanes (AVX2 has no expand:
//     a 256-entry table of ranks).
// Up to 4 input rows share one decode of the weights. With one input row the columns are done
// between a row's free blocks (see Group), so that they overlap the free stream's reads.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "unified_fc_kernels.h"

// GCC 12.2 (Debian 12's compiler) at -O3 drops FreeRow's shorter last column (AddFreeTail and the
// bit cleared before the loop) from some Group<B, R> of this unit, depending on what else is
// inlined into them (first seen as Group<8, 3>: the RandomStates and EveryRowCount tests of
// unified_fc_test.cc fail, valgrind sees the loop read past the input). Jump threading is the pass
// that does it: without it (or with clang, or at -O1 with the sanitizers) the unit is right.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-thread-jumps")
#endif

namespace tfpconv {
namespace kernels {
namespace fc_avx2 {
namespace {

// A table of 8 signed sums per 3 inputs of a block (the last of a block may cover fewer): one
// vpermps reads a row's sum over 3 of its sign bits, with no blend.
constexpr int TableGroups(int block) { return (block + 2) / 3; }
constexpr int TableFloatsPerColumn(int block) { return 8 * TableGroups(block); }

#include "unified_fc_driver.h"  // TableFloats, ScratchFloats, Run (uses Group below)

// Byte l of kRank.rank[m]: how many bits of the 8-bit mask m are set below bit l, plus 0x80 when
// bit l itself is clear: sign-extended, the lanes a column does not touch are negative, so one
// blendv on the permute index zeroes them (no separate lane mask). -128 is a multiple of 16, so
// adding a rank offset of at most 8 keeps both the sign and the low 4 bits that the permutes and
// the second-decode blend read.
struct RankTable {
  uint64_t rank[256];
};
constexpr RankTable BuildRankTable() {
  RankTable t{};
  for (int m = 0; m < 256; ++m) {
    uint64_t v = 0;
    int seen = 0;
    for (int l = 0; l < 8; ++l) {
      v |= uint64_t(seen | ((m >> l) & 1 ? 0 : 0x80)) << (8 * l);
      seen += (m >> l) & 1;
    }
    t.rank[m] = v;
  }
  return t;
}
constexpr RankTable kRank = BuildRankTable();

TFP_FC_INLINE __m256i RankOf(uint32_t m8) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&kRank.rank[m8])));
}

// v with zero in the lanes that `rank` (RankOf, maybe plus an offset) marks untouched.
TFP_FC_INLINE __m256 ZeroUntouched(__m256 v, __m256i rank) {
  return _mm256_blendv_ps(v, _mm256_setzero_ps(), _mm256_castsi256_ps(rank));
}


void Prepare(const FcArgs& a) {
  const FcPacked& p = *a.packed;
  __m256 sign[3];  // lane e of sign[t]: -1 when bit t of e is set
  for (int t = 0; t < 3; ++t) {
    alignas(32) float v[8];
    for (int e = 0; e < 8; ++e) v[e] = (e >> t) & 1 ? -1.0f : 1.0f;
    sign[t] = _mm256_load_ps(v);
  }
  const int groups = TableGroups(p.block);
  for (int r = 0; r < a.rows; ++r) {
    const float* x = a.x + size_t(r) * p.in;
    float* t = a.scratch + TableFloats(p) * r;
    for (int j = 0; j < p.nb; ++j) {
      for (int k = 0; k < groups; ++k) {
        // Inputs past the block or past `in` count as zero, so the entries ignore their bits.
        const int i0 = j * p.block + 3 * k, i_end = std::min({p.in, i0 + 3, (j + 1) * p.block});
        float v[3] = {0.0f, 0.0f, 0.0f};
        for (int i = i0; i < i_end; ++i) v[i - i0] = x[i];
        __m256 sums = _mm256_mul_ps(_mm256_set1_ps(v[0]), sign[0]);
        sums = _mm256_fmadd_ps(_mm256_set1_ps(v[1]), sign[1], sums);
        sums = _mm256_fmadd_ps(_mm256_set1_ps(v[2]), sign[2], sums);
        _mm256_store_ps(t + (size_t(j) * groups + k) * 8, sums);
      }
    }
  }
}

// Sign words of the unified rows of rank start .. start+7 (compressed order), one per lane.
template <int B>
TFP_FC_INLINE __m256i LoadSigns(const uint8_t* sp, int start) {
  if constexpr (B == 16) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp + 2 * start)));
  } else if constexpr (B == 8) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sp + start)));
  } else {
    uint64_t q;
    std::memcpy(&q, sp + start / 2, sizeof(q));
    q >>= 4 * (start & 1);
    __m128i v = _mm_cvtsi64_si128(static_cast<long long>(q));
    v = _mm_unpacklo_epi8(v, v);
    return _mm256_srlv_epi32(_mm256_cvtepu8_epi32(v), _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
  }
}

// A block of B floats: one xmm, one ymm or two ymm (N vectors).
struct Xmm {
  using V = __m128;
  static TFP_FC_INLINE V Zero() { return _mm_setzero_ps(); }
  static TFP_FC_INLINE V Load(const float* p) { return _mm_loadu_ps(p); }
  static TFP_FC_INLINE V Fma(V a, V b, V c) { return _mm_fmadd_ps(a, b, c); }
  static TFP_FC_INLINE V Add(V a, V b) { return _mm_add_ps(a, b); }
  static TFP_FC_INLINE float Sum(V s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
};
struct Ymm {
  using V = __m256;
  static TFP_FC_INLINE V Zero() { return _mm256_setzero_ps(); }
  static TFP_FC_INLINE V Load(const float* p) { return _mm256_loadu_ps(p); }
  static TFP_FC_INLINE V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static TFP_FC_INLINE V Add(V a, V b) { return _mm256_add_ps(a, b); }
  static TFP_FC_INLINE float Sum(V v) {
    return Xmm::Sum(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
  }
};
template <int B>
struct Block : Ymm {
  static constexpr int N = B / 8;
};
template <>
struct Block<4> : Xmm {
  static constexpr int N = 1;
};

// Software prefetch of the free stream, bytes ahead: into L1, and further ahead into L2.
constexpr int kPrefetch = 2048;
constexpr int kPrefetchL2 = 8192;
TFP_FC_INLINE void PrefetchFree(const float* f) {
  _mm_prefetch(reinterpret_cast<const char*>(f) + kPrefetch, _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(f) + kPrefetchL2, _MM_HINT_T1);
}

// The free blocks of one output row in the words [w_begin, w_end) of its free bits (bit j of
// `bits`), dotted with R input rows and added to sums[r][lane]; between() after every step of K
// blocks (K = 2 for one input row, else 1).
template <int B, int R, typename BetweenFn>
TFP_FC_INLINE void FreeRow(const FcPacked& p, const uint64_t* bits, int w_begin, int w_end,
                           const float*& fp, const float* x, float (&sums)[R][kFcGroup],
                           int lane, BetweenFn&& between) {
  using BV = Block<B>;
  using V = typename BV::V;
  constexpr int N = BV::N;     // vectors per block
  constexpr int K = R == 1 ? 2 : 1;  // accumulator sets per input row
  constexpr int VW = B / N;  // floats per vector
  const size_t in = size_t(p.in);
  V acc[R][K][N];
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < K; ++k)
      for (int n = 0; n < N; ++n) acc[r][k][n] = BV::Zero();
  const int tail = FreeTailIn<B>(p, w_begin, w_end);  // the shorter last column, done apart
  const float* f = fp;
  for (int w = w_begin; w < w_end; ++w) {
    uint64_t m = bits[w];
    if (tail >= 0 && w == tail / 64) m &= ~(uint64_t(1) << (tail % 64));
    const float* xw = x + size_t(w) * 64 * B;
    if (m == ~uint64_t(0)) {  // 64 free blocks in a row: a plain dot product
      for (int j = 0; j < 64; j += K) {
        Unroll<K>([&](auto kc) TFP_FC_LAMBDA_INLINE {
          constexpr int k = decltype(kc)::value;
          for (int n = 0; n < N; ++n) {
            const float* wp = f + (j + k) * B + n * VW;
            if ((((j + k) * B + n * VW) % 16) == 0) PrefetchFree(wp);  // once per cache line
            const V wv = BV::Load(wp);
            for (int r = 0; r < R; ++r)
              acc[r][k][n] = BV::Fma(wv, BV::Load(xw + r * in + (j + k) * B + n * VW), acc[r][k][n]);
          }
        });
        between();
      }
      f += 64 * B;
      continue;
    }
    while (m != 0) {
      bool done = false;
      Unroll<K>([&](auto kc) TFP_FC_LAMBDA_INLINE {
        constexpr int k = decltype(kc)::value;
        if (done) return;
        const int j = __builtin_ctzll(m);
        m &= m - 1;
        PrefetchFree(f);
        for (int n = 0; n < N; ++n) {
          const V wv = BV::Load(f + n * VW);
          for (int r = 0; r < R; ++r)
            acc[r][k][n] = BV::Fma(wv, BV::Load(xw + r * in + j * B + n * VW), acc[r][k][n]);
        }
        f += B;
        done = m == 0;
      });
      between();
    }
  }
  for (int r = 0; r < R; ++r) {
    V v = acc[r][0][0];
    for (int k = 0; k < K; ++k)
      for (int n = 0; n < N; ++n)
        if (k + n > 0) v = BV::Add(v, acc[r][k][n]);
    sums[r][lane] += BV::Sum(v);
  }
  AddFreeTail<B, R>(p, bits, tail, x, in, f, sums, lane);
  fp = f;
}

template <int B, int R>
void Group(const FcPacked& p, int g, const float* x, const float* tables, float* y, float lo,
           float hi) {
  constexpr int G = TableGroups(B);
  const size_t tstride = TableFloats(p);
  const FcGroupOffsets& off = p.group_off[g];
  const int lanes = std::min(kFcGroup, p.out - g * kFcGroup);

  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  const uint16_t* unified = p.unified + size_t(g) * p.nb;
  const float* mp = p.mags + off.mags;
  const uint8_t* sp = p.signs + off.signs;
  // The signed sums of the unified rows of compressed ranks [start, start + 8) of the column whose
  // tables start at t, times their magnitudes: sums[r], lane k for rank start + k.
  const auto decode = [&](const float* t, int start, __m256 (&sums)[R]) TFP_FC_LAMBDA_INLINE {
    const __m256i s = LoadSigns<B>(sp, start);
    const __m256 m = _mm256_loadu_ps(mp + start);
    for (int r = 0; r < R; ++r) {
      __m256 part[G];
      Unroll<G>([&](auto kc) TFP_FC_LAMBDA_INLINE {
        constexpr int k = decltype(kc)::value;
        part[k] = _mm256_permutevar8x32_ps(_mm256_load_ps(t + r * tstride + 8 * k),
                                           k == 0 ? s : _mm256_srli_epi32(s, 3 * k));
      });
      // Added as a tree, not a chain (vpermps alone has a latency of 8 cycles on Zen 3): a
      // column's latency is what the out-of-order window has to cover. Written out: a loop over
      // part[] kept it in memory and cost 25%.
      __m256 sum;
      if constexpr (G == 6) {
        sum = _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(part[0], part[1]), _mm256_add_ps(part[2], part[3])),
            _mm256_add_ps(part[4], part[5]));
      } else if constexpr (G == 3) {
        sum = _mm256_add_ps(_mm256_add_ps(part[0], part[1]), part[2]);
      } else {
        static_assert(G == 2, "blocks of 4, 8 or 16");
        sum = _mm256_add_ps(part[0], part[1]);
      }
      sums[r] = _mm256_mul_ps(m, sum);
    }
  };
  // A column's unified rows are decoded 8 compressed ranks at a time, whichever half of the group
  // they sit in: one decode for the usual column with at most 8 of them, not one per half. The low
  // half's rows have ranks below 8; the high half's, ranks up to 15.
  const auto columns = [&](int j_begin, int j_end) TFP_FC_LAMBDA_INLINE {
    for (int j = j_begin; j < j_end; ++j) {
      const uint32_t ku = unified[j];
      if (ku == 0) continue;
      const float* t = tables + size_t(j) * TableFloatsPerColumn(B);
      const uint32_t lo8 = ku & 0xffu, hi8 = ku >> 8;
      const int nu = __builtin_popcount(ku), nlo = __builtin_popcount(lo8);
      __m256 first[R];
      decode(t, 0, first);
      if (lo8 != 0) {
        const __m256i rank = RankOf(lo8);
        for (int r = 0; r < R; ++r)
          acc[r][0] = _mm256_add_ps(
              acc[r][0], ZeroUntouched(_mm256_permutevar8x32_ps(first[r], rank), rank));
      }
      if (hi8 != 0) {
        const __m256i rank = _mm256_add_epi32(RankOf(hi8), _mm256_set1_epi32(nlo));
        __m256 u[R];
        for (int r = 0; r < R; ++r) u[r] = _mm256_permutevar8x32_ps(first[r], rank);
        if (nu > 8) {  // ranks 8 and up come from a second decode
          __m256 second[R];
          decode(t, 8, second);
          const __m256 from_second = _mm256_castsi256_ps(_mm256_slli_epi32(rank, 28));
          for (int r = 0; r < R; ++r)
            u[r] = _mm256_blendv_ps(u[r], _mm256_permutevar8x32_ps(second[r], rank), from_second);
        }
        for (int r = 0; r < R; ++r) acc[r][1] = _mm256_add_ps(acc[r][1], ZeroUntouched(u[r], rank));
      }
      mp += nu;
      sp += FcSignBytes(nu, B);
    }
  };
  alignas(32) float free_sums[R][kFcGroup] = {};
  const float* fp = p.free + off.free;
  // With one input row a row's columns are spread through its free blocks, one after every 4
  // (counted on across rows: restarting the count at each row was 5% slower): the out-of-order
  // window then always holds column work to run while a free block waits for memory, where a
  // batch of columns after the row mostly added its time to the stream's (AVX2 Zen 3, VGG-16's fc1
  // unified 0.5 / pruned 0.25: 11% faster). With more rows the free blocks have FMAs enough of
  // their own, and the extra live registers cost more (4 rows: 15% slower).
  [[maybe_unused]] unsigned steps = 0;
  const auto free_row = [&](int w, int l, int& j, int j_end) TFP_FC_LAMBDA_INLINE {
    const auto between = [&]() TFP_FC_LAMBDA_INLINE {
      if constexpr (R == 1) {
        if ((++steps & 1) == 0 && j < j_end) {
          columns(j, j + 1);
          ++j;
        }
      }
    };
    FreeRow<B, R>(p, p.free_bits + size_t(g * kFcGroup + l) * p.words, w, w + 1, fp, x, free_sums,
                  l, between);
  };
  WalkFreeWords(p, lanes, free_row, columns);
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 2; ++h)
      acc[r][h] = _mm256_add_ps(acc[r][h], _mm256_load_ps(free_sums[r] + 8 * h));

  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int h = 0; h < 2; ++h) {
    const int valid = lanes - 8 * h;
    if (valid <= 0) break;
    const __m256 bias = _mm256_loadu_ps(p.bias + size_t(g) * kFcGroup + 8 * h);
    const __m256i store = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), iota);
    for (int r = 0; r < R; ++r) {
      __m256 v = _mm256_add_ps(bias, acc[r][h]);
      v = _mm256_min_ps(vhi, _mm256_max_ps(vlo, v));  // a NaN stays NaN
      float* dst = y + size_t(r) * p.out + 8 * h;
      if (valid >= 8) {
        _mm256_storeu_ps(dst, v);
      } else {
        _mm256_maskstore_ps(dst, store, v);
      }
    }
  }
}

constexpr FcKernelSet kSet = {"avx2", Run, ScratchFloats, Prepare, 0};

}  // namespace
}  // namespace fc_avx2

const FcKernelSet* Avx2FcKernels() { return &fc_avx2::kSet; }

}  // namespace kernels
}  // namespace tfpconv
