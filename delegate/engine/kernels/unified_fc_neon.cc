// NEON unified FC kernel for AArch64 (4 floats per vector, 32 registers). Same plan as the x86 units
// (row-major free blocks):
//   FREE blocks row by row: walk the row's free bits, FMA each block (1, 2 or 4 vectors) with the
//     block's inputs;
//   UNIFIED blocks a column of 16 rows at a time, as four quarters of 4 rows, in the rows'
//     compressed order: per Run every 4 consecutive inputs get a table of their 16 signed sums
//     (64 bytes), and a row's sum over a nibble of its sign word is one vqtbl4q_u8 lookup (byte
//     indices 4n .. 4n+3); times the magnitudes, then shuffled into the rows' lanes (vqtbl1q_u8,
//     16-entry tables; index 0xff gives zero).
// Up to 4 input rows share one decode of the weights.
#include <arm_neon.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "unified_fc_kernels.h"

namespace tfpconv {
namespace kernels {
namespace fc_neon {
namespace {

// A table of 16 signed sums per 4 inputs.
constexpr int TableFloatsPerColumn(int block) { return block * 4; }

#include "unified_fc_driver.h"  // TableFloats, ScratchFloats, Run (uses Group below)

// For a 4-bit lane mask m, 16 byte indices: lane l of a set bit takes float number rank(l) of the
// source; other lanes get 0xff (zero).
struct ShuffleTable {
  uint8_t idx[16][16];
};
constexpr ShuffleTable BuildShuffleTable() {
  ShuffleTable t{};
  for (int m = 0; m < 16; ++m) {
    int rank = 0;
    for (int l = 0; l < 4; ++l) {
      for (int b = 0; b < 4; ++b) t.idx[m][4 * l + b] = ((m >> l) & 1) ? uint8_t(4 * rank + b) : 0xff;
      rank += (m >> l) & 1;
    }
  }
  return t;
}
constexpr ShuffleTable kShuffle = BuildShuffleTable();

void Prepare(const FcArgs& a) {
  const FcPacked& p = *a.packed;
  float32x4_t sign[4][4];  // lane e of sign[t][h]: -1 when bit t of entry 4h + e is set
  for (int t = 0; t < 4; ++t) {
    for (int h = 0; h < 4; ++h) {
      float v[4];
      for (int e = 0; e < 4; ++e) v[e] = ((4 * h + e) >> t) & 1 ? -1.0f : 1.0f;
      sign[t][h] = vld1q_f32(v);
    }
  }
  const int nibbles = p.nb * p.block / 4;
  for (int r = 0; r < a.rows; ++r) {
    const float* x = a.x + size_t(r) * p.in;
    float* t = a.scratch + TableFloats(p) * r;
    for (int k = 0; k < nibbles; ++k) {
      float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int i = 4 * k; i < std::min(p.in, 4 * k + 4); ++i) v[i - 4 * k] = x[i];
      for (int h = 0; h < 4; ++h) {
        float32x4_t s = vmulq_n_f32(sign[0][h], v[0]);
        for (int q = 1; q < 4; ++q) s = vfmaq_n_f32(s, sign[q][h], v[q]);
        vst1q_f32(t + 16 * k + 4 * h, s);
      }
    }
  }
}

// Sign words of the unified rows of rank start .. start+3 (compressed order), one per lane.
template <int B>
TFP_FC_INLINE uint32x4_t LoadSigns(const uint8_t* sp, int start) {
  if constexpr (B == 16) {
    uint16_t v[4];
    std::memcpy(v, sp + 2 * start, sizeof(v));
    return vmovl_u16(vld1_u16(v));
  } else if constexpr (B == 8) {
    return vmovl_u16(vget_low_u16(vmovl_u8(vld1_u8(sp + start))));
  } else {
    uint64_t q;
    std::memcpy(&q, sp + start / 2, sizeof(q));
    q >>= 4 * (start & 1);
    const int32_t shifts[4] = {0, -4, -8, -12};
    return vshlq_u32(vdupq_n_u32(uint32_t(q)), vld1q_s32(shifts));
  }
}

// The free blocks of one output row in the words [w_begin, w_end) of its free bits (bit j of
// `bits`), dotted with R input rows and added to sums[r][lane].
// Kept out of line: inlined into Group's word loop, GCC 12.2 for aarch64 at -O2 and -O3 gave
// wrong sums for several input rows (the unified FC tests under qemu), though the same code is
// right at -O0, with UBSan, and from clang 14 at -O3 inlined.
template <int B, int R>
__attribute__((noinline)) void FreeRow(const FcPacked& p, const uint64_t* bits, int w_begin,
                                       int w_end, const float*& fp, const float* x,
                                       float (&sums)[R][kFcGroup], int lane) {
  constexpr int N = B / 4;  // vectors per block
  const size_t in = size_t(p.in);
  float32x4_t acc[R][N];
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < N; ++n) acc[r][n] = vdupq_n_f32(0.0f);
  const int tail = FreeTailIn<B>(p, w_begin, w_end);  // the shorter last column, done apart
  const float* f = fp;
  for (int w = w_begin; w < w_end; ++w) {
    uint64_t m = bits[w];
    if (tail >= 0 && w == tail / 64) m &= ~(uint64_t(1) << (tail % 64));
    const float* xw = x + size_t(w) * 64 * B;
    while (m != 0) {
      const size_t j = size_t(__builtin_ctzll(m));
      m &= m - 1;
      for (int n = 0; n < N; ++n) {
        const float32x4_t wv = vld1q_f32(f + 4 * n);
        for (int r = 0; r < R; ++r)
          acc[r][n] = vfmaq_f32(acc[r][n], wv, vld1q_f32(xw + r * in + j * B + 4 * n));
      }
      f += B;
    }
  }
  for (int r = 0; r < R; ++r) {
    float32x4_t v = acc[r][0];
    for (int n = 1; n < N; ++n) v = vaddq_f32(v, acc[r][n]);
    sums[r][lane] += vaddvq_f32(v);
  }
  AddFreeTail<B, R>(p, bits, tail, x, in, f, sums, lane);
  fp = f;
}

template <int B, int R>
void Group(const FcPacked& p, int g, const float* x, const float* tables, float* y, float lo,
           float hi) {
  constexpr int Q = B / 4;
  const size_t tstride = TableFloats(p);
  const FcGroupOffsets& off = p.group_off[g];
  const int lanes = std::min(kFcGroup, p.out - g * kFcGroup);

  // FREE blocks a word of 64 columns at a time (the free stream's order), one row at a time.
  float free_sums[R][kFcGroup] = {};
  const float* fp = p.free + off.free;
  for (int w = 0; w < p.words; ++w)
    for (int l = 0; l < lanes; ++l)
      FreeRow<B, R>(p, p.free_bits + size_t(g * kFcGroup + l) * p.words, w, w + 1, fp, x,
                    free_sums, l);

  float32x4_t acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 4; ++h) acc[r][h] = vld1q_f32(free_sums[r] + 4 * h);
  const uint16_t* unified = p.unified + size_t(g) * p.nb;
  const float* mp = p.mags + off.mags;
  const uint8_t* sp = p.signs + off.signs;
  const uint32x4_t byte_offsets = vdupq_n_u32(0x03020100u);
  for (int j = 0; j < p.nb; ++j) {
    const uint32_t ku = unified[j];
    if (ku == 0) continue;
    const float* t = tables + size_t(j) * B * 4;
    int start = 0;
    for (int h = 0; h < 4; ++h) {
      const uint32_t k4 = (ku >> (4 * h)) & 0xfu;
      if (k4 == 0) continue;
      const uint32x4_t s = LoadSigns<B>(sp, start);
      const float32x4_t m = vld1q_f32(mp + start);
      const uint8x16_t place = vld1q_u8(kShuffle.idx[k4]);
      for (int r = 0; r < R; ++r) {
        float32x4_t sum = vdupq_n_f32(0.0f);
        for (int q = 0; q < Q; ++q) {
          const float* tq = t + r * tstride + 16 * q;
          uint8x16x4_t tab;
          tab.val[0] = vld1q_u8(reinterpret_cast<const uint8_t*>(tq));
          tab.val[1] = vld1q_u8(reinterpret_cast<const uint8_t*>(tq + 4));
          tab.val[2] = vld1q_u8(reinterpret_cast<const uint8_t*>(tq + 8));
          tab.val[3] = vld1q_u8(reinterpret_cast<const uint8_t*>(tq + 12));
          const uint32x4_t n = vandq_u32(vshlq_u32(s, vdupq_n_s32(-4 * q)), vdupq_n_u32(0xf));
          const uint8x16_t idx = vreinterpretq_u8_u32(vmlaq_n_u32(byte_offsets, n, 0x04040404u));
          sum = vaddq_f32(sum, vreinterpretq_f32_u8(vqtbl4q_u8(tab, idx)));
        }
        const uint8x16_t u = vreinterpretq_u8_f32(vmulq_f32(m, sum));
        acc[r][h] = vaddq_f32(acc[r][h], vreinterpretq_f32_u8(vqtbl1q_u8(u, place)));
      }
      start += __builtin_popcount(k4);
    }
    mp += start;
    sp += FcSignBytes(start, B);
  }

  const float32x4_t vlo = vdupq_n_f32(lo), vhi = vdupq_n_f32(hi);
  for (int h = 0; h < 4; ++h) {
    const int valid = lanes - 4 * h;
    if (valid <= 0) break;
    const float32x4_t bias = vld1q_f32(p.bias + size_t(g) * kFcGroup + 4 * h);
    for (int r = 0; r < R; ++r) {
      // FMAX / FMIN return NaN when either operand is NaN.
      const float32x4_t v = vminq_f32(vmaxq_f32(vaddq_f32(acc[r][h], bias), vlo), vhi);
      float* dst = y + size_t(r) * p.out + 4 * h;
      if (valid >= 4) {
        vst1q_f32(dst, v);
      } else {
        float tmp[4];
        vst1q_f32(tmp, v);
        std::memcpy(dst, tmp, sizeof(float) * size_t(valid));
      }
    }
  }
}

constexpr FcKernelSet kSet = {"neon", Run, ScratchFloats, Prepare, 0};

}  // namespace
}  // namespace fc_neon

const FcKernelSet* NeonFcKernels() { return &fc_neon::kSet; }

}  // namespace kernels
}  // namespace tfpconv
