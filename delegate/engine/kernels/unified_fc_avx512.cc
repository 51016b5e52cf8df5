// AVX-512F unified FC kernel (compiled with -mavx512f -mavx2 -mfma only: no BW/DQ/VL).
//
// One zmm holds the 16 output rows of a group.
//   UNIFIED blocks, a column of 16 rows at a time, in the rows' compressed order: the block's
//     contribution is m * sum_i (+-x[i]). Per Run every 4 consecutive inputs get a table of their
//     16 signed sums (one zmm, entry p = sum_t (bit t of p ? -x : x)[4k + t]), so a row's signed
//     sum over a nibble of its sign word is one lane of a vpermps: a block of 16 is 4 vpermps for
//     all 16 rows, then one multiply by the (compressed) magnitudes and one vexpandps into the
//     rows' lanes. Per input nothing is done: the cost is per column.
//   FREE blocks of 16 (row-major free stream): row by row, walking the row's free bits with tzcnt,
//     one FMA of the block's 16 weights with its 16 inputs (64 free blocks in a row: a plain dot
//     product). The rows are interleaved with sixteenths of the unified columns, so the unified
//     work overlaps the streaming of the free weights, and the free stream is prefetched ahead.
//   FREE blocks of 4 and 8 (column-major free stream): with the unified rows of the column; the
//     column's F free rows' weights of input i are F consecutive floats, so one FMA per input (two
//     inputs per FMA when F <= 8) sums the free rows' products in compressed lanes, expanded into
//     the rows' lanes once per column.
// PRUNED blocks cost nothing, all-pruned columns are skipped. Up to 4 input rows share one decode
// of the weights.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "unified_fc_kernels.h"

// GCC 12 flags the undefined source operand inside its own AVX-512 intrinsics (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace tfpconv {
namespace kernels {
namespace fc_avx512 {
namespace {

// A table of 16 signed sums per 4 inputs.
constexpr int TableFloatsPerColumn(int block) { return block * 4; }

#include "unified_fc_driver.h"  // TableFloats, ScratchFloats, Run (uses Group below)

// Blocks of 4 and 8 use column-major free blocks, blocks of 16 row-major (see the top).
constexpr uint32_t kColumnMajorFree = (1u << 4) | (1u << 8);
template <int B>
constexpr bool ColumnMajorFree() {
  return (kColumnMajorFree >> B) & 1;
}

void Prepare(const FcArgs& a) {
  const FcPacked& p = *a.packed;
  // Lane p of sign[t]: -1 when bit t of p is set.
  __m512 sign[4];
  for (int t = 0; t < 4; ++t) {
    alignas(64) float v[16];
    for (int l = 0; l < 16; ++l) v[l] = (l >> t) & 1 ? -1.0f : 1.0f;
    sign[t] = _mm512_load_ps(v);
  }
  const int nibbles = p.nb * p.block / 4;
  const int whole = p.in / 4;
  for (int r = 0; r < a.rows; ++r) {
    const float* x = a.x + size_t(r) * p.in;
    float* t = a.scratch + TableFloats(p) * r;
    for (int k = 0; k < nibbles; ++k) {
      float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (k < whole) {
        std::memcpy(v, x + 4 * k, sizeof(v));
      } else {
        for (int i = 4 * k; i < std::min(p.in, 4 * k + 4); ++i) v[i - 4 * k] = x[i];
      }
      __m512 s = _mm512_mul_ps(_mm512_set1_ps(v[0]), sign[0]);
      s = _mm512_fmadd_ps(_mm512_set1_ps(v[1]), sign[1], s);
      s = _mm512_fmadd_ps(_mm512_set1_ps(v[2]), sign[2], s);
      s = _mm512_fmadd_ps(_mm512_set1_ps(v[3]), sign[3], s);
      _mm512_store_ps(t + 16 * k, s);
    }
  }
}

// The sign words of a column's unified rows in compressed order, one per 32-bit lane (lanes past
// the column's unified rows hold whatever follows). vpermps reads only the low 4 bits of a lane.
template <int B>
TFP_FC_INLINE __m512i LoadSigns(const uint8_t* sp) {
  if constexpr (B == 16) {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sp)));
  } else if constexpr (B == 8) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp)));
  } else {
    long long q;
    std::memcpy(&q, sp, sizeof(q));
    __m128i v = _mm_cvtsi64_si128(q);
    v = _mm_unpacklo_epi8(v, v);  // byte k twice: lanes 2k, 2k+1 get nibbles 2k, 2k+1
    return _mm512_srlv_epi32(_mm512_cvtepu8_epi32(v),
                             _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0));
  }
}

