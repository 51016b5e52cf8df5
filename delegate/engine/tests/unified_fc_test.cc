// The unified FC kernels of every instruction set this CPU runs (and scalar), against ReferenceFc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/test_util.h"
#include "unified_fc.h"

namespace tfpconv {
namespace {

using testing::MaxRelError;

constexpr double kTolerance = 1e-4;

struct Fractions {
  double unify, prune;  // the rest is free
};

struct RandomFc {
  FcShape shape;
  std::vector<float> weights;  // [out][in]
  std::vector<uint8_t> states;  // [out][blocks]
  std::vector<float> bias;      // empty: none
  std::vector<float> input;     // [rows][in]
};

RandomFc MakeRandomFc(const FcShape& shape, Fractions f, bool bias, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f), mag(0.0f, 1.0f), unit(0.0f, 1.0f);
  RandomFc l;
  l.shape = shape;
  const int nb = FcBlocksPerRow(shape);
  l.weights.assign(size_t(shape.out) * shape.in, 0.0f);
  l.states.assign(size_t(shape.out) * nb, kBlockFree);
  for (int o = 0; o < shape.out; ++o) {
    for (int j = 0; j < nb; ++j) {
      const double u = unit(rng);
      const uint8_t state = u < f.prune ? kBlockPruned : u < f.prune + f.unify ? kBlockUnified : kBlockFree;
      l.states[size_t(o) * nb + j] = state;
      // Now and then a unified magnitude of zero (signed zeros must work too).
      const float m = unit(rng) < 0.02f ? 0.0f : mag(rng);
      for (int i = j * shape.block; i < std::min(shape.in, (j + 1) * shape.block); ++i) {
        float& w = l.weights[size_t(o) * shape.in + i];
        if (state == kBlockFree) w = value(rng);
        if (state == kBlockUnified) w = unit(rng) < 0.5f ? -m : m;
      }
    }
  }
  if (bias) {
    l.bias.resize(shape.out);
    for (float& b : l.bias) b = value(rng);
  }
  l.input.resize(size_t(shape.rows) * shape.in);
  for (float& x : l.input) x = value(rng);
  return l;
}

std::vector<float> Reference(const RandomFc& l) {
  std::vector<float> out(size_t(l.shape.rows) * l.shape.out);
  ReferenceFc(l.shape, l.weights.data(), l.bias.empty() ? nullptr : l.bias.data(), l.input.data(),
              out.data());
  return out;
}

std::unique_ptr<UnifiedFc> CreateFc(const RandomFc& l, Isa isa) {
  std::string error;
  auto fc = UnifiedFc::Create(l.shape, l.weights.data(), l.states.data(),
                              l.bias.empty() ? nullptr : l.bias.data(), isa, &error);
  EXPECT_NE(fc, nullptr) << error;
  return fc;
}

std::vector<float> RunFc(const UnifiedFc& fc, const RandomFc& l, ThreadPool* pool) {
  std::vector<float> out(size_t(l.shape.rows) * l.shape.out, -12345.0f);
  fc.Run(l.input.data(), out.data(), pool);
  return out;
}

std::string Describe(const RandomFc& l, Fractions f) {
  const FcShape& s = l.shape;
  return "rows " + std::to_string(s.rows) + " in " + std::to_string(s.in) + " out " +
         std::to_string(s.out) + " block " + std::to_string(s.block) + " unify " +
         std::to_string(f.unify) + " prune " + std::to_string(f.prune) +
         (l.bias.empty() ? " no bias" : " bias") + " clamp [" + std::to_string(s.act_min) + ", " +
         std::to_string(s.act_max) + "]";
}

const Fractions kFractions[] = {
    {0.0, 0.0},    // all free (dense)
    {1.0, 0.0},    // all unified
    {0.0, 1.0},    // all pruned
    {0.5, 0.25},   // the benchmark's mix
    {0.2, 0.6},    // mostly pruned
    {0.7, 0.1},
};

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon})
    if (IsaSupported(isa)) out.push_back(isa);
  return out;
}

class UnifiedFcIsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  // Creates, runs (1 thread, then 2) and compares with the reference; returns the result.
  void Check(const RandomFc& l, Fractions f, ThreadPool* pool = nullptr) {
    auto fc = CreateFc(l, GetParam());
    ASSERT_NE(fc, nullptr) << Describe(l, f);
    EXPECT_EQ(fc->isa(), GetParam());
    const std::vector<float> want = Reference(l);
    const std::vector<float> got = RunFc(*fc, l, pool);
    EXPECT_LE(MaxRelError(got, want), kTolerance) << Describe(l, f);
    ++checked_;
  }
  int checked_ = 0;
};

// Every block size, fraction mix, short and ragged rows (in < block, in % block != 0), 1..5 input
// rows, bias or not, output counts around the 16-row groups.
TEST_P(UnifiedFcIsaTest, RandomStates) {
  uint32_t seed = 1;
  for (int block : {4, 8, 16}) {
    for (Fractions f : kFractions) {
      for (int in : {1, block - 1, block, block + 3, 3 * block, 5 * block + 1, 67}) {
        for (int out : {1, 7, 16, 33}) {
          FcShape s;
          s.block = block;
          s.in = in;
          s.out = out;
          s.rows = 1 + int(seed % 5);
          const RandomFc l = MakeRandomFc(s, f, seed % 3 != 0, seed);
          ++seed;
          Check(l, f);
        }
      }
    }
  }
  EXPECT_GT(checked_, 0);
}

TEST_P(UnifiedFcIsaTest, EveryRowCount) {
  for (int block : {4, 8, 16}) {
    for (int rows = 1; rows <= 9; ++rows) {
      FcShape s;
      s.block = block;
      s.in = 5 * block + 3;
      s.out = 21;
      s.rows = rows;
      Check(MakeRandomFc(s, {0.5, 0.25}, true, 100 + rows), {0.5, 0.25});
    }
  }
}

// Rows with more than 64 blocks (whole words of free bits, the all-FREE fast paths; the free
// stream goes a word at a time, the shorter last block in the second or third word) and more input
// rows than one pass of the weights takes (kFcMaxRowsPerRun = 16).
TEST_P(UnifiedFcIsaTest, LongRowsAndManyInputRows) {
  uint32_t seed = 500;
  for (int block : {4, 8, 16}) {
    for (int in : {64 * block + 2 * block + 3, 128 * block + block / 2 + 1}) {
      for (Fractions f : {Fractions{0.0, 0.0}, Fractions{0.1, 0.05}, Fractions{0.5, 0.25}}) {
        for (int rows : {1, 4, 17}) {
          FcShape s;
          s.block = block;
          s.in = in;
          s.out = 20;
          s.rows = rows;
          Check(MakeRandomFc(s, f, true, seed++), f);
        }
      }
    }
  }
}

TEST_P(UnifiedFcIsaTest, ReluClamp) {
  for (int block : {4, 8, 16}) {
    for (Fractions f : {Fractions{0.5, 0.25}, Fractions{0.0, 0.0}, Fractions{1.0, 0.0}}) {
      FcShape s;
      s.block = block;
      s.in = 70;
      s.out = 37;
      s.rows = 3;
      s.act_min = 0.0f;
      RandomFc l = MakeRandomFc(s, f, true, 7 + block);
      Check(l, f);
      l.shape.act_max = 1.0f;  // relu1-style
      Check(l, f);
    }
  }
}

TEST_P(UnifiedFcIsaTest, LargerLayerOneAndTwoThreads) {
  ThreadPool one(1), two(2);
  for (int block : {4, 8, 16}) {
    for (int rows : {1, 3, 5}) {
      FcShape s;
      s.block = block;
      s.in = 515;
      s.out = 261;
      s.rows = rows;
      const RandomFc l = MakeRandomFc(s, {0.5, 0.25}, true, 31 * block + rows);
      auto fc = CreateFc(l, GetParam());
      ASSERT_NE(fc, nullptr);
      const std::vector<float> want = Reference(l);
      const std::vector<float> single = RunFc(*fc, l, &one);
      const std::vector<float> none = RunFc(*fc, l, nullptr);
      const std::vector<float> dual = RunFc(*fc, l, &two);
      EXPECT_LE(MaxRelError(single, want), kTolerance) << Describe(l, {0.5, 0.25});
      // Threads split output rows only: every output is computed the same way.
      EXPECT_EQ(0, std::memcmp(single.data(), dual.data(), single.size() * sizeof(float)));
      EXPECT_EQ(0, std::memcmp(single.data(), none.data(), single.size() * sizeof(float)));
    }
  }
}

