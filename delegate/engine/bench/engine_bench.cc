// Times the engine on VGG-16's 3x3 layer shapes with random pattern + connectivity pruning, and
// reports GFLOP/s counted on the non-zero weights (2 flops per kept weight per output pixel) next
// to the dense-equivalent rate. Not a test: run by hand, e.g.
//   tfpconv_engine_bench --threads=1 --keep=0.28 [--isa=avx2] [--sweep] [--layer=conv3_2]
//                        [--input=32]   (VGG-16 at a 32x32 input: the same layers, 1/7 the size)
//                        [--variant=r4v2] [--tile_ic=N] [--tile_oc=N]   (one tuning instead of the defaults)
//                        [--against_variant=r6v2] [--against_tile_ic=N] [--against_tile_oc=N]
//                                       (that tuning and the one above timed alternately, round by
//                                        round, with the median of the per-round time ratios)
//                        [--relu]       (a fused ReLU: the store clamps at 0)
//                        [--filter_group=4] (runs of that many filters with equal kernel codes,
//                                        as PatternPruning(filter_group=4) trains them)
//                        [--mask=0.3]   (activation sparsity: that fraction of the units of
//                                        kActivationUnitPixels output pixels masked at random;
//                                        the layer with the mask and without, runs interleaved)
//                        [--gather=0|1] (with --mask: force the normal or the gathered path)
//                        [--unit_rows=8] (with --mask: units of that many rows x
//                                        kActivationUnitPixels; default 1)
// or a unified fully connected layer (unified_fc.h), batch `rows`, random block states, next to the
// same layer with every block FREE (a dense GEMV through the same kernel):
//   tfpconv_engine_bench --fc=IN,OUT [--block=16] [--unify=0.5] [--prune=0.25] [--rows=1]
//                        [--threads=1] [--isa=avx512] [--min_ms=300] [--relu]
//                        [--no_dense]   (skip the all-FREE baseline)
//                        [--cold]       (evict the caches before every timed run)
// GB/s counts the packed bytes (packed_weight_bytes) read per run.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "pattern_conv.h"
#include "tests/test_util.h"
#include "unified_fc.h"

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

// Median wall time and CPU time per run of run(), as Time() above. With `cold`, every timed run
// starts after a 1 GiB buffer has been read, so the weights come from DRAM.
template <typename F>
Timing TimeRuns(const F& run, int threads, double min_ms, bool cold) {
  static std::vector<char> evict;
  if (cold && evict.empty()) evict.assign(size_t(1) << 30, 1);
  run();  // warm-up
  std::vector<double> times;
  double total = 0, cpu_total = 0;
  while (times.size() < 5 || (total < min_ms && times.size() < 200)) {
    if (cold) {
      unsigned sum = 0;
      for (size_t i = 0; i < evict.size(); i += 64) sum += static_cast<unsigned char>(evict[i]);
      volatile unsigned sink = sum;
      (void)sink;
    }
    const double cpu0 = CpuMs();
    const auto t0 = std::chrono::steady_clock::now();
    run();
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    cpu_total += CpuMs() - cpu0;
    times.push_back(ms);
    total += ms;
  }
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], cpu_total / times.size() / threads};
}

// Two runs timed alternately, so both see the same machine load: the median wall time of each,
// and the median of the per-round ratios a / b (steadier than the ratio of the medians on a
// shared machine).
struct Interleaved {
  double a_ms, b_ms, ratio;
};

