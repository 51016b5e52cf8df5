#include "crc32.h"

#include <array>

namespace tfpconv {
namespace {

constexpr uint32_t kPolynomial = 0xEDB88320u;

// kTables[0] is the classic byte-at-a-time table; kTables[k][b] advances the CRC of byte b by k
// further zero bytes, so four bytes are folded per step ("slicing by 4").
struct Crc32Tables {
  std::array<std::array<uint32_t, 256>, 4> t{};
  constexpr Crc32Tables() {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t crc = b;
      for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kPolynomial : 0u);
      t[0][b] = crc;
    }
    for (uint32_t b = 0; b < 256; ++b) {
      for (int k = 1; k < 4; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
    }
  }
};

constexpr Crc32Tables kTables;

}  // namespace

uint32_t Crc32(const void* data, size_t size, uint32_t crc) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  crc = ~crc;
  while (size >= 4) {
    crc ^= static_cast<uint32_t>(bytes[0]) | (static_cast<uint32_t>(bytes[1]) << 8) |
           (static_cast<uint32_t>(bytes[2]) << 16) | (static_cast<uint32_t>(bytes[3]) << 24);
    crc = kTables.t[3][crc & 0xFFu] ^ kTables.t[2][(crc >> 8) & 0xFFu] ^
          kTables.t[1][(crc >> 16) & 0xFFu] ^ kTables.t[0][crc >> 24];
    bytes += 4;
    size -= 4;
  }
  while (size-- > 0) crc = (crc >> 8) ^ kTables.t[0][(crc ^ *bytes++) & 0xFFu];
  return ~crc;
}

}  // namespace tfpconv
