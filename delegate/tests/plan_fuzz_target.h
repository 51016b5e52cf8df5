// The plan reader's fuzz target, shared by the libFuzzer build and the bounded mutation driver.
#ifndef TFPCONV_TESTS_PLAN_FUZZ_TARGET_H_
#define TFPCONV_TESTS_PLAN_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tfpconv {
namespace testing {

// Reads `data` as a plan and checks a zero filter of every usable entry against it; then runs each
// entry the delegate would use on a small layer of its kernel shape (weights that follow its codes)
// with the engine and compares with ReferenceConv, aborting on a mismatch or an engine that rejects
// the entry. Any crash, abort, sanitizer report or hang is a bug. Returns the entries run.
int FuzzPlanReader(const uint8_t* data, size_t size);

// Valid plans to start from.
std::vector<std::vector<uint8_t>> PlanSeeds();

}  // namespace testing
}  // namespace tfpconv

#endif  // TFPCONV_TESTS_PLAN_FUZZ_TARGET_H_
