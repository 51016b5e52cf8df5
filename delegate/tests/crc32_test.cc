#include "crc32.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace tfpconv {
namespace {

// Bit-by-bit CRC-32, the definition the table-driven version must match.
uint32_t BitwiseCrc32(const std::vector<uint8_t>& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (uint8_t byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? 0xEDB88320u : 0u);
  }
  return ~crc;
}

TEST(Crc32, KnownValues) {
  EXPECT_EQ(Crc32("123456789", 9), 0xCBF43926u);  // the standard check value
  EXPECT_EQ(Crc32("", 0), 0u);
  EXPECT_EQ(Crc32("a", 1), 0xE8B7BE43u);  // zlib.crc32(b"a")
}

TEST(Crc32, MatchesBitwiseDefinitionAtEveryLengthAndOffset) {
  std::mt19937 rng(7);
  std::vector<uint8_t> data(300);
  for (uint8_t& byte : data) byte = static_cast<uint8_t>(rng());
  for (size_t offset = 0; offset < 5; ++offset) {
    for (size_t length = 0; length + offset <= 67; ++length) {
      std::vector<uint8_t> slice(data.begin() + offset, data.begin() + offset + length);
      EXPECT_EQ(Crc32(data.data() + offset, length), BitwiseCrc32(slice)) << offset << " " << length;
    }
  }
}

TEST(Crc32, ContinuesLikeZlib) {
  const char text[] = "pattern pruned convolutions";
  const uint32_t whole = Crc32(text, sizeof(text));
  EXPECT_EQ(Crc32(text + 10, sizeof(text) - 10, Crc32(text, 10)), whole);
}

}  // namespace
}  // namespace tfpconv