TEST_P(UnifiedFcIsaTest, RunTwiceSameResult) {
  FcShape s;
  s.block = 8;
  s.in = 100;
  s.out = 50;
  s.rows = 2;
  const RandomFc l = MakeRandomFc(s, {0.4, 0.3}, true, 5);
  auto fc = CreateFc(l, GetParam());
  ASSERT_NE(fc, nullptr);
  const auto a = RunFc(*fc, l, nullptr), b = RunFc(*fc, l, nullptr);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

std::string IsaParamName(const ::testing::TestParamInfo<Isa>& info) {
  return IsaName(info.param);
}

INSTANTIATE_TEST_SUITE_P(UnifiedFc, UnifiedFcIsaTest, ::testing::ValuesIn(SupportedIsas()),
                         IsaParamName);

// Every instruction set computes the same layer to within the tolerance of each other.
TEST(UnifiedFc, IsasAgree) {
  FcShape s;
  s.block = 16;
  s.in = 300;
  s.out = 70;
  s.rows = 2;
  const RandomFc l = MakeRandomFc(s, {0.5, 0.25}, true, 77);
  std::vector<float> scalar;
  for (Isa isa : SupportedIsas()) {
    auto fc = CreateFc(l, isa);
    ASSERT_NE(fc, nullptr);
    const auto got = RunFc(*fc, l, nullptr);
    if (scalar.empty()) scalar = got;
    EXPECT_LE(MaxRelError(got, scalar), kTolerance) << IsaName(isa);
  }
}

// Bytes: a FREE block its floats, a UNIFIED one a float + block/8 bytes, a PRUNED one nothing, plus
// 2 bits a block and small per-group and bias overheads.
TEST(UnifiedFc, PackedBytes) {
  for (int block : {4, 8, 16}) {
    FcShape s;
    s.block = block;
    s.in = 64 * block;
    s.out = 256;
    const RandomFc l = MakeRandomFc(s, {0.5, 0.25}, true, 3);
    size_t free_blocks = 0, unified = 0;
    for (uint8_t st : l.states) {
      free_blocks += st == kBlockFree;
      unified += st == kBlockUnified;
    }
    auto fc = CreateFc(l, Isa::kScalar);
    ASSERT_NE(fc, nullptr);
    const double payload = free_blocks * 4.0 * block + unified * (4.0 + block / 8.0) +
                           l.states.size() / 4.0 + s.out * 4.0;
    EXPECT_GE(double(fc->packed_weight_bytes()), payload) << block;
    // Overheads: sign nibbles rounded up per group column, group offsets, stream padding.
    EXPECT_LE(double(fc->packed_weight_bytes()), payload * 1.01 + 1024) << block;
    const double dense = double(s.in) * s.out * 4;
    EXPECT_LT(double(fc->packed_weight_bytes()), dense / (block == 16 ? 3.1 : block == 8 ? 2.8 : 2.3))
        << block;
  }
  // All pruned: only the bookkeeping and the bias stay.
  FcShape s;
  s.block = 16;
  s.in = 1024;
  s.out = 64;
  const RandomFc l = MakeRandomFc(s, {0.0, 1.0}, true, 4);
  auto fc = CreateFc(l, Isa::kScalar);
  ASSERT_NE(fc, nullptr);
  EXPECT_LT(fc->packed_weight_bytes(), size_t(64 * 64 / 4 + 64 * 4 + 1024));
}

std::string CreateError(const RandomFc& l, const FcShape& shape, const uint8_t* states) {
  std::string error;
  auto fc = UnifiedFc::Create(shape, l.weights.data(), states, nullptr, Isa::kScalar, &error);
  EXPECT_EQ(fc, nullptr);
  EXPECT_FALSE(error.empty());
  return error;
}

TEST(UnifiedFc, RejectsStatesThatDoNotFitTheWeights) {
  FcShape s;
  s.block = 8;
  s.in = 40;
  s.out = 4;
  RandomFc l = MakeRandomFc(s, {0.0, 0.0}, false, 9);
  const int nb = FcBlocksPerRow(s);
  {  // UNIFIED over free weights
    std::vector<uint8_t> st(l.states);
    st[1 * nb + 2] = kBlockUnified;
    const std::string e = CreateError(l, s, st.data());
    EXPECT_NE(e.find("row 1, block 2"), std::string::npos) << e;
    EXPECT_NE(e.find("UNIFIED"), std::string::npos) << e;
  }
  {  // PRUNED over a non-zero
    std::vector<uint8_t> st(l.states);
    RandomFc m = l;
    for (int i = 24; i < 32; ++i) m.weights[3 * s.in + i] = 0.0f;
    m.weights[3 * s.in + 29] = 0.5f;
    st[3 * nb + 3] = kBlockPruned;
    const std::string e = CreateError(m, s, st.data());
    EXPECT_NE(e.find("row 3, block 3"), std::string::npos) << e;
    EXPECT_NE(e.find("[3][29] = 0.5"), std::string::npos) << e;
  }
  {  // UNIFIED where one magnitude differs in its last bit
    RandomFc m = l;
    std::vector<uint8_t> st(l.states);
    for (int i = 8; i < 16; ++i) m.weights[i] = (i % 2 ? -1.0f : 1.0f) * 0.75f;
    m.weights[13] = -std::nextafter(0.75f, 1.0f);
    st[1] = kBlockUnified;
    const std::string e = CreateError(m, s, st.data());
    EXPECT_NE(e.find("row 0, block 1"), std::string::npos) << e;
    m.weights[13] = -0.75f;  // fixed: accepted
    std::string error;
    EXPECT_NE(UnifiedFc::Create(s, m.weights.data(), st.data(), nullptr, Isa::kScalar, &error),
              nullptr)
        << error;
  }
  {  // an unknown state
    std::vector<uint8_t> st(l.states);
    st[0] = 3;
    const std::string e = CreateError(l, s, st.data());
    EXPECT_NE(e.find("unknown state 3"), std::string::npos) << e;
  }
  // Bad shapes.
  for (int block : {0, 2, 5, 32}) {
    FcShape b = s;
    b.block = block;
    const std::string e = CreateError(l, b, l.states.data());
    EXPECT_NE(e.find("block size"), std::string::npos) << e;
  }
  {
    FcShape b = s;
    b.in = 0;
    CreateError(l, b, l.states.data());
    b = s;
    b.rows = 0;
    CreateError(l, b, l.states.data());
    b = s;
    b.act_min = 1.0f;
    b.act_max = 0.0f;
    CreateError(l, b, l.states.data());
  }
}

TEST(UnifiedFc, UnsupportedIsaIsAnError) {
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (IsaSupported(isa)) continue;
    FcShape s;
    s.in = 8;
    s.out = 2;
    const RandomFc l = MakeRandomFc(s, {0.0, 0.0}, false, 1);
    std::string error;
    EXPECT_EQ(UnifiedFc::Create(s, l.weights.data(), l.states.data(), nullptr, isa, &error),
              nullptr);
    EXPECT_NE(error.find("not supported"), std::string::npos) << error;
  }
}

TEST(UnifiedFc, ReferenceMatchesHandComputation) {
  FcShape s;
  s.in = 3;
  s.out = 2;
  s.rows = 2;
  s.block = 4;
  const float w[] = {1, 2, 3, -1, 0, 0.5f};
  const float b[] = {0.25f, -10};
  const float x[] = {1, 1, 1, 2, -2, 4};
  float y[4];
  ReferenceFc(s, w, b, x, y);
  EXPECT_FLOAT_EQ(y[0], 6.25f);
  EXPECT_FLOAT_EQ(y[1], -10.5f);
  EXPECT_FLOAT_EQ(y[2], 10.25f);
  EXPECT_FLOAT_EQ(y[3], -10.0f);
  s.act_min = 0.0f;
  ReferenceFc(s, w, b, x, y);
  EXPECT_FLOAT_EQ(y[1], 0.0f);
}

}  // namespace
}  // namespace tfpconv