template <typename A, typename B>
Interleaved TimeInterleaved(const A& run_a, const B& run_b, double min_ms) {
  run_a();  // warm-up
  run_b();
  std::vector<double> times[2], ratios;
  double total = 0;
  while (ratios.size() < 7 || (total < 2 * min_ms && ratios.size() < 200)) {
    double ms[2];
    for (int k = 0; k < 2; ++k) {
      const auto t0 = std::chrono::steady_clock::now();
      k == 0 ? run_a() : run_b();
      ms[k] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      times[k].push_back(ms[k]);
      total += ms[k];
    }
    ratios.push_back(ms[0] / ms[1]);
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  return {median(times[0]), median(times[1]), median(ratios)};
}

// The tuning that --<prefix>variant, --<prefix>tile_ic and --<prefix>tile_oc name (empty: the
// engine's defaults).
tfpconv::KernelTuning TuningFromArgs(int argc, char** argv, const std::string& prefix) {
  tfpconv::KernelTuning t;
  const std::string variant = "--" + prefix + "variant";
  if (const char* v = Arg(argc, argv, variant.c_str())) t.variant = v;
  for (const char* key : {"tile_ic", "tile_oc"}) {
    const std::string flag = "--" + prefix + key;
    if (const char* v = Arg(argc, argv, flag.c_str())) t.params[key] = std::atoi(v);
  }
  return t;
}

// The engine's convolution of a random layer with `tuning`, or nullptr after printing why not.
std::unique_ptr<tfpconv::PatternConv> CreateConv(const char* name,
                                                 const tfpconv::testing::RandomLayer& l,
                                                 const tfpconv::KernelTuning& tuning,
                                                 tfpconv::Isa isa) {
  tfpconv::PatternPlan plan = l.plan;
  plan.tuning = tuning;
  std::string error;
  auto conv = tfpconv::PatternConv::Create(l.shape, l.weights.data(), l.bias.data(), plan, isa,
                                           &error);
  if (!conv) std::fprintf(stderr, "%s: %s\n", name, error.c_str());
  return conv;
}

// --mask mode: each layer with a random unit mask against the same layer without one.
int MaskBench(int argc, char** argv, tfpconv::Isa isa, int threads, double keep, double min_ms,
              int input, bool relu) {
  using namespace tfpconv;
  const double masked = std::atof(Arg(argc, argv, "--mask"));
  const char* only = Arg(argc, argv, "--layer");
  const char* gather = Arg(argc, argv, "--gather");
  const char* unit_rows_arg = Arg(argc, argv, "--unit_rows");
  const int unit_rows = unit_rows_arg ? std::max(1, std::atoi(unit_rows_arg)) : 1;
  ThreadPool pool(threads);
  std::printf("isa %s, %d thread(s), keep %.2f of kernels x 4/9 taps, %.2f of the %dx%d-pixel "
              "units masked\n",
              IsaName(isa), threads, keep, masked, unit_rows, kActivationUnitPixels);
  std::printf("%-8s %-44s %9s %9s %8s %8s %11s %11s\n", "layer", "masked layer's tuning", "ms plain",
              "ms mask", "speedup", "ideal", "GF/s plain", "GF/s mask");
  for (size_t li = 0; li < sizeof(kVgg) / sizeof(kVgg[0]); ++li) {
    Layer L = kVgg[li];
    L.hw = std::max(1, L.hw * input / 224);
    if (only && std::strcmp(only, L.name) != 0) continue;
    testing::LayerOptions opt;
    opt.keep = keep;
    testing::RandomLayer l = testing::MakeRandomLayer(
        testing::MakeShape(1, L.hw, L.hw, L.in_c, L.out_c, 1, true), opt, 42 + li);
    if (relu) l.shape.act_min = 0;
    PatternPlan masked_plan = l.plan;
    masked_plan.pixel_mask = testing::RandomUnitMask(l.shape, masked, 7 + li, unit_rows);
    if (gather) masked_plan.tuning.params["gather"] = std::atoi(gather);
    if (const char* variant = Arg(argc, argv, "--variant")) masked_plan.tuning.variant = variant;
    std::string error;
    auto plain = PatternConv::Create(l.shape, l.weights.data(), l.bias.data(), l.plan, isa, &error);
    auto with_mask =
        PatternConv::Create(l.shape, l.weights.data(), l.bias.data(), masked_plan, isa, &error);
    if (!plain || !with_mask) {
      std::fprintf(stderr, "%s: %s\n", L.name, error.c_str());
      return 1;
    }
    std::vector<float> out(size_t(L.hw) * L.hw * L.out_c);
    const Interleaved t = TimeInterleaved(
        [&] { plain->Run(l.input.data(), out.data(), &pool); },
        [&] { with_mask->Run(l.input.data(), out.data(), &pool); }, min_ms);
    const double pixels = double(L.hw) * L.hw;
    const double active = double(std::count(masked_plan.pixel_mask.begin(),
                                            masked_plan.pixel_mask.end(), uint8_t{1}));
    const double gflop_per_pixel = 2.0 * l.kept_kernels * 4 * 1e-9;
    std::printf("%-8s %-44s %9.3f %9.3f %7.2fx %7.2fx %11.1f %11.1f\n", L.name,
                DescribeTuning(with_mask->kernel_params(), isa).c_str(), t.a_ms, t.b_ms, t.ratio,
                pixels / std::max(active, 1.0), gflop_per_pixel * pixels / t.a_ms * 1e3,
                gflop_per_pixel * active / t.b_ms * 1e3);
    std::fflush(stdout);
  }
  return 0;
}

// --fc mode: a random unified layer and its all-FREE twin, timed one after the other.
int FcBench(int argc, char** argv, tfpconv::Isa isa, int threads, double min_ms) {
  using namespace tfpconv;
  FcShape s;
  if (std::sscanf(Arg(argc, argv, "--fc"), "%d,%d", &s.in, &s.out) != 2 || s.in < 1 || s.out < 1) {
    std::fprintf(stderr, "--fc=IN,OUT\n");
    return 2;
  }
  s.block = Arg(argc, argv, "--block") ? std::atoi(Arg(argc, argv, "--block")) : 16;
  s.rows = Arg(argc, argv, "--rows") ? std::atoi(Arg(argc, argv, "--rows")) : 1;
  if (HasFlag(argc, argv, "--relu")) s.act_min = 0.0f;
  const double unify = Arg(argc, argv, "--unify") ? std::atof(Arg(argc, argv, "--unify")) : 0.5;
  const double prune = Arg(argc, argv, "--prune") ? std::atof(Arg(argc, argv, "--prune")) : 0.25;
  const bool cold = HasFlag(argc, argv, "--cold");
  const int nb = FcBlocksPerRow(s);
  if (nb < 1) {
    std::fprintf(stderr, "bad --block\n");
    return 2;
  }
  // Random states; FREE weights uniform in [-1, 1), UNIFIED +-m with m uniform in [0, 1).
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f), unit(0.0f, 1.0f);
  std::vector<float> weights(size_t(s.out) * s.in);
  std::vector<uint8_t> states(size_t(s.out) * nb), all_free(states.size(), kBlockFree);
  size_t counts[3] = {0, 0, 0};
  for (int o = 0; o < s.out; ++o) {
    for (int j = 0; j < nb; ++j) {
      const float u = unit(rng);
      const uint8_t st = u < prune ? kBlockPruned : u < prune + unify ? kBlockUnified : kBlockFree;
      states[size_t(o) * nb + j] = st;
      ++counts[st];
      const float m = unit(rng);
      for (int i = j * s.block; i < std::min(s.in, (j + 1) * s.block); ++i) {
        float& w = weights[size_t(o) * s.in + i];
        w = st == kBlockFree ? value(rng) : st == kBlockUnified ? (rng() & 1 ? -m : m) : 0.0f;
      }
    }
  }
  std::vector<float> bias(s.out), input(size_t(s.rows) * s.in), out(size_t(s.rows) * s.out);
  for (float& b : bias) b = value(rng);
  for (float& x : input) x = value(rng);
  ThreadPool pool(threads);
  const double dense_bytes = (double(s.in) * s.out + s.out) * sizeof(float);
  const double blocks = double(s.out) * nb;
  std::printf("fc in %d out %d rows %d block %d, isa %s, %d thread(s)%s; blocks free %.3f unified "
              "%.3f pruned %.3f\n",
              s.in, s.out, s.rows, s.block, IsaName(isa), threads, cold ? ", cold caches" : "",
              counts[kBlockFree] / blocks, counts[kBlockUnified] / blocks,
              counts[kBlockPruned] / blocks);
  std::printf("%-10s %14s %8s %9s %9s %9s %10s\n", "layer", "packed bytes", "dense/x", "wall ms",
              "cpu ms", "GB/s", "GB/s cpu");
  double ms[2] = {0, 0}, bytes[2] = {0, 0};
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1 && HasFlag(argc, argv, "--no_dense")) break;
    std::string error;
    auto fc = UnifiedFc::Create(s, weights.data(), pass == 0 ? states.data() : all_free.data(),
                                bias.data(), isa, &error);
    if (!fc) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 1;
    }
    const Timing t =
        TimeRuns([&] { fc->Run(input.data(), out.data(), &pool); }, threads, min_ms, cold);
    bytes[pass] = double(fc->packed_weight_bytes());
    ms[pass] = t.wall_ms;
    std::printf("%-10s %14.0f %8.2f %9.3f %9.3f %9.2f %10.2f\n", pass == 0 ? "unified" : "all-free",
                bytes[pass], dense_bytes / bytes[pass], t.wall_ms, t.cpu_ms,
                bytes[pass] / t.wall_ms * 1e-6, bytes[pass] / t.cpu_ms * 1e-6);
    if (pass == 1)
      std::printf("speedup over all-free (wall): %.2fx; dense bytes %.0f\n", t.wall_ms / ms[0],
                  dense_bytes);
    std::fflush(stdout);
  }
  // One line for scripts (all-free fields 0 with --no_dense).
  std::printf("FC_RESULT in=%d out=%d rows=%d block=%d isa=%s threads=%d dense_bytes=%.0f "
              "packed_bytes=%.0f unified_ms=%.4f unified_gbps=%.3f free_bytes=%.0f free_ms=%.4f "
              "free_gbps=%.3f\n",
              s.in, s.out, s.rows, s.block, IsaName(isa), threads, dense_bytes, bytes[0], ms[0],
              bytes[0] / ms[0] * 1e-6, bytes[1], ms[1], ms[1] > 0 ? bytes[1] / ms[1] * 1e-6 : 0.0);
  return 0;
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
  const bool against_mode = !(TuningFromArgs(argc, argv, "against_") == tfpconv::KernelTuning{});
  const int filter_group =
      Arg(argc, argv, "--filter_group") ? std::atoi(Arg(argc, argv, "--filter_group")) : 1;
  Isa isa = BestIsa();
  if (Arg(argc, argv, "--isa") && !ParseIsa(Arg(argc, argv, "--isa"), &isa)) {
    std::fprintf(stderr, "unknown isa\n");
    return 2;
  }
  if (Arg(argc, argv, "--fc")) return FcBench(argc, argv, isa, threads, min_ms);
  if (Arg(argc, argv, "--mask")) return MaskBench(argc, argv, isa, threads, keep, min_ms, input, relu);
  ThreadPool pool(threads);
  std::printf("isa %s, %d thread(s), keep %.2f of kernels x 4/9 taps, filter groups of %d\n",
              IsaName(isa), threads, keep, filter_group);
  std::printf("%-8s %-50s %8s %8s %11s %11s %13s\n", "layer", "tuning", "wall ms", "cpu ms",
              "GF/s nz", "GF/s nz cpu", "dense-eq cpu");
  double vgg_ms = 0, vgg_dense_gflop = 0;
  for (size_t li = 0; li < sizeof(kVgg) / sizeof(kVgg[0]); ++li) {
    Layer L = kVgg[li];
    L.hw = std::max(1, L.hw * input / 224);
    if (only && std::strcmp(only, L.name) != 0) continue;
    testing::LayerOptions opt;
    opt.keep = keep;
    opt.filter_group = filter_group;
    opt.shuffle_order = filter_group == 1;  // as the converter's filter reorder keeps them together
    testing::RandomLayer l = testing::MakeRandomLayer(
        testing::MakeShape(1, L.hw, L.hw, L.in_c, L.out_c, 1, true), opt, 42 + li);
    if (relu) l.shape.act_min = 0;
    std::vector<float> out(size_t(L.hw) * L.hw * L.out_c);
    const double pixels = double(L.hw) * L.hw;
    const double nz_gflop = 2.0 * l.kept_kernels * 4 * pixels * 1e-9;
    const double dense_gflop = 2.0 * 9 * L.in_c * L.out_c * pixels * 1e-9;
    std::vector<KernelTuning> tunings = {TuningFromArgs(argc, argv, "")};
    if (against_mode) {
      std::unique_ptr<PatternConv> convs[2] = {
          CreateConv(L.name, l, tunings.front(), isa),
          CreateConv(L.name, l, TuningFromArgs(argc, argv, "against_"), isa)};
      if (!convs[0] || !convs[1]) return 1;
      const Interleaved t = TimeInterleaved(
          [&] { convs[0]->Run(l.input.data(), out.data(), &pool); },
          [&] { convs[1]->Run(l.input.data(), out.data(), &pool); }, min_ms);
      std::printf("%-8s %s %.2f ms vs %s %.2f ms: ratio %.3f (median of rounds)\n", L.name,
                  DescribeTuning(convs[0]->kernel_params(), isa).c_str(), t.a_ms,
                  DescribeTuning(convs[1]->kernel_params(), isa).c_str(), t.b_ms, t.ratio);
      std::fflush(stdout);
      continue;
    }
    if (sweep) {
      const auto c = TuningCandidates(l.shape, isa);
      tunings.insert(tunings.end(), c.begin(), c.end());
    }
    double best = 1e30;
    for (const auto& tuned : tunings) {
      auto conv = CreateConv(L.name, l, tuned, isa);
      if (!conv) return 1;
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
  if (!only && !against_mode)
    std::printf("VGG-16 (%dx%d) 3x3 layers conv1_2..conv5_3 (dense %.2f GFLOP): %.2f ms (cpu time)\n",
                input, input, vgg_dense_gflop, vgg_ms);
  return 0;
}
