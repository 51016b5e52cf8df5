// libFuzzer entry point (built with clang -fsanitize=fuzzer,address,undefined; TFPCONV_FUZZ=ON).
// Started with -seed_dir-style corpus written by -write_seeds=DIR, or from nothing.
#include <cstdio>
#include <cstring>
#include <string>

#include "plan_fuzz_target.h"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // "-write_seeds=DIR": write the seed plans as corpus files into DIR first.
  for (int i = 1; i < *argc; ++i) {
    const char* flag = "-write_seeds=";
    if (std::strncmp((*argv)[i], flag, std::strlen(flag)) != 0) continue;
    const std::string dir = (*argv)[i] + std::strlen(flag);
    int n = 0;
    for (const auto& seed : tfpconv::testing::PlanSeeds()) {
      const std::string path = dir + "/seed" + std::to_string(n++) + ".tfpconv";
      if (FILE* file = std::fopen(path.c_str(), "wb")) {
        std::fwrite(seed.data(), 1, seed.size(), file);
        std::fclose(file);
      }
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tfpconv::testing::FuzzPlanReader(data, size);
  return 0;
}