// A block of 16 floats (row-major FREE blocks are blocks of 16).
template <int B>
struct Block;
template <>
struct Block<16> {
  using V = __m512;
  static TFP_FC_INLINE V Zero() { return _mm512_setzero_ps(); }
  static TFP_FC_INLINE V Load(const float* p) { return _mm512_loadu_ps(p); }
  static TFP_FC_INLINE V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static TFP_FC_INLINE V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static TFP_FC_INLINE float Sum(V v) { return _mm512_reduce_add_ps(v); }
};
// Software prefetch of the free stream, bytes ahead: into L1, and further ahead into L2 (the
// hardware prefetchers alone leave several percent of the bandwidth unused, more in the DRAM-bound
// layers).
constexpr int kPrefetch = 2048;
constexpr int kPrefetchL2 = 8192;
TFP_FC_INLINE void PrefetchFree(const float* f) {
  _mm_prefetch(reinterpret_cast<const char*>(f) + kPrefetch, _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(f) + kPrefetchL2, _MM_HINT_T1);
}
// The magnitude and sign streams, into L2, once per unified column: without it their loads
// stalled the column work that overlaps the free stream (fc1 of VGG-16's head, unified 0.5 /
// pruned 0.25, blocks of 16: 4.0 -> 3.5 ms on an AMD EPYC Zen 5; 2048 ahead for the signs, which
// take half the bytes of the magnitudes or less).
constexpr int kPrefetchMags = 4096;
TFP_FC_INLINE void PrefetchUnified(const float* mags, const uint8_t* signs) {
  _mm_prefetch(reinterpret_cast<const char*>(mags) + kPrefetchMags, _MM_HINT_T1);
  _mm_prefetch(reinterpret_cast<const char*>(signs) + kPrefetchMags / 2, _MM_HINT_T1);
}

// The free blocks of one output row in the words [w_begin, w_end) of its free bits (bit j of
// `bits` = block j is FREE), dotted with R input rows and added to sums[r][lane]. Walks the set bits
// with tzcnt, K independent accumulators per input row.
template <int B, int R>
TFP_FC_INLINE void FreeRow(const FcPacked& p, const uint64_t* bits, int w_begin, int w_end,
                           const float*& fp, const float* x,
                           float (&sums)[R][kFcGroup], int lane) {
  using BV = Block<B>;
  using V = typename BV::V;
  constexpr int K = R == 1 ? 4 : 2;
  const size_t in = size_t(p.in);
  V acc[R][K];
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < K; ++k) acc[r][k] = BV::Zero();
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
          const V wv = BV::Load(f + (j + k) * B);
          if ((k * B) % 16 == 0) PrefetchFree(f + (j + k) * B);  // once per cache line
          for (int r = 0; r < R; ++r)
            acc[r][k] = BV::Fma(wv, BV::Load(xw + r * in + (j + k) * B), acc[r][k]);
        });
      }
      f += 64 * B;
      continue;
    }
    while (m != 0) {
      bool done = false;
      Unroll<K>([&](auto kc) TFP_FC_LAMBDA_INLINE {
        constexpr int k = decltype(kc)::value;
        if (done) return;
        const size_t j = size_t(__builtin_ctzll(m));
        m &= m - 1;
        const V wv = BV::Load(f);
        PrefetchFree(f);
        f += B;
        for (int r = 0; r < R; ++r) acc[r][k] = BV::Fma(wv, BV::Load(xw + r * in + j * B), acc[r][k]);
        done = m == 0;
      });
    }
  }
  for (int r = 0; r < R; ++r) {
    V v = acc[r][0];
    for (int k = 1; k < K; ++k) v = BV::Add(v, acc[r][k]);
    sums[r][lane] += BV::Sum(v);
  }
  AddFreeTail<B, R>(p, bits, tail, x, in, f, sums, lane);
  fp = f;
}

