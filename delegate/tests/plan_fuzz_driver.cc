// A bounded mutation fuzzer for compilers without libFuzzer: mutates the seed plans (bit flips,
// byte overwrites, truncation, duplication of ranges, interesting integers) for a fixed time.
// Usage: plan_fuzz_driver [seconds=5] [random seed=1]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "plan_fuzz_target.h"

namespace {

void Mutate(std::vector<uint8_t>* data, std::mt19937* rng) {
  std::vector<uint8_t>& d = *data;
  const int mutations = 1 + static_cast<int>((*rng)() % 6);
  for (int m = 0; m < mutations && !d.empty(); ++m) {
    const size_t at = (*rng)() % d.size();
    switch ((*rng)() % 6) {
      case 0: d[at] ^= static_cast<uint8_t>(1u << ((*rng)() % 8)); break;
      case 1: d[at] = static_cast<uint8_t>((*rng)()); break;
      case 2: d.resize(at); break;
      case 3: {
        const uint32_t values[] = {0u, 1u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, 4u, 8u};
        const uint32_t v = values[(*rng)() % 7];
        if (at + 4 <= d.size()) std::memcpy(&d[at], &v, 4);
        break;
      }
      case 4: {
        const size_t length = std::min<size_t>(d.size() - at, 1 + (*rng)() % 16);
        d.insert(d.begin() + static_cast<long>((*rng)() % d.size()), d.begin() + static_cast<long>(at),
                 d.begin() + static_cast<long>(at + length));
        break;
      }
      default: d.erase(d.begin() + static_cast<long>(at)); break;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 5.0;
  std::mt19937 rng(argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 1u);
  const auto seeds = tfpconv::testing::PlanSeeds();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  long runs = 0, layers = 0;
  for (const auto& seed : seeds) layers += tfpconv::testing::FuzzPlanReader(seed.data(), seed.size());
  while (std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 64; ++i, ++runs) {
      std::vector<uint8_t> input = seeds[rng() % seeds.size()];
      Mutate(&input, &rng);
      layers += tfpconv::testing::FuzzPlanReader(input.data(), input.size());
    }
  }
  std::printf("plan_fuzz_driver: %ld inputs in %.0f s, %ld planned layers run against ReferenceConv, "
              "no crash\n", runs, seconds, layers);
  if (layers == 0) {
    std::fprintf(stderr, "plan_fuzz_driver: no plan entry was ever run\n");
    return 1;
  }
  return 0;
}
