// zlib-compatible CRC-32 (reflected polynomial 0xEDB88320, initial value and final xor 0xFFFFFFFF):
// the checksum the plan records for a weight buffer, as Python's zlib.crc32 computes it.
#ifndef TFPCONV_SRC_CRC32_H_
#define TFPCONV_SRC_CRC32_H_

#include <cstddef>
#include <cstdint>

namespace tfpconv {

// `crc` continues an earlier checksum (0 to start), like zlib.crc32(data, crc).
uint32_t Crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_CRC32_H_