// Column-major FREE blocks of one column (blocks of 4 and 8): the column's F free rows' weights of
// input i are F consecutive floats, so one FMA per input (two inputs per FMA when F <= 8) sums the
// free rows' products in lanes 0..F-1 (compressed order). Adds them, expanded to the rows' lanes,
// into w[r].
template <int B, int R>
TFP_FC_INLINE void FreeColumn(const float*& fp, uint32_t kf, const float* xj, size_t in, int bi,
                              __m512 (&w)[R]) {
  const int nf = __builtin_popcount(kf);
  __m512 f[R][2];
  if (bi == B && nf <= 8) {
    // Lanes [0, nf) hold input 2s's weights, [nf, 2nf) input 2s+1's (lanes past 2nf: whatever
    // follows, never used); the two halves are folded at the end.
    const __mmask16 first = __mmask16((1u << nf) - 1u);
    Unroll<B / 2>([&](auto sc) TFP_FC_LAMBDA_INLINE {
      constexpr int s = decltype(sc)::value;
      const __m512 v = _mm512_loadu_ps(fp + 2 * s * nf);
      for (int r = 0; r < R; ++r) {
        const __m512 xv = _mm512_mask_blend_ps(first, _mm512_set1_ps(xj[r * in + 2 * s + 1]),
                                               _mm512_set1_ps(xj[r * in + 2 * s]));
        if constexpr (s < 2) {
          f[r][s] = _mm512_mul_ps(v, xv);
        } else {
          f[r][s % 2] = _mm512_fmadd_ps(v, xv, f[r][s % 2]);
        }
      }
    });
    const __m512i upper = _mm512_add_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(nf));
    for (int r = 0; r < R; ++r) {
      f[r][0] = _mm512_add_ps(f[r][0], f[r][1]);
      f[r][1] = _mm512_permutexvar_ps(upper, f[r][0]);
    }
  } else if (bi == B) {
    Unroll<B>([&](auto ic) TFP_FC_LAMBDA_INLINE {
      constexpr int i = decltype(ic)::value;
      const __m512 v = _mm512_loadu_ps(fp + i * nf);
      for (int r = 0; r < R; ++r) {
        const __m512 xv = _mm512_set1_ps(xj[r * in + i]);
        if constexpr (i < 2) {
          f[r][i] = _mm512_mul_ps(v, xv);
        } else {
          f[r][i % 2] = _mm512_fmadd_ps(v, xv, f[r][i % 2]);
        }
      }
    });
  } else {  // the shorter last column
    for (int r = 0; r < R; ++r) f[r][0] = f[r][1] = _mm512_setzero_ps();
    for (int i = 0; i < bi; ++i) {
      const __m512 v = _mm512_loadu_ps(fp + i * nf);
      for (int r = 0; r < R; ++r)
        f[r][0] = _mm512_fmadd_ps(v, _mm512_set1_ps(xj[r * in + i]), f[r][0]);
    }
  }
  fp += bi * nf;
  for (int r = 0; r < R; ++r)
    w[r] = _mm512_mask_expand_ps(w[r], __mmask16(kf), _mm512_add_ps(f[r][0], f[r][1]));
}

