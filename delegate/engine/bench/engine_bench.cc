// Times the engine on VGG-16's 3x3 layer shapes with random pattern + connectivity pruning, and
// reports GFLOP/s counted on the non-zero weights (2 flops per kept weight per output pixel) next
// to the dense-equivalent rate. Not a test: run by hand, e.g.
//   tfpconv_engine_bench --threads=1 --keep=0.28 [--isa=avx2] [--sweep] [--layer=conv3_2]
//                        [--input=32]   (VGG-16 at a 32x32 input: the same layers, 1/7 the size)
//                        [--variant=r4v2] [--tile_ic=N] [--tile_oc=N]   (one tuning instead of the defaults)
//                        [--relu]       (a fused ReLU: the store clamps at 0)
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "pattern_conv.h"
#include "tests/test_util.h"

namespace {

struct Layer {
  const char* name;
  int hw, in_c, out_c;
};
// VGG-16 at 224x224 (conv1_1, with 3 input channels, is left to dense code in practice).
const Layer kVgg[] = {{"conv1_2", 224, 64, 64},   {"conv2_1", 112, 64, 128},
                      {"conv2_2", 112, 128, 128}, {"conv3_1", 56, 128, 256},
                      {"conv3_2", 56, 256, 256},  {"conv4_1", 28, 256, 512},
                      {"conv4_2", 28, 512, 512},  {"conv5_1", 14, 512, 512}};
// How many times each shape occurs in VGG-16 (conv3_2 x2, conv4_2 x2, conv5_x x3).
const int kVggCount[] = {1, 1, 1, 1, 2, 1, 2, 3};

double CpuMs() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

// Median wall time of a run, and process CPU time per run divided by the threads (on a shared
// machine the CPU time is the steadier number: it does not count time spent descheduled).
struct Timing {
  double wall_ms, cpu_ms;
};

Timing Time(const tfpconv::PatternConv& conv, const std::vector<float>& in,
            std::vector<float>* out, tfpconv::ThreadPool* pool, double min_ms) {
  conv.Run(in.data(), out->data(), pool);  // warm-up, allocates the input buffer
  std::vector<double> times;
  double total = 0;
  const double cpu0 = CpuMs();
  while (times.size() < 3 || (total < min_ms && times.size() < 50)) {
    const auto t0 = std::chrono::steady_clock::now();
    conv.Run(in.data(), out->data(), pool);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    times.push_back(ms);
    total += ms;
  }
  const double cpu = (CpuMs() - cpu0) / times.size() / (pool ? pool->num_threads() : 1);
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], cpu};
}

const char* Arg(int argc, char** argv, const char* key) {
  const size_t n = std::strlen(key);
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], key, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
  return nullptr;
}

bool HasFlag(int argc, char** argv, const char* flag) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], flag) == 0) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tfpconv;
  const int threads = Arg(argc, argv, "--threads") ? std::atoi(Arg(argc, argv, "--threads")) : 1;
  const double keep = Arg(argc, argv, "--keep") ? std::atof(Arg(argc, argv, "--keep")) : 0.28;
  const double min_ms = Arg(argc, argv, "--min_ms") ? std::atof(Arg(argc, argv, "--min_ms")) : 300;
  const char* only = Arg(argc, argv, "--layer");
  const int input = Arg(argc, argv, "--input") ? std::atoi(Arg(argc, argv, "--input")) : 224;
  const bool relu = HasFlag(argc, argv, "--relu");
  const bool sweep = HasFlag(argc, argv, "--sweep");
  Isa isa = BestIsa();
  if (Arg(argc, argv, "--isa") && !ParseIsa(Arg(argc, argv, "--isa"), &isa)) {
    std::fprintf(stderr, "unknown isa\n");
    return 2;
  }
  ThreadPool pool(threads);
  std::printf("isa %s, %d thread(s), keep %.2f of kernels x 4/9 taps\n", IsaName(isa), threads, keep);
  std::printf("%-8s %-50s %8s %8s %11s %11s %13s\n", "layer", "tuning", "wall ms", "cpu ms",
              "GF/s nz", "GF/s nz cpu", "dense-eq cpu");
  double vgg_ms = 0, vgg_dense_gflop = 0;
  for (size_t li = 0; li < sizeof(kVgg) / sizeof(kVgg[0]); ++li) {
    Layer L = kVgg[li];
    L.hw = std::max(1, L.hw * input / 224);
    if (only && std::strcmp(only, L.name) != 0) continue;
    testing::LayerOptions opt;
    opt.keep = keep;
    testing::RandomLayer l = testing::MakeRandomLayer(
        testing::MakeShape(1, L.hw, L.hw, L.in_c, L.out_c, 1, true), opt, 42 + li);
    if (relu) l.shape.act_min = 0;
    std::vector<float> out(size_t(L.hw) * L.hw * L.out_c);
    const double pixels = double(L.hw) * L.hw;
    const double nz_gflop = 2.0 * l.kept_kernels * 4 * pixels * 1e-9;
    const double dense_gflop = 2.0 * 9 * L.in_c * L.out_c * pixels * 1e-9;
    std::vector<KernelTuning> tunings = {KernelTuning{}};
    if (Arg(argc, argv, "--variant") || Arg(argc, argv, "--tile_ic") || Arg(argc, argv, "--tile_oc")) {
      KernelTuning& t = tunings.front();
      if (Arg(argc, argv, "--variant")) t.variant = Arg(argc, argv, "--variant");
      if (Arg(argc, argv, "--tile_ic")) t.params["tile_ic"] = std::atoi(Arg(argc, argv, "--tile_ic"));
      if (Arg(argc, argv, "--tile_oc")) t.params["tile_oc"] = std::atoi(Arg(argc, argv, "--tile_oc"));
    }
    if (sweep) {
      const auto c = TuningCandidates(l.shape, isa);
      tunings.insert(tunings.end(), c.begin(), c.end());
    }
    double best = 1e30;
    for (const auto& tuned : tunings) {
      PatternPlan plan = l.plan;
      plan.tuning = tuned;
      std::string error;
      auto conv = PatternConv::Create(l.shape, l.weights.data(), l.bias.data(), plan, isa, &error);
      if (!conv) {
        std::fprintf(stderr, "%s: %s\n", L.name, error.c_str());
        return 1;
      }
      const Timing t = Time(*conv, l.input, &out, &pool, min_ms);
      best = std::min(best, t.cpu_ms);
      std::printf("%-8s %-50s %8.2f %8.2f %11.1f %11.1f %13.1f\n", L.name,
                  (tuned == KernelTuning{} ? "default " + DescribeTuning(conv->kernel_params(), isa)
                                           : DescribeTuning(tuned, isa))
                      .c_str(),
                  t.wall_ms,
                  t.cpu_ms, nz_gflop / t.wall_ms * 1e3, nz_gflop / t.cpu_ms * 1e3,
                  dense_gflop / t.cpu_ms * 1e3);
      std::fflush(stdout);
    }
    vgg_ms += best * kVggCount[li];
    vgg_dense_gflop += dense_gflop * kVggCount[li];
  }
  if (!only)
    std::printf("VGG-16 (%dx%d) 3x3 layers conv1_2..conv5_3 (dense %.2f GFLOP): %.2f ms (cpu time)\n",
                input, input, vgg_dense_gflop, vgg_ms);
  return 0;
}