template <int B, int R>
void Group(const FcPacked& p, int g, const float* x, const float* tables, float* y, float lo,
           float hi) {
  constexpr int Q = B / 4;  // nibbles per block
  const size_t in = size_t(p.in);
  const size_t tstride = TableFloats(p);
  const FcGroupOffsets& off = p.group_off[g];
  const int lanes = std::min(kFcGroup, p.out - g * kFcGroup);
  constexpr bool column_major = ColumnMajorFree<B>();
  const float* fp = p.free + off.free;

  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  // UNIFIED blocks (and column-major FREE blocks), one column of 16 rows at a time.
  const uint16_t* unified = p.unified + size_t(g) * p.nb;
  const uint16_t* free_cols = column_major ? p.free_cols + size_t(g) * p.nb : nullptr;
  const float* mp = p.mags + off.mags;
  const uint8_t* sp = p.signs + off.signs;
  const auto columns = [&](int j_begin, int j_end) TFP_FC_LAMBDA_INLINE {
    for (int j = j_begin; j < j_end; ++j) {
      const uint32_t ku = unified[j];
      uint32_t kf = 0;
      if constexpr (column_major) kf = free_cols[j];
      if ((ku | kf) == 0) continue;
      __m512 w[R];
      if (ku != 0) {
        const int nu = __builtin_popcount(ku);
        const __m512i s = LoadSigns<B>(sp);
        const __m512 m = _mm512_loadu_ps(mp);
        PrefetchUnified(mp, sp);
        __m512i sq[Q];
        sq[0] = s;
        for (int q = 1; q < Q; ++q) sq[q] = _mm512_srli_epi32(s, 4 * q);
        const float* t = tables + size_t(j) * B * 4;
        for (int r = 0; r < R; ++r) {
          __m512 sum = _mm512_permutexvar_ps(sq[0], _mm512_load_ps(t + r * tstride));
          for (int q = 1; q < Q; ++q)
            sum = _mm512_add_ps(
                sum, _mm512_permutexvar_ps(sq[q], _mm512_load_ps(t + r * tstride + 16 * q)));
          w[r] = _mm512_maskz_expand_ps(__mmask16(ku), _mm512_mul_ps(m, sum));
        }
        mp += nu;
        sp += FcSignBytes(nu, B);
      } else {
        for (int r = 0; r < R; ++r) w[r] = _mm512_setzero_ps();
      }
      if constexpr (column_major) {
        if (kf != 0) {
          PrefetchFree(fp);
          if (B >= 8) PrefetchFree(fp + 16);
          FreeColumn<B, R>(fp, kf, x + size_t(j) * B, in, std::min(B, p.in - j * B), w);
        }
      }
      for (int r = 0; r < R; ++r) acc[r] = _mm512_add_ps(acc[r], w[r]);
    }
  };
  if constexpr (!column_major) {
    alignas(64) float free_sums[R][kFcGroup] = {};
    const auto free_row = [&](int w, int l, int&, int) TFP_FC_LAMBDA_INLINE {
      FreeRow<B, R>(p, p.free_bits + size_t(g * kFcGroup + l) * p.words, w, w + 1, fp, x,
                    free_sums, l);
    };
    WalkFreeWords(p, lanes, free_row, columns);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_add_ps(acc[r], _mm512_load_ps(free_sums[r]));
  } else {
    columns(0, p.nb);
  }

  const __mmask16 store = __mmask16((1u << lanes) - 1u);
  const __m512 bias = _mm512_loadu_ps(p.bias + size_t(g) * kFcGroup);
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (int r = 0; r < R; ++r) {
    __m512 v = _mm512_add_ps(bias, acc[r]);
    // maxps / minps return the second operand when either is NaN: a NaN stays NaN.
    v = _mm512_min_ps(vhi, _mm512_max_ps(vlo, v));
    _mm512_mask_storeu_ps(y + size_t(r) * p.out, store, v);
  }
}

constexpr FcKernelSet kSet = {"avx512", Run, ScratchFloats, Prepare, kColumnMajorFree};

}  // namespace
}  // namespace fc_avx512

const FcKernelSet* Avx512FcKernels() { return &fc_avx512::kSet; }

}  // namespace kernels
}  // namespace tfpconv
